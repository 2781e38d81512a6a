package health_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compleat/compleat/director/health"
	"github.com/compleat/compleat/director/store"
)

func TestUnresponsiveInstanceIsRecreatedOnce(t *testing.T) {
	t.Parallel()
	st, b := newStore(t), startBus(t)
	deployment(t, st, "web", 2)
	a0 := b.agent(t, "agent-web-0", interval)
	b.agent(t, "agent-web-1", interval)
	rec := &recreator{t: t, st: st, bus: b, interval: interval, release: make(chan struct{})}
	res := health.NewResurrector(health.ResurrectorConfig{Recreator: rec, Switches: health.Store{S: st}, Events: health.Store{S: st}, Busy: health.Store{S: st}.Busy})
	m := newMonitor(st, b, true, res)
	runMonitor(t, m, b.conn)
	eventually(t, "running", func() bool { return status(m, "web", "i0") == health.StatusRunning })

	a0.kill()
	eventually(t, "a recreation", func() bool { return rec.count() == 1 })
	// While it is in flight, checks go on: no second recreation.
	time.Sleep(2 * timeout)
	if n := rec.count(); n != 1 {
		t.Fatalf("%d recreations while one was in flight: %v", n, rec.calls)
	}
	close(rec.release)
	res.Wait()
	eventually(t, "the new VM's agent running", func() bool {
		h, _ := m.Instance("web", "i0")
		return h.Status == health.StatusRunning && h.VMCID == "vm-web-0-r1"
	})
	time.Sleep(2 * timeout)
	if n := rec.count(); n != 1 || !strings.HasPrefix(rec.calls[0], "web/i0: ") {
		t.Errorf("recreations: %v", rec.calls)
	}
	evs := events(t, st, "resurrect")
	if len(evs) != 1 || evs[0].Result != store.ResultOK || evs[0].Instance != "web/i0" || evs[0].Object != "vm-web-0" || evs[0].User != health.UserResurrector {
		t.Errorf("resurrect events = %+v", evs)
	}
	if len(events(t, st, "meltdown")) != 0 {
		t.Error("meltdown with 1 of 2 down")
	}
}

func TestMeltdownHoldsBack(t *testing.T) {
	t.Parallel()
	st, b := newStore(t), startBus(t)
	deployment(t, st, "web", 4)
	var agents []*agent
	for i := range 4 {
		// Heartbeats out of step, as on real VMs.
		agents = append(agents, b.agent(t, fmt.Sprintf("agent-web-%d", i), interval))
		time.Sleep(interval / 4)
	}
	rec := &recreator{t: t, st: st, bus: b, interval: interval}
	res := health.NewResurrector(health.ResurrectorConfig{Recreator: rec, Events: health.Store{S: st}, Threshold: 0.5})
	m := newMonitor(st, b, true, res)
	runMonitor(t, m, b.conn)
	eventually(t, "all running", func() bool {
		for i := range 4 {
			if status(m, "web", fmt.Sprintf("i%d", i)) != health.StatusRunning {
				return false
			}
		}
		return true
	})
	for _, a := range agents[:3] {
		a.kill()
	}
	eventually(t, "3 unresponsive", func() bool {
		n := 0
		for _, h := range m.Deployment("web") {
			if h.Status == health.StatusUnresponsive {
				n++
			}
		}
		return n == 3
	})
	time.Sleep(2 * timeout)
	res.Wait()
	if n := rec.count(); n != 0 {
		t.Errorf("%d recreations in a meltdown: %v", n, rec.calls)
	}
	evs := events(t, st, "meltdown")
	if len(evs) != 1 || evs[0].Result != store.ResultSkipped || evs[0].Context["down"] != "3" || evs[0].Context["instances"] != "4" {
		t.Fatalf("meltdown events = %+v", evs)
	}
	if !res.InMeltdown("web") {
		t.Error("not in meltdown")
	}
}

