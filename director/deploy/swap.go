package deploy

// vm_strategy create-swap-delete: the update.Swapper capability of the
// deploy executor.
//
// For an instance whose VM is recreated (new stemcell, vm_type, cloud
// properties, or --recreate) in a group with vm_strategy
// create-swap-delete, the updater asks for a replacement VM first. The
// plan gives the replacement its own address (the old VM keeps its own
// while it lives), so the instance's jobs run on the new VM at the new
// address, and the consumers of its links are re-rendered with that
// address in their own group's turn. Two cases:
//
//   - Without a persistent disk, nothing has to move between the VMs, so
//     the old VM keeps serving (its take-down steps are skipped) while the
//     new one is applied, started and watched, and while the rest of the
//     deployment (load balancers consuming its link among them) is
//     updated. The old VMs are retired last: drained (shutdown), stopped
//     and deleted once the rollout has ended, whatever its outcome. The
//     deployment's capacity never drops below its instance count.
//   - With a persistent disk, the old VM is taken down (pre-stop, drain,
//     stop) before the swap, the disk moves to the new VM, which is then
//     applied and started, and the old VM is deleted right after.
//
// If the update fails before the swap, the unused replacement is deleted
// and the old VM keeps serving as it was. Instances with a static IP fall
// back to delete-create (the updater says so in the task events). Every VM
// is recorded in the store as it is created (createVM), so a replacement
// or an old VM left by a director that died mid-task has a record no
// instance points at, which the next deploy's reconcile deletes.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/director/plan"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
	"github.com/compleat/compleat/director/update"
)

// swapping is the deploy executor with the update.Swapper capability.
type swapping struct {
	*executor
	r *task.Reporter

	mu sync.Mutex
	// pending are replacement VMs not swapped in yet, by instance id.
	pending map[string]createdVM
	// serving are old VMs that keep serving until retire, by instance id
	// (instances without a persistent disk).
	serving map[string]replaced
	// committed are instances whose update on the replacement finished
	// (post-start passed): their old VM is retired, not swapped back.
	committed map[string]bool
}

// replaced is an old VM that was swapped out.
type replaced struct {
	inst update.Instance
	vm   createdVM
}

var (
	_ update.Executor = (*swapping)(nil)
	_ update.Swapper  = (*swapping)(nil)
)

// newSwapping wraps a deploy executor; r receives the notes it adds to the
// task.
func newSwapping(x *executor, r *task.Reporter) *swapping {
	return &swapping{executor: x, r: r, pending: map[string]createdVM{}, serving: map[string]replaced{}, committed: map[string]bool{}}
}

func (s *swapping) note(inst update.Instance, text string) {
	if s.r == nil {
		return
	}
	raw, _ := json.Marshal(map[string]string{"text": text})
	s.r.Event(store.Event{Stage: "Updating instance", Step: inst.Name(), State: "info", Data: raw})
}

// hasDisk reports whether the instance has a persistent disk, now or
// after this deploy.
func (s *swapping) hasDisk(pi *plan.Instance) bool {
	return pi.Disk != nil || s.attachedDisk(pi) != ""
}

// CreateReplacementVM creates the instance's new VM on its planned
// networks and waits for its agent; the instance keeps its old VM until
// SwapVM.
func (s *swapping) CreateReplacementVM(ctx context.Context, inst update.Instance) error {
	pi, err := s.planned(inst.ID)
	if err != nil {
		return err
	}
	spec, err := s.vmSpec(pi)
	if err != nil {
		return err
	}
	if disk := s.attachedDisk(pi); disk != "" {
		if _, err := s.diskMoves(pi, disk, spec.cpiName); err != nil {
			return err
		}
	}
	vm, err := s.d.createVM(ctx, spec)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.pending[inst.ID] = vm
	s.mu.Unlock()
	if !s.hasDisk(pi) {
		s.note(inst, fmt.Sprintf("create-swap-delete: replacement vm %s at %s is up; the old vm %s keeps serving until the rollout ends", vm.CID, pi.Address(), pi.VMCID))
	} else {
		s.note(inst, fmt.Sprintf("create-swap-delete: replacement vm %s is up; the persistent disk moves to it after the old vm %s stops", vm.CID, pi.VMCID))
	}
	return nil
}

// keepsServing reports whether the instance's old VM stays in service
// until retire: it has a replacement waiting and no disk to move.
func (s *swapping) keepsServing(inst update.Instance) bool {
	s.mu.Lock()
	_, ok := s.pending[inst.ID]
	s.mu.Unlock()
	if !ok {
		return false
	}
	pi, err := s.planned(inst.ID)
	return err == nil && !s.hasDisk(pi)
}

