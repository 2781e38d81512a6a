// Package update rolls a planned change out to a deployment's instances:
// canaries first, then batches, group after group, stopping at the first
// failure with the untouched instances left as they were.
//
// The entry point is [Updater.Run] with a [Rollout] (built by the director
// from a plan). The updater decides order and concurrency only; every action
// on an instance goes through the [Executor] the director provides (backed by
// the CPI and the agent client), and progress goes to a [Reporter] (task
// events).
//
// Order:
//
//  1. Missing VMs (instances with New set) are created in parallel.
//  2. Instance groups in order. A group with Update.Serial waits for every
//     group before it and the next group waits for it; consecutive
//     non-serial groups update together.
//  3. Within a group only instances with a non-empty change set are touched:
//     the first Update.Canaries of them (AZ by AZ, by index) update together
//     as canaries, then the rest AZ by AZ in batches of Update.MaxInFlight
//     (a number, or a percentage of the group's size; at least 1). A batch
//     never spans two AZs. In a group whose instances surge (max_surge,
//     [Instance.Surge]) every batch, canaries included, holds at most
//     Update.MaxSurge instances instead.
//  4. Per instance: pre-stop → drain → stop → recreate the VM when needed
//     (the executor moves the persistent disks) → update the persistent disk
//     when it changes → apply → pre-start → start → watch until running (see
//     [WatchSchedule]) → post-start. A new instance skips the take-down.
//  5. Instances to delete (scaled down or whose group is gone) are drained,
//     stopped and deleted last.
//  6. Post-deploy runs on every instance of the deployment when anything
//     changed.
//
// A failed canary or batch lets the rest of its batch finish, starts nothing
// new (in any group) and returns an error naming each failed instance.
// [Options.Pause] stops the rollout after the current batches with
// [ErrPaused]; the next deploy re-plans and continues with whatever still
// differs. [Result] lists the instances touched, which automatic rollback
// needs.
//
// vm_strategy create-swap-delete is carried out when the executor is also a
// [Swapper] (an optional capability, checked by type assertion): the
// replacement VM is made ready before the old one is taken down. max_surge
// is carried out the same way: the plan marks the changed instances of a
// surging group (no persistent disk, no static IP) with Surge and gives
// each replacement an address of its own, and the updater replaces them
// create-swap-delete whatever the group's vm_strategy, at most max_surge at
// once; the old VMs serve until the executor retires them. Automatic
// rollback is a second Run,
// planned by the director from the last successful manifest; Result.Touched
// says which instances it restores.
package update

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/compleat/compleat/director/manifest"
)

// Instance is one instance as the updater sees it.
type Instance struct {
	Group string
	ID    string
	Index int
	AZ    string
	// Changes are the plan's reasons to touch the instance; empty means
	// "leave it alone".
	Changes []string
	// New: the instance has no VM yet (it is created in the first stage).
	New bool
	// Recreate: the VM must be replaced (stemcell, vm_type or networks
	// changed, or --recreate).
	Recreate bool
	// DiskChange: the persistent disk is created, replaced (size or type
	// changed: data migrated) or removed.
	DiskChange bool
	// StaticIP: the instance holds a static IP, which a replacement VM
	// cannot take while the old VM lives (create-swap-delete falls back to
	// delete-create).
	StaticIP bool
	// Surge: the group has max_surge and the plan gave the instance's
	// replacement VM an address of its own: the instance is updated
	// create-swap-delete, whatever the group's vm_strategy, in batches of
	// max_surge (see Batches).
	Surge bool
	// PersistentDisk: the instance has a persistent disk after the update
	// (max_surge does not apply to it).
	PersistentDisk bool
}

// Name is "group/id".
func (i Instance) Name() string { return i.Group + "/" + i.ID }

// Changed reports whether the instance is to be touched.
func (i Instance) Changed() bool { return len(i.Changes) > 0 || i.New || i.Recreate }

