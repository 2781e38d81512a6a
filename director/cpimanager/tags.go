package cpimanager

import (
	"context"
	"errors"
	"fmt"
	"time"

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
		if v.CID == cid {
			if err := checkVMTags(v, cid, directorID, agentID); err != nil {
				return false, err
			}
			return true, nil
		}
	}
	return false, nil
}

func checkVMTags(v cpi.VMInfo, cid, directorID, agentID string) error {
	if d := v.Tags[cpi.TagDirector]; d != directorID {
		return fmt.Errorf("vm %s carries the director tag %q, not this director's: %w", cid, d, ErrForeign)
	}
	got := v.Tags[cpi.TagAgentID]
	if got == "" {
		got = v.AgentID
	}
	if agentID != "" && got != agentID {
		return fmt.Errorf("vm %s is tagged for agent %s, not %s: %w", cid, got, agentID, ErrForeign)
	}
	return nil
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

// CheckVM is CheckVM of the named CPI, from a listing shared by the
// deletions that follow one another (a delete-deployment of a thousand VMs
// lists the cloud once, not a thousand times): a VM found in a listing
// younger than listingMaxAge is checked against it (a VM's cid and creation
// tags never change); a VM not found there is looked for in a new listing.
func (m *Manager) CheckVM(ctx context.Context, name, cid, directorID, agentID string) error {
	c, err := m.Get(ctx, name)
	if err != nil {
		return err
	}
	info, err := m.Info(ctx, name)
	if err != nil {
		return err
	}
	if !info.Capabilities.ListVMs {
		return nil
	}
	if v, ok := m.listedVM(name, cid); ok {
		return checkVMTags(v, cid, directorID, agentID)
	}
	vms, err := c.ListVMs(ctx, cpi.ListFilter{})
	if err != nil {
		return fmt.Errorf("list vms to check the tags of vm %s: %w", cid, err)
	}
	byCID := make(map[string]cpi.VMInfo, len(vms))
	for _, v := range vms {
		byCID[v.CID] = v
	}
	m.listMu.Lock()
	if m.listings == nil {
		m.listings = map[string]vmListing{}
	}
	m.listings[name] = vmListing{at: time.Now(), vms: byCID}
	m.listMu.Unlock()
	if v, ok := byCID[cid]; ok {
		return checkVMTags(v, cid, directorID, agentID)
	}
	return nil
}

// listingMaxAge bounds how long a listing serves CheckVM.
const listingMaxAge = time.Minute

// vmListing is one CPI's ListVMs answer, by cid.
type vmListing struct {
	at  time.Time
	vms map[string]cpi.VMInfo
}

func (m *Manager) listedVM(name, cid string) (cpi.VMInfo, bool) {
	m.listMu.Lock()
	defer m.listMu.Unlock()
	l, ok := m.listings[name]
	if !ok || time.Since(l.at) > listingMaxAge {
		return cpi.VMInfo{}, false
	}
	v, ok := l.vms[cid]
	return v, ok
}

func (m *Manager) forgetListings() {
	m.listMu.Lock()
	m.listings = nil
	m.listMu.Unlock()
}
