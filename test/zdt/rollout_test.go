package main

// End-to-end tests of the rollout features on the local CPI, driven through
// the built CLI like the harness: create-swap-delete ordering and capacity
// seen from the load balancers, automatic rollback restoring the previous
// state exactly, pause and resume. They share one director and take a
// couple of minutes; -short skips them.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compleat/compleat/test/testbin"
)

// env is the director and the uploaded artifacts the tests share.
type env struct {
	d      *director
	prefix string
	work   string
	// broken is release 3's tarball (its health never passes), uploaded
	// by the rollback test.
	broken string
}

func repoRoot() string { return testbin.Root() }

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

// testBinaries is $COMPLEAT_BIN, or director, agent and cpi-local built
// once for this test binary (test/testbin).
func testBinaries(t *testing.T) string {
	dir, err := testbin.Build(testbin.Core...)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func setup(t *testing.T) *env {
	if testing.Short() {
		t.Skip("end-to-end rollouts: skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("the local CPI isolates VMs in mount namespaces: needs root")
	}
	ctx := context.Background()
	bin := testBinaries(t)
	work := t.TempDir()
	d, err := startDirector(ctx, filepath.Join(bin, "director"), filepath.Join(work, "data"), filepath.Join(work, "director.log"))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{d: d, work: work}
	var deployments []string
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		out, _ := d.output(cctx, "--json", "deployments")
		for _, name := range deployments {
			if strings.Contains(out, `"`+name+`"`) {
				d.run(cctx, "-d", name, "delete-deployment", "--force")
			}
		}
		d.stop()
		if t.Failed() {
			if raw, err := os.ReadFile(filepath.Join(work, "director.log")); err == nil {
				t.Logf("director log (tail):\n%s", tail(string(raw), 40))
			}
		}
	})
	deployments = []string{"csd", "dk", "rb", "pz", "sg"}
	if e.prefix, err = pickNet(); err != nil {
		t.Fatal(err)
	}
	cc, err := cloudConfig(filepath.Join(repoRoot(), "manifests", "local", "cloud-config.yml"), e.prefix)
	if err != nil {
		t.Fatal(err)
	}
	e.write(t, "cloud-config.yml", string(cc))
	e.must(t, "update-cloud-config", filepath.Join(work, "cloud-config.yml"))
	tarballs, err := buildReleases(ctx, d, filepath.Join(repoRoot(), "releases", "web"), work, []releaseEdit{
		{version: "1"},
		{version: "2", old: `w.Header().Set("Content-Type", "text/plain; charset=utf-8")`,
			new: `w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Webapp-Build", "2")`},
		{version: "3", old: `func (s *server) health(w http.ResponseWriter, r *http.Request) {`,
			new: `func (s *server) health(w http.ResponseWriter, r *http.Request) {
	if s.instance != "" {
		http.Error(w, "broken build", http.StatusServiceUnavailable)
		return
	}`},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"1", "2"} {
		e.must(t, "upload-release", tarballs[v])
	}
	e.broken = tarballs["3"]
	for _, v := range []string{"1", "2"} {
		sc := filepath.Join(work, "stemcell-"+v+".tgz")
		e.must(t, "create-stemcell", "--agent", filepath.Join(bin, "agent"), "--version", v, "--tarball", sc)
		e.must(t, "upload-stemcell", sc)
	}
	return e
}

func (e *env) write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(e.work, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func (e *env) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := e.d.run(context.Background(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (e *env) deploy(t *testing.T, m manifestOpts) (string, error) {
	t.Helper()
	p := e.write(t, m.name+".yml", manifest(m))
	return e.d.run(context.Background(), "-d", m.name, "deploy", p)
}

// instanceView is what the tests compare of `instances --json`.
type instanceView struct {
	Group string          `json:"group"`
	ID    string          `json:"id"`
	VMCID string          `json:"vm_cid"`
	IPs   []string        `json:"ips"`
	Spec  json.RawMessage `json:"spec"`
}

func (e *env) instances(t *testing.T, deployment string) []instanceView {
	t.Helper()
	out, err := e.d.output(context.Background(), "-d", deployment, "--json", "instances")
	if err != nil {
		t.Fatal(err)
	}
	var is []instanceView
	if err := json.Unmarshal([]byte(out), &is); err != nil {
		t.Fatalf("instances --json: %v\n%s", err, out)
	}
	slices.SortFunc(is, func(a, b instanceView) int { return strings.Compare(a.Group+a.ID, b.Group+b.ID) })
	return is
}

// addr is the instance's address as recorded with what it runs (its
// reservations may also hold the address a deploy planned for it).
func (in instanceView) addr() string {
	var s struct {
		Networks map[string]string `json:"networks"`
	}
	json.Unmarshal(in.Spec, &s)
	return s.Networks["default"]
}

// applied is the part of an instance's recorded spec a deploy applies:
// stemcell, networks, jobs (fingerprints and rendered hashes), packages.
func applied(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var s struct {
		Stemcell any `json:"stemcell"`
		Networks any `json:"networks"`
		Jobs     any `json:"jobs"`
		Packages any `json:"packages"`
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(s)
	return string(out)
}

// answer is GET path on addr: status and body.
func answer(addr, path string) (int, string) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	return resp.StatusCode, strings.TrimSpace(string(body))
}

func taskEvents(t *testing.T, e *env, out string) []event {
	t.Helper()
	id, err := taskID(out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	raw, _ := e.d.output(context.Background(), "--json", "task", fmt.Sprint(id))
	evs, err := parseEvents([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func TestRollouts(t *testing.T) {
	e := setup(t)
	t.Run("create-swap-delete", func(t *testing.T) { testCreateSwapDelete(t, e) })
	t.Run("create-swap-delete-disk", func(t *testing.T) { testCreateSwapDeleteDisk(t, e) })
	t.Run("surge", func(t *testing.T) { testSurge(t, e) })
	t.Run("auto-rollback", func(t *testing.T) { testAutoRollback(t, e) })
	t.Run("pause-resume", func(t *testing.T) { testPauseResume(t, e) })
	t.Run("cancel", func(t *testing.T) { testCancel(t, e) })
}

// capacity samples, from both load balancers, how many backends are in
// service; the capacity at an instant is the most any answering load
// balancer has (a client reaches whichever answers).
type capacity struct {
	mu      sync.Mutex
	min     int
	samples int
}

func (c *capacity) run(ctx context.Context, lbs []string) {
	client := &http.Client{Timeout: 300 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	c.min = -1
	for ctx.Err() == nil {
		best, answered := 0, false
		for _, lb := range lbs {
			resp, err := client.Get("http://" + lb + "/_lb/status")
			if err != nil {
				continue
			}
			var st struct {
				Backends []struct {
					Healthy bool `json:"healthy"`
				} `json:"backends"`
			}
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if err != nil {
				continue
			}
			n := 0
			for _, b := range st.Backends {
				if b.Healthy {
					n++
				}
			}
			answered = true
			best = max(best, n)
		}
		if answered {
			c.mu.Lock()
			c.samples++
			if c.min < 0 || best < c.min {
				c.min = best
			}
			c.mu.Unlock()
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A stemcell change with create-swap-delete: each web instance's new VM
// comes up before its old one goes; the old VMs (no persistent disk) keep
// serving until the load balancers consuming the web link have been
// updated to the new addresses, and are deleted last; the load balancers
// never see fewer healthy backends than the instance count.
func testCreateSwapDelete(t *testing.T, e *env) {
	m := manifestOpts{name: "csd", lbHost: 11, prefix: e.prefix, release: "2", version: "v2", stemcell: "1", webInstances: 2, vmStrategy: "create-swap-delete", canaryWatch: "1000-10000"}
	if out, err := e.deploy(t, m); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	before := e.instances(t, "csd")
	if os.Getenv("ZDT_DEBUG") != "" {
		raw, _ := e.d.output(context.Background(), "-d", "csd", "--json", "instances")
		t.Logf("first:\n%s", raw)
	}
	lbs := lbAddrs(e.prefix, 11)
	waitHealthy(t, lbs[0], 2)

	ctx, cancel := context.WithCancel(context.Background())
	c := &capacity{}
	done := make(chan struct{})
	go func() { c.run(ctx, lbs); close(done) }()
	m.stemcell = "2"
	out, err := e.deploy(t, m)
	cancel()
	<-done
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if c.samples == 0 || c.min < m.webInstances {
		t.Errorf("load balancers saw at least %d healthy backends (over %d samples), want never fewer than %d", c.min, c.samples, m.webInstances)
	}

	evs := taskEvents(t, e, out)
	when := func(stage, stepPrefix, state, textPart string) time.Time {
		for _, ev := range evs {
			if ev.Stage == stage && strings.HasPrefix(ev.Step, stepPrefix) && ev.State == state && strings.Contains(ev.Data.Text, textPart) {
				return ev.Time
			}
		}
		return time.Time{}
	}
	var lastLB time.Time
	for _, ev := range evs {
		if ev.Stage == updateStage && strings.HasPrefix(ev.Step, "lb/") && ev.State == "finished" && ev.Time.After(lastLB) {
			lastLB = ev.Time
		}
	}
	if lastLB.IsZero() {
		t.Fatal("the load balancers were not updated to the new addresses")
	}
	for _, in := range before {
		if in.Group != "web" {
			continue
		}
		name := "web/" + in.ID
		up := when(updateStage, name, "info", "replacement vm")
		fin := when(updateStage, name, "finished", "")
		del := when("Deleting replaced vms", name, "started", "")
		switch {
		case up.IsZero() || fin.IsZero() || del.IsZero():
			t.Errorf("%s: replacement up %v, updated %v, old vm deleted %v: a step is missing", name, up, fin, del)
		case !up.Before(fin) || !fin.Before(del):
			t.Errorf("%s: replacement up %v, updated %v, old vm deleted %v: want that order", name, up, fin, del)
		case del.Before(lastLB):
			t.Errorf("%s: old vm deleted at %v, before the load balancers were updated (%v)", name, del, lastLB)
		}
		if _, err := os.Stat(filepath.Join(e.work, "data", "vms", in.VMCID)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: old vm %s still exists (%v)", name, in.VMCID, err)
		}
	}
	if !slices.ContainsFunc(evs, func(ev event) bool {
		return strings.HasPrefix(ev.Step, "lb/") && strings.Contains(ev.Data.Text, "static IP: delete-create")
	}) {
		t.Error("no task event says the load balancers (static IPs) fell back to delete-create")
	}
	after := e.instances(t, "csd")
	for i, in := range after {
		if in.Group == "web" && (in.VMCID == before[i].VMCID || slices.Equal(in.IPs, before[i].IPs)) {
			t.Errorf("web/%s kept vm %s at %v", in.ID, in.VMCID, in.IPs)
		}
	}
	// The old addresses are free again: scaling up reuses the pool
	// without a reservation conflict.
	if os.Getenv("ZDT_DEBUG") != "" {
		raw, _ := e.d.output(context.Background(), "-d", "csd", "--json", "instances")
		t.Logf("after csd:\n%s", raw)
	}
	m.webInstances = 3
	if out, err := e.deploy(t, m); err != nil {
		t.Fatalf("scale up after create-swap-delete: %v\n%s", err, out)
	}
	if os.Getenv("ZDT_DEBUG") != "" {
		raw, _ := e.d.output(context.Background(), "-d", "csd", "--json", "instances")
		t.Logf("after scale:\n%s", raw)
	}
}

// waitHealthy waits until the load balancer has n backends in service.
func waitHealthy(t *testing.T, lb string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if code, body := answer(lb, "/_lb/status"); code == 200 && strings.Count(body, `"healthy":true`) >= n {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("load balancer %s: fewer than %d backends in service after 20s", lb, n)
}

// A canary that never becomes healthy: without auto_rollback the deploy
// fails and the untouched instance keeps serving v2 as it was; with
// auto_rollback the failed instances are redeployed from the last
// successful manifest, its `latest` release pinned to the version the
// untouched instances run (2, not the newest upload 3), and every instance
// is again exactly as it was.
func testAutoRollback(t *testing.T, e *env) {
	m := manifestOpts{name: "rb", lbs: -1, prefix: e.prefix, release: "latest", version: "v2", stemcell: "1", webInstances: 2, canaryWatch: "1000-3000"}
	if out, err := e.deploy(t, m); err != nil { // latest is 2 here
		t.Fatalf("%v\n%s", err, out)
	}
	e.must(t, "upload-release", e.broken) // latest is 3 from now on
	good := e.instances(t, "rb")
	serving := func(when string) (v2 int) {
		for _, in := range e.instances(t, "rb") {
			code, body := answer(in.addr()+":8080", "/")
			if code == 200 && strings.HasPrefix(body, "v2 ") {
				v2++
			}
		}
		return v2
	}

	bad := m
	bad.version = "v3"
	out, err := e.deploy(t, bad)
	if err == nil {
		t.Fatalf("v3 deployed although its health never passes:\n%s", out)
	}
	now := e.instances(t, "rb")
	same := 0
	for i := range now {
		if applied(t, now[i].Spec) == applied(t, good[i].Spec) {
			same++
		}
	}
	if same != 2 {
		// The failed canary's record still holds v2 (its update did not
		// finish); the other instance was not touched at all.
		t.Errorf("%d of 2 instance records unchanged after a failed canary, want 2", same)
	}
	if n := serving("after the failed canary"); n != 1 {
		t.Errorf("%d instances answer v2 after the failed canary, want 1 (the untouched one)", n)
	}

	bad.autoRollback = true
	out, err = e.deploy(t, bad)
	if err == nil {
		t.Fatalf("v3 with auto_rollback succeeded:\n%s", out)
	}
	if !strings.Contains(out, "rolled back to manifest") {
		t.Errorf("the deploy's error does not say it rolled back:\n%s", tail(out, 10))
	}
	evs := taskEvents(t, e, out)
	if !slices.ContainsFunc(evs, func(ev event) bool {
		return ev.Stage == "Rolling back" && strings.Contains(ev.Data.Text, "not running after")
	}) {
		t.Error("no task event says what was rolled back and why")
	}
	if !slices.ContainsFunc(evs, func(ev event) bool {
		return ev.Stage == "Rolling back" && strings.Contains(ev.Data.Text, "pinned") && strings.Contains(ev.Data.Text, "web 2")
	}) {
		t.Error("no task event says the rollback pinned release web to version 2")
	}
	now = e.instances(t, "rb")
	for i := range now {
		if got, want := applied(t, now[i].Spec), applied(t, good[i].Spec); got != want {
			t.Errorf("web/%s after rollback:\n got %s\nwant %s", now[i].ID, got, want)
		}
	}
	if n := serving("after the rollback"); n != 2 {
		t.Errorf("%d instances answer v2 after the rollback, want 2", n)
	}
	pinnedV2 := m
	pinnedV2.release = "2"
	if out, err := e.deploy(t, pinnedV2); err != nil || !strings.Contains(out, "No changes") {
		t.Errorf("redeploying release 2 with v2 after the rollback should change nothing (err %v):\n%s", err, tail(out, 5))
	}
}

// Pause stops a rollout after the batch in flight, every instance either
// updated or untouched and serving; resume finishes it.
func testPauseResume(t *testing.T, e *env) {
	m := manifestOpts{name: "pz", lbs: -1, prefix: e.prefix, release: "2", version: "v2", stemcell: "1", webInstances: 3}
	if out, err := e.deploy(t, m); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	next := m
	next.version = "v2-next"
	p := e.write(t, "pz-next.yml", manifest(next))
	type res struct {
		out string
		err error
	}
	done := make(chan res, 1)
	go func() {
		out, err := e.d.run(context.Background(), "-d", "pz", "deploy", p)
		done <- res{out, err}
	}()
	// Pause once the canary is done.
	deadline := time.Now().Add(60 * time.Second)
	paused := false
	for !paused && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		for _, in := range e.instances(t, "pz") {
			if code, body := answer(in.addr()+":8080", "/"); code == 200 && strings.HasPrefix(body, "v2-next ") {
				if _, err := e.d.run(context.Background(), "-d", "pz", "pause"); err != nil {
					t.Fatal(err)
				}
				paused = true
				break
			}
		}
	}
	if !paused {
		t.Fatal("no instance answered v2-next within 60s")
	}
	r := <-done
	if r.err == nil || !strings.Contains(r.out, "rollout paused") {
		t.Fatalf("the paused deploy should fail saying it paused (err %v):\n%s", r.err, tail(r.out, 10))
	}
	versions := map[string]int{}
	for _, in := range e.instances(t, "pz") {
		code, body := answer(in.addr()+":8080", "/")
		if code != 200 {
			t.Errorf("web/%s answers %d %q while paused", in.ID, code, body)
			continue
		}
		versions[strings.Fields(body)[0]]++
	}
	if versions["v2-next"] < 1 || versions["v2"] < 1 || versions["v2-next"]+versions["v2"] != 3 {
		t.Errorf("while paused: %v, want some updated, some not, all serving", versions)
	}
	out, err := e.d.run(context.Background(), "-d", "pz", "resume")
	if err != nil {
		t.Fatalf("resume: %v\n%s", err, out)
	}
	for _, in := range e.instances(t, "pz") {
		if code, body := answer(in.addr()+":8080", "/"); code != 200 || !strings.HasPrefix(body, "v2-next ") {
			t.Errorf("web/%s after resume: %d %q", in.ID, code, body)
		}
	}
	if _, err := e.d.run(context.Background(), "-d", "pz", "pause"); err == nil {
		t.Error("pause with no rollout under way succeeded")
	}
}

// cancel-task during a create-swap-delete rollout stops it at a safe
// point: no VM is left that no instance holds, every instance serves, and
// the next deploy finishes the change.
func testCancel(t *testing.T, e *env) {
	m := manifestOpts{name: "csd", lbHost: 11, prefix: e.prefix, release: "2", version: "v2", stemcell: "1", webInstances: 3, vmStrategy: "create-swap-delete"}
	p := e.write(t, "csd-cancel.yml", manifest(m))
	type res struct {
		out string
		err error
	}
	done := make(chan res, 1)
	go func() {
		out, err := e.d.run(context.Background(), "-d", "csd", "deploy", p)
		done <- res{out, err}
	}()
	// Cancel once the first replacement VM exists (the local CPI makes
	// its directory) and its agent has had time to come up.
	vmDir := filepath.Join(e.work, "data", "vms")
	count := func() int { es, _ := os.ReadDir(vmDir); return len(es) }
	baseline := count()
	deadline := time.Now().Add(90 * time.Second)
	for count() <= baseline && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond)
	out, err := e.d.output(context.Background(), "--json", "tasks")
	if err != nil {
		t.Fatal(err)
	}
	var tasks []struct {
		ID         uint64 `json:"id"`
		Deployment string `json:"deployment"`
	}
	if err := json.Unmarshal([]byte(out), &tasks); err != nil {
		t.Fatalf("tasks --json: %v\n%s", err, out)
	}
	cancelled := false
	for _, tk := range tasks {
		if tk.Deployment == "csd" {
			e.must(t, "cancel-task", fmt.Sprint(tk.ID))
			cancelled = true
		}
	}
	if !cancelled {
		t.Fatalf("no running task of csd to cancel (replacement vm seen: %v)", count() > baseline)
	}
	r := <-done
	if r.err == nil {
		t.Fatalf("the cancelled deploy succeeded:\n%s", tail(r.out, 10))
	}
	e.checkVMs(t)
	if os.Getenv("ZDT_DEBUG") != "" {
		raw, _ := e.d.output(context.Background(), "-d", "csd", "--json", "instances")
		t.Logf("after cancel:\n%s", raw)
		raw, _ = e.d.output(context.Background(), "-d", "csd", "--json", "vms")
		t.Logf("vms after cancel:\n%s", raw)
	}
	for _, in := range e.instances(t, "csd") {
		if in.Group != "web" {
			continue
		}
		if code, body := answer(in.addr()+":8080", "/"); code != 200 {
			t.Errorf("web/%s after cancel: %d %q", in.ID, code, body)
		}
	}
	if out, err := e.d.run(context.Background(), "-d", "csd", "deploy", p); err != nil {
		t.Fatalf("deploy after cancel: %v\n%s", err, out)
	}
	e.checkVMs(t)
	for _, in := range e.instances(t, "csd") {
		var sp struct {
			Stemcell struct {
				Version string `json:"version"`
			} `json:"stemcell"`
		}
		json.Unmarshal(in.Spec, &sp)
		if sp.Stemcell.Version != "1" {
			t.Errorf("%s/%s not on stemcell 1 after the second deploy", in.Group, in.ID)
		}
	}
}

// checkVMs fails unless the local CPI's VMs are exactly the instances'.
func (e *env) checkVMs(t *testing.T) {
	t.Helper()
	want := map[string]bool{}
	out, err := e.d.output(context.Background(), "--json", "deployments")
	if err != nil {
		t.Fatal(err)
	}
	var deps []struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal([]byte(out), &deps); err != nil {
		t.Fatalf("deployments --json: %v\n%s", err, out)
	}
	for _, dep := range deps {
		for _, in := range e.instances(t, dep.Name) {
			if in.VMCID != "" {
				want[in.VMCID] = true
			}
		}
	}
	entries, err := os.ReadDir(filepath.Join(e.work, "data", "vms"))
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range entries {
		if !want[de.Name()] {
			t.Errorf("vm %s exists but no instance holds it", de.Name())
		}
		delete(want, de.Name())
	}
	for cid := range want {
		t.Errorf("instance vm %s does not exist", cid)
	}
}

// create-swap-delete with a persistent disk: the old VM is taken down first,
// the disk (and its data) moves to the replacement, the old VM goes.
func testCreateSwapDeleteDisk(t *testing.T, e *env) {
	m := manifestOpts{name: "dk", lbs: -1, prefix: e.prefix, release: "2", version: "v2", stemcell: "1", webInstances: 1, disk: 1024, vmStrategy: "create-swap-delete"}
	if out, err := e.deploy(t, m); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var rec struct {
		VMCID    string   `json:"vm_cid"`
		DiskCIDs []string `json:"disk_cids"`
	}
	load := func() instanceView {
		is := e.instances(t, "dk")
		if len(is) != 1 {
			t.Fatalf("%d instances, want 1", len(is))
		}
		out, _ := e.d.output(context.Background(), "-d", "dk", "--json", "instances")
		var recs []json.RawMessage
		json.Unmarshal([]byte(out), &recs)
		if len(recs) == 1 {
			json.Unmarshal(recs[0], &rec)
		}
		return is[0]
	}
	before := load()
	if len(rec.DiskCIDs) != 1 {
		t.Fatalf("disks %v, want one", rec.DiskCIDs)
	}
	disk := rec.DiskCIDs[0]
	marker := filepath.Join(e.work, "data", "disks", disk, "data", "zdt-marker")
	if err := os.WriteFile(marker, []byte("kept"), 0o644); err != nil {
		t.Fatalf("the local CPI's disk directory: %v", err)
	}
	m.stemcell = "2"
	out, err := e.deploy(t, m)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	after := load()
	if after.VMCID == before.VMCID {
		t.Fatal("the vm was not replaced")
	}
	if len(rec.DiskCIDs) != 1 || rec.DiskCIDs[0] != disk {
		t.Errorf("disks after: %v, want %s", rec.DiskCIDs, disk)
	}
	if raw, err := os.ReadFile(marker); err != nil || string(raw) != "kept" {
		t.Errorf("data on the disk after the swap: %q, %v", raw, err)
	}
	settings, err := os.ReadFile(filepath.Join(e.work, "data", "vms", after.VMCID, "settings.json"))
	if err != nil || !strings.Contains(string(settings), disk) {
		t.Errorf("the new vm's settings do not name disk %s (%v)", disk, err)
	}
	if _, err := os.Stat(filepath.Join(e.work, "data", "vms", before.VMCID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old vm %s still exists (%v)", before.VMCID, err)
	}
	evs := taskEvents(t, e, out)
	if !slices.ContainsFunc(evs, func(ev event) bool { return strings.Contains(ev.Data.Text, "persistent disk moves to it") }) {
		t.Error("no task event says the disk moves to the replacement")
	}
	if code, body := answer(after.addr()+":8080", "/"); code != 200 || !strings.HasPrefix(body, "v2 ") {
		t.Errorf("after the swap: %d %q", code, body)
	}
}

// An in-place change (the version property) with max_surge 1 on 4 web
// instances behind the load balancers: each web instance's new version
// comes up on a replacement VM at a new address before its old VM leaves,
// one at a time; the load balancers never see fewer healthy backends than
// the instance count, and answer v2 afterwards.
func testSurge(t *testing.T, e *env) {
	m := manifestOpts{name: "sg", lbHost: 13, prefix: e.prefix, release: "2", version: "v1", stemcell: "1", webInstances: 4}
	deploy := func() (string, error) {
		t.Helper()
		text := strings.Replace(manifest(m), "update:\n", "update:\n  max_surge: 1\n", 1)
		return e.d.run(context.Background(), "-d", m.name, "deploy", e.write(t, m.name+".yml", text))
	}
	if out, err := deploy(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	before := e.instances(t, "sg")
	lbs := lbAddrs(e.prefix, 13)
	for _, lb := range lbs {
		waitHealthy(t, lb, m.webInstances)
	}

	ctx, cancel := context.WithCancel(context.Background())
	c := &capacity{}
	done := make(chan struct{})
	go func() { c.run(ctx, lbs); close(done) }()
	m.version = "v2"
	began := time.Now()
	out, err := deploy()
	wall := time.Since(began)
	cancel()
	<-done
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("surge: %d web instances, max_surge 1: fewest healthy backends %d over %d samples (every 50 ms), deploy wall time %s", m.webInstances, c.min, c.samples, wall.Round(10*time.Millisecond))
	if c.samples == 0 || c.min < m.webInstances {
		t.Errorf("load balancers saw at least %d healthy backends (over %d samples), want never fewer than %d", c.min, c.samples, m.webInstances)
	}

	evs := taskEvents(t, e, out)
	// One replacement in flight at a time: each web update starts after
	// the previous one finished.
	type span struct{ start, end time.Time }
	var webs []span
	for _, in := range before {
		if in.Group != "web" {
			continue
		}
		name := "web/" + in.ID
		var sp span
		noted := false
		for _, ev := range evs {
			if ev.Stage != updateStage || !strings.HasPrefix(ev.Step, name) {
				continue
			}
			switch {
			case ev.State == "started":
				sp.start = ev.Time
			case ev.State == "finished":
				sp.end = ev.Time
			case ev.State == "info" && strings.HasPrefix(ev.Data.Text, "max_surge:"):
				noted = true
			}
		}
		if sp.start.IsZero() || sp.end.IsZero() || !noted {
			t.Errorf("%s: update started %v, finished %v, max_surge noted %v", name, sp.start, sp.end, noted)
		}
		webs = append(webs, sp)
		if _, err := os.Stat(filepath.Join(e.work, "data", "vms", in.VMCID)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: old vm %s still exists (%v)", name, in.VMCID, err)
		}
	}
	slices.SortFunc(webs, func(a, b span) int { return a.start.Compare(b.start) })
	for i := 1; i < len(webs); i++ {
		if webs[i].start.Before(webs[i-1].end) {
			t.Errorf("web updates overlap (%v–%v and %v–%v): want at most max_surge (1) at once", webs[i-1].start, webs[i-1].end, webs[i].start, webs[i].end)
		}
	}
	if !slices.ContainsFunc(evs, func(ev event) bool {
		return strings.HasPrefix(ev.Step, "lb/") && strings.Contains(ev.Data.Text, "max_surge does not apply to an instance with a static IP")
	}) {
		t.Error("no task event says max_surge does not apply to the load balancers (static IPs)")
	}
	after := e.instances(t, "sg")
	for i, in := range after {
		if in.Group == "web" && (in.VMCID == before[i].VMCID || in.addr() == before[i].addr()) {
			t.Errorf("web/%s kept vm %s at %s", in.ID, in.VMCID, in.addr())
		}
	}
	for _, lb := range lbs {
		for range 8 {
			if code, body := answer(lb, "/"); code != 200 || !strings.HasPrefix(body, "v2 ") {
				t.Errorf("after the surge, lb %s answers %d %q, want v2", lb, code, body)
				break
			}
		}
	}
}