// Group is one instance group's rollout.
type Group struct {
	Name   string
	Update manifest.Update
	// Size is the group's desired instance count (the base of a percentage
	// max_in_flight); zero means len(Instances).
	Size int
	// AZs orders the group's AZs; AZs not listed come after, by name.
	AZs []string
	// Instances are the group's desired instances, changed or not.
	Instances []Instance
}

// Rollout is everything one deploy changes.
type Rollout struct {
	Deployment string
	Groups     []Group
	// Delete are instances to remove: scaled down, or their group is gone.
	// New set on one of them means it has no VM: it is deleted without
	// pre-stop, drain or stop.
	Delete []Instance
}

// Executor acts on one instance. The director implements it with the CPI
// and the agent client; each method returns when its step is done.
type Executor interface {
	// CreateVM creates a missing VM, attaches the instance's existing
	// persistent disk if it has one, sets the VM's metadata and waits for
	// its agent. (A disk still to be created comes with UpdateDisk.)
	CreateVM(ctx context.Context, inst Instance) error
	// PreStop, Drain and Stop take a running instance out of service.
	PreStop(ctx context.Context, inst Instance) error
	Drain(ctx context.Context, inst Instance) error
	Stop(ctx context.Context, inst Instance) error
	// RecreateVM replaces the instance's VM, moving its persistent disks.
	RecreateVM(ctx context.Context, inst Instance) error
	// UpdateDisk brings the persistent disk to the plan: creates, attaches
	// and mounts a new one; for a replacement, migrates the data and
	// detaches the old one (which the plan orphans); for a removal, unmounts
	// and detaches it.
	UpdateDisk(ctx context.Context, inst Instance) error
	// Apply installs the planned jobs and packages; PreStart and Start run
	// the lifecycle scripts and the processes.
	Apply(ctx context.Context, inst Instance) error
	PreStart(ctx context.Context, inst Instance) error
	Start(ctx context.Context, inst Instance) error
	// Running reports whether every process runs; when not, detail names the
	// failing processes with the tail of their logs.
	Running(ctx context.Context, inst Instance) (running bool, detail string, err error)
	PostStart(ctx context.Context, inst Instance) error
	PostDeploy(ctx context.Context, inst Instance) error
	// Delete removes a stopped instance's VM and orphans its disks.
	Delete(ctx context.Context, inst Instance) error
}

// Swapper is the optional Executor capability behind vm_strategy
// create-swap-delete: the replacement VM is created and its agent awaited
// while the old VM still serves; after the take-down steps the persistent
// disks move to it; the old VM is deleted once the instance runs on the new
// one. An executor without it (or an instance with a static IP) updates
// delete-create, and the task events say so.
type Swapper interface {
	CreateReplacementVM(ctx context.Context, inst Instance) error
	// SwapVM detaches the persistent disks from the old VM, attaches them
	// to the replacement and makes it the instance's VM.
	SwapVM(ctx context.Context, inst Instance) error
	// DeleteReplacedVM deletes the old VM. It is called after the swap
	// whether or not the rest of the update succeeds, and also when the
	// update fails before the swap: then it deletes the unused replacement
	// instead, leaving the old VM as it was.
	DeleteReplacedVM(ctx context.Context, inst Instance) error
}

// Event is one step of the rollout for the task log.
type Event struct {
	Stage    string // "Creating missing vms", "Updating instance", "Deleting unneeded instances", "Running post-deploy"
	Task     string // "web/<id> (canary)"
	Index    int    // 1-based within the stage (for "Updating instance": within the group)
	Total    int
	State    string // "started", "finished", "failed", or "info" with Note
	Note     string
	Duration time.Duration
	Err      error
	// Instance is the instance the event is about (Options.Updated, not an
	// event, is where the new state is recorded).
	Instance Instance
}

// Reporter receives events. Report is called from several goroutines at
// once.
type Reporter interface {
	Report(e Event)
}