func TestResurrectionSwitchedOff(t *testing.T) {
	t.Parallel()
	st, b := newStore(t), startBus(t)
	deployment(t, st, "web", 2)
	if err := st.Update(func(tx *store.Tx) error {
		return tx.PutResurrectionSwitch(store.ResurrectionSwitch{Deployment: "web", Group: "web", Enabled: false})
	}); err != nil {
		t.Fatal(err)
	}
	a0 := b.agent(t, "agent-web-0", interval)
	b.agent(t, "agent-web-1", interval)
	rec := &recreator{t: t, st: st, bus: b, interval: interval}
	res := health.NewResurrector(health.ResurrectorConfig{Recreator: rec, Switches: health.Store{S: st}, Events: health.Store{S: st}})
	m := newMonitor(st, b, true, res)
	runMonitor(t, m, b.conn)
	eventually(t, "running", func() bool { return status(m, "web", "i0") == health.StatusRunning })
	a0.kill()
	eventually(t, "unresponsive", func() bool { return status(m, "web", "i0") == health.StatusUnresponsive })
	time.Sleep(2 * timeout)
	eventually(t, "the skipped event", func() bool { return len(events(t, st, "resurrect")) > 0 })
	res.Wait()
	if n := rec.count(); n != 0 {
		t.Errorf("%d recreations with resurrection off", n)
	}
	if evs := events(t, st, "resurrect"); len(evs) != 1 || evs[0].Result != store.ResultSkipped {
		t.Errorf("resurrect events = %+v", evs)
	}
}

// snapshot builds a deployment snapshot: statuses[i] is instance i's.
func snapshot(statuses ...string) []health.InstanceHealth {
	var out []health.InstanceHealth
	for i, s := range statuses {
		out = append(out, health.InstanceHealth{Instance: health.Instance{Deployment: "d", Group: "g", ID: fmt.Sprintf("i%d", i),
			VMCID: fmt.Sprintf("vm-%d", i), AgentID: fmt.Sprintf("a-%d", i)}, Status: s})
	}
	return out
}

// fakeRecreator records recreations; read calls after Resurrector.Wait.
type fakeRecreator struct {
	mu    sync.Mutex
	calls []string
	err   error
}

func (f *fakeRecreator) Recreate(ctx context.Context, deployment, id, reason string) (uint64, error) {
	return 0, f.recreate(ctx, deployment, id, reason)
}

func (f *fakeRecreator) recreate(ctx context.Context, deployment, id, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, id)
	return f.err
}

