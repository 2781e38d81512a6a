package compile_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/compleat/compleat/director/compile"
	"github.com/compleat/compleat/director/compile/compiletest"
)

var ubuntu = compile.Stemcell{OS: "ubuntu-noble", Version: "1.5", CID: "sc-1"}

func pkg(name string, deps ...string) compile.Package {
	return compile.Package{Name: name, Version: "1", Fingerprint: "fp-" + name, Dependencies: deps}
}

// diamond: app -> (lib-a, lib-b) -> base
func diamond() []compile.Package {
	return []compile.Package{pkg("app", "lib-a", "lib-b"), pkg("lib-a", "base"), pkg("lib-b", "base"), pkg("base")}
}

type events struct {
	mu sync.Mutex
	e  []compile.Event
}

func (r *events) Report(e compile.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.e = append(r.e, e)
}

func TestDependencyOrderAndTransitiveDependencies(t *testing.T) {
	t.Parallel()
	cloud := compiletest.NewCloud(5 * time.Millisecond)
	c := compile.New(cloud, compiletest.NewCache(), nil)
	ev := &events{}
	res, err := c.Compile(context.Background(), []compile.Target{{Stemcell: ubuntu, Packages: diamond()}}, compile.Options{Workers: 4, Reporter: ev})
	if err != nil {
		t.Fatal(err)
	}
	order := cloud.Compiled()
	pos := func(n string) int { return slices.Index(order, n) }
	if !(pos("base") < pos("lib-a") && pos("base") < pos("lib-b") && pos("lib-a") < pos("app") && pos("lib-b") < pos("app")) {
		t.Errorf("compile order %v breaks dependencies", order)
	}
	if got := cloud.DependenciesSeen("app"); !slices.Equal(got, []string{"base", "lib-a", "lib-b"}) {
		t.Errorf("app compiled with %v, want its transitive dependencies", got)
	}
	if res.Built != 4 || res.Hits != 0 || len(res.Compiled[0]) != 4 {
		t.Errorf("result = %+v", res)
	}
	if res.Compiled[0]["app"].BlobID != "blob-app" {
		t.Errorf("app compiled = %+v", res.Compiled[0]["app"])
	}
	if cloud.LiveVMs() != 0 {
		t.Errorf("%d compile VMs left", cloud.LiveVMs())
	}
	finished := 0
	for _, e := range ev.e {
		if e.State == "finished" {
			finished++
			if e.Total != 4 || e.Stage != "Compiling packages" || !strings.Contains(e.Task, "(ubuntu-noble/1.5)") {
				t.Errorf("event %+v", e)
			}
		}
	}
	if finished != 4 {
		t.Errorf("%d finished events, want 4", finished)
	}
}

func TestWorkersBoundParallelism(t *testing.T) {
	t.Parallel()
	cloud := compiletest.NewCloud(20 * time.Millisecond)
	c := compile.New(cloud, compiletest.NewCache(), nil)
	var pkgs []compile.Package
	for i := range 10 {
		pkgs = append(pkgs, pkg(fmt.Sprintf("p%02d", i)))
	}
	if _, err := c.Compile(context.Background(), []compile.Target{{Stemcell: ubuntu, Packages: pkgs}}, compile.Options{Workers: 3}); err != nil {
		t.Fatal(err)
	}
	if m := cloud.MaxConcurrent(); m > 3 || m < 1 {
		t.Errorf("max concurrent compilations = %d, want 1..3", m)
	}
	if cloud.CreatedVMs() != 10 || cloud.LiveVMs() != 0 {
		t.Errorf("without reuse: created %d VMs (want 10), %d live (want 0)", cloud.CreatedVMs(), cloud.LiveVMs())
	}
}

func TestReuseCompilationVMs(t *testing.T) {
	t.Parallel()
	cloud := compiletest.NewCloud(5 * time.Millisecond)
	c := compile.New(cloud, compiletest.NewCache(), nil)
	var pkgs []compile.Package
	for i := range 8 {
		pkgs = append(pkgs, pkg(fmt.Sprintf("p%02d", i)))
	}
	if _, err := c.Compile(context.Background(), []compile.Target{{Stemcell: ubuntu, Packages: pkgs}}, compile.Options{Workers: 2, ReuseVMs: true}); err != nil {
		t.Fatal(err)
	}
	if cloud.CreatedVMs() > 2 {
		t.Errorf("with reuse and 2 workers, created %d VMs", cloud.CreatedVMs())
	}
	if cloud.LiveVMs() != 0 {
		t.Errorf("%d compile VMs left after the stage", cloud.LiveVMs())
	}
}