// Options tune a run.
type Options struct {
	Reporter Reporter
	// SkipDrain skips drain scripts (--skip-drain).
	SkipDrain bool
	// Parallel bounds VM creation, deletion and post-deploy (default 10).
	Parallel int
	// Pause, when it returns true between batches, stops the rollout after
	// the batches under way with ErrPaused.
	Pause func() bool
	// MinWatchStep is the smallest step between two checks after the first
	// (BOSH: one second). Zero means one second.
	MinWatchStep time.Duration
	// NoPostDeploy leaves out the post-deploy stage: post-deploy belongs
	// to deploys, not to recreate, restart, stop, start or a deletion.
	NoPostDeploy bool
	// Updated, when set, is called once every step of an instance's update
	// succeeded, before its "finished" event: the moment to record what the
	// instance runs now. An error fails the instance's update.
	Updated func(Instance) error
}

// ErrPaused is returned when Options.Pause stopped the rollout.
var ErrPaused = errors.New("rollout paused")

// Result says what a run did.
type Result struct {
	// Touched are the instances the run started to change (updated, failed
	// or interrupted), in the order they started: what a rollback restores.
	Touched []Instance
	// Updated finished every step.
	Updated []Instance
	// Failed are the instances whose update failed.
	Failed []Instance
	// Deleted were removed.
	Deleted []Instance
	// Skipped counts desired instances with no change.
	Skipped int
}

// Updater runs rollouts through an executor.
type Updater struct {
	exec   Executor
	logger *slog.Logger
}

// New returns an updater.
func New(exec Executor, logger *slog.Logger) *Updater {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Updater{exec: exec, logger: logger}
}

// Batch is a set of instances updated together.
type Batch struct {
	Canary    bool
	AZ        string // "" for canaries spanning AZs
	Instances []Instance
}

// size is the group's desired instance count.
func (g Group) size() int {
	if g.Size == 0 {
		return len(g.Instances)
	}
	return g.Size
}

// surges reports whether the group's update surges: max_surge is set and
// the plan marked some changed instance to surge.
func (g Group) surges() bool {
	if g.Update.MaxSurge.Of(g.size()) < 1 {
		return false
	}
	for _, in := range g.Instances {
		if in.Surge && in.Changed() {
			return true
		}
	}
	return false
}

// Batches splits a group's changed instances into canaries and batches.
// When the group surges, max_surge takes the place of max_in_flight and
// bounds the canaries' batches too: the instances of a batch are not taken
// down but replaced by new VMs, so max_in_flight (how many instances may be
// out of service at once) has nothing to bound, and max_surge (how many
// extra VMs are brought up at once) is the limit that holds.
func Batches(g Group) []Batch {
	size := g.size()
	var changed []Instance
	for _, in := range g.Instances {
		if in.Changed() {
			changed = append(changed, in)
		}
	}
	if len(changed) == 0 {
		return nil
	}
	azRank := map[string]int{}
	for i, az := range g.AZs {
		azRank[az] = i + 1
	}
	sort.SliceStable(changed, func(i, j int) bool {
		a, b := changed[i], changed[j]
		ra, rb := azRank[a.AZ], azRank[b.AZ]
		if ra == 0 {
			ra = len(g.AZs) + 1
		}
		if rb == 0 {
			rb = len(g.AZs) + 1
		}
		if ra != rb {
			return ra < rb
		}
		if a.AZ != b.AZ {
			return a.AZ < b.AZ
		}
		if a.Index != b.Index {
			return a.Index < b.Index
		}
		return a.ID < b.ID
	})
	canaries := g.Update.Canaries.Of(size)
	if canaries > len(changed) {
		canaries = len(changed)
	}
	inFlight := g.Update.MaxInFlight.Of(size)
	surge := g.surges()
	if surge {
		inFlight = g.Update.MaxSurge.Of(size)
	}
	if inFlight < 1 {
		inFlight = 1
	}
	var out []Batch
	for c := changed[:canaries]; len(c) > 0; {
		n := len(c)
		if surge {
			n = min(n, inFlight)
		}
		out = append(out, Batch{Canary: true, Instances: c[:n]})
		c = c[n:]
	}
	rest := changed[canaries:]
	for len(rest) > 0 {
		az := rest[0].AZ
		n := 0
		for n < len(rest) && n < inFlight && rest[n].AZ == az {
			n++
		}
		out = append(out, Batch{AZ: az, Instances: rest[:n]})
		rest = rest[n:]
	}
	return out
}