// PreStop, Drain and Stop leave an old VM that keeps serving alone; retire
// takes it down once the rollout has ended.
func (s *swapping) PreStop(ctx context.Context, inst update.Instance) error {
	if s.keepsServing(inst) {
		return nil
	}
	return s.executor.PreStop(ctx, inst)
}

func (s *swapping) Drain(ctx context.Context, inst update.Instance) error {
	if s.keepsServing(inst) {
		return nil
	}
	return s.executor.Drain(ctx, inst)
}

func (s *swapping) Stop(ctx context.Context, inst update.Instance) error {
	if s.keepsServing(inst) {
		return nil
	}
	return s.executor.Stop(ctx, inst)
}

// SwapVM makes the replacement the instance's VM, moving its persistent
// disk from the old VM.
func (s *swapping) SwapVM(ctx context.Context, inst update.Instance) error {
	pi, err := s.planned(inst.ID)
	if err != nil {
		return err
	}
	s.mu.Lock()
	vm, ok := s.pending[inst.ID]
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("no replacement vm for %s", inst.Name())
	}
	old := createdVM{CID: pi.VMCID, AgentID: pi.AgentID}
	disk := s.attachedDisk(pi)
	if disk != "" && old.CID != "" {
		c, err := s.d.cpi(ctx, s.d.recordedCPI(old.CID, s.place.cpiFor(pi.AZ)))
		if err != nil {
			return err
		}
		if err := s.d.agent(old.AgentID).UnmountDisk(ctx, disk); err != nil {
			// The old VM is stopped; detaching is what frees the disk.
			s.log.Warn("unmount disk on the replaced vm", "disk", disk, "vm", old.CID, "error", err)
		}
		if err := c.DetachDisk(ctx, old.CID, disk); err != nil && !errors.Is(err, cpi.ErrVMNotFound) && !errors.Is(err, cpi.ErrDiskNotFound) {
			return fmt.Errorf("detach disk %s from vm %s: %w", disk, old.CID, err)
		}
	}
	pi.VMCID, pi.AgentID = vm.CID, vm.AgentID
	if err := s.record(pi, func(rec *store.Instance) error {
		rec.VMCID, rec.AgentID = vm.CID, vm.AgentID
		return nil
	}); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.pending, inst.ID)
	if old.CID != "" {
		s.serving[inst.ID] = replaced{inst: inst, vm: old}
	}
	s.mu.Unlock()
	s.executor.mu.Lock()
	s.fresh[pi.ID] = true
	s.executor.mu.Unlock()
	if disk != "" {
		if moves, err := s.diskMoves(pi, disk, s.vmCPI(pi)); err != nil {
			return err
		} else if moves {
			return s.freshDiskFor(ctx, pi, disk)
		}
		return s.attach(ctx, pi, disk)
	}
	return nil
}

// PostStart is the last step of an instance's update: once it passes, the
// swap is final.
func (s *swapping) PostStart(ctx context.Context, inst update.Instance) error {
	if err := s.executor.PostStart(ctx, inst); err != nil {
		return err
	}
	s.mu.Lock()
	s.committed[inst.ID] = true
	s.mu.Unlock()
	return nil
}

// DeleteReplacedVM deletes the unused replacement when the update failed
// before the swap, or the old VM after a swap that moved a disk. An old VM
// without a disk keeps serving: until retire when the update finished;
// when it did not (failed, cancelled), the swap is undone: the old VM,
// never stopped, is the instance's VM again and the replacement goes.
func (s *swapping) DeleteReplacedVM(ctx context.Context, inst update.Instance) error {
	s.mu.Lock()
	vm, unused := s.pending[inst.ID]
	delete(s.pending, inst.ID)
	old, swapped := s.serving[inst.ID]
	committed := s.committed[inst.ID]
	s.mu.Unlock()
	if unused {
		s.note(inst, fmt.Sprintf("create-swap-delete: the update failed before the swap; deleting the unused replacement vm %s, the old vm keeps serving", vm.CID))
		return s.d.deleteVM(ctx, s.place.def, vm)
	}
	if !swapped {
		return nil
	}
	pi, err := s.planned(inst.ID)
	if err != nil {
		return err
	}
	if !s.hasDisk(pi) {
		if committed {
			return nil // retire takes it down once the rollout has ended
		}
		return s.swapBack(ctx, inst, pi, old.vm)
	}
	s.mu.Lock()
	delete(s.serving, inst.ID)
	s.mu.Unlock()
	return s.d.deleteVM(ctx, s.place.def, old.vm)
}

