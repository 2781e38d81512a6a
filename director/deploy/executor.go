package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/compleat/compleat/agent/applyspec"
	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/director/compile"
	"github.com/compleat/compleat/director/plan"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/update"
)

// executor is update.Executor over the CPI and the agents, for one plan.
// Every VM and disk it creates or deletes is recorded in the store before
// and after the CPI call; every instance's record is updated as soon as its
// VM or disk changes, and its applied state when its update finishes.
type executor struct {
	d          *Deployer
	p          *plan.Plan
	deployment string
	place      placement     // where new VMs and disks go
	jobs       *renderedJobs // nil: the run applies none
	pkgBlobs   map[string]map[string]compile.Compiled
	log        *slog.Logger
	force      bool // delete-deployment --force: go on past agent and CPI errors
	// freshDisk: an instance whose VM moves to another CPI gets a new,
	// empty persistent disk there, its old disk orphaned in the old CPI
	// (deploy --fresh-disk-on-cpi-move); otherwise such a move is refused.
	freshDisk bool

	// steps are the planned steps by instance id (plan.Steps): a deploy's
	// or a lifecycle verb's. An instance without an entry gets a deploy's.
	steps map[string]plan.Steps

	mu    sync.Mutex
	fresh map[string]bool // instances whose VM this run created
	// unresponsive are instances whose agent did not answer (--force).
	unresponsive map[string]bool
	warning      []string
}

var _ update.Executor = (*executor)(nil)

func (d *Deployer) newExecutor(p *plan.Plan, deployment string, place placement, jobs *renderedJobs, pkgBlobs map[string]map[string]compile.Compiled, log *slog.Logger) *executor {
	return &executor{d: d, p: p, deployment: deployment, place: place, jobs: jobs, pkgBlobs: pkgBlobs, log: log, steps: map[string]plan.Steps{}, fresh: map[string]bool{}, unresponsive: map[string]bool{}}
}

// stepsOf are the planned steps of an instance.
func (x *executor) stepsOf(id string) plan.Steps {
	if s, ok := x.steps[id]; ok {
		return s
	}
	return plan.DeploySteps(false)
}

// planned finds the plan's instance, or the deployed state of an instance
// to delete.
func (x *executor) planned(id string) (*plan.Instance, error) {
	if pi, ok := x.p.Instance(id); ok {
		return pi, nil
	}
	return nil, fmt.Errorf("instance %s is not in the plan", id)
}

func (x *executor) deletion(id string) (*plan.InstanceState, bool) {
	for i := range x.p.Delete {
		if x.p.Delete[i].Instance.ID == id {
			return &x.p.Delete[i].Instance, true
		}
	}
	return nil, false
}

// agentOf is the agent of an instance, planned or to delete.
func (x *executor) agentOf(id string) (string, error) {
	if pi, ok := x.p.Instance(id); ok && pi.AgentID != "" {
		return pi.AgentID, nil
	}
	if st, ok := x.deletion(id); ok && st.AgentID != "" {
		return st.AgentID, nil
	}
	return "", fmt.Errorf("instance %s has no vm", id)
}

func (x *executor) tolerate(what string, inst update.Instance, err error) error {
	if err == nil || !x.force {
		return err
	}
	x.log.Warn("ignored with --force", "step", what, "instance", inst.Name(), "error", err)
	x.mu.Lock()
	x.warning = append(x.warning, fmt.Sprintf("%s %s: %v", what, inst.Name(), err))
	x.mu.Unlock()
	return nil
}

// record updates an instance's store record in one transaction, batched
// with the records of the other instances of the same batch (one fsync for
// all of them; the function may run again, so it only reads and writes the
// one record).
func (x *executor) record(pi *plan.Instance, fn func(rec *store.Instance) error) error {
	return x.d.c.Store.Batch(func(tx *store.Tx) error {
		rec, err := tx.Instance(x.deployment, pi.Group, pi.ID)
		if errors.Is(err, store.ErrNotFound) {
			st := pi.State()
			st.Jobs, st.Packages = nil, nil // nothing applied yet
			st.VMCID, st.AgentID = "", ""
			if st.Disk != nil && st.Disk.CID == "" {
				st.Disk = nil
			}
			raw, err := json.Marshal(st)
			if err != nil {
				return err
			}
			rec = store.Instance{Deployment: x.deployment, Group: pi.Group, ID: pi.ID, Index: pi.Index, AZ: pi.AZ, Bootstrap: pi.Bootstrap, State: "started", Spec: raw}
		} else if err != nil {
			return err
		}
		if err := fn(&rec); err != nil {
			return err
		}
		return tx.PutInstance(rec)
	})
}