// Waves groups instance groups that update together: a serial group is a
// wave of its own; consecutive non-serial groups share one.
func Waves(groups []Group) [][]Group {
	var out [][]Group
	for i, g := range groups {
		if g.Update.Serial || i == 0 || groups[i-1].Update.Serial {
			out = append(out, []Group{g})
			continue
		}
		out[len(out)-1] = append(out[len(out)-1], g)
	}
	return out
}

// WatchSchedule returns the offsets, from the start of the watch, at which
// the updater checks an instance: first at w.Min, then in steps of at least
// minStep (BOSH splits the range into ten), the last one exactly at w.Max.
func WatchSchedule(w manifest.WatchTime, minStep time.Duration) []time.Duration {
	if minStep <= 0 {
		minStep = time.Second
	}
	out := []time.Duration{w.Min}
	delta := w.Max - w.Min
	if delta <= 0 {
		return out
	}
	step := max(minStep, delta/9)
	for t := w.Min + step; t < w.Max; t += step {
		out = append(out, t)
	}
	return append(out, w.Max)
}

// run is the state of one Run.
type run struct {
	u    *Updater
	opts Options

	mu     sync.Mutex
	res    Result
	halted bool // a failure or a pause: start nothing new
	paused bool
	errs   []error
}

func (r *run) report(e Event) {
	if r.opts.Reporter != nil {
		r.opts.Reporter.Report(e)
	}
}

func (r *run) stop() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.halted && r.opts.Pause != nil && r.opts.Pause() {
		r.halted, r.paused = true, true
	}
	return r.halted
}

func (r *run) fail(inst Instance, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.halted = true
	r.res.Failed = append(r.res.Failed, inst)
	r.errs = append(r.errs, err)
}

// Run carries out the rollout. It returns the first failures (each naming
// its instance), ErrPaused, or the context's error; Result is filled in
// every case.
func (u *Updater) Run(ctx context.Context, ro Rollout, opts Options) (Result, error) {
	if opts.Parallel < 1 {
		opts.Parallel = 10
	}
	r := &run{u: u, opts: opts}
	if _, ok := u.exec.(Swapper); !ok {
		ro.Groups = withoutSurge(ro.Groups)
	}
	for _, g := range ro.Groups {
		for _, in := range g.Instances {
			if !in.Changed() {
				r.res.Skipped++
			}
		}
	}

	// 1. Missing VMs, in parallel.
	var missing []Instance
	for _, g := range ro.Groups {
		for _, in := range g.Instances {
			if in.New {
				missing = append(missing, in)
			}
		}
	}
	r.parallel(ctx, "Creating missing vms", missing, func(ctx context.Context, in Instance) error {
		if err := u.exec.CreateVM(ctx, in); err != nil {
			return fmt.Errorf("create vm for %s: %w", in.Name(), err)
		}
		return nil
	})

	// 2. Groups, wave by wave.
	for _, wave := range Waves(ro.Groups) {
		if r.stop() || ctx.Err() != nil {
			break
		}
		var wg sync.WaitGroup
		for _, g := range wave {
			wg.Go(func() { r.group(ctx, g) })
		}
		wg.Wait()
	}

	// 3. Instances to delete, last.
	if !r.stop() && ctx.Err() == nil {
		r.parallel(ctx, "Deleting unneeded instances", ro.Delete, func(ctx context.Context, in Instance) error {
			if !in.New { // an instance without a VM has nothing to stop
				if err := r.takeDown(ctx, in); err != nil {
					return err
				}
			}
			if err := u.exec.Delete(ctx, in); err != nil {
				return fmt.Errorf("delete %s: %w", in.Name(), err)
			}
			r.mu.Lock()
			r.res.Deleted = append(r.res.Deleted, in)
			r.mu.Unlock()
			return nil
		})
	}

	// 4. Post-deploy, when a deploy changed anything.
	if !r.opts.NoPostDeploy && !r.stop() && ctx.Err() == nil && (len(r.res.Touched) > 0 || len(r.res.Deleted) > 0) {
		var all []Instance
		for _, g := range ro.Groups {
			all = append(all, g.Instances...)
		}
		r.parallel(ctx, "Running post-deploy", all, func(ctx context.Context, in Instance) error {
			if err := u.exec.PostDeploy(ctx, in); err != nil {
				return fmt.Errorf("post-deploy on %s: %w", in.Name(), err)
			}
			return nil
		})
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case len(r.errs) > 0:
		return r.res, errors.Join(r.errs...)
	case ctx.Err() != nil:
		return r.res, fmt.Errorf("update deployment %s: %w", ro.Deployment, ctx.Err())
	case r.paused:
		return r.res, ErrPaused
	}
	return r.res, nil
}

