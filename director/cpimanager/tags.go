package cpimanager

import (
	"context"
	"errors"
	"fmt"

	"github.com/compleat/compleat/cpi"
)

// ErrForeign is returned by CheckVM and CheckDisk for an object whose
// creation tags show that this director (or this VM's agent) did not make
// it: the director never deletes such an object.
var ErrForeign = errors.New("not made by this director")

// CheckVM checks, before a deletion, that VM cid of a CPI carries this
// director's tags: listed by the CPI's ListVMs (which lists every object
// carrying the cpi.TagDirector tag), its cpi.TagDirector must be
// directorID and, when agentID is given, its cpi.TagAgentID agentID.
//
// verified reports that the CPI listed the VM with matching tags. A CPI
// that cannot list VMs, or a VM it does not list (gone, or made before
// VMs were tagged), gives verified false and no error: the caller decides
// whether its own record is enough (a cid the CPI answered at creation) or
// not (a cid only an agent named).
func CheckVM(ctx context.Context, c cpi.CPI, info cpi.Info, cid, directorID, agentID string) (verified bool, err error) {
	if !info.Capabilities.ListVMs {
		return false, nil
	}
	vms, err := c.ListVMs(ctx, cpi.ListFilter{})
	if err != nil {
		return false, fmt.Errorf("list vms to check the tags of vm %s: %w", cid, err)
	}
	for _, v := range vms {
		if v.CID != cid {
			continue
		}
		if d := v.Tags[cpi.TagDirector]; d != directorID {
			return false, fmt.Errorf("vm %s carries the director tag %q, not this director's: %w", cid, d, ErrForeign)
		}
		got := v.Tags[cpi.TagAgentID]
		if got == "" {
			got = v.AgentID
		}
		if agentID != "" && got != agentID {
			return false, fmt.Errorf("vm %s is tagged for agent %s, not %s: %w", cid, got, agentID, ErrForeign)
		}
		return true, nil
	}
	return false, nil
}

// CheckDisk checks, before a deletion, that persistent disk cid of a CPI
// carries this director's tag, as CheckVM does for VMs (a disk's agent tag
// names the VM it was made for, which a recreate changes, so only the
// director is checked).
func CheckDisk(ctx context.Context, c cpi.CPI, info cpi.Info, cid, directorID string) (verified bool, err error) {
	if !info.Capabilities.ListDisks {
		return false, nil
	}
	disks, err := c.ListDisks(ctx, cpi.ListFilter{})
	if err != nil {
		return false, fmt.Errorf("list disks to check the tags of disk %s: %w", cid, err)
	}
	for _, dk := range disks {
		if dk.CID != cid {
			continue
		}
		if d := dk.Tags[cpi.TagDirector]; d != directorID {
			return false, fmt.Errorf("disk %s carries the director tag %q, not this director's: %w", cid, d, ErrForeign)
		}
		return true, nil
	}
	return false, nil
}

// CheckVM is CheckVM of the named CPI (resolved as Get does).
func (m *Manager) CheckVM(ctx context.Context, name, cid, directorID, agentID string) error {
	c, err := m.Get(ctx, name)
	if err != nil {
		return err
	}
	info, err := m.Info(ctx, name)
	if err != nil {
		return err
	}
	_, err = CheckVM(ctx, c, info, cid, directorID, agentID)
	return err
}
