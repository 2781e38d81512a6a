package health

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/compleat/compleat/director/store"
)

// Recreator recreates an instance's VM with its persistent disks, the way a
// deploy's recreate does and under the same deployment lock. It returns when
// the new VM's jobs run (or the recreate failed).
type Recreator interface {
	// Recreate replaces the instance's VM and returns the id of the task
	// that did it (0 when no task was started).
	Recreate(ctx context.Context, deployment, instanceID, reason string) (taskID uint64, err error)
}

// Switches tell whether resurrection is on for an instance group.
type Switches interface {
	ResurrectionEnabled(ctx context.Context, deployment, group string) (bool, error)
}

// ResurrectorConfig configures a Resurrector. Recreator is required.
type ResurrectorConfig struct {
	Recreator Recreator
	Switches  Switches // nil: on everywhere
	Events    Events   // nil: no audit events
	// Busy reports whether another operation holds the deployment (its
	// lock); a busy deployment is left alone until it is free. Nil: never.
	Busy func(ctx context.Context, deployment string) bool
	// Active, when set, tells whether this resurrector may act now: with
	// several directors (HA) only the leader's does. Nil: always.
	Active func() bool
	Logger *slog.Logger
	// Threshold is the share of a deployment's instances that may be down
	// at once before the resurrector stops (meltdown); default 0.5. More
	// than Threshold down is a meltdown.
	Threshold float64
	// Window is how long a resurrected instance still counts as down for
	// the meltdown guard, and how long a failed resurrection waits before
	// the next attempt; default 1 minute.
	Window time.Duration
	Now    func() time.Time
}

// Resurrector recreates unresponsive instances; it is a [Healer].
type Resurrector struct {
	c   ResurrectorConfig
	log *slog.Logger

	mu       sync.Mutex
	inFlight map[string]bool                 // "deployment/instance id"
	done     map[string]bool                 // "deployment/instance id/vm cid" resurrected
	recent   map[string]map[string]time.Time // deployment -> instance id -> started
	failed   map[string]time.Time            // "deployment/instance id" -> last failure
	skipped  map[string]bool                 // "deployment/instance id/vm cid" reported as switched off
	waiting  map[string]bool                 // "deployment/instance id/vm cid" logged as waiting for the others
	meltdown map[string]bool                 // deployment
	counts   map[string]int                  // outcome -> count
	wg       sync.WaitGroup
}

var _ Healer = (*Resurrector)(nil)

