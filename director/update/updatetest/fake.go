// Package updatetest holds a hand-written stateful fake of update.Executor:
// instances with VMs, persistent disks and processes in memory, a timeline
// of every step, and knobs to make steps slow or failing.
package updatetest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/compleat/compleat/director/update"
)

var _ update.Executor = (*Executor)(nil)

// VM is a fake instance's VM.
type VM struct {
	CID     string
	Disk    string // persistent disk cid, kept across recreation
	Running bool
	Applied int // how many times a spec was applied
	Checks  int // Running calls since the last Start
	// Next is a replacement VM not yet swapped in; Replaced the VM swapped
	// out and not yet deleted (create-swap-delete).
	Next, Replaced string
}

// Step is one executor call, as recorded in the timeline.
type Step struct {
	At       time.Time
	Instance string // group/id
	Step     string // "create-vm", "pre-stop", "drain", "stop", "recreate-vm", "update-disk", "apply", "pre-start", "start", "running", "post-start", "post-deploy", "delete"
}

// Executor is a fake executor. Zero values of the knobs mean "instant and
// successful". It is safe for concurrent use.
type Executor struct {
	// Delay is how long each step takes, by step name.
	Delay map[string]time.Duration
	// Fail makes a step fail on an instance: Fail["web/a"] = "start".
	Fail map[string]string
	// SlowStart makes Running answer false that many times after Start.
	SlowStart map[string]int
	// NeverRunning instances never report running.
	NeverRunning map[string]bool
	// CheckErrors makes that many Running calls after Start fail, as an
	// agent that does not answer.
	CheckErrors map[string]int

	mu       sync.Mutex
	next     int
	vms      map[string]*VM
	timeline []Step
}

// New returns an empty fake.
func New() *Executor {
	return &Executor{
		Delay: map[string]time.Duration{}, Fail: map[string]string{},
		SlowStart: map[string]int{}, NeverRunning: map[string]bool{},
		CheckErrors: map[string]int{}, vms: map[string]*VM{},
	}
}

// Seed gives an existing instance a running VM with a persistent disk.
func (e *Executor) Seed(inst update.Instance) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.next++
	e.vms[inst.Name()] = &VM{CID: fmt.Sprintf("vm-%d", e.next), Disk: "disk-" + inst.ID, Running: true, Applied: 1}
}

// VM returns a copy of an instance's VM.
func (e *Executor) VM(name string) (VM, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	v, ok := e.vms[name]
	if !ok {
		return VM{}, false
	}
	return *v, true
}

// Timeline returns every step so far, in order.
func (e *Executor) Timeline() []Step {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Step(nil), e.timeline...)
}

// StepsOf returns the step names of one instance, in order.
func (e *Executor) StepsOf(name string) []string {
	var out []string
	for _, s := range e.Timeline() {
		if s.Instance == name {
			out = append(out, s.Step)
		}
	}
	return out
}

