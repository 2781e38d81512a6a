package cloudcheck

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/nats-io/nats.go"

	"github.com/compleat/compleat/agent/client"
	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/cpi"
)

// BusAgents talks to agents over the director's bus connection.
type BusAgents struct{ Conn *nats.Conn }

var _ Agents = BusAgents{}

func (b BusAgents) client(agentID string) *client.Client {
	return client.New(b.Conn, agentID, client.Options{})
}

// Ping implements Agents.
func (b BusAgents) Ping(ctx context.Context, agentID string) error {
	return b.client(agentID).Ping(ctx)
}

// ListDisk implements Agents.
func (b BusAgents) ListDisk(ctx context.Context, agentID string) ([]string, error) {
	return b.client(agentID).ListDisk(ctx)
}

// MountDisk implements Agents: the agent's settings get the disk's hint
// (so that it is mounted again after a reboot), then the disk is mounted.
func (b BusAgents) MountDisk(ctx context.Context, agentID, diskCID string, hint cpi.DiskHint) error {
	c := b.client(agentID)
	if err := c.UpdateSettings(ctx, protocol.UpdateSettingsRequest{Disks: map[string]cpi.DiskHint{diskCID: hint}}); err != nil {
		return fmt.Errorf("update settings: %w", err)
	}
	return c.MountDisk(ctx, protocol.MountDiskRequest{DiskCID: diskCID, Hint: hint})
}

// CPIVMs lists, through the CPI contract's ListVMs and ListDisks, the VMs
// and persistent disks every CPI that can list them holds with this
// director's tag (cpi.TagDirector): the way cloud-check finds VMs and disks
// the director lost track of, on any cloud, without reading a plugin's
// private data.
type CPIVMs struct {
	// Names lists the director's CPIs.
	Names func() []string
	// Get returns a CPI by name.
	Get func(ctx context.Context, name string) (cpi.CPI, error)
	// DirectorID is the director's uuid, the tag its VMs carry.
	DirectorID string
}

var _ Lister = CPIVMs{}

// ListVMs implements Lister. CPIs whose Info does not claim ListVMs are
// skipped.
func (l CPIVMs) ListVMs(ctx context.Context) ([]CloudVM, error) {
	var out []CloudVM
	var errs []error
	for _, name := range l.Names() {
		c, err := l.Get(ctx, name)
		if err != nil {
			errs = append(errs, fmt.Errorf("cpi %s: %w", name, err))
			continue
		}
		info, err := c.Info(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("cpi %s: info: %w", name, err))
			continue
		}
		if !info.Capabilities.ListVMs {
			continue
		}
		vms, err := c.ListVMs(ctx, cpi.ListFilter{DirectorID: l.DirectorID})
		if err != nil {
			errs = append(errs, fmt.Errorf("cpi %s: list vms: %w", name, err))
			continue
		}
		for _, v := range vms {
			out = append(out, CloudVM{CID: v.CID, CPI: name, Metadata: v.Tags})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CPI+out[i].CID < out[j].CPI+out[j].CID })
	return out, errors.Join(errs...)
}

// ListDisks implements Lister. CPIs whose Info does not claim ListDisks
// are skipped.
func (l CPIVMs) ListDisks(ctx context.Context) ([]CloudDisk, error) {
	var out []CloudDisk
	var errs []error
	for _, name := range l.Names() {
		c, err := l.Get(ctx, name)
		if err != nil {
			errs = append(errs, fmt.Errorf("cpi %s: %w", name, err))
			continue
		}
		info, err := c.Info(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("cpi %s: info: %w", name, err))
			continue
		}
		if !info.Capabilities.ListDisks {
			continue
		}
		disks, err := c.ListDisks(ctx, cpi.ListFilter{DirectorID: l.DirectorID})
		if err != nil {
			errs = append(errs, fmt.Errorf("cpi %s: list disks: %w", name, err))
			continue
		}
		for _, dk := range disks {
			out = append(out, CloudDisk{CID: dk.CID, CPI: name, VMCID: dk.VMCID, SizeMB: dk.SizeMB, Metadata: dk.Tags})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CPI+out[i].CID < out[j].CPI+out[j].CID })
	return out, errors.Join(errs...)
}
