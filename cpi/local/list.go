package local

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/compleat/compleat/cpi"
)

// ListVMs lists the VMs in the data dir whose recorded tags pass the filter.
// The local cloud's "API" is its data dir: the records are the VMs
// themselves (a VM is its directory), not a list kept beside them.
func (c *CPI) ListVMs(ctx context.Context, filter cpi.ListFilter) ([]cpi.VMInfo, error) {
	cids, err := c.cids(kindVM)
	if err != nil {
		return nil, fmt.Errorf("list vms: %w", err)
	}
	out := []cpi.VMInfo{}
	for _, cid := range cids {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("list vms: %w", err)
		}
		rec, err := c.readVM(cid)
		if errors.Is(err, cpi.ErrVMNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("list vms: %w", err)
		}
		if filter.Match(rec.Tags) {
			out = append(out, cpi.VMInfo{CID: rec.CID, AgentID: rec.AgentID, Tags: rec.Tags})
		}
	}
	return out, nil
}

// ListDisks lists the disks in the data dir whose recorded tags pass the
// filter, each with the VM it is attached to.
func (c *CPI) ListDisks(ctx context.Context, filter cpi.ListFilter) ([]cpi.DiskInfo, error) {
	cids, err := c.cids(kindDisk)
	if err != nil {
		return nil, fmt.Errorf("list disks: %w", err)
	}
	out := []cpi.DiskInfo{}
	for _, cid := range cids {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("list disks: %w", err)
		}
		rec, err := c.readDisk(cid)
		if errors.Is(err, cpi.ErrDiskNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list disks: %w", err)
		}
		if filter.Match(rec.Tags) {
			out = append(out, cpi.DiskInfo{CID: rec.CID, VMCID: c.attachedTo(rec), SizeMB: rec.SizeMB, Tags: rec.Tags})
		}
	}
	return out, nil
}

// cids lists the cids of one kind of object in the data dir, in name order.
func (c *CPI) cids(k kind) ([]string, error) {
	entries, err := os.ReadDir(c.dir(k))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if validCID(k, e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}