func TestCacheHitCreatesNoVM(t *testing.T) {
	t.Parallel()
	cloud := compiletest.NewCloud(time.Millisecond)
	cache := compiletest.NewCache()
	c := compile.New(cloud, cache, nil)
	targets := []compile.Target{{Stemcell: ubuntu, Packages: diamond()}}
	first, err := c.Compile(context.Background(), targets, compile.Options{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	created := cloud.CreatedVMs()
	second, err := c.Compile(context.Background(), targets, compile.Options{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if cloud.CreatedVMs() != created {
		t.Errorf("a fully cached stage created %d VMs", cloud.CreatedVMs()-created)
	}
	if second.Built != 0 || second.Hits != 4 {
		t.Errorf("second stage = %+v", second)
	}
	if first.Compiled[0]["app"] != second.Compiled[0]["app"] || first.Compiled[0]["app"].Duration <= 0 {
		t.Errorf("cached result differs")
	}

	// A new stemcell version, or a changed dependency, misses.
	newer := ubuntu
	newer.Version = "1.6"
	third, err := c.Compile(context.Background(), []compile.Target{{Stemcell: newer, Packages: diamond()}}, compile.Options{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if third.Built != 4 {
		t.Errorf("new stemcell version: built %d, want 4", third.Built)
	}
	changed := diamond()
	changed[3].Fingerprint = "fp-base-2" // base changes: everything above it recompiles
	fourth, err := c.Compile(context.Background(), []compile.Target{{Stemcell: ubuntu, Packages: changed}}, compile.Options{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if fourth.Built != 4 {
		t.Errorf("changed base: built %d, want 4", fourth.Built)
	}
}

func TestCacheKey(t *testing.T) {
	t.Parallel()
	a := compile.CacheKey(pkg("app"), []compile.Package{pkg("x"), pkg("y")}, ubuntu)
	b := compile.CacheKey(pkg("app"), []compile.Package{pkg("y"), pkg("x")}, ubuntu)
	if a != b {
		t.Errorf("key depends on dependency order")
	}
	other := ubuntu
	other.CID = "another-cid"
	if compile.CacheKey(pkg("app"), nil, other) != compile.CacheKey(pkg("app"), nil, ubuntu) {
		t.Errorf("key depends on the stemcell cid; only OS and version count")
	}
	other.OS = "ubuntu-jammy"
	if compile.CacheKey(pkg("app"), nil, other) == compile.CacheKey(pkg("app"), nil, ubuntu) {
		t.Errorf("key ignores the stemcell OS")
	}
}

func TestPackagingFailureNamesPackageShowsLogTailAndDeletesVMs(t *testing.T) {
	t.Parallel()
	cloud := compiletest.NewCloud(5 * time.Millisecond)
	var log strings.Builder
	for i := range 30 {
		fmt.Fprintf(&log, "line %d\n", i)
	}
	log.WriteString("gcc: error: missing.c: No such file\n")
	cloud.Fail["lib-a"] = log.String()
	c := compile.New(cloud, compiletest.NewCache(), nil)
	_, err := c.Compile(context.Background(), []compile.Target{{Stemcell: ubuntu, Packages: diamond()}}, compile.Options{Workers: 2, ReuseVMs: true})
	if err == nil {
		t.Fatal("want an error")
	}
	var perr *compile.PackagingError
	if !errors.As(err, &perr) || perr.Package != "lib-a" {
		t.Errorf("error %v is not lib-a's packaging error", err)
	}
	msg := err.Error()
	for _, want := range []string{"lib-a", "ubuntu-noble/1.5", "missing.c: No such file", "line 29"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not mention %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "line 5\n") {
		t.Errorf("error holds the whole log, not its tail:\n%s", msg)
	}
	if slices.Contains(cloud.Compiled(), "app") {
		t.Errorf("app compiled although its dependency failed")
	}
	if cloud.LiveVMs() != 0 {
		t.Errorf("%d compile VMs left after a failure", cloud.LiveVMs())
	}
}

// Runs in a synctest bubble: the compilations take 10 s of fake time, and
// synctest.Wait is the moment both workers are blocked compiling.
func TestCancelDeletesVMs(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		cloud := compiletest.NewCloud(10 * time.Second)
		c := compile.New(cloud, compiletest.NewCache(), nil)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := c.Compile(ctx, []compile.Target{{Stemcell: ubuntu, Packages: []compile.Package{pkg("a"), pkg("b"), pkg("c")}}}, compile.Options{Workers: 2, ReuseVMs: true})
			errc <- err
		}()
		synctest.Wait()
		if n := cloud.CreatedVMs(); n != 2 {
			t.Fatalf("%d compile VMs when both workers compile, want 2", n)
		}
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want cancelled", err)
		}
		if cloud.LiveVMs() != 0 {
			t.Errorf("%d compile VMs left after cancel", cloud.LiveVMs())
		}
	})
}

func TestCreateVMFailure(t *testing.T) {
	t.Parallel()
	cloud := compiletest.NewCloud(time.Millisecond)
	cloud.FailCreate = errors.New("quota exceeded")
	c := compile.New(cloud, compiletest.NewCache(), nil)
	_, err := c.Compile(context.Background(), []compile.Target{{Stemcell: ubuntu, Packages: diamond()}}, compile.Options{Workers: 2})
	if err == nil || !strings.Contains(err.Error(), "quota exceeded") || !strings.Contains(err.Error(), "base") {
		t.Fatalf("err = %v", err)
	}
}

func TestConcurrentStagesCompileOnce(t *testing.T) {
	t.Parallel()
	cloud := compiletest.NewCloud(30 * time.Millisecond)
	c := compile.New(cloud, compiletest.NewCache(), nil)
	targets := []compile.Target{{Stemcell: ubuntu, Packages: diamond()}}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	results := make([]compile.Result, 3)
	for i := range 3 {
		wg.Go(func() {
			results[i], errs[i] = c.Compile(context.Background(), targets, compile.Options{Workers: 2})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("stage %d: %v", i, err)
		}
		if results[i].Compiled[0]["app"].BlobID != "blob-app" {
			t.Errorf("stage %d: app = %+v", i, results[i].Compiled[0]["app"])
		}
	}
	got := cloud.Compiled()
	slices.Sort(got)
	if !slices.Equal(got, []string{"app", "base", "lib-a", "lib-b"}) {
		t.Errorf("compiled %v, want each package once", got)
	}
	if cloud.LiveVMs() != 0 {
		t.Errorf("%d VMs left", cloud.LiveVMs())
	}
}

func TestBadGraphs(t *testing.T) {
	t.Parallel()
	c := compile.New(compiletest.NewCloud(0), compiletest.NewCache(), nil)
	for name, pkgs := range map[string][]compile.Package{
		"cycle":   {pkg("a", "b"), pkg("b", "c"), pkg("c", "a")},
		"missing": {pkg("a", "nope")},
	} {
		_, err := c.Compile(context.Background(), []compile.Target{{Stemcell: ubuntu, Packages: pkgs}}, compile.Options{Workers: 1})
		if err == nil {
			t.Errorf("%s: want an error", name)
			continue
		}
		t.Logf("%s: %v", name, err)
	}
}

// chainAndFan is a chain z1 -> z2 -> z3 of packages costing 20 beside four
// independent ones costing 35: with 2 workers the chain must start first and
// each link as soon as it is ready. Every compilation waits on a gate the
// test opens, so the order is decided by the scheduler alone.
func chainAndFan(cloud *compiletest.Cloud) []compile.Package {
	pkgs := []compile.Package{pkg("z1"), pkg("z2", "z1"), pkg("z3", "z2"), pkg("a"), pkg("b"), pkg("c"), pkg("d")}
	cloud.Gates = map[string]chan struct{}{}
	for i := range pkgs {
		pkgs[i].Cost = 35 * time.Millisecond
		if strings.HasPrefix(pkgs[i].Name, "z") {
			pkgs[i].Cost = 20 * time.Millisecond
		}
		cloud.Gates[pkgs[i].Name] = make(chan struct{})
	}
	return pkgs
}

// startOrder runs the chain-and-fan DAG on 2 workers: it returns the first
// two packages started, then finishes first and returns the package
// started next.
// It runs in a synctest bubble: synctest.Wait returns once every worker is
// blocked at its package's gate, so what has started is exactly what the
// scheduler chose, with no polling.
func startOrder(t *testing.T, opts compile.Options, first string) (firstTwo []string, next string) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) {
		cloud := compiletest.NewCloud(0)
		pkgs := chainAndFan(cloud)
		c := compile.New(cloud, compiletest.NewCache(), nil)
		done := make(chan error, 1)
		go func() {
			_, err := c.Compile(context.Background(), []compile.Target{{Stemcell: ubuntu, Packages: pkgs}}, opts)
			done <- err
		}()
		synctest.Wait()
		started := cloud.Started()
		if len(started) != 2 {
			t.Fatalf("started %v on 2 workers", started)
		}
		firstTwo = slices.Sorted(slices.Values(started))
		close(cloud.Gates[first])
		synctest.Wait()
		started = cloud.Started()
		if len(started) != 3 {
			t.Fatalf("started %v after %s finished", started, first)
		}
		next = started[2]
		for name, g := range cloud.Gates {
			if name != first {
				close(g)
			}
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
	return firstTwo, next
}

func TestCriticalPathFirstBeatsNaiveOrder(t *testing.T) {
	t.Parallel()
	// Critical path: z1 (chain 60) and a (35) start; when z1 ends, z2 (40)
	// goes before b (35).
	two, next := startOrder(t, compile.Options{Workers: 2}, "z1")
	if !slices.Equal(two, []string{"a", "z1"}) || next != "z2" {
		t.Errorf("critical-path order started %v then %s; want [a z1] then z2", two, next)
	}
	// Naive (name order): a and b start; when a ends, c.
	two, next = startOrder(t, compile.NaiveOrder(compile.Options{Workers: 2}), "a")
	if !slices.Equal(two, []string{"a", "b"}) || next != "c" {
		t.Errorf("naive order started %v then %s; want [a b] then c", two, next)
	}
}

func TestWaiterCompilesItselfWhenTheLeaderIsCancelled(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		cloud := compiletest.NewCloud(200 * time.Millisecond)
		c := compile.New(cloud, compiletest.NewCache(), nil)
		targets := []compile.Target{{Stemcell: ubuntu, Packages: []compile.Package{pkg("slow")}}}
		ctxA, cancelA := context.WithCancel(context.Background())
		errA := make(chan error, 1)
		go func() {
			_, err := c.Compile(ctxA, targets, compile.Options{Workers: 1})
			errA <- err
		}()
		synctest.Wait() // A compiles "slow"
		if len(cloud.Started()) != 1 {
			t.Fatalf("stage A started %v", cloud.Started())
		}
		resB := make(chan error, 1)
		go func() {
			res, err := c.Compile(context.Background(), targets, compile.Options{Workers: 1})
			if err == nil && res.Compiled[0]["slow"].BlobID != "blob-slow" {
				err = fmt.Errorf("result %+v", res)
			}
			resB <- err
		}()
		synctest.Wait() // B waits on A's compilation of "slow"
		cancelA()
		if err := <-errA; !errors.Is(err, context.Canceled) {
			t.Errorf("stage A: %v", err)
		}
		if err := <-resB; err != nil {
			t.Errorf("stage B: %v", err)
		}
		if got := cloud.Compiled(); !slices.Equal(got, []string{"slow"}) {
			t.Errorf("compiled %v, want slow once (by B)", got)
		}
		if cloud.LiveVMs() != 0 {
			t.Errorf("%d VMs left", cloud.LiveVMs())
		}
	})
}

// A stage's own cloud (its compilation block, its CPI) makes its VMs; a
// compiler without one refuses to start rather than guess.
func TestStageCloudMakesTheStagesVMs(t *testing.T) {
	t.Parallel()
	shared := compiletest.NewCloud(0)
	mine := compiletest.NewCloud(0)
	c := compile.New(shared, compiletest.NewCache(), nil)
	if _, err := c.Compile(context.Background(), []compile.Target{{Stemcell: ubuntu, Packages: diamond()}}, compile.Options{Cloud: mine, Workers: 2}); err != nil {
		t.Fatal(err)
	}
	if len(mine.Compiled()) != 4 || len(shared.Compiled()) != 0 {
		t.Errorf("stage cloud compiled %v, compiler's cloud %v", mine.Compiled(), shared.Compiled())
	}
	bare := compile.New(nil, compiletest.NewCache(), nil)
	if _, err := bare.Compile(context.Background(), []compile.Target{{Stemcell: ubuntu, Packages: diamond()}}, compile.Options{Workers: 1}); err == nil {
		t.Error("compiled with no cloud at all")
	}
}