func TestConsiderThresholdAndWindow(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	U, R, L := health.StatusUnresponsive, health.StatusRunning, health.StatusLate
	ctx := context.Background()

	// 2 of 4 down is not more than 50%: both are resurrected.
	f := &fakeRecreator{}
	r := health.NewResurrector(health.ResurrectorConfig{Recreator: f, Now: clock})
	r.Consider(ctx, "d", snapshot(U, U, R, R))
	r.Wait()
	if len(f.calls) != 2 {
		t.Errorf("2 of 4: calls %v", f.calls)
	}

	// 1 unresponsive and 2 late of 4: meltdown.
	f = &fakeRecreator{}
	r = health.NewResurrector(health.ResurrectorConfig{Recreator: f, Now: clock})
	r.Consider(ctx, "d", snapshot(U, L, L, R))
	r.Wait()
	if len(f.calls) != 0 || !r.InMeltdown("d") {
		t.Errorf("1+2 late of 4: calls %v, meltdown %v", f.calls, r.InMeltdown("d"))
	}
	// The late ones come back: the meltdown is over and i0 is resurrected.
	r.Consider(ctx, "d", snapshot(U, R, R, R))
	r.Wait()
	if len(f.calls) != 1 || r.InMeltdown("d") {
		t.Errorf("after the meltdown: calls %v, meltdown %v", f.calls, r.InMeltdown("d"))
	}

	// Instances resurrected within the window still count as down.
	f = &fakeRecreator{}
	r = health.NewResurrector(health.ResurrectorConfig{Recreator: f, Now: clock, Window: time.Minute})
	r.Consider(ctx, "d", snapshot(U, R, R, R))
	r.Wait()
	s := snapshot(R, U, R, R)
	s[0].VMCID = "vm-new"
	r.Consider(ctx, "d", s)
	r.Wait()
	if len(f.calls) != 2 {
		t.Fatalf("second within the window (2 of 4): calls %v", f.calls)
	}
	s = snapshot(R, R, U, R)
	s[0].VMCID, s[1].VMCID = "vm-new", "vm-new"
	r.Consider(ctx, "d", s)
	r.Wait()
	if len(f.calls) != 2 || !r.InMeltdown("d") {
		t.Errorf("third within the window (3 of 4): calls %v, meltdown %v", f.calls, r.InMeltdown("d"))
	}
	now = now.Add(2 * time.Minute)
	r.Consider(ctx, "d", s)
	r.Wait()
	if len(f.calls) != 3 {
		t.Errorf("after the window: calls %v", f.calls)
	}

	// A failed recreation waits for the window before trying again; the
	// same VM is never resurrected twice.
	f = &fakeRecreator{err: errors.New("cloud says no")}
	r = health.NewResurrector(health.ResurrectorConfig{Recreator: f, Now: clock, Window: time.Minute})
	r.Consider(ctx, "d", snapshot(U, R, R))
	r.Wait()
	r.Consider(ctx, "d", snapshot(U, R, R))
	r.Wait()
	if len(f.calls) != 1 {
		t.Errorf("retried at once after a failure: %v", f.calls)
	}
	now = now.Add(2 * time.Minute)
	f.err = nil
	r.Consider(ctx, "d", snapshot(U, R, R))
	r.Wait()
	now = now.Add(2 * time.Minute)
	r.Consider(ctx, "d", snapshot(U, R, R))
	r.Wait()
	if len(f.calls) != 2 {
		t.Errorf("calls after retry and success: %v", f.calls)
	}

	// Stopped instances are left alone, once recorded as skipped.
	f = &fakeRecreator{}
	r = health.NewResurrector(health.ResurrectorConfig{Recreator: f, Now: clock})
	s = snapshot(U, R, R)
	s[0].State = "stopped"
	r.Consider(ctx, "d", s)
	r.Wait()
	if len(f.calls) != 0 {
		t.Errorf("stopped instance resurrected: %v", f.calls)
	}

	// Ignored instances and busy deployments are left alone.
	f = &fakeRecreator{}
	busy := true
	r = health.NewResurrector(health.ResurrectorConfig{Recreator: f, Now: clock, Busy: func(context.Context, string) bool { return busy }})
	s = snapshot(U, R, R)
	r.Consider(ctx, "d", s)
	busy = false
	s[0].Ignore = true
	r.Consider(ctx, "d", s)
	r.Wait()
	if len(f.calls) != 0 {
		t.Errorf("busy or ignored: calls %v", f.calls)
	}

	// A director that does not lead (HA) leaves resurrection to the
	// leader; once it leads, it resurrects.
	f = &fakeRecreator{}
	leading := false
	r = health.NewResurrector(health.ResurrectorConfig{Recreator: f, Now: clock, Active: func() bool { return leading }})
	r.Consider(ctx, "d", snapshot(U, R, R))
	r.Wait()
	if len(f.calls) != 0 {
		t.Errorf("a follower resurrected: %v", f.calls)
	}
	leading = true
	r.Consider(ctx, "d", snapshot(U, R, R))
	r.Wait()
	if len(f.calls) != 1 {
		t.Errorf("the leader's calls = %v, want one resurrection", f.calls)
	}
}

// Instances that die together are found unresponsive a few seconds apart:
// the first is not resurrected until the others have spoken since, or are
// found down too.
func TestConsiderWaitsForTheOthersToBeAccountedFor(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	U, R := health.StatusUnresponsive, health.StatusRunning
	ctx := context.Background()
	f := &fakeRecreator{}
	r := health.NewResurrector(health.ResurrectorConfig{Recreator: f, Now: func() time.Time { return now }})
	s := snapshot(U, R, R)
	s[0].Since = now
	s[1].LastHeartbeat = now.Add(-3 * time.Second) // silent since i0 was found: dead too?
	s[2].LastHeartbeat = now.Add(time.Second)
	r.Consider(ctx, "d", s)
	r.Wait()
	if len(f.calls) != 0 {
		t.Fatalf("resurrected before i1 was accounted for: %v", f.calls)
	}
	// i1 is found dead as well: 2 of 3 down is a meltdown.
	s[1].Status = U
	r.Consider(ctx, "d", s)
	r.Wait()
	if len(f.calls) != 0 || !r.InMeltdown("d") {
		t.Fatalf("2 of 3: calls %v, meltdown %v", f.calls, r.InMeltdown("d"))
	}
	// Or i1 speaks: i0 alone is resurrected.
	r = health.NewResurrector(health.ResurrectorConfig{Recreator: f, Now: func() time.Time { return now }})
	s[1].Status, s[1].LastHeartbeat = R, now.Add(2*time.Second)
	r.Consider(ctx, "d", s)
	r.Wait()
	if len(f.calls) != 1 || f.calls[0] != "i0" {
		t.Errorf("after i1 spoke: calls %v", f.calls)
	}
}