// withoutSurge returns a copy of the groups with no instance surging: an
// executor without the Swapper capability (the director's lifecycle verbs)
// cannot bring a replacement up first, so its batches keep max_in_flight.
func withoutSurge(groups []Group) []Group {
	out := make([]Group, len(groups))
	for i, g := range groups {
		g.Instances = slices.Clone(g.Instances)
		for k := range g.Instances {
			g.Instances[k].Surge = false
		}
		out[i] = g
	}
	return out
}

// parallel runs fn on every instance, at most opts.Parallel at once, as one
// stage of events; failures halt the rollout.
func (r *run) parallel(ctx context.Context, stage string, insts []Instance, fn func(context.Context, Instance) error) {
	if len(insts) == 0 || r.stop() {
		return
	}
	sem := make(chan struct{}, r.opts.Parallel)
	var wg sync.WaitGroup
	for i, in := range insts {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			task := in.Name()
			began := time.Now()
			r.report(Event{Stage: stage, Task: task, Index: i + 1, Total: len(insts), State: "started", Instance: in})
			if err := fn(ctx, in); err != nil {
				r.report(Event{Stage: stage, Task: task, Index: i + 1, Total: len(insts), State: "failed", Duration: time.Since(began), Err: err, Instance: in})
				r.fail(in, err)
				return
			}
			r.report(Event{Stage: stage, Task: task, Index: i + 1, Total: len(insts), State: "finished", Duration: time.Since(began), Instance: in})
		})
	}
	wg.Wait()
}

// group updates one group batch by batch.
func (r *run) group(ctx context.Context, g Group) {
	batches := Batches(g)
	total := 0
	for _, b := range batches {
		total += len(b.Instances)
	}
	n := 0
	for _, b := range batches {
		if r.stop() || ctx.Err() != nil {
			return
		}
		var wg sync.WaitGroup
		for _, in := range b.Instances {
			n++
			idx := n
			r.mu.Lock()
			r.res.Touched = append(r.res.Touched, in)
			r.mu.Unlock()
			wg.Go(func() { r.instance(ctx, g, b.Canary, in, idx, total) })
		}
		wg.Wait()
	}
}

func (r *run) instance(ctx context.Context, g Group, canary bool, in Instance, idx, total int) {
	task := in.Name()
	if canary {
		task += " (canary)"
	}
	ev := Event{Stage: "Updating instance", Task: task, Index: idx, Total: total, Instance: in}
	began := time.Now()
	ev.State = "started"
	r.report(ev)
	err := r.steps(ctx, g, canary, in, func(note string) {
		r.report(Event{Stage: ev.Stage, Task: task, Index: idx, Total: total, State: "info", Note: note, Instance: in})
	})
	if err == nil && r.opts.Updated != nil {
		if rerr := r.opts.Updated(in); rerr != nil {
			err = fmt.Errorf("record instance state: %w", rerr)
		}
	}
	ev.Duration = time.Since(began)
	if err != nil {
		label := in.Name()
		if canary {
			label += " (canary)"
		}
		err = fmt.Errorf("update %s: %w", label, err)
		ev.State, ev.Err = "failed", err
		r.report(ev)
		r.fail(in, err)
		return
	}
	ev.State = "finished"
	r.report(ev)
	r.mu.Lock()
	r.res.Updated = append(r.res.Updated, in)
	r.mu.Unlock()
}

