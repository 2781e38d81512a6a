// Package memory is a complete, small CPI plugin for an in-memory "cloud":
// the example a cloud vendor copies to write a Compleat CPI. Its VMs run
// nothing; everything else is what a real plugin does: strict cloud
// properties, typed errors, tags applied at creation and listed, networks
// in both modes, disks and their attachments, the agent settings delivered
// (here as a file per VM, where a real cloud has user data or a config
// drive), and the caller's context honoured.
//
// Replace the maps with calls to your cloud's API and keep the rest.
package memory

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"

	"github.com/compleat/compleat/cpi"
)

// Properties are the plugin's properties: the cpi config's `properties`.
type Properties struct {
	// SettingsDir is where each VM's agent settings are written
	// (<cid>.json), as a cloud's metadata service would serve them.
	SettingsDir string `json:"settings_dir" cpi:"required"`
	// DynamicPool is the first address handed out on dynamic networks
	// (addresses only: nothing listens on them).
	DynamicPool string `json:"dynamic_pool"`
}

// VMProperties are the cloud properties of a VM.
type VMProperties struct {
	InstanceType      string `json:"instance_type" cpi:"required"`
	EphemeralDiskSize int64  `json:"ephemeral_disk_size"` // MB
}

// DiskProperties are the cloud properties of a persistent disk.
type DiskProperties struct {
	Type string `json:"type"`
}

// instanceTypes are the cloud's VM types, smallest first.
var instanceTypes = []struct {
	name  string
	cpu   int
	ramMB int64
}{{"small", 1, 1024}, {"medium", 2, 4096}, {"large", 4, 16384}}

// CPI is the plugin. It is safe for concurrent use.
type CPI struct {
	// Unimplemented answers NotImplemented for what this cloud cannot do
	// (snapshots, resizing disks); Info's capabilities say the same.
	cpi.Unimplemented

	props  Properties
	log    *slog.Logger
	mu     sync.Mutex
	seq    int
	nextIP netip.Addr
	stems  map[string]bool
	vms    map[string]*vm
	disks  map[string]*disk
}

type vm struct {
	agentID  string
	networks map[string]cpi.Network
	tags     map[string]string
	disks    []string
}

type disk struct {
	sizeMB     int64
	attachedTo string
	tags       map[string]string
}

var _ cpi.CPI = (*CPI)(nil)

// New makes the plugin from its properties; cpi.Main reports its error to
// the user.
func New(properties json.RawMessage, log *slog.Logger) (cpi.CPI, error) {
	p := Properties{DynamicPool: "127.90.0.2"}
	if err := cpi.DecodeCloudProperties(properties, &p); err != nil {
		return nil, fmt.Errorf("properties: %w", err)
	}
	ip, err := netip.ParseAddr(p.DynamicPool)
	if err != nil {
		return nil, fmt.Errorf("properties: dynamic_pool: %w", err)
	}
	if err := os.MkdirAll(p.SettingsDir, 0o700); err != nil {
		return nil, fmt.Errorf("properties: settings_dir: %w", err)
	}
	return &CPI{props: p, log: log, nextIP: ip, stems: map[string]bool{}, vms: map[string]*vm{}, disks: map[string]*disk{}}, nil
}

// Info describes the plugin.
func (c *CPI) Info(context.Context) (cpi.Info, error) {
	return cpi.Info{
		Name:            "memory",
		APIVersion:      cpi.APIVersion,
		StemcellFormats: []string{"memory"},
		Capabilities:    cpi.Capabilities{DiskHints: true, DynamicNetworks: true, ListVMs: true, ListDisks: true},
	}, nil
}

// begin takes the lock once the caller still wants the answer.
func (c *CPI) begin(ctx context.Context) (unlock func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	return c.mu.Unlock, nil
}

func (c *CPI) newID(kind string) string {
	c.seq++
	return fmt.Sprintf("%s-%d", kind, c.seq)
}

// CreateStemcell imports nothing: the in-memory cloud has no images.
func (c *CPI) CreateStemcell(ctx context.Context, req cpi.CreateStemcellRequest) (string, error) {
	var props map[string]any // a stemcell's cloud properties are free-form here
	if err := cpi.DecodeCloudProperties(req.CloudProperties, &props); err != nil {
		return "", err
	}
	unlock, err := c.begin(ctx)
	if err != nil {
		return "", err
	}
	defer unlock()
	cid := c.newID("stemcell")
	c.stems[cid] = true
	return cid, nil
}

