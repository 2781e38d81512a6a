package deploy

import (
	"context"
	"errors"
	"fmt"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/director/plan"
	"github.com/compleat/compleat/director/store"
)

// resizeDisk grows the instance's persistent disk in place when its CPI's
// Info reports the ResizeDisk capability, as BOSH does: unmount, detach,
// ResizeDisk, attach, mount (the agent grows an image disk's file system
// when it mounts it). It reports false, having changed nothing, when the
// CPI cannot resize (no capability, or ErrNotImplemented from the call):
// the caller then makes a new disk and moves the data. A failed resize
// leaves the disk attached and mounted again.
func (x *executor) resizeDisk(ctx context.Context, c cpi.CPI, cpiName string, pi *plan.Instance, disk string) (bool, error) {
	info, err := x.d.c.CPIs.Info(ctx, cpiName)
	if err != nil {
		return false, err
	}
	if !info.Capabilities.ResizeDisk {
		x.log.Info("the cpi cannot resize disks: a new disk is made and the data moved", "instance", pi.Name(), "disk", disk, "cpi", cpiName)
		return false, nil
	}
	if err := x.d.agent(pi.AgentID).UnmountDisk(ctx, disk); err != nil {
		return false, fmt.Errorf("unmount disk %s on %s: %w", disk, pi.Name(), err)
	}
	if err := c.DetachDisk(ctx, pi.VMCID, disk); err != nil && !errors.Is(err, cpi.ErrDiskNotFound) {
		return false, fmt.Errorf("detach disk %s: %w", disk, err)
	}
	rerr := c.ResizeDisk(ctx, disk, int64(pi.Disk.SizeMB))
	if err := x.attach(ctx, pi, disk); err != nil {
		return false, errors.Join(err, rerr)
	}
	switch {
	case errors.Is(rerr, cpi.ErrNotImplemented):
		x.log.Info("the cpi did not resize the disk: a new disk is made and the data moved", "instance", pi.Name(), "disk", disk, "cpi", cpiName)
		return false, nil
	case rerr != nil:
		return false, fmt.Errorf("resize disk %s of %s to %d MB: %w", disk, pi.Name(), pi.Disk.SizeMB, rerr)
	}
	return true, x.d.c.Store.Update(func(tx *store.Tx) error {
		rec, err := tx.Disk(disk)
		if err != nil {
			return err
		}
		rec.SizeMB = int64(pi.Disk.SizeMB)
		return tx.PutDisk(rec)
	})
}

// planOrphans reports whether the plan orphans disk at the end of the
// deploy.
func (x *executor) planOrphans(disk string) bool {
	for _, od := range x.p.OrphanDisks {
		if od.CID == disk {
			return true
		}
	}
	return false
}