func (e *Executor) step(ctx context.Context, inst update.Instance, name string, needVM bool, fn func(v *VM) error) error {
	e.mu.Lock()
	e.timeline = append(e.timeline, Step{At: time.Now(), Instance: inst.Name(), Step: name})
	d := e.Delay[name]
	failing := e.Fail[inst.Name()] == name
	e.mu.Unlock()
	if d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	if failing {
		return fmt.Errorf("%s failed on %s (injected)", name, inst.Name())
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	v := e.vms[inst.Name()]
	if needVM && v == nil {
		return fmt.Errorf("%s: instance %s has no vm", name, inst.Name())
	}
	if fn != nil {
		return fn(v)
	}
	return nil
}

// CreateVM creates the VM and its disk.
func (e *Executor) CreateVM(ctx context.Context, inst update.Instance) error {
	return e.step(ctx, inst, "create-vm", false, func(v *VM) error {
		if v != nil {
			return fmt.Errorf("instance %s already has vm %s", inst.Name(), v.CID)
		}
		e.next++
		e.vms[inst.Name()] = &VM{CID: fmt.Sprintf("vm-%d", e.next), Disk: "disk-" + inst.ID}
		return nil
	})
}

// PreStop runs on a VM.
func (e *Executor) PreStop(ctx context.Context, inst update.Instance) error {
	return e.step(ctx, inst, "pre-stop", true, nil)
}

// Drain runs on a VM.
func (e *Executor) Drain(ctx context.Context, inst update.Instance) error {
	return e.step(ctx, inst, "drain", true, nil)
}

// Stop stops the processes.
func (e *Executor) Stop(ctx context.Context, inst update.Instance) error {
	return e.step(ctx, inst, "stop", true, func(v *VM) error { v.Running = false; return nil })
}

// RecreateVM gives the instance a new VM with the same disk.
func (e *Executor) RecreateVM(ctx context.Context, inst update.Instance) error {
	return e.step(ctx, inst, "recreate-vm", true, func(v *VM) error {
		e.next++
		v.CID = fmt.Sprintf("vm-%d", e.next)
		v.Running = false
		return nil
	})
}

// UpdateDisk gives the instance a new persistent disk.
func (e *Executor) UpdateDisk(ctx context.Context, inst update.Instance) error {
	return e.step(ctx, inst, "update-disk", true, func(v *VM) error {
		e.next++
		v.Disk = fmt.Sprintf("disk-%s-%d", inst.ID, e.next)
		return nil
	})
}

// Apply records an applied spec.
func (e *Executor) Apply(ctx context.Context, inst update.Instance) error {
	return e.step(ctx, inst, "apply", true, func(v *VM) error { v.Applied++; return nil })
}

// PreStart runs on a VM.
func (e *Executor) PreStart(ctx context.Context, inst update.Instance) error {
	return e.step(ctx, inst, "pre-start", true, nil)
}

// Start starts the processes.
func (e *Executor) Start(ctx context.Context, inst update.Instance) error {
	return e.step(ctx, inst, "start", true, func(v *VM) error {
		v.Running = !e.NeverRunning[inst.Name()]
		v.Checks = 0
		return nil
	})
}

// Running answers per SlowStart and NeverRunning.
func (e *Executor) Running(ctx context.Context, inst update.Instance) (bool, string, error) {
	var ok bool
	err := e.step(ctx, inst, "running", true, func(v *VM) error {
		v.Checks++
		if v.Checks <= e.CheckErrors[inst.Name()] {
			return fmt.Errorf("agent %s did not answer", inst.Name())
		}
		ok = v.Running && v.Checks > e.SlowStart[inst.Name()]
		return nil
	})
	if err != nil {
		return false, "", err
	}
	if !ok {
		return false, "process web: failing\n  panic: listen tcp: address already in use", nil
	}
	return true, "", nil
}

// PostStart runs on a VM.
func (e *Executor) PostStart(ctx context.Context, inst update.Instance) error {
	return e.step(ctx, inst, "post-start", true, nil)
}

// PostDeploy runs on a VM.
func (e *Executor) PostDeploy(ctx context.Context, inst update.Instance) error {
	return e.step(ctx, inst, "post-deploy", true, nil)
}

// Delete removes the VM; an instance without one is deleted too.
func (e *Executor) Delete(ctx context.Context, inst update.Instance) error {
	return e.step(ctx, inst, "delete", false, func(v *VM) error {
		delete(e.vms, inst.Name())
		return nil
	})
}

// SwapExecutor is Executor with the create-swap-delete capability.
type SwapExecutor struct {
	*Executor
}

var _ update.Swapper = SwapExecutor{}

// NewSwap returns an empty fake that can swap VMs.
func NewSwap() SwapExecutor { return SwapExecutor{New()} }

// CreateReplacementVM creates the next VM beside the running one.
func (e SwapExecutor) CreateReplacementVM(ctx context.Context, inst update.Instance) error {
	return e.step(ctx, inst, "create-replacement-vm", true, func(v *VM) error {
		e.next++
		v.Next = fmt.Sprintf("vm-%d", e.next)
		return nil
	})
}

// SwapVM moves the disk to the replacement and makes it current.
func (e SwapExecutor) SwapVM(ctx context.Context, inst update.Instance) error {
	return e.step(ctx, inst, "swap-vm", true, func(v *VM) error {
		if v.Next == "" {
			return fmt.Errorf("instance %s has no replacement vm", inst.Name())
		}
		v.Replaced, v.CID, v.Next = v.CID, v.Next, ""
		v.Running = false
		return nil
	})
}

// DeleteReplacedVM deletes the swapped-out VM, or the unused replacement.
func (e SwapExecutor) DeleteReplacedVM(ctx context.Context, inst update.Instance) error {
	return e.step(ctx, inst, "delete-replaced-vm", true, func(v *VM) error {
		if v.Next != "" {
			v.Next = ""
		} else {
			v.Replaced = ""
		}
		return nil
	})
}