// DeleteStemcell is idempotent.
func (c *CPI) DeleteStemcell(ctx context.Context, cid string) error {
	unlock, err := c.begin(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	delete(c.stems, cid)
	return nil
}

// CreateVM places the VM on its networks and delivers its settings.
func (c *CPI) CreateVM(ctx context.Context, req cpi.CreateVMRequest) (cpi.CreateVMResult, error) {
	var props VMProperties
	if err := cpi.DecodeCloudProperties(req.CloudProperties, &props); err != nil {
		return cpi.CreateVMResult{}, err
	}
	unlock, err := c.begin(ctx)
	if err != nil {
		return cpi.CreateVMResult{}, err
	}
	defer unlock()
	if !c.stems[req.StemcellCID] {
		return cpi.CreateVMResult{}, fmt.Errorf("create vm: stemcell %s: %w", req.StemcellCID, cpi.ErrStemcellNotFound)
	}
	for _, d := range req.DiskCIDs {
		if c.disks[d] == nil {
			return cpi.CreateVMResult{}, fmt.Errorf("create vm near disk %s: %w", d, cpi.ErrDiskNotFound)
		}
	}
	networks, err := c.configure(req.Networks)
	if err != nil {
		return cpi.CreateVMResult{}, err
	}
	cid := c.newID("vm")
	if err := c.deliver(cid, req.AgentSettings, networks); err != nil {
		return cpi.CreateVMResult{}, err
	}
	c.vms[cid] = &vm{agentID: req.AgentID, networks: networks, tags: clone(req.Tags)}
	c.log.InfoContext(ctx, "created vm", "vm", cid, "agent_id", req.AgentID, "instance_type", props.InstanceType)
	return cpi.CreateVMResult{CID: cid, Networks: networks}, nil
}

// configure gives manual networks the address asked for and dynamic ones
// the next free address. c.mu is held.
func (c *CPI) configure(req map[string]cpi.Network) (map[string]cpi.Network, error) {
	inUse := map[string]bool{}
	for _, v := range c.vms {
		for _, n := range v.networks {
			inUse[n.IP] = true
		}
	}
	out := map[string]cpi.Network{}
	for name, n := range req {
		switch n.Type {
		case "manual", "vip":
			if _, err := netip.ParseAddr(n.IP); err != nil {
				return nil, cpi.Errorf(cpi.CodeVMCreationFailed, "network %s: ip %q: %w", name, n.IP, err)
			}
			if inUse[n.IP] {
				return nil, cpi.Errorf(cpi.CodeVMCreationFailed, "network %s: ip %s is in use", name, n.IP)
			}
		case "dynamic":
			for inUse[c.nextIP.String()] {
				c.nextIP = c.nextIP.Next()
			}
			n.IP = c.nextIP.String()
			c.nextIP = c.nextIP.Next()
		default:
			return nil, cpi.Errorf(cpi.CodeVMCreationFailed, "network %s: unknown type %q", name, n.Type)
		}
		inUse[n.IP] = true
		out[name] = n
	}
	return out, nil
}

// deliver writes the settings the agent reads: the director's document
// with "networks" as configured and "vm" naming the VM.
func (c *CPI) deliver(cid string, raw json.RawMessage, networks map[string]cpi.Network) error {
	settings := map[string]any{}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &settings); err != nil {
			return cpi.Errorf(cpi.CodeVMCreationFailed, "agent settings are not a JSON object: %w", err)
		}
	}
	settings["networks"] = networks
	settings["vm"] = map[string]string{"cid": cid}
	b, err := json.Marshal(settings)
	if err != nil {
		return err
	}
	// The settings hold the agent's credentials: readable by the owner only.
	return os.WriteFile(c.settingsPath(cid), b, 0o600)
}

func (c *CPI) settingsPath(cid string) string {
	return filepath.Join(c.props.SettingsDir, cid+".json")
}