// recordApplied records what the instance runs now that its update
// finished: the plan's state for a deploy, the desired state for the
// lifecycle verbs.
func (x *executor) recordApplied(inst update.Instance) error {
	pi, err := x.planned(inst.ID)
	if err != nil {
		return err
	}
	s := x.stepsOf(pi.ID)
	return x.record(pi, func(rec *store.Instance) error {
		if s.RecordSpec {
			raw, err := json.Marshal(pi.State())
			if err != nil {
				return err
			}
			rec.Spec = raw
			rec.Index, rec.AZ, rec.Bootstrap = pi.Index, pi.AZ, pi.Bootstrap
			rec.DiskCIDs = nil
			if pi.Disk != nil && pi.Disk.CID != "" {
				rec.DiskCIDs = []string{pi.Disk.CID}
			}
		}
		if s.State != "" {
			rec.State = s.State
		}
		rec.Unfinished = false
		rec.VMCID, rec.AgentID = pi.VMCID, pi.AgentID
		return nil
	})
}

// CreateVM creates the instance's VM, records it on the instance and
// attaches its existing persistent disk.
func (x *executor) CreateVM(ctx context.Context, inst update.Instance) error {
	pi, err := x.planned(inst.ID)
	if err != nil {
		return err
	}
	return x.createFor(ctx, pi)
}

func (x *executor) createFor(ctx context.Context, pi *plan.Instance) error {
	var disk string
	if !x.stepsOf(pi.ID).PlannedDisk || pi.Disk == nil || pi.Disk.CID != "" {
		disk = x.attachedDisk(pi)
	} else if pi.Disk.Replaces != "" {
		disk = pi.Disk.Replaces
	}
	spec, err := x.vmSpec(pi)
	if err != nil {
		return err
	}
	moves := false
	if disk != "" {
		if moves, err = x.diskMoves(pi, disk, spec.cpiName); err != nil {
			return err
		}
	}
	vm, err := x.d.createVM(ctx, spec)
	if err != nil {
		return err
	}
	pi.VMCID, pi.AgentID = vm.CID, vm.AgentID
	x.mu.Lock()
	x.fresh[pi.ID] = true
	x.mu.Unlock()
	if err := x.record(pi, func(rec *store.Instance) error {
		rec.VMCID, rec.AgentID = vm.CID, vm.AgentID
		return nil
	}); err != nil {
		return err
	}
	if moves {
		return x.freshDiskFor(ctx, pi, disk)
	}
	if disk != "" {
		if err := x.attach(ctx, pi, disk); err != nil {
			return err
		}
	}
	return nil
}

// diskMoves reports whether the instance's persistent disk is in another
// CPI than cpiName, the CPI of its new VM: refused (sameCPI's error)
// unless the operator asked for a fresh disk.
func (x *executor) diskMoves(pi *plan.Instance, disk, cpiName string) (bool, error) {
	err := x.sameCPI(pi, disk, cpiName)
	if err == nil {
		return false, nil
	}
	if !x.freshDisk {
		return false, err
	}
	return true, nil
}