// swapBack makes the old VM, which kept serving, the instance's VM again
// and deletes the replacement.
func (s *swapping) swapBack(ctx context.Context, inst update.Instance, pi *plan.Instance, old createdVM) error {
	repl := createdVM{CID: pi.VMCID, AgentID: pi.AgentID}
	pi.VMCID, pi.AgentID = old.CID, old.AgentID
	if err := s.record(pi, func(rec *store.Instance) error {
		rec.VMCID, rec.AgentID = old.CID, old.AgentID
		return nil
	}); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.serving, inst.ID)
	s.mu.Unlock()
	s.note(inst, fmt.Sprintf("create-swap-delete: the update did not finish; the old vm %s keeps serving as the instance's vm, the replacement vm %s is deleted", old.CID, repl.CID))
	return s.d.deleteVM(ctx, s.place.def, repl)
}

// retire takes down and deletes the old VMs that kept serving during the
// rollout, in parallel, as the stage "Deleting replaced vms"; and frees
// the addresses the instances left. It runs whatever the rollout's
// outcome, to the end even when ctx is cancelled (bounded by a few
// minutes).
func (s *swapping) retire(ctx context.Context, skipDrain bool) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	s.mu.Lock()
	olds := make([]replaced, 0, len(s.serving))
	for _, o := range s.serving {
		olds = append(olds, o)
	}
	s.serving = map[string]replaced{}
	s.mu.Unlock()

	var errs []error
	var emu sync.Mutex
	var wg sync.WaitGroup
	for i, o := range olds {
		wg.Go(func() {
			ev := store.Event{Stage: "Deleting replaced vms", Step: o.inst.Name() + " (" + o.vm.CID + ")", Index: i + 1, Total: len(olds), State: "started"}
			s.event(ev)
			err := s.retireOne(ctx, o.vm, skipDrain)
			if err != nil {
				ev.State, ev.Error = "failed", err.Error()
				emu.Lock()
				errs = append(errs, fmt.Errorf("retire vm %s of %s: %w", o.vm.CID, o.inst.Name(), err))
				emu.Unlock()
			} else {
				ev.State = "finished"
			}
			s.event(ev)
		})
	}
	wg.Wait()
	if err := s.releaseLeftAddresses(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (s *swapping) event(e store.Event) {
	if s.r != nil {
		s.r.Event(e)
	}
}

// retireOne drains (shutdown), stops and deletes an old VM. An agent that
// does not answer does not keep its VM alive.
func (s *swapping) retireOne(ctx context.Context, vm createdVM, skipDrain bool) error {
	a := s.d.agent(vm.AgentID)
	actx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	if _, err := a.RunScript(actx, protocol.RunScriptRequest{Name: "pre-stop"}); err != nil {
		s.log.Warn("pre-stop of a replaced vm", "vm", vm.CID, "error", err)
	}
	if !skipDrain {
		if _, err := a.Drain(actx, protocol.DrainRequest{Type: protocol.DrainShutdown}); err != nil {
			s.log.Warn("drain of a replaced vm", "vm", vm.CID, "error", err)
		}
	}
	if err := a.Stop(actx, protocol.StopRequest{}); err != nil {
		s.log.Warn("stop of a replaced vm", "vm", vm.CID, "error", err)
	}
	cancel()
	return s.d.deleteVM(ctx, s.place.def, vm)
}

// releaseLeftAddresses frees the reservations of the plan's instances on
// addresses that neither their plan nor their recorded state holds any
// more (the old address of a replaced VM).
func (s *swapping) releaseLeftAddresses() error {
	return s.d.c.Store.Update(func(tx *store.Tx) error {
		rs, err := tx.IPReservations("")
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Deployment != s.deployment || r.Static {
				continue
			}
			pi, ok := s.p.Instance(r.InstanceID)
			if !ok {
				continue
			}
			if holds(pi.Networks, r.Network, r.IP) || s.recordHolds(tx, pi, r.Network, r.IP) {
				continue
			}
			if err := tx.ReleaseIP(r.Network, r.IP); err != nil {
				return err
			}
		}
		return nil
	})
}

func holds(ns []plan.Network, network, ip string) bool {
	for _, n := range ns {
		if n.Name == network && n.IP.IsValid() && n.IP.String() == ip {
			return true
		}
	}
	return false
}

// recordHolds reports whether the instance's recorded state still lists
// the address (its record was not updated: the update did not finish).
func (s *swapping) recordHolds(tx *store.Tx, pi *plan.Instance, network, ip string) bool {
	rec, err := tx.Instance(s.deployment, pi.Group, pi.ID)
	if err != nil {
		return false
	}
	var st struct {
		Networks map[string]string `json:"networks"`
	}
	if json.Unmarshal(rec.Spec, &st) != nil {
		return true // unknown: keep it
	}
	a, err := netip.ParseAddr(st.Networks[network])
	return err == nil && a.String() == ip
}