// DeliveredSettings reads a VM's settings as the agent would; the
// conformance suite checks them through it (cpitest.SettingsReader).
func (c *CPI) DeliveredSettings(_ context.Context, cid string) (json.RawMessage, error) {
	return os.ReadFile(c.settingsPath(cid))
}

// DeleteVM detaches the VM's disks, leaves them alone and deletes the VM.
// Deleting a missing VM succeeds.
func (c *CPI) DeleteVM(ctx context.Context, cid string) error {
	unlock, err := c.begin(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	v := c.vms[cid]
	if v == nil {
		return nil
	}
	for _, d := range v.disks {
		c.disks[d].attachedTo = ""
	}
	if err := os.Remove(c.settingsPath(cid)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("delete vm %s: %w", cid, err)
	}
	delete(c.vms, cid)
	return nil
}

// HasVM answers false, not VMNotFound, for a missing VM.
func (c *CPI) HasVM(ctx context.Context, cid string) (bool, error) {
	unlock, err := c.begin(ctx)
	if err != nil {
		return false, err
	}
	defer unlock()
	return c.vms[cid] != nil, nil
}

// vm returns the VM or VMNotFound. c.mu is held.
func (c *CPI) vm(what, cid string) (*vm, error) {
	if v := c.vms[cid]; v != nil {
		return v, nil
	}
	return nil, fmt.Errorf("%s: vm %s: %w", what, cid, cpi.ErrVMNotFound)
}

// disk returns the disk or DiskNotFound. c.mu is held.
func (c *CPI) disk(what, cid string) (*disk, error) {
	if d := c.disks[cid]; d != nil {
		return d, nil
	}
	return nil, fmt.Errorf("%s: disk %s: %w", what, cid, cpi.ErrDiskNotFound)
}

// RebootVM has nothing to restart in memory.
func (c *CPI) RebootVM(ctx context.Context, cid string) error {
	unlock, err := c.begin(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	_, err = c.vm("reboot vm", cid)
	return err
}

// SetVMMetadata adds the metadata to the VM's tags, keeping the tags given
// at creation.
func (c *CPI) SetVMMetadata(ctx context.Context, cid string, md map[string]string) error {
	unlock, err := c.begin(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	v, err := c.vm("set vm metadata", cid)
	if err != nil {
		return err
	}
	for k, val := range md {
		if _, ok := v.tags[k]; !ok {
			v.tags[k] = val
		}
	}
	return nil
}

// CalculateVMCloudProperties names the smallest instance type with the
// resources.
func (c *CPI) CalculateVMCloudProperties(_ context.Context, r cpi.VMResources) (json.RawMessage, error) {
	for _, t := range instanceTypes {
		if t.cpu >= r.CPU && t.ramMB >= r.RAMMB {
			return json.Marshal(VMProperties{InstanceType: t.name, EphemeralDiskSize: r.EphemeralDiskSize})
		}
	}
	return nil, cpi.Errorf(cpi.CodeUnknown, "no instance type has %d cpu and %d MB", r.CPU, r.RAMMB)
}

// CreateDisk makes a disk near VMCID when set, which must exist.
func (c *CPI) CreateDisk(ctx context.Context, req cpi.CreateDiskRequest) (string, error) {
	var props DiskProperties
	if err := cpi.DecodeCloudProperties(req.CloudProperties, &props); err != nil {
		return "", err
	}
	if req.SizeMB <= 0 {
		return "", cpi.Errorf(cpi.CodeUnknown, "create disk: size %d MB is not positive", req.SizeMB)
	}
	unlock, err := c.begin(ctx)
	if err != nil {
		return "", err
	}
	defer unlock()
	if req.VMCID != "" {
		if _, err := c.vm("create disk near vm", req.VMCID); err != nil {
			return "", err
		}
	}
	cid := c.newID("disk")
	c.disks[cid] = &disk{sizeMB: req.SizeMB, tags: clone(req.Tags)}
	return cid, nil
}

// DeleteDisk refuses an attached disk; deleting a missing disk succeeds.
func (c *CPI) DeleteDisk(ctx context.Context, cid string) error {
	unlock, err := c.begin(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	d := c.disks[cid]
	if d == nil {
		return nil
	}
	if d.attachedTo != "" {
		return cpi.Errorf(cpi.CodeUnknown, "delete disk %s: attached to vm %s", cid, d.attachedTo)
	}
	delete(c.disks, cid)
	return nil
}

// AttachDisk attaches a free disk (again: the same hint) and tells the agent
// where it appears.
func (c *CPI) AttachDisk(ctx context.Context, vmCID, diskCID string) (cpi.DiskHint, error) {
	unlock, err := c.begin(ctx)
	if err != nil {
		return cpi.DiskHint{}, err
	}
	defer unlock()
	v, err := c.vm("attach disk", vmCID)
	if err != nil {
		return cpi.DiskHint{}, err
	}
	d, err := c.disk("attach to vm "+vmCID, diskCID)
	if err != nil {
		return cpi.DiskHint{}, err
	}
	switch d.attachedTo {
	case vmCID:
	case "":
		d.attachedTo = vmCID
		v.disks = append(v.disks, diskCID)
	default:
		return cpi.DiskHint{}, cpi.Errorf(cpi.CodeUnknown, "attach disk %s to vm %s: attached to vm %s", diskCID, vmCID, d.attachedTo)
	}
	i := 0
	for i < len(v.disks) && v.disks[i] != diskCID {
		i++
	}
	return cpi.DiskHint{Path: fmt.Sprintf("/dev/sd%c", 'c'+i), VolumeID: diskCID}, nil
}

// DetachDisk detaches a disk attached to the VM; a disk attached elsewhere
// is not this VM's (DiskNotFound).
func (c *CPI) DetachDisk(ctx context.Context, vmCID, diskCID string) error {
	unlock, err := c.begin(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	v, err := c.vm("detach disk", vmCID)
	if err != nil {
		return err
	}
	d, err := c.disk("detach from vm "+vmCID, diskCID)
	if err != nil {
		return err
	}
	if d.attachedTo != vmCID {
		return fmt.Errorf("detach disk %s from vm %s: not attached to it: %w", diskCID, vmCID, cpi.ErrDiskNotFound)
	}
	d.attachedTo = ""
	for i, x := range v.disks {
		if x == diskCID {
			v.disks = append(v.disks[:i], v.disks[i+1:]...)
			break
		}
	}
	return nil
}

// HasDisk answers false, not DiskNotFound, for a missing disk.
func (c *CPI) HasDisk(ctx context.Context, cid string) (bool, error) {
	unlock, err := c.begin(ctx)
	if err != nil {
		return false, err
	}
	defer unlock()
	return c.disks[cid] != nil, nil
}

// GetDisks lists the disks attached to the VM.
func (c *CPI) GetDisks(ctx context.Context, vmCID string) ([]string, error) {
	unlock, err := c.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	v, err := c.vm("get disks", vmCID)
	if err != nil {
		return nil, err
	}
	return append([]string{}, v.disks...), nil
}

// SetDiskMetadata adds the metadata to the disk's tags.
func (c *CPI) SetDiskMetadata(ctx context.Context, cid string, md map[string]string) error {
	unlock, err := c.begin(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	d, err := c.disk("set disk metadata", cid)
	if err != nil {
		return err
	}
	for k, val := range md {
		if _, ok := d.tags[k]; !ok {
			d.tags[k] = val
		}
	}
	return nil
}

// ListVMs lists the VMs by their tags, as a cloud's API would filter them.
func (c *CPI) ListVMs(ctx context.Context, f cpi.ListFilter) ([]cpi.VMInfo, error) {
	unlock, err := c.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	out := []cpi.VMInfo{}
	for cid, v := range c.vms {
		if f.Match(v.tags) {
			out = append(out, cpi.VMInfo{CID: cid, AgentID: v.agentID, Tags: clone(v.tags)})
		}
	}
	return out, nil
}

// ListDisks lists the disks by their tags, with the VM each is attached to.
func (c *CPI) ListDisks(ctx context.Context, f cpi.ListFilter) ([]cpi.DiskInfo, error) {
	unlock, err := c.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	out := []cpi.DiskInfo{}
	for cid, d := range c.disks {
		if f.Match(d.tags) {
			out = append(out, cpi.DiskInfo{CID: cid, VMCID: d.attachedTo, SizeMB: d.sizeMB, Tags: clone(d.tags)})
		}
	}
	return out, nil
}

func clone(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