// freshDiskFor orphans the instance's persistent disk old (detached, kept
// with its data in its own CPI, listed by disks --orphaned) and gives the
// instance's new VM a new, empty disk in the VM's CPI, as planned.
func (x *executor) freshDiskFor(ctx context.Context, pi *plan.Instance, old string) error {
	x.log.Warn("the instance moves to another cpi: its persistent disk is orphaned there and a new, empty one is made", "instance", pi.Name(), "disk", old)
	if err := x.d.c.Store.Update(func(tx *store.Tx) error {
		if err := tx.OrphanDisk(old); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		rec, err := tx.Instance(x.deployment, pi.Group, pi.ID)
		if err != nil {
			return err
		}
		rec.DiskCIDs = nil
		return tx.PutInstance(rec)
	}); err != nil {
		return err
	}
	if pi.Disk == nil {
		return nil
	}
	cpiName := x.vmCPI(pi)
	c, err := x.d.cpi(ctx, cpiName)
	if err != nil {
		return err
	}
	cid, err := x.createDisk(ctx, c, cpiName, pi)
	if err != nil {
		return err
	}
	if err := x.attach(ctx, pi, cid); err != nil {
		return err
	}
	pi.Disk.CID, pi.Disk.Replaces = cid, ""
	return x.record(pi, func(r *store.Instance) error { r.DiskCIDs = []string{cid}; return nil })
}

// vmSpec is the VM to create for a planned instance: in the CPI of its AZ,
// from that CPI's stemcell.
func (x *executor) vmSpec(pi *plan.Instance) (vmSpec, error) {
	cpiName := x.place.cpiFor(pi.AZ)
	stemcell := pi.Stemcell.CID
	if x.place.stemcells != nil {
		cid, err := x.place.stemcellCID(pi.Stemcell, cpiName)
		if err != nil {
			return vmSpec{}, fmt.Errorf("%s: %w", pi.Name(), err)
		}
		stemcell = cid
	}
	return vmSpec{
		cpiName: cpiName, deployment: x.deployment, instanceID: pi.ID,
		stemcellCID: stemcell, cloudProps: pi.CloudProperties, env: pi.Env, networks: pi.Networks,
		metadata: map[string]string{
			"instance_group": pi.Group, "job": pi.Group, "index": strconv.Itoa(pi.Index),
			"id": pi.ID, "name": pi.Name(),
		},
	}, nil
}

// sameCPI refuses to attach a persistent disk to a VM of another CPI: a
// disk never crosses clouds (its data would have to be copied, which only
// the operator can decide).
func (x *executor) sameCPI(pi *plan.Instance, disk, cpiName string) error {
	var rec store.Disk
	err := x.d.c.Store.View(func(tx *store.Tx) error {
		var err error
		rec, err = tx.Disk(disk)
		return err
	})
	if err != nil || rec.CPI == "" || rec.CPI == cpiName {
		return nil
	}
	return diskMoveError(pi, disk, rec.CPI, cpiName)
}

func diskMoveError(pi *plan.Instance, disk, diskCPI, cpiName string) error {
	return fmt.Errorf("%s: its persistent disk %s is in cpi %s, but az %s is served by cpi %s: a disk never moves between cpis; keep az %s on cpi %s, or deploy with --fresh-disk-on-cpi-move to give the instance a new, empty disk in cpi %s (the old disk is kept as an orphaned disk)",
		pi.Name(), disk, diskCPI, pi.AZ, cpiName, pi.AZ, diskCPI, cpiName)
}

