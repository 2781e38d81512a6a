package update_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compleat/compleat/director/manifest"
	"github.com/compleat/compleat/director/update"
	"github.com/compleat/compleat/director/update/updatetest"
)

func upd(canaries, inFlight int, serial bool) manifest.Update {
	return manifest.Update{
		Canaries:        manifest.Amount{N: canaries},
		MaxInFlight:     manifest.Amount{N: inFlight},
		CanaryWatchTime: manifest.WatchTime{Min: 0, Max: 0},
		UpdateWatchTime: manifest.WatchTime{Min: 0, Max: 0},
		Serial:          serial,
	}
}

// group makes n existing, changed instances in the given AZs (round robin)
// and seeds them in the fake.
func group(x *updatetest.Executor, name string, n int, u manifest.Update, azs ...string) update.Group {
	if len(azs) == 0 {
		azs = []string{"z1"}
	}
	g := update.Group{Name: name, Update: u, AZs: azs}
	for i := range n {
		in := update.Instance{Group: name, ID: fmt.Sprintf("%s%d", name[:1], i), Index: i, AZ: azs[i%len(azs)], Changes: []string{"properties changed"}}
		x.Seed(in)
		g.Instances = append(g.Instances, in)
	}
	return g
}

// span is when an instance's first and last steps happened.
type span struct{ first, last time.Time }

func spans(x *updatetest.Executor) map[string]span {
	out := map[string]span{}
	for _, s := range x.Timeline() {
		if s.Step == "post-deploy" {
			continue
		}
		sp, ok := out[s.Instance]
		if !ok {
			sp.first = s.At
		}
		sp.last = s.At
		out[s.Instance] = sp
	}
	return out
}

// maxOverlap is the most instances (with the prefix) in flight at once.
func maxOverlap(x *updatetest.Executor, prefix string) int {
	type ev struct {
		at    time.Time
		delta int
	}
	var evs []ev
	for name, sp := range spans(x) {
		if strings.HasPrefix(name, prefix) {
			evs = append(evs, ev{sp.first, 1}, ev{sp.last, -1})
		}
	}
	slices.SortFunc(evs, func(a, b ev) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.delta - b.delta // ends before starts at the same instant
	})
	cur, best := 0, 0
	for _, e := range evs {
		cur += e.delta
		best = max(best, cur)
	}
	return best
}

type recorder struct {
	mu sync.Mutex
	ev []update.Event
}

func (r *recorder) Report(e update.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ev = append(r.ev, e)
}

var fullUpdate = []string{"pre-stop", "drain", "stop", "apply", "pre-start", "start", "running", "post-start", "post-deploy"}

func TestCanaryFirstThenBatches(t *testing.T) {
	t.Parallel()
	x := updatetest.New()
	x.Delay["start"] = 5 * time.Millisecond
	g := group(x, "web", 5, upd(1, 2, true))
	rec := &recorder{}
	res, err := update.New(x, nil).Run(context.Background(), update.Rollout{Deployment: "d", Groups: []update.Group{g}}, update.Options{Reporter: rec})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Updated) != 5 || len(res.Failed) != 0 {
		t.Fatalf("result %+v", res)
	}
	sp := spans(x)
	canary := sp["web/w0"]
	for _, name := range []string{"web/w1", "web/w2", "web/w3", "web/w4"} {
		if sp[name].first.Before(canary.last) {
			t.Errorf("%s started before the canary finished", name)
		}
	}
	if m := maxOverlap(x, "web/"); m > 2 {
		t.Errorf("%d instances in flight, max_in_flight is 2", m)
	}
	if got := x.StepsOf("web/w3"); !slices.Equal(got, fullUpdate) {
		t.Errorf("steps of web/w3 = %v, want %v", got, fullUpdate)
	}
	var first update.Event
	for _, e := range rec.ev {
		if e.Stage == "Updating instance" {
			first = e
			break
		}
	}
	if first.Task != "web/w0 (canary)" || first.Index != 1 || first.Total != 5 || first.State != "started" || first.Instance.ID != "w0" {
		t.Errorf("first update event = %+v", first)
	}
}