// NewResurrector returns a resurrector.
func NewResurrector(c ResurrectorConfig) *Resurrector {
	if c.Threshold <= 0 {
		c.Threshold = 0.5
	}
	if c.Window <= 0 {
		c.Window = time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return &Resurrector{c: c, log: c.Logger,
		inFlight: map[string]bool{}, done: map[string]bool{}, recent: map[string]map[string]time.Time{},
		failed: map[string]time.Time{}, skipped: map[string]bool{}, waiting: map[string]bool{}, meltdown: map[string]bool{}, counts: map[string]int{}}
}

// Consider decides, for one deployment's snapshot, whether to resurrect its
// unresponsive instances or to hold back (meltdown). Recreations run in the
// background; Wait waits for them.
func (r *Resurrector) Consider(ctx context.Context, deployment string, insts []InstanceHealth) {
	if r.c.Active != nil && !r.c.Active() {
		return
	}
	now := r.c.Now()
	var candidates []InstanceHealth
	down := map[string]bool{}
	for _, h := range insts {
		if h.Down() {
			down[h.ID] = true
		}
		if h.Status == StatusUnresponsive {
			candidates = append(candidates, h)
		}
	}

	r.mu.Lock()
	for id, at := range r.recent[deployment] {
		if now.Sub(at) > r.c.Window && !r.inFlight[deployment+"/"+id] {
			delete(r.recent[deployment], id)
			continue
		}
		down[id] = true
	}
	total := len(insts)
	for id := range r.recent[deployment] {
		if !containsID(insts, id) {
			total++ // its VM is being replaced: the monitor may not list it
		}
	}
	wasMeltdown := r.meltdown[deployment]
	melting := total > 0 && float64(len(down)) > r.c.Threshold*float64(total)
	if !melting {
		r.meltdown[deployment] = false
	}
	r.mu.Unlock()

	if wasMeltdown && !melting {
		r.log.Info("meltdown over", "deployment", deployment, "down", len(down), "instances", total)
		r.event(ctx, store.AuditEvent{User: UserResurrector, Deployment: deployment, Action: "meltdown-over", ObjectType: "deployment", Object: deployment,
			Result: store.ResultInfo, Context: map[string]string{"down": fmt.Sprint(len(down)), "instances": fmt.Sprint(total)}})
	}
	// Only instances the resurrector may act on matter: with resurrection
	// off (or every dead instance ignored) there is nothing to hold back.
	var eligible []InstanceHealth
	for _, h := range candidates {
		if r.eligible(ctx, h) {
			eligible = append(eligible, h)
		}
	}
	candidates = eligible
	if len(candidates) == 0 {
		return
	}
	if melting {
		r.mu.Lock()
		first := !r.meltdown[deployment]
		r.meltdown[deployment] = true
		if first {
			r.counts["meltdown"]++
		}
		r.mu.Unlock()
		if first {
			names := make([]string, 0, len(down))
			for _, h := range insts {
				if down[h.ID] {
					names = append(names, h.Name())
				}
			}
			sort.Strings(names)
			r.log.Warn("meltdown: too many instances down, resurrecting none", "deployment", deployment, "down", len(down), "instances", total)
			r.event(ctx, store.AuditEvent{User: UserResurrector, Deployment: deployment, Action: "meltdown", ObjectType: "deployment", Object: deployment,
				Result: store.ResultSkipped, Context: map[string]string{
					"down": fmt.Sprint(len(down)), "instances": fmt.Sprint(total),
					"threshold": fmt.Sprintf("%g%%", r.c.Threshold*100), "down_instances": strings.Join(names, ", "),
				}})
		}
		return
	}
	if r.c.Busy != nil && r.c.Busy(ctx, deployment) {
		return
	}
	for _, h := range candidates {
		if wait := unsettled(h, insts, down); wait != "" {
			key := h.Deployment + "/" + h.ID + "/" + h.VMCID
			r.mu.Lock()
			first := !r.waiting[key]
			r.waiting[key] = true
			r.mu.Unlock()
			if first {
				r.log.Info("waiting for the other instances before resurrecting", "deployment", h.Deployment, "instance", h.Name(), "silent", wait)
			}
			continue
		}
		r.maybeResurrect(ctx, h, now)
	}
}

// unsettled tells whether every other instance of the deployment is
// accounted for since h was found unresponsive: down, or heard from since.
// Instances that died together are found a few seconds apart (their
// heartbeats are not in step); waiting until the others either speak or
// are found down lets the meltdown guard count them all before the first
// one is resurrected. It takes at most one heartbeat interval.
// It returns the name of an instance not accounted for yet, or "".
func unsettled(h InstanceHealth, insts []InstanceHealth, down map[string]bool) string {
	for _, o := range insts {
		if o.ID == h.ID || down[o.ID] {
			continue
		}
		if o.LastHeartbeat.Before(h.Since) {
			return fmt.Sprintf("%s (status %s, last heartbeat %s)", o.Name(), o.Status, o.LastHeartbeat.Format(time.RFC3339Nano))
		}
	}
	return ""
}

func containsID(insts []InstanceHealth, id string) bool {
	for _, h := range insts {
		if h.ID == id {
			return true
		}
	}
	return false
}

// eligible reports whether h may be resurrected: not marked ignored,
// started, and resurrection on for its group (a VM left alone for the last
// two reasons is recorded once as a skipped resurrection).
func (r *Resurrector) eligible(ctx context.Context, h InstanceHealth) bool {
	if h.Ignore {
		return false
	}
	reason := ""
	switch {
	case h.State != "" && h.State != "started":
		reason = "the instance is " + h.State + " (only started instances are resurrected)"
	case r.c.Switches != nil:
		on, err := r.c.Switches.ResurrectionEnabled(ctx, h.Deployment, h.Group)
		if err != nil {
			r.log.Error("read resurrection switch", "deployment", h.Deployment, "group", h.Group, "error", err)
			return false
		}
		if !on {
			reason = "resurrection is off for " + h.Deployment + "/" + h.Group
		}
	}
	if reason == "" {
		return true
	}
	vmKey := h.Deployment + "/" + h.ID + "/" + h.VMCID
	r.mu.Lock()
	first := !r.skipped[vmKey]
	r.skipped[vmKey] = true
	r.mu.Unlock()
	if first {
		r.event(ctx, store.AuditEvent{User: UserResurrector, Deployment: h.Deployment, Instance: h.Name(), Action: "resurrect",
			ObjectType: "vm", Object: h.VMCID, Result: store.ResultSkipped, Context: map[string]string{"reason": reason}})
	}
	return false
}

func (r *Resurrector) maybeResurrect(ctx context.Context, h InstanceHealth, now time.Time) {
	key := h.Deployment + "/" + h.ID
	vmKey := key + "/" + h.VMCID
	r.mu.Lock()
	switch {
	case r.inFlight[key], r.done[vmKey]:
		r.mu.Unlock()
		return
	case !r.failed[key].IsZero() && now.Sub(r.failed[key]) < r.c.Window:
		r.mu.Unlock()
		return
	}
	r.mu.Unlock()
	r.mu.Lock()
	if r.inFlight[key] {
		r.mu.Unlock()
		return
	}
	r.inFlight[key] = true
	if r.recent[h.Deployment] == nil {
		r.recent[h.Deployment] = map[string]time.Time{}
	}
	r.recent[h.Deployment][h.ID] = now
	r.mu.Unlock()

	reason := h.Reason
	if reason == "" {
		reason = "agent unresponsive"
	}
	log := r.log.With("deployment", h.Deployment, "instance", h.Name(), "vm", h.VMCID)
	log.Warn("resurrecting instance", "reason", reason)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		start := r.c.Now()
		taskID, err := r.c.Recreator.Recreate(context.WithoutCancel(ctx), h.Deployment, h.ID, reason)
		took := r.c.Now().Sub(start)
		ev := store.AuditEvent{User: UserResurrector, TaskID: taskID, Deployment: h.Deployment, Instance: h.Name(), Action: "resurrect",
			ObjectType: "vm", Object: h.VMCID, Result: store.ResultOK,
			Context: map[string]string{"reason": reason, "took": took.Round(time.Millisecond).String()}}
		r.mu.Lock()
		delete(r.inFlight, key)
		if err != nil {
			r.failed[key] = r.c.Now()
			r.counts["failed"]++
			ev.Result, ev.Error = store.ResultFailed, err.Error()
		} else {
			r.done[vmKey] = true
			delete(r.failed, key)
			r.counts["ok"]++
		}
		r.mu.Unlock()
		if err != nil {
			log.Error("resurrection failed", "error", err, "took", took)
		} else {
			log.Info("instance resurrected", "took", took)
		}
		r.event(context.WithoutCancel(ctx), ev)
	}()
}

func (r *Resurrector) event(ctx context.Context, e store.AuditEvent) {
	if r.c.Events == nil {
		return
	}
	if err := r.c.Events.AddEvent(ctx, e); err != nil {
		r.log.Error("record audit event", "action", e.Action, "error", err)
	}
}

// Wait waits until no recreation is in flight.
func (r *Resurrector) Wait() { r.wg.Wait() }

// InMeltdown reports whether the deployment is in meltdown.
func (r *Resurrector) InMeltdown(deployment string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.meltdown[deployment]
}

// Counts returns how many resurrections succeeded ("ok") and failed
// ("failed"), and how many meltdowns began ("meltdown").
func (r *Resurrector) Counts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.counts))
	for k, v := range r.counts {
		out[k] = v
	}
	return out
}