// disksStay refuses, before anything is touched, a plan that would put an
// instance whose persistent disk lives in one CPI on a VM of another (see
// sameCPI).
func (d *Deployer) disksStay(p *plan.Plan, place placement) error {
	var errs []error
	err := d.c.Store.View(func(tx *store.Tx) error {
		for gi := range p.Groups {
			for ii := range p.Groups[gi].Instances {
				pi := &p.Groups[gi].Instances[ii]
				if pi.Disk == nil {
					continue
				}
				want := place.cpiFor(pi.AZ)
				for _, cid := range []string{pi.Disk.CID, pi.Disk.Replaces} {
					if cid == "" {
						continue
					}
					if rec, err := tx.Disk(cid); err == nil && rec.CPI != "" && rec.CPI != want {
						errs = append(errs, diskMoveError(pi, cid, rec.CPI, want))
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return errors.Join(errs...)
}

// vmCPI is the CPI of the instance's current VM: the one recorded with the
// VM, else its AZ's.
func (x *executor) vmCPI(pi *plan.Instance) string {
	return x.d.recordedCPI(pi.VMCID, x.place.cpiFor(pi.AZ))
}

// attachedDisk is the persistent disk the instance's record holds.
func (x *executor) attachedDisk(pi *plan.Instance) string {
	var disk string
	x.d.c.Store.View(func(tx *store.Tx) error {
		rec, err := tx.Instance(x.deployment, pi.Group, pi.ID)
		if err == nil && len(rec.DiskCIDs) > 0 {
			disk = rec.DiskCIDs[0]
		}
		return nil
	})
	return disk
}

func (x *executor) attach(ctx context.Context, pi *plan.Instance, disk string) error {
	c, err := x.d.cpi(ctx, x.vmCPI(pi))
	if err != nil {
		return err
	}
	hint, err := c.AttachDisk(ctx, pi.VMCID, disk)
	if err != nil {
		return fmt.Errorf("attach disk %s to vm %s: %w", disk, pi.VMCID, err)
	}
	if err := x.d.agent(pi.AgentID).MountDisk(ctx, protocol.MountDiskRequest{DiskCID: disk, Hint: hint}); err != nil {
		return fmt.Errorf("mount disk %s on %s: %w", disk, pi.Name(), err)
	}
	return nil
}

// silent reports whether the instance's agent was found not answering
// (under --force, or by deploy --fix before planning): its take-down steps
// are skipped rather than each waiting for a timeout.
func (x *executor) silent(id string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.unresponsive[id]
}

func (x *executor) PreStop(ctx context.Context, inst update.Instance) error {
	if !x.takesDown(inst.ID) {
		return nil
	}
	// Its rendered jobs stored before anything of it is touched: a
	// blobstore that refuses them fails the update of a running instance.
	if _, err := x.jobs.of(ctx, inst.ID); err != nil {
		return err
	}
	// From here until its update is recorded the instance is not serving:
	// a director that dies meanwhile leaves the mark for the next deploy
	// (which recreates it), whatever this update was for (a --recreate
	// changes no spec but makes a new VM and attaches the disk to it).
	if _, deleting := x.deletion(inst.ID); !deleting {
		if pi, err := x.planned(inst.ID); err == nil {
			if err := x.record(pi, func(rec *store.Instance) error { rec.Unfinished = true; return nil }); err != nil {
				return err
			}
		}
	}
	if x.silent(inst.ID) {
		return nil
	}
	id, err := x.agentOf(inst.ID)
	if err != nil {
		return x.tolerate("pre-stop", inst, err)
	}
	if x.force {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		perr := x.d.agent(id).Ping(pctx)
		cancel()
		if perr != nil {
			x.mu.Lock()
			x.unresponsive[inst.ID] = true
			x.mu.Unlock()
			return x.tolerate("pre-stop", inst, perr)
		}
	}
	res, err := x.d.agent(id).RunScript(ctx, protocol.RunScriptRequest{Name: "pre-stop"})
	if err == nil {
		err = scriptErr("pre-stop", res)
	}
	return x.tolerate("pre-stop", inst, err)
}

func (x *executor) Drain(ctx context.Context, inst update.Instance) error {
	if !x.takesDown(inst.ID) || x.silent(inst.ID) {
		return nil
	}
	id, err := x.agentOf(inst.ID)
	if err != nil {
		return x.tolerate("drain", inst, err)
	}
	typ := protocol.DrainUpdate
	if _, deleting := x.deletion(inst.ID); deleting || x.stepsOf(inst.ID).Shutdown {
		typ = protocol.DrainShutdown
	}
	_, err = x.d.agent(id).Drain(ctx, protocol.DrainRequest{Type: typ})
	return x.tolerate("drain", inst, err)
}

func (x *executor) Stop(ctx context.Context, inst update.Instance) error {
	if !x.takesDown(inst.ID) || x.silent(inst.ID) {
		return nil
	}
	id, err := x.agentOf(inst.ID)
	if err != nil {
		return x.tolerate("stop", inst, err)
	}
	return x.tolerate("stop", inst, x.d.agent(id).Stop(ctx, protocol.StopRequest{}))
}

// RecreateVM deletes the instance's VM (detaching its disk) and creates a
// new one with the disk attached again. With stop --hard it only deletes.
func (x *executor) RecreateVM(ctx context.Context, inst update.Instance) error {
	pi, err := x.planned(inst.ID)
	if err != nil {
		return err
	}
	if pi.VMCID != "" {
		if disk := x.attachedDisk(pi); disk != "" {
			if c, err := x.d.cpi(ctx, x.vmCPI(pi)); err == nil {
				if err := c.DetachDisk(ctx, pi.VMCID, disk); err != nil && !errors.Is(err, cpi.ErrVMNotFound) && !errors.Is(err, cpi.ErrDiskNotFound) {
					return fmt.Errorf("detach disk %s from vm %s: %w", disk, pi.VMCID, err)
				}
			}
		}
		if err := x.d.deleteVM(ctx, x.vmCPI(pi), createdVM{CID: pi.VMCID, AgentID: pi.AgentID}); err != nil {
			return err
		}
		pi.VMCID, pi.AgentID = "", ""
		if err := x.record(pi, func(rec *store.Instance) error {
			rec.VMCID, rec.AgentID = "", ""
			return nil
		}); err != nil {
			return err
		}
	}
	if !x.stepsOf(pi.ID).Replace {
		return nil
	}
	return x.createFor(ctx, pi)
}

// UpdateDisk creates, replaces (migrating the data) or removes the
// instance's persistent disk as planned.
func (x *executor) UpdateDisk(ctx context.Context, inst update.Instance) error {
	if !x.stepsOf(inst.ID).Disk {
		return nil
	}
	pi, err := x.planned(inst.ID)
	if err != nil {
		return err
	}
	cpiName := x.vmCPI(pi)
	c, err := x.d.cpi(ctx, cpiName)
	if err != nil {
		return err
	}
	current := x.attachedDisk(pi)
	a := x.d.agent(pi.AgentID)
	if pi.Disk != nil && pi.Disk.ResizeFrom > 0 && pi.Disk.CID == current {
		resized, err := x.resizeDisk(ctx, c, cpiName, pi, current)
		if err != nil || resized {
			return err
		}
		// The CPI cannot resize after all: a new disk, the data moved.
		pi.Disk.CID, pi.Disk.Replaces, pi.Disk.ResizeFrom = "", current, 0
	}
	switch {
	case pi.Disk != nil && pi.Disk.CID == "":
		cid, err := x.createDisk(ctx, c, cpiName, pi)
		if err != nil {
			return err
		}
		if err := x.attach(ctx, pi, cid); err != nil {
			return err
		}
		if current != "" {
			if err := a.MigrateDisk(ctx); err != nil {
				return fmt.Errorf("migrate disk %s to %s on %s: %w", current, cid, pi.Name(), err)
			}
			if err := c.DetachDisk(ctx, pi.VMCID, current); err != nil && !errors.Is(err, cpi.ErrDiskNotFound) {
				return fmt.Errorf("detach disk %s: %w", current, err)
			}
		}
		pi.Disk.CID = cid
		if err := x.record(pi, func(r *store.Instance) error { r.DiskCIDs = []string{cid}; return nil }); err != nil {
			return err
		}
		if pi.Disk.Replaces != "" && current == pi.Disk.Replaces && !x.planOrphans(current) {
			// A resize the CPI refused became a replacement the plan did
			// not list: the old disk is orphaned here.
			if err := x.d.c.Store.Update(func(tx *store.Tx) error { return tx.OrphanDisk(current) }); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
		return nil
	case pi.Disk == nil && current != "":
		if err := a.UnmountDisk(ctx, current); err != nil {
			return fmt.Errorf("unmount disk %s on %s: %w", current, pi.Name(), err)
		}
		if err := c.DetachDisk(ctx, pi.VMCID, current); err != nil && !errors.Is(err, cpi.ErrDiskNotFound) {
			return fmt.Errorf("detach disk %s: %w", current, err)
		}
		return x.record(pi, func(r *store.Instance) error { r.DiskCIDs = nil; return nil })
	}
	return nil
}

// createDisk creates the instance's planned persistent disk in CPI c
// (cpiName), recording the intent first, and records it.
func (x *executor) createDisk(ctx context.Context, c cpi.CPI, cpiName string, pi *plan.Instance) (string, error) {
	props := pi.Disk.CloudProperties
	if props == nil {
		props = map[string]any{}
	}
	raw, err := json.Marshal(props)
	if err != nil {
		return "", err
	}
	intent := store.Disk{CID: "intent-" + newID(), CPI: cpiName, Deployment: x.deployment, InstanceID: pi.ID, SizeMB: int64(pi.Disk.SizeMB), DiskType: pi.Disk.Type, CloudProperties: raw, State: "creating"}
	if err := x.d.c.Store.Update(func(tx *store.Tx) error { return tx.PutDisk(intent) }); err != nil {
		return "", err
	}
	cid, err := c.CreateDisk(ctx, cpi.CreateDiskRequest{SizeMB: int64(pi.Disk.SizeMB), CloudProperties: raw, VMCID: pi.VMCID,
		Tags: x.d.tags(x.deployment, pi.Group, pi.ID, pi.AgentID)})
	if err != nil {
		return "", fmt.Errorf("create disk for %s: %w", pi.Name(), err)
	}
	rec := intent
	rec.CID, rec.State = cid, "created"
	if err := x.d.c.Store.Update(func(tx *store.Tx) error {
		if err := tx.DeleteDisk(intent.CID); err != nil {
			return err
		}
		return tx.PutDisk(rec)
	}); err != nil {
		return "", err
	}
	c.SetDiskMetadata(ctx, cid, map[string]string{"director": x.d.c.Name, "deployment": x.deployment, "instance_group": pi.Group, "instance_id": pi.ID})
	return cid, nil
}

// Apply sends the instance's apply spec: rendered jobs and compiled
// packages as signed blob URLs. The lifecycle verbs apply only to a VM
// they just created.
func (x *executor) Apply(ctx context.Context, inst update.Instance) error {
	x.mu.Lock()
	fresh := x.fresh[inst.ID]
	x.mu.Unlock()
	switch x.stepsOf(inst.ID).Apply {
	case plan.ApplyNever:
		return nil
	case plan.ApplyFresh:
		if !fresh {
			return nil
		}
	}
	pi, err := x.planned(inst.ID)
	if err != nil {
		return err
	}
	spec, err := x.applySpec(ctx, pi)
	if err != nil {
		return err
	}
	return x.d.agent(pi.AgentID).Apply(ctx, spec)
}

func (x *executor) applySpec(ctx context.Context, pi *plan.Instance) (applyspec.Spec, error) {
	stored, err := x.jobs.of(ctx, pi.ID)
	if err != nil {
		return applyspec.Spec{}, err
	}
	jobs := map[string]applyspec.Blob{}
	for name, b := range stored {
		ref, err := x.d.blobRef(b.ID, b.SHA256, b.Size)
		if err != nil {
			return applyspec.Spec{}, err
		}
		jobs[name] = ref
	}
	pkgs := map[string]applyspec.Blob{}
	for name, c := range x.pkgBlobs[stemcellKey(pi.Stemcell.OS, pi.Stemcell.Version, pi.Stemcell.CID)] {
		ref, err := x.d.blobRef(c.BlobID, c.SHA256, 0)
		if err != nil {
			return applyspec.Spec{}, err
		}
		pkgs[name] = ref
	}
	return pi.ApplySpec(x.deployment, jobs, pkgs)
}

func (x *executor) script(ctx context.Context, inst update.Instance, name string) error {
	id, err := x.agentOf(inst.ID)
	if err != nil {
		return err
	}
	res, err := x.d.agent(id).RunScript(ctx, protocol.RunScriptRequest{Name: name})
	if err != nil {
		return err
	}
	return scriptErr(name, res)
}

// staysDown reports whether the instance is not to be started: stopped by
// the verb being run, or by an operator before this deploy.
func (x *executor) staysDown(id string) bool { return !x.stepsOf(id).BringUp }

// takesDown reports whether the instance's processes are taken down
// (pre-stop, drain, stop) before it is changed; instances being deleted
// always are.
func (x *executor) takesDown(id string) bool {
	if _, deleting := x.deletion(id); deleting {
		return true
	}
	return x.stepsOf(id).TakeDown
}

func (x *executor) PreStart(ctx context.Context, inst update.Instance) error {
	if x.staysDown(inst.ID) {
		return nil
	}
	return x.script(ctx, inst, "pre-start")
}

func (x *executor) Start(ctx context.Context, inst update.Instance) error {
	if x.staysDown(inst.ID) {
		return nil
	}
	id, err := x.agentOf(inst.ID)
	if err != nil {
		return err
	}
	_, err = x.d.agent(id).Start(ctx)
	// The canaries are up and watched: the other instances' jobs are
	// stored meanwhile.
	x.jobs.release()
	return err
}

func (x *executor) Running(ctx context.Context, inst update.Instance) (bool, string, error) {
	if x.staysDown(inst.ID) {
		return true, "", nil
	}
	id, err := x.agentOf(inst.ID)
	if err != nil {
		return false, "", err
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := x.d.agent(id).GetState(cctx)
	if err != nil {
		return false, "", err
	}
	if st.JobState == protocol.StateRunning {
		return true, "", nil
	}
	return false, describeState(st), nil
}

// describeState lists the processes that are not running.
func describeState(st protocol.State) string {
	var lines []string
	for _, j := range st.Jobs {
		for _, p := range j.Processes {
			if p.State == protocol.StateRunning {
				continue
			}
			l := fmt.Sprintf("%s/%s is %s", j.Name, p.Name, p.State)
			if p.Error != "" {
				l += ": " + p.Error
			}
			lines = append(lines, l)
		}
		if len(j.Processes) == 0 && j.State != protocol.StateRunning {
			lines = append(lines, fmt.Sprintf("job %s is %s", j.Name, j.State))
		}
	}
	if len(lines) == 0 {
		return "job state " + st.JobState
	}
	return strings.Join(lines, "\n")
}

func (x *executor) PostStart(ctx context.Context, inst update.Instance) error {
	if x.staysDown(inst.ID) {
		return nil
	}
	return x.script(ctx, inst, "post-start")
}

func (x *executor) PostDeploy(ctx context.Context, inst update.Instance) error {
	if !x.stepsOf(inst.ID).PostDeploy {
		return nil
	}
	if _, err := x.agentOf(inst.ID); err != nil {
		return nil // an instance without a VM has nothing to run
	}
	return x.script(ctx, inst, "post-deploy")
}

// Delete deletes a stopped instance: its VM (its disk detached first), its
// addresses and its record. Its disk is orphaned by the deploy (or deleted
// by delete-deployment).
func (x *executor) Delete(ctx context.Context, inst update.Instance) error {
	st, ok := x.deletion(inst.ID)
	if !ok {
		return fmt.Errorf("instance %s is not to be deleted", inst.Name())
	}
	var rec store.Instance
	err := x.d.c.Store.View(func(tx *store.Tx) error {
		var err error
		rec, err = tx.Instance(x.deployment, st.Group, st.ID)
		return err
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if rec.VMCID != "" {
		cpiName := x.d.recordedCPI(rec.VMCID, x.place.cpiFor(rec.AZ))
		c, err := x.d.cpi(ctx, cpiName)
		if err != nil {
			return x.tolerate("delete vm", inst, err)
		}
		for _, disk := range rec.DiskCIDs {
			if err := c.DetachDisk(ctx, rec.VMCID, disk); err != nil && !errors.Is(err, cpi.ErrVMNotFound) && !errors.Is(err, cpi.ErrDiskNotFound) {
				if err := x.tolerate("detach disk", inst, err); err != nil {
					return err
				}
			}
		}
		if err := x.d.deleteVM(ctx, cpiName, createdVM{CID: rec.VMCID, AgentID: rec.AgentID}); err != nil {
			if err := x.tolerate("delete vm", inst, err); err != nil {
				return err
			}
			// Forced: forget the VM record anyway.
			x.d.c.Store.Update(func(tx *store.Tx) error { return tx.DeleteVM(rec.VMCID) })
		}
	}
	return x.d.c.Store.Update(func(tx *store.Tx) error {
		if err := releaseIPs(tx, x.deployment, st.ID); err != nil {
			return err
		}
		if err := tx.DeleteInstance(x.deployment, st.Group, st.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return nil
	})
}