func TestNoPostDeployOutsideDeploys(t *testing.T) {
	t.Parallel()
	x := updatetest.New()
	g := group(x, "web", 3, upd(1, 2, true))
	rec := &recorder{}
	res, err := update.New(x, nil).Run(context.Background(), update.Rollout{Deployment: "d", Groups: []update.Group{g}}, update.Options{Reporter: rec, NoPostDeploy: true})
	if err != nil || len(res.Updated) != 3 {
		t.Fatalf("result %+v, %v", res, err)
	}
	for _, s := range x.Timeline() {
		if s.Step == "post-deploy" {
			t.Errorf("post-deploy ran on %s", s.Instance)
		}
	}
	for _, e := range rec.ev {
		if e.Stage == "Running post-deploy" {
			t.Errorf("event %+v", e)
		}
	}
	if got := x.StepsOf("web/w1"); !slices.Equal(got, fullUpdate[:len(fullUpdate)-1]) {
		t.Errorf("steps of web/w1 = %v", got)
	}
}

func TestBatchesNeverSpanAZsAndPercentages(t *testing.T) {
	t.Parallel()
	x := updatetest.New()
	u := upd(1, 0, true)
	u.MaxInFlight = manifest.Amount{N: 30, Percent: true}
	g := group(x, "web", 10, u, "z1", "z2")
	var got []string
	for _, b := range update.Batches(g) {
		var names []string
		azs := map[string]bool{}
		for _, in := range b.Instances {
			names = append(names, in.ID)
			azs[in.AZ] = true
		}
		if !b.Canary && len(azs) != 1 {
			t.Errorf("batch %v spans AZs", names)
		}
		if !b.Canary && len(b.Instances) > 3 {
			t.Errorf("batch %v exceeds 30%% of 10", names)
		}
		got = append(got, fmt.Sprintf("%v%s", b.Canary, names))
	}
	want := []string{"true[w0]", "false[w2 w4 w6]", "false[w8]", "false[w1 w3 w5]", "false[w7 w9]"}
	if !slices.Equal(got, want) {
		t.Errorf("batches %v, want %v", got, want)
	}
}