// takeDown runs pre-stop, drain and stop on a running instance.
func (r *run) takeDown(ctx context.Context, in Instance) error {
	if err := r.u.exec.PreStop(ctx, in); err != nil {
		return fmt.Errorf("pre-stop: %w", err)
	}
	if !r.opts.SkipDrain {
		if err := r.u.exec.Drain(ctx, in); err != nil {
			return fmt.Errorf("drain: %w", err)
		}
	}
	if err := r.u.exec.Stop(ctx, in); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	return nil
}

func (r *run) steps(ctx context.Context, g Group, canary bool, in Instance, note func(string)) (err error) {
	x := r.u.exec
	if !in.New {
		if _, canSwap := x.(Swapper); canSwap && !in.Surge && g.Update.MaxSurge.Of(g.size()) > 0 {
			switch {
			case in.StaticIP:
				note("max_surge does not apply to an instance with a static IP: no replacement vm comes up before it is taken down")
			case in.PersistentDisk:
				note("max_surge does not apply to an instance with a persistent disk: no replacement vm comes up before it is taken down")
			default:
				note("max_surge needs an address of its own for the replacement vm, which a network without manual addresses does not give: no replacement vm comes up before the instance is taken down")
			}
		}
		var swapper Swapper
		if in.Recreate && (g.Update.VMStrategy == manifest.CreateSwapDelete || in.Surge) {
			s, ok := x.(Swapper)
			switch {
			case in.StaticIP:
				note("create-swap-delete does not apply to an instance with a static IP: delete-create")
			case !ok:
				note("create-swap-delete is not available here: delete-create")
			default:
				swapper = s
				if in.Surge {
					note("max_surge: the new version comes up on a replacement vm before the old one leaves")
				}
			}
		}
		if swapper != nil {
			if err := swapper.CreateReplacementVM(ctx, in); err != nil {
				return fmt.Errorf("create replacement vm: %w", err)
			}
			// From here on one of the two VMs goes, whatever happens.
			defer func() {
				dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
				defer cancel()
				if derr := swapper.DeleteReplacedVM(dctx, in); derr != nil && err == nil {
					err = fmt.Errorf("delete replaced vm: %w", derr)
				}
			}()
		}
		if err := r.takeDown(ctx, in); err != nil {
			return err
		}
		switch {
		case swapper != nil:
			if err := swapper.SwapVM(ctx, in); err != nil {
				return fmt.Errorf("swap vm: %w", err)
			}
		case in.Recreate:
			if err := x.RecreateVM(ctx, in); err != nil {
				return fmt.Errorf("recreate vm: %w", err)
			}
		}
	}
	if in.DiskChange {
		if err := x.UpdateDisk(ctx, in); err != nil {
			return fmt.Errorf("update disk: %w", err)
		}
	}
	if err := x.Apply(ctx, in); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	if err := x.PreStart(ctx, in); err != nil {
		return fmt.Errorf("pre-start: %w", err)
	}
	if err := x.Start(ctx, in); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	w := g.Update.UpdateWatchTime
	if canary {
		w = g.Update.CanaryWatchTime
	}
	if err := r.watch(ctx, in, w); err != nil {
		return err
	}
	if err := x.PostStart(ctx, in); err != nil {
		return fmt.Errorf("post-start: %w", err)
	}
	return nil
}

// watch checks the instance on the watch schedule until it runs.
func (r *run) watch(ctx context.Context, in Instance, w manifest.WatchTime) error {
	start := time.Now()
	detail := ""
	for _, at := range WatchSchedule(w, r.opts.MinWatchStep) {
		if wait := at - time.Since(start); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
		ok, d, err := r.u.exec.Running(ctx, in)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			// An agent that does not answer one check may answer the
			// next: only the last check decides.
			detail = "check processes: " + err.Error()
		case ok:
			return nil
		default:
			detail = d
		}
	}
	msg := fmt.Sprintf("not running after %s", w.Max)
	if detail = strings.TrimSpace(detail); detail != "" {
		msg += ":\n" + detail
	}
	return errors.New(msg)
}
