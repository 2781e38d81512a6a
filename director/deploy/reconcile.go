package deploy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

// reconcile finishes what an interrupted task on the deployment left
// behind, from the intents recorded in the store:
//
//   - a VM being created (its cid unknown): found through the CPI's
//     ListVMs by the creation tags (this director's id, the agent id
//     recorded with the intent) and deleted; on a CPI that cannot list
//     VMs nothing is deleted (see createdBy);
//   - a VM being deleted: deleted again (deletes are idempotent);
//   - a compile VM: deleted;
//   - a VM no instance record points at: deleted (it was created but the
//     instance was never updated to hold it);
//   - an instance whose VM the cloud no longer has: its VM forgotten, so
//     the plan creates a new one ("vm missing");
//   - a disk created that no instance record holds: orphaned;
//   - a disk being created: found through the CPI's ListDisks by its
//     creation tags (this director, the deployment, the instance) among the
//     disks no record knows, and recorded as an orphaned disk (never
//     deleted: delete-disk or clean-up removes it); the intent is dropped.
//
// The rest (instances half updated) needs nothing: their records still
// hold the state they had before, so the plan updates them again.
func (d *Deployer) reconcile(ctx context.Context, r *task.Reporter, deployment string) error {
	var vms []store.VM
	var insts []store.Instance
	var disks []store.Disk
	err := d.c.Store.View(func(tx *store.Tx) error {
		var err error
		if vms, err = tx.VMs(deployment); err != nil {
			return err
		}
		if insts, err = tx.Instances(deployment); err != nil {
			return err
		}
		disks, err = tx.Disks(false)
		return err
	})
	if err != nil {
		return err
	}
	holder := map[string]bool{}
	for _, in := range insts {
		if in.VMCID != "" {
			holder[in.VMCID] = true
		}
	}
	var stale []store.VM
	for _, vm := range vms {
		if vm.State == vmCreated && vm.InstanceID != compileInstance && holder[vm.CID] {
			continue
		}
		stale = append(stale, vm)
	}
	var leftDisks, loose []store.Disk
	diskHolder := map[string]bool{}
	for _, in := range insts {
		for _, c := range in.DiskCIDs {
			diskHolder[c] = true
		}
	}
	for _, dk := range disks {
		switch {
		case dk.Deployment != deployment:
		case dk.State == "creating":
			leftDisks = append(leftDisks, dk)
		case !diskHolder[dk.CID]:
			// Created (perhaps attached) but the task ended before the
			// instance recorded it: kept, as an orphan, with its data.
			loose = append(loose, dk)
		}
	}
	// Addresses reserved for instances that were never recorded (the task
	// ended before their VM was made) go back to the pool.
	held := map[string]bool{}
	for _, in := range insts {
		held[in.ID] = true
	}
	if err := d.c.Store.Update(func(tx *store.Tx) error {
		rs, err := tx.IPReservations("")
		if err != nil {
			return err
		}
		for _, rv := range rs {
			if rv.Deployment == deployment && !held[rv.InstanceID] {
				if err := tx.ReleaseIP(rv.Network, rv.IP); err != nil {
					return err
				}
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if len(stale) == 0 && len(leftDisks) == 0 && len(loose) == 0 && len(insts) == 0 {
		return nil
	}
	stage := r.Stage("Checking recorded state", len(stale)+1)
	// In parallel: an intent may wait for its agent to reconnect.
	errs := make([]error, len(stale))
	var wg sync.WaitGroup
	for i, vm := range stale {
		wg.Go(func() { errs[i] = stage.Run(describeVM(vm), func() error { return d.resolveVM(ctx, vm) }) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	for _, dk := range loose {
		d.c.Logger.Warn("a disk no instance holds is orphaned", "deployment", deployment, "disk", dk.CID, "instance", dk.InstanceID)
		if err := d.c.Store.Update(func(tx *store.Tx) error { return tx.OrphanDisk(dk.CID) }); err != nil {
			return err
		}
	}
	for _, dk := range leftDisks {
		if err := d.resolveDisk(ctx, dk); err != nil {
			return fmt.Errorf("reconcile: %w", err)
		}
	}
	// Instances whose VM is gone: forget the VM so the plan recreates it.
	return stage.Run(fmt.Sprintf("vms of %d instances", len(insts)), func() error {
		cpiOf := make(map[string]string, len(vms)) // the instances' VMs are none of the stale ones
		for _, vm := range vms {
			cpiOf[vm.CID] = vm.CPI
		}
		present := map[string]map[string]bool{} // cpi → cids it listed
		for _, in := range insts {
			if in.VMCID == "" {
				continue
			}
			cpiName := cpiOf[in.VMCID]
			var err error
			if cpiName == "" {
				if cpiName, err = d.c.CPIs.Resolve(""); err != nil {
					return err
				}
			}
			listed, ok := present[cpiName]
			if !ok {
				inCloud, _, err := d.listVMs(ctx, cpiName)
				if err != nil {
					return err
				}
				listed = make(map[string]bool, len(inCloud))
				for _, v := range inCloud {
					listed[v.CID] = true
				}
				present[cpiName] = listed
			}
			if listed[in.VMCID] {
				continue
			}
			// Not listed (or no list): asked one by one. A list only
			// proves presence; absence is confirmed, so that a cloud whose
			// list lags behind its VMs never costs an instance its VM.
			c, err := d.cpi(ctx, cpiName)
			if err != nil {
				return err
			}
			ok, err = c.HasVM(ctx, in.VMCID)
			if err != nil {
				return fmt.Errorf("has vm %s: %w", in.VMCID, err)
			}
			if ok {
				continue
			}
			d.c.Logger.Warn("instance vm is gone; it will be recreated", "deployment", deployment, "instance", in.Group+"/"+in.ID, "vm", in.VMCID)
			if err := d.c.Store.Update(func(tx *store.Tx) error {
				cur, err := tx.Instance(deployment, in.Group, in.ID)
				if err != nil {
					return err
				}
				cur.VMCID, cur.AgentID = "", ""
				if err := tx.DeleteVM(in.VMCID); err != nil && !errors.Is(err, store.ErrNotFound) {
					return err
				}
				return tx.PutInstance(cur)
			}); err != nil {
				return err
			}
		}
		return nil
	})
}

func describeVM(vm store.VM) string {
	switch {
	case vm.State == vmCreating:
		return "vm being created for agent " + vm.AgentID
	case vm.State == vmDeleting:
		return "vm " + vm.CID + " being deleted"
	case vm.InstanceID == compileInstance:
		return "compile vm " + vm.CID
	}
	return "vm " + vm.CID + " held by no instance"
}

// intentAgentWait is how long reconcile waits for the agent of an
// interrupted VM creation to answer.
const intentAgentWait = 30 * time.Second

// createdBy finds the VM an interrupted creation made, "" when it made
// none or when the director cannot tell that it made it. Only a CPI that
// lists VMs answers: the VM carrying this director's id and the intent's
// agent id (its creation tags). On a CPI that cannot list VMs the agent,
// if it comes up, may name its VM, but an agent's word is never a reason to
// delete a VM (it could name any VM the cloud credentials reach): the cid
// is logged for the operator and nothing is deleted.
func (d *Deployer) createdBy(ctx context.Context, vm store.VM) (string, error) {
	v, found, ok, err := d.listed(ctx, vm.CPI, vm.AgentID)
	if err != nil {
		return "", err
	}
	if ok {
		if !found {
			d.c.Logger.Info("interrupted vm creation made no vm", "deployment", vm.Deployment, "agent_id", vm.AgentID)
			return "", nil
		}
		return v.CID, nil
	}
	// An agent started while the director went down retries the bus with
	// a backoff of up to 10 s: give it time to come back.
	named, answered := d.agentVM(ctx, vm.AgentID, intentAgentWait)
	if !answered {
		d.c.Logger.Warn("no agent answers for an interrupted vm creation on a cpi that cannot list vms; if the cloud made the vm, delete it by hand",
			"deployment", vm.Deployment, "cpi", vm.CPI, "agent_id", vm.AgentID, "waited", intentAgentWait)
		return "", nil
	}
	d.c.Logger.Warn("the agent of an interrupted vm creation names its vm, but cpi cannot list vms by their tags, so the director cannot tell that it made it: not deleting it; delete it by hand if it is this deployment's",
		"deployment", vm.Deployment, "cpi", vm.CPI, "agent_id", vm.AgentID, "vm", named)
	return "", nil
}

// resolveDisk settles the intent of a disk creation an interrupted task
// left: a disk the CPI lists with this director's, the deployment's and
// the instance's tags that no record knows is the one it made, kept as an
// orphaned disk; then the intent goes.
func (d *Deployer) resolveDisk(ctx context.Context, intent store.Disk) error {
	info, err := d.c.CPIs.Info(ctx, intent.CPI)
	if err != nil {
		return err
	}
	var made []cpi.DiskInfo
	if info.Capabilities.ListDisks {
		c, err := d.cpi(ctx, intent.CPI)
		if err != nil {
			return err
		}
		disks, err := c.ListDisks(ctx, cpi.ListFilter{DirectorID: d.c.DirectorID})
		if err != nil {
			return fmt.Errorf("list disks of cpi %s: %w", intent.CPI, err)
		}
		for _, dk := range disks {
			if dk.Tags[cpi.TagDeployment] == intent.Deployment && dk.Tags[cpi.TagInstanceID] == intent.InstanceID {
				made = append(made, dk)
			}
		}
	} else {
		d.c.Logger.Warn("a disk creation was interrupted on a cpi that cannot list disks; if the cloud made the disk, delete it by hand",
			"deployment", intent.Deployment, "cpi", intent.CPI, "instance", intent.InstanceID)
	}
	return d.c.Store.Update(func(tx *store.Tx) error {
		for _, dk := range made {
			if _, err := tx.Disk(dk.CID); err == nil {
				continue // known: attached or orphaned already
			}
			d.c.Logger.Warn("an interrupted disk creation made a disk; kept as an orphaned disk", "deployment", intent.Deployment, "instance", intent.InstanceID, "disk", dk.CID)
			now := time.Now().UTC()
			if err := tx.PutDisk(store.Disk{CID: dk.CID, CPI: intent.CPI, Deployment: intent.Deployment, InstanceID: intent.InstanceID,
				SizeMB: intent.SizeMB, DiskType: intent.DiskType, CloudProperties: intent.CloudProperties, Orphaned: true, OrphanedAt: now}); err != nil {
				return err
			}
		}
		if err := tx.DeleteDisk(intent.CID); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return nil
	})
}

// resolveVM deletes a VM an interrupted task left behind.
func (d *Deployer) resolveVM(ctx context.Context, vm store.VM) error {
	cid, agentID := vm.CID, vm.AgentID
	if vm.State == vmCreating {
		found, err := d.createdBy(ctx, vm)
		if err != nil {
			return err
		}
		if found == "" {
			return d.c.Store.Update(func(tx *store.Tx) error { return tx.DeleteVM(vm.CID) })
		}
		cid = found
		if err := d.c.Store.Update(func(tx *store.Tx) error { return tx.DeleteVM(vm.CID) }); err != nil {
			return err
		}
	}
	if err := d.deleteTaggedVM(ctx, vm.CPI, cid, agentID); err != nil {
		return err
	}
	return d.c.Store.Update(func(tx *store.Tx) error {
		if err := tx.DeleteVM(cid); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return nil
	})
}