func TestFailedCanaryStopsWithTheRestUntouched(t *testing.T) {
	t.Parallel()
	x := updatetest.New()
	g := group(x, "web", 4, upd(1, 2, true))
	x.NeverRunning["web/w0"] = true
	g.Update.CanaryWatchTime = manifest.WatchTime{Min: time.Millisecond, Max: 5 * time.Millisecond}
	res, err := update.New(x, nil).Run(context.Background(), update.Rollout{Groups: []update.Group{g}}, update.Options{MinWatchStep: time.Millisecond})
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{"web/w0 (canary)", "not running after 5ms", "process web: failing", "address already in use"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
	for _, name := range []string{"web/w1", "web/w2", "web/w3"} {
		if steps := x.StepsOf(name); len(steps) != 0 {
			t.Errorf("%s was touched: %v", name, steps)
		}
		if vm, _ := x.VM(name); !vm.Running || vm.Applied != 1 {
			t.Errorf("%s is not as it was: %+v", name, vm)
		}
	}
	if len(res.Failed) != 1 || res.Failed[0].ID != "w0" || len(res.Touched) != 1 {
		t.Errorf("result %+v", res)
	}
	// Checks followed the watch schedule: at 1ms, then every 1ms up to 5ms.
	checks := 0
	for _, s := range x.StepsOf("web/w0") {
		if s == "running" {
			checks++
		}
	}
	if want := len(update.WatchSchedule(g.Update.CanaryWatchTime, time.Millisecond)); checks != want {
		t.Errorf("%d checks, want %d", checks, want)
	}
}

func TestFailedBatchFinishesItsPeersAndStops(t *testing.T) {
	t.Parallel()
	x := updatetest.New()
	x.Delay["apply"] = 10 * time.Millisecond
	g := group(x, "web", 7, upd(1, 3, true))
	x.Fail["web/w1"] = "apply"
	res, err := update.New(x, nil).Run(context.Background(), update.Rollout{Groups: []update.Group{g}}, update.Options{})
	if err == nil || !strings.Contains(err.Error(), "update web/w1: apply") {
		t.Fatalf("err = %v", err)
	}
	// Batch 1 (w1 w2 w3): w2 and w3 finish; batch 2 (w4..w6) untouched.
	for _, name := range []string{"web/w2", "web/w3"} {
		if steps := x.StepsOf(name); !slices.Contains(steps, "post-start") {
			t.Errorf("%s did not finish: %v", name, steps)
		}
	}
	for _, name := range []string{"web/w4", "web/w5", "web/w6"} {
		if steps := x.StepsOf(name); len(steps) != 0 {
			t.Errorf("%s was touched: %v", name, steps)
		}
	}
	if len(res.Updated) != 3 || len(res.Failed) != 1 {
		t.Errorf("result: updated %d failed %d", len(res.Updated), len(res.Failed))
	}
	for _, s := range x.Timeline() {
		if s.Step == "post-deploy" {
			t.Errorf("post-deploy ran after a failure")
		}
	}
}

func TestSerialAndParallelGroups(t *testing.T) {
	t.Parallel()
	x := updatetest.New()
	x.Delay["start"] = 25 * time.Millisecond
	a := group(x, "alpha", 2, upd(1, 1, true))
	b := group(x, "bravo", 2, upd(1, 1, false))
	c := group(x, "charlie", 2, upd(1, 1, false))
	d := group(x, "delta", 2, upd(1, 1, true))
	waves := update.Waves([]update.Group{a, b, c, d})
	if len(waves) != 3 || len(waves[1]) != 2 {
		t.Fatalf("waves = %d (%v)", len(waves), waves)
	}
	if _, err := update.New(x, nil).Run(context.Background(), update.Rollout{Groups: []update.Group{a, b, c, d}}, update.Options{}); err != nil {
		t.Fatal(err)
	}
	sp := spans(x)
	last := func(prefix string) time.Time {
		var t time.Time
		for n, s := range sp {
			if strings.HasPrefix(n, prefix) && s.last.After(t) {
				t = s.last
			}
		}
		return t
	}
	first := func(prefix string) time.Time {
		t := time.Now()
		for n, s := range sp {
			if strings.HasPrefix(n, prefix) && s.first.Before(t) {
				t = s.first
			}
		}
		return t
	}
	if first("bravo/").Before(last("alpha/")) || first("charlie/").Before(last("alpha/")) {
		t.Errorf("non-serial groups started before the serial group before them finished")
	}
	// bravo and charlie ran together: each started before the other ended.
	if !first("charlie/").Before(last("bravo/")) || !first("bravo/").Before(last("charlie/")) {
		t.Errorf("bravo and charlie did not update together")
	}
	if first("delta/").Before(last("bravo/")) || first("delta/").Before(last("charlie/")) {
		t.Errorf("serial delta started before the groups before it finished")
	}
}

func TestOnlyChangedInstancesAreTouchedAndDeletionsComeLast(t *testing.T) {
	t.Parallel()
	x := updatetest.New()
	g := group(x, "web", 3, upd(1, 1, true))
	g.Instances[1].Changes = nil
	gone := update.Instance{Group: "web", ID: "old", Index: 3, AZ: "z1"}
	x.Seed(gone)
	newbie := update.Instance{Group: "web", ID: "new", Index: 4, AZ: "z1", New: true, Changes: []string{"new"}}
	g.Instances = append(g.Instances, newbie)
	recreate := g.Instances[2]
	g.Instances[2].Recreate = true
	g.Instances[0].DiskChange = true
	diskBefore, _ := x.VM("web/w0")
	vmBefore, _ := x.VM(recreate.Name())

	ghost := update.Instance{Group: "web", ID: "ghost", Index: 5, AZ: "z1", New: true} // recorded, but its VM is gone
	res, err := update.New(x, nil).Run(context.Background(), update.Rollout{Groups: []update.Group{g}, Delete: []update.Instance{gone, ghost}}, update.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if steps := x.StepsOf("web/w1"); !slices.Equal(steps, []string{"post-deploy"}) {
		t.Errorf("unchanged web/w1 got steps %v, want only post-deploy", steps)
	}
	if res.Skipped != 1 {
		t.Errorf("skipped = %d", res.Skipped)
	}
	if steps := x.StepsOf("web/new"); !slices.Equal(steps, []string{"create-vm", "apply", "pre-start", "start", "running", "post-start", "post-deploy"}) {
		t.Errorf("new instance steps %v", steps)
	}
	if steps := x.StepsOf("web/old"); !slices.Equal(steps, []string{"pre-stop", "drain", "stop", "delete"}) {
		t.Errorf("deleted instance steps %v", steps)
	}
	if steps := x.StepsOf("web/w0"); !slices.Equal(steps, []string{"pre-stop", "drain", "stop", "update-disk", "apply", "pre-start", "start", "running", "post-start", "post-deploy"}) {
		t.Errorf("disk change steps %v", steps)
	}
	if after, _ := x.VM("web/w0"); after.Disk == diskBefore.Disk {
		t.Errorf("disk not replaced: %v", after.Disk)
	}
	if steps := x.StepsOf("web/ghost"); !slices.Equal(steps, []string{"delete"}) {
		t.Errorf("VM-less deleted instance steps %v", steps)
	}
	if _, ok := x.VM("web/old"); ok {
		t.Errorf("deleted instance still has a vm")
	}
	vmAfter, _ := x.VM(recreate.Name())
	if vmAfter.CID == vmBefore.CID || vmAfter.Disk != vmBefore.Disk {
		t.Errorf("recreate: before %+v after %+v (want a new vm with the same disk)", vmBefore, vmAfter)
	}
	// Deletion came after every update.
	tl := x.Timeline()
	del := slices.IndexFunc(tl, func(s updatetest.Step) bool { return s.Instance == "web/old" || s.Instance == "web/ghost" })
	for _, s := range tl[del:] {
		if s.Instance != "web/old" && s.Instance != "web/ghost" && s.Step != "post-deploy" {
			t.Errorf("%s %s happened after deletion began", s.Instance, s.Step)
		}
	}
}

func TestNoChangesTouchesNothing(t *testing.T) {
	t.Parallel()
	x := updatetest.New()
	g := group(x, "web", 3, upd(1, 1, true))
	for i := range g.Instances {
		g.Instances[i].Changes = nil
	}
	res, err := update.New(x, nil).Run(context.Background(), update.Rollout{Groups: []update.Group{g}}, update.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if tl := x.Timeline(); len(tl) != 0 {
		t.Errorf("a no-op rollout made %d calls: %v", len(tl), tl)
	}
	if res.Skipped != 3 || len(res.Touched) != 0 {
		t.Errorf("result %+v", res)
	}
}

func TestSlowStartWithinWatchTime(t *testing.T) {
	t.Parallel()
	x := updatetest.New()
	g := group(x, "web", 1, upd(1, 1, true))
	g.Update.CanaryWatchTime = manifest.WatchTime{Min: time.Millisecond, Max: 50 * time.Millisecond}
	x.SlowStart["web/w0"] = 2
	if _, err := update.New(x, nil).Run(context.Background(), update.Rollout{Groups: []update.Group{g}}, update.Options{MinWatchStep: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
}

func TestWatchSchedule(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	for _, c := range []struct {
		w    manifest.WatchTime
		want []time.Duration
	}{
		{manifest.WatchTime{Min: 1000 * ms, Max: 1000 * ms}, []time.Duration{1000 * ms}},
		{manifest.WatchTime{Min: 1000 * ms, Max: 3000 * ms}, []time.Duration{1000 * ms, 2000 * ms, 3000 * ms}},
		{manifest.WatchTime{Min: 1000 * ms, Max: 1500 * ms}, []time.Duration{1000 * ms, 1500 * ms}},
		{manifest.WatchTime{Min: 0, Max: 90 * time.Second}, []time.Duration{0, 10 * time.Second, 20 * time.Second, 30 * time.Second, 40 * time.Second, 50 * time.Second, 60 * time.Second, 70 * time.Second, 80 * time.Second, 90 * time.Second}},
	} {
		if got := update.WatchSchedule(c.w, time.Second); !slices.Equal(got, c.want) {
			t.Errorf("WatchSchedule(%v) = %v, want %v", c.w, got, c.want)
		}
	}
}

func TestPauseAfterCurrentBatch(t *testing.T) {
	t.Parallel()
	x := updatetest.New()
	g := group(x, "web", 5, upd(1, 2, true))
	var mu sync.Mutex
	pause := false
	x.Delay["apply"] = time.Millisecond
	rec := &pauser{onFinish: func() { mu.Lock(); pause = true; mu.Unlock() }}
	res, err := update.New(x, nil).Run(context.Background(), update.Rollout{Groups: []update.Group{g}}, update.Options{
		Reporter: rec,
		Pause:    func() bool { mu.Lock(); defer mu.Unlock(); return pause },
	})
	if !errors.Is(err, update.ErrPaused) {
		t.Fatalf("err = %v, want ErrPaused", err)
	}
	if len(res.Updated) != 1 || res.Updated[0].ID != "w0" {
		t.Errorf("updated %v, want the canary only", res.Updated)
	}
	for _, name := range []string{"web/w1", "web/w2", "web/w3", "web/w4"} {
		if steps := x.StepsOf(name); len(steps) != 0 {
			t.Errorf("%s touched after pause: %v", name, steps)
		}
	}
}

// pauser asks for a pause when the first instance finishes.
type pauser struct{ onFinish func() }

func (p *pauser) Report(e update.Event) {
	if e.Stage == "Updating instance" && e.State == "finished" {
		p.onFinish()
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	x := updatetest.New()
	x.Delay["start"] = time.Second
	g := group(x, "web", 3, upd(1, 1, true))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := update.New(x, nil).Run(ctx, update.Rollout{Groups: []update.Group{g}}, update.Options{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if steps := x.StepsOf("web/w2"); len(steps) != 0 {
		t.Errorf("web/w2 touched after cancel: %v", steps)
	}
}

func TestUnansweredChecksAreRetriedUntilTheLast(t *testing.T) {
	t.Parallel()
	x := updatetest.New()
	g := group(x, "web", 2, upd(1, 1, true))
	g.Update.CanaryWatchTime = manifest.WatchTime{Min: time.Millisecond, Max: 20 * time.Millisecond}
	g.Update.UpdateWatchTime = g.Update.CanaryWatchTime
	x.CheckErrors["web/w0"] = 2
	x.CheckErrors["web/w1"] = 1000
	_, err := update.New(x, nil).Run(context.Background(), update.Rollout{Groups: []update.Group{g}}, update.Options{MinWatchStep: time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "update web/w1: not running after 20ms") || !strings.Contains(err.Error(), "did not answer") {
		t.Fatalf("err = %v", err)
	}
	if steps := x.StepsOf("web/w0"); !slices.Contains(steps, "post-start") {
		t.Errorf("web/w0 should pass once its agent answers: %v", steps)
	}
}

func TestDeletionsContinuePastAFailure(t *testing.T) {
	t.Parallel()
	x := updatetest.New()
	var gone []update.Instance
	for i := range 4 {
		in := update.Instance{Group: "web", ID: fmt.Sprintf("d%d", i), Index: i}
		x.Seed(in)
		gone = append(gone, in)
	}
	x.Fail["web/d1"] = "delete"
	res, err := update.New(x, nil).Run(context.Background(), update.Rollout{Delete: gone}, update.Options{Parallel: 1})
	if err == nil || !strings.Contains(err.Error(), "delete web/d1") {
		t.Fatalf("err = %v", err)
	}
	if len(res.Deleted) != 3 {
		t.Errorf("deleted %d of the 3 deletable instances", len(res.Deleted))
	}
	for _, name := range []string{"web/d0", "web/d2", "web/d3"} {
		if _, ok := x.VM(name); ok {
			t.Errorf("%s still has a vm", name)
		}
	}
}

func TestCreateSwapDelete(t *testing.T) {
	t.Parallel()
	x := updatetest.NewSwap()
	u := upd(1, 1, true)
	u.VMStrategy = manifest.CreateSwapDelete
	g := group(x.Executor, "web", 3, u)
	for i := range g.Instances {
		g.Instances[i].Recreate = true
	}
	g.Instances[2].StaticIP = true
	before, _ := x.VM("web/w0")
	rec := &recorder{}
	if _, err := update.New(x, nil).Run(context.Background(), update.Rollout{Groups: []update.Group{g}}, update.Options{Reporter: rec}); err != nil {
		t.Fatal(err)
	}
	want := []string{"create-replacement-vm", "pre-stop", "drain", "stop", "swap-vm", "apply", "pre-start", "start", "running", "post-start", "delete-replaced-vm", "post-deploy"}
	if got := x.StepsOf("web/w0"); !slices.Equal(got, want) {
		t.Errorf("create-swap-delete steps %v, want %v", got, want)
	}
	after, _ := x.VM("web/w0")
	if after.CID == before.CID || after.Disk != before.Disk || after.Next != "" || after.Replaced != "" {
		t.Errorf("before %+v after %+v: want a new vm, the same disk, nothing left over", before, after)
	}
	// A static IP falls back to delete-create, and the task says so.
	if got := x.StepsOf("web/w2"); !slices.Contains(got, "recreate-vm") || slices.Contains(got, "swap-vm") {
		t.Errorf("static-IP instance steps %v", got)
	}
	notes := 0
	for _, e := range rec.ev {
		if e.State == "info" && e.Instance.ID == "w2" && strings.Contains(e.Note, "static IP") {
			notes++
		}
	}
	if notes != 1 {
		t.Errorf("%d fallback notes for web/w2, want 1", notes)
	}
}

func TestCreateSwapDeleteFailureBeforeSwapLeavesTheOldVMServing(t *testing.T) {
	t.Parallel()
	x := updatetest.NewSwap()
	u := upd(1, 1, true)
	u.VMStrategy = manifest.CreateSwapDelete
	g := group(x.Executor, "web", 2, u)
	g.Instances[0].Recreate = true
	x.Fail["web/w0"] = "drain"
	before, _ := x.VM("web/w0")
	if _, err := update.New(x, nil).Run(context.Background(), update.Rollout{Groups: []update.Group{g}}, update.Options{}); err == nil {
		t.Fatal("want an error")
	}
	after, _ := x.VM("web/w0")
	if after.CID != before.CID || !after.Running || after.Next != "" {
		t.Errorf("before %+v after %+v: the old vm should still serve and the replacement be gone", before, after)
	}
}

func TestCreateSwapDeleteWithoutTheCapabilityFallsBack(t *testing.T) {
	t.Parallel()
	x := updatetest.New()
	u := upd(1, 1, true)
	u.VMStrategy = manifest.CreateSwapDelete
	g := group(x, "web", 1, u)
	g.Instances[0].Recreate = true
	rec := &recorder{}
	if _, err := update.New(x, nil).Run(context.Background(), update.Rollout{Groups: []update.Group{g}}, update.Options{Reporter: rec}); err != nil {
		t.Fatal(err)
	}
	if got := x.StepsOf("web/w0"); !slices.Contains(got, "recreate-vm") {
		t.Errorf("steps %v", got)
	}
	if !slices.ContainsFunc(rec.ev, func(e update.Event) bool { return e.State == "info" && strings.Contains(e.Note, "not available") }) {
		t.Errorf("no fallback note")
	}
}

// surgeGroup is a group with max_surge whose changed instances the plan
// marked to surge (a replacement vm at an address of its own).
func surgeGroup(x *updatetest.Executor, n, canaries, inFlight int, surge manifest.Amount) update.Group {
	u := upd(canaries, inFlight, true)
	u.MaxSurge = surge
	g := group(x, "web", n, u)
	for i := range g.Instances {
		g.Instances[i].Recreate, g.Instances[i].Surge = true, true
	}
	return g
}

func batchSizes(bs []update.Batch) []int {
	var out []int
	for _, b := range bs {
		out = append(out, len(b.Instances))
	}
	return out
}

func TestSurgeBatchesAreMaxSurgeCanariesIncluded(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                  string
		n, canaries, inFlight int
		surge                 manifest.Amount
		want                  []int
	}{
		{"surge above max_in_flight", 5, 1, 1, manifest.Amount{N: 2}, []int{1, 2, 2}},
		{"surge below max_in_flight", 5, 1, 4, manifest.Amount{N: 1}, []int{1, 1, 1, 1, 1}},
		{"canaries split by surge", 5, 3, 1, manifest.Amount{N: 2}, []int{2, 1, 2}},
		{"percentage", 8, 0, 1, manifest.Amount{N: 50, Percent: true}, []int{4, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := surgeGroup(updatetest.New(), tc.n, tc.canaries, tc.inFlight, tc.surge)
			bs := update.Batches(g)
			if got := batchSizes(bs); !slices.Equal(got, tc.want) {
				t.Errorf("batch sizes %v, want %v", got, tc.want)
			}
			canaries := 0
			for _, b := range bs {
				if b.Canary {
					canaries += len(b.Instances)
				}
			}
			if canaries != tc.canaries {
				t.Errorf("%d canaries, want %d", canaries, tc.canaries)
			}
		})
	}
	// Without surging instances (static IPs, disks), max_in_flight holds.
	x := updatetest.New()
	g := surgeGroup(x, 5, 1, 1, manifest.Amount{N: 2})
	for i := range g.Instances {
		g.Instances[i].Recreate, g.Instances[i].Surge = false, false
	}
	if got := batchSizes(update.Batches(g)); !slices.Equal(got, []int{1, 1, 1, 1, 1}) {
		t.Errorf("batch sizes without surging instances %v, want max_in_flight's", got)
	}
}

func TestSurgeBringsTheNewVMUpBeforeTheOldOneLeaves(t *testing.T) {
	t.Parallel()
	x := updatetest.NewSwap()
	x.Delay["start"] = 20 * time.Millisecond
	// vm_strategy is delete-create: max_surge alone makes the swap.
	g := surgeGroup(x.Executor, 5, 1, 1, manifest.Amount{N: 2})
	rec := &recorder{}
	res, err := update.New(x, nil).Run(context.Background(), update.Rollout{Groups: []update.Group{g}}, update.Options{Reporter: rec})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Updated) != 5 {
		t.Fatalf("%d updated, want 5", len(res.Updated))
	}
	want := []string{"create-replacement-vm", "pre-stop", "drain", "stop", "swap-vm", "apply", "pre-start", "start", "running", "post-start", "delete-replaced-vm", "post-deploy"}
	for _, in := range g.Instances {
		if got := x.StepsOf(in.Name()); !slices.Equal(got, want) {
			t.Errorf("%s steps %v, want %v", in.Name(), got, want)
		}
		if !slices.ContainsFunc(rec.ev, func(e update.Event) bool {
			return e.State == "info" && e.Instance.ID == in.ID && strings.HasPrefix(e.Note, "max_surge:")
		}) {
			t.Errorf("no max_surge note for %s", in.Name())
		}
	}
	if n := maxOverlap(x.Executor, "web/"); n > 2 {
		t.Errorf("%d replacements in flight at once, want at most max_surge (2)", n)
	}
}

func TestSurgeFallsBackWithANote(t *testing.T) {
	t.Parallel()
	x := updatetest.NewSwap()
	g := surgeGroup(x.Executor, 3, 1, 1, manifest.Amount{N: 2})
	for i := range g.Instances {
		g.Instances[i].Recreate, g.Instances[i].Surge = false, false
	}
	g.Instances[0].StaticIP = true
	g.Instances[1].PersistentDisk = true
	rec := &recorder{}
	if _, err := update.New(x, nil).Run(context.Background(), update.Rollout{Groups: []update.Group{g}}, update.Options{Reporter: rec}); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"static IP", "persistent disk", "address of its own"} {
		in := g.Instances[i]
		if got := x.StepsOf(in.Name()); !slices.Equal(got, fullUpdate) {
			t.Errorf("%s steps %v, want in place %v", in.Name(), got, fullUpdate)
		}
		if !slices.ContainsFunc(rec.ev, func(e update.Event) bool {
			return e.State == "info" && e.Instance.ID == in.ID && strings.HasPrefix(e.Note, "max_surge") && strings.Contains(e.Note, want)
		}) {
			t.Errorf("no max_surge fallback note naming %q for %s", want, in.Name())
		}
	}
}

func TestSurgeNeedsTheSwapCapability(t *testing.T) {
	t.Parallel()
	// An executor that cannot swap (the lifecycle verbs') keeps
	// max_in_flight and takes instances down as usual, without a surge note.
	x := updatetest.New()
	g := surgeGroup(x, 3, 1, 1, manifest.Amount{N: 3})
	for i := range g.Instances {
		g.Instances[i].Recreate = false
	}
	x.Delay["start"] = 10 * time.Millisecond
	rec := &recorder{}
	if _, err := update.New(x, nil).Run(context.Background(), update.Rollout{Groups: []update.Group{g}}, update.Options{Reporter: rec}); err != nil {
		t.Fatal(err)
	}
	if n := maxOverlap(x, "web/"); n != 1 {
		t.Errorf("%d instances in flight at once, want max_in_flight (1)", n)
	}
	for _, in := range g.Instances {
		if got := x.StepsOf(in.Name()); !slices.Equal(got, fullUpdate) {
			t.Errorf("%s steps %v, want %v", in.Name(), got, fullUpdate)
		}
	}
	if slices.ContainsFunc(rec.ev, func(e update.Event) bool { return strings.Contains(e.Note, "max_surge") }) {
		t.Error("a max_surge note from an executor that cannot swap")
	}
}

// Updated is called once for each instance whose steps all succeeded; when
// it fails (the new state could not be recorded) the instance's update
// fails, so a canary that cannot be recorded stops the rollout.
func TestUpdatedHookRecordsAndItsFailureFailsTheInstance(t *testing.T) {
	t.Parallel()
	x := updatetest.New()
	g := group(x, "web", 3, upd(1, 2, true))
	var mu sync.Mutex
	var recorded []string
	ok := func(in update.Instance) error {
		mu.Lock()
		recorded = append(recorded, in.Name())
		mu.Unlock()
		return nil
	}
	res, err := update.New(x, nil).Run(context.Background(), update.Rollout{Groups: []update.Group{g}}, update.Options{MinWatchStep: time.Millisecond, Updated: ok})
	if err != nil {
		t.Fatal(err)
	}
	if len(recorded) != 3 || recorded[0] != "web/w0" || len(res.Updated) != 3 {
		t.Errorf("recorded %v, updated %d", recorded, len(res.Updated))
	}

	x = updatetest.New()
	g = group(x, "web", 3, upd(1, 2, true))
	broken := func(update.Instance) error { return errors.New("state file is read-only") }
	res, err = update.New(x, nil).Run(context.Background(), update.Rollout{Groups: []update.Group{g}}, update.Options{MinWatchStep: time.Millisecond, Updated: broken})
	if err == nil || !strings.Contains(err.Error(), "record instance state: state file is read-only") || !strings.Contains(err.Error(), "web/w0 (canary)") {
		t.Fatalf("err = %v", err)
	}
	if len(res.Updated) != 0 || len(x.StepsOf("web/w1")) != 0 {
		t.Errorf("the rollout went on past a canary whose state was not recorded: %+v", res)
	}
}
