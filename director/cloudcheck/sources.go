package cloudcheck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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

// LocalVMs lists the local CPI's VMs from its data directory:
// <data_dir>/vms/<cid>/ holds metadata.json, the last SetVMMetadata (see
// docs/cpi/local.md). It is the only cloud whose VMs cloud-check can list:
// the CPI contract has no call that lists VMs.
type LocalVMs struct{ DataDir string }

var _ Lister = LocalVMs{}

// ListVMs implements Lister. A VM directory without metadata is listed
// without tags.
func (l LocalVMs) ListVMs(ctx context.Context) ([]CloudVM, error) {
	dirs, err := os.ReadDir(filepath.Join(l.DataDir, "vms"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list local vms: %w", err)
	}
	var out []CloudVM
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		vm := CloudVM{CID: d.Name()}
		raw, err := os.ReadFile(filepath.Join(l.DataDir, "vms", d.Name(), "metadata.json"))
		if err == nil {
			if err := json.Unmarshal(raw, &vm.Metadata); err != nil {
				return nil, fmt.Errorf("local vm %s: metadata.json: %w", d.Name(), err)
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("local vm %s: %w", d.Name(), err)
		}
		out = append(out, vm)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CID < out[j].CID })
	return out, nil
}

// LocalVMsFor returns the Lister of a local CPI given its type and
// properties ({"data_dir": ...}); ok is false for any other CPI.
func LocalVMsFor(cpiType string, properties json.RawMessage) (l LocalVMs, ok bool) {
	if cpiType != "local" {
		return LocalVMs{}, false
	}
	var p struct {
		DataDir string `json:"data_dir"`
	}
	if json.Unmarshal(properties, &p) != nil || p.DataDir == "" {
		return LocalVMs{}, false
	}
	return LocalVMs{DataDir: p.DataDir}, true
}
