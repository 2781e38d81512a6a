package cpitest

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/compleat/compleat/cpi"
)

// Method names one method of the CPI contract, for [Fake.FailNext].
type Method string

// The methods of the contract.
const (
	MethodInfo                       Method = "Info"
	MethodCreateStemcell             Method = "CreateStemcell"
	MethodDeleteStemcell             Method = "DeleteStemcell"
	MethodCreateVM                   Method = "CreateVM"
	MethodDeleteVM                   Method = "DeleteVM"
	MethodHasVM                      Method = "HasVM"
	MethodRebootVM                   Method = "RebootVM"
	MethodSetVMMetadata              Method = "SetVMMetadata"
	MethodCalculateVMCloudProperties Method = "CalculateVMCloudProperties"
	MethodCreateDisk                 Method = "CreateDisk"
	MethodDeleteDisk                 Method = "DeleteDisk"
	MethodResizeDisk                 Method = "ResizeDisk"
	MethodAttachDisk                 Method = "AttachDisk"
	MethodDetachDisk                 Method = "DetachDisk"
	MethodHasDisk                    Method = "HasDisk"
	MethodGetDisks                   Method = "GetDisks"
	MethodSetDiskMetadata            Method = "SetDiskMetadata"
	MethodSnapshotDisk               Method = "SnapshotDisk"
	MethodDeleteSnapshot             Method = "DeleteSnapshot"
	MethodListVMs                    Method = "ListVMs"
	MethodListDisks                  Method = "ListDisks"
)

// FakeStemcell is a stemcell held by a [Fake].
type FakeStemcell struct {
	CID             string
	ImagePath       string
	CloudProperties json.RawMessage
}

// FakeVM is a VM held by a [Fake].
type FakeVM struct {
	CID             string
	AgentID         string
	StemcellCID     string
	CloudProperties json.RawMessage
	Networks        map[string]cpi.Network // as configured (dynamic IPs filled in)
	DiskCIDs        []string               // the placement hint given at creation
	Env             json.RawMessage
	// AgentSettings is the settings document as the fake would deliver it:
	// the request's, with "networks" and "vm" set.
	AgentSettings json.RawMessage
	Metadata      map[string]string
	Tags          map[string]string // applied at creation
	Reboots       int
	Disks         []string // attached persistent disks, in attach order
}

// FakeDisk is a persistent disk held by a [Fake].
type FakeDisk struct {
	CID             string
	SizeMB          int64
	CloudProperties json.RawMessage
	VMLocality      string
	AttachedTo      string // VM cid, "" when detached
	Metadata        map[string]string
	Tags            map[string]string // applied at creation
}

// FakeSnapshot is a disk snapshot held by a [Fake].
type FakeSnapshot struct {
	CID      string
	DiskCID  string
	Metadata map[string]string
}

// Fake is an in-memory, stateful implementation of [cpi.CPI] for tests of
// code that drives a CPI (the director). It is safe for concurrent use.
//
// It behaves like a well-behaved cloud: objects get unique ids, missing
// objects yield the contract's typed errors, deletes are idempotent, manual
// networks keep the IP asked for and dynamic networks get one from
// 127.200.0.0/16 (addresses only; nothing listens on them).
//
// Cloud properties it understands (unknown keys are ignored unless
// RefuseUnknownCloudProperties):
//
//	VM:   {"instance_type": string, "fail": bool}   (fail=true makes CreateVM fail with ErrVMCreationFailed)
//	disk: {"type": string}
//
// A value of the wrong type yields ErrInvalidCloudProperties naming the key.
type Fake struct {
	mu        sync.Mutex
	caps      cpi.Capabilities
	seq       int
	nextIP    netip.Addr
	stemcells map[string]*FakeStemcell
	vms       map[string]*FakeVM
	disks     map[string]*FakeDisk
	snapshots map[string]*FakeSnapshot
	failures  map[Method][]error
	calls     map[Method]int
	stateFile string // see Persist
	saveErr   error
	strict    bool // see RefuseUnknownCloudProperties
}

var (
	_ cpi.CPI        = (*Fake)(nil)
	_ SettingsReader = (*Fake)(nil)
)

// NewFake returns an empty Fake with every capability turned on.
func NewFake() *Fake {
	return &Fake{
		caps:      cpi.Capabilities{Snapshots: true, ResizeDisk: true, DiskHints: true, DynamicNetworks: true, ListVMs: true, ListDisks: true},
		nextIP:    netip.MustParseAddr("127.200.0.2"),
		stemcells: map[string]*FakeStemcell{},
		vms:       map[string]*FakeVM{},
		disks:     map[string]*FakeDisk{},
		snapshots: map[string]*FakeSnapshot{},
		failures:  map[Method][]error{},
		calls:     map[Method]int{},
	}
}

// SetCapabilities changes what Info reports and which optional methods answer
// ErrNotImplemented.
func (f *Fake) SetCapabilities(c cpi.Capabilities) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.caps = c
	f.persist()
}

// RefuseUnknownCloudProperties makes the Fake refuse cloud property keys it
// does not know, as the contract asks of a plugin (the conformance suite
// checks it). By default it ignores them, so that the director's tests may
// pass whatever a manifest holds.
func (f *Fake) RefuseUnknownCloudProperties() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.strict = true
}

// checkKnown refuses, when strict, a key of props not in known.
func (f *Fake) checkKnown(props map[string]any, known ...string) error {
	if !f.strict {
		return nil
	}
	for _, k := range slices.Sorted(maps.Keys(props)) {
		if !slices.Contains(known, k) {
			return cpi.InvalidCloudProperty(k, "unknown property (known here: %s)", strings.Join(known, ", "))
		}
	}
	return nil
}

// FailNext makes the next call of method m return err without any effect.
// Several calls queue up, one error per call.
func (f *Fake) FailNext(m Method, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failures[m] = append(f.failures[m], err)
}

// Calls returns how many times method m was called (failed calls included).
func (f *Fake) Calls(m Method) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[m]
}

// VMs returns copies of the VMs the fake holds, ordered by cid.
func (f *Fake) VMs() []FakeVM {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]FakeVM, 0, len(f.vms))
	for _, cid := range slices.Sorted(maps.Keys(f.vms)) {
		out = append(out, copyVM(f.vms[cid]))
	}
	return out
}

// VM returns a copy of one VM.
func (f *Fake) VM(cid string) (FakeVM, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	vm, ok := f.vms[cid]
	if !ok {
		return FakeVM{}, false
	}
	return copyVM(vm), true
}

// Disks returns copies of the disks the fake holds, ordered by cid.
func (f *Fake) Disks() []FakeDisk {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]FakeDisk, 0, len(f.disks))
	for _, cid := range slices.Sorted(maps.Keys(f.disks)) {
		d := *f.disks[cid]
		d.Metadata = maps.Clone(d.Metadata)
		out = append(out, d)
	}
	return out
}

// Stemcells returns copies of the stemcells the fake holds, ordered by cid.
func (f *Fake) Stemcells() []FakeStemcell {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]FakeStemcell, 0, len(f.stemcells))
	for _, cid := range slices.Sorted(maps.Keys(f.stemcells)) {
		out = append(out, *f.stemcells[cid])
	}
	return out
}

// Snapshots returns copies of the snapshots the fake holds, ordered by cid.
func (f *Fake) Snapshots() []FakeSnapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]FakeSnapshot, 0, len(f.snapshots))
	for _, cid := range slices.Sorted(maps.Keys(f.snapshots)) {
		s := *f.snapshots[cid]
		s.Metadata = maps.Clone(s.Metadata)
		out = append(out, s)
	}
	return out
}

// LoseVM removes a VM as if it vanished in the cloud behind the director's
// back (its disks are detached). It reports whether the VM existed.
func (f *Fake) LoseVM(cid string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	vm, ok := f.vms[cid]
	if !ok {
		return false
	}
	for _, d := range vm.Disks {
		if disk, ok := f.disks[d]; ok {
			disk.AttachedTo = ""
		}
	}
	delete(f.vms, cid)
	return true
}

func copyVM(vm *FakeVM) FakeVM {
	c := *vm
	c.Networks = maps.Clone(vm.Networks)
	c.DiskCIDs = slices.Clone(vm.DiskCIDs)
	c.Metadata = maps.Clone(vm.Metadata)
	c.Disks = slices.Clone(vm.Disks)
	return c
}

// begin is called with f.mu held at the start of every method: it counts the
// call, honours a cancelled context and pops an injected failure.
func (f *Fake) begin(ctx context.Context, m Method) error {
	f.calls[m]++
	if err := ctx.Err(); err != nil {
		return err
	}
	if q := f.failures[m]; len(q) > 0 {
		err := q[0]
		f.failures[m] = q[1:]
		return err
	}
	return nil
}

func (f *Fake) newID(kind string) string {
	f.seq++
	return fmt.Sprintf("fake-%s-%d", kind, f.seq)
}

// Info implements cpi.CPI.
func (f *Fake) Info(ctx context.Context) (cpi.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, MethodInfo); err != nil {
		return cpi.Info{}, err
	}
	return cpi.Info{
		Name:            "fake",
		APIVersion:      cpi.APIVersion,
		StemcellFormats: []string{"fake-tgz", "local-tgz"},
		Capabilities:    f.caps,
	}, nil
}

// CreateStemcell implements cpi.CPI.
func (f *Fake) CreateStemcell(ctx context.Context, req cpi.CreateStemcellRequest) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.persist()
	if err := f.begin(ctx, MethodCreateStemcell); err != nil {
		return "", err
	}
	if req.ImagePath == "" {
		return "", cpi.Errorf(cpi.CodeUnknown, "create stemcell: image path is empty")
	}
	if _, err := objectProps(req.CloudProperties); err != nil {
		return "", err
	}
	cid := f.newID("stemcell")
	f.stemcells[cid] = &FakeStemcell{CID: cid, ImagePath: req.ImagePath, CloudProperties: clone(req.CloudProperties)}
	return cid, nil
}

// DeleteStemcell implements cpi.CPI.
func (f *Fake) DeleteStemcell(ctx context.Context, cid string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.persist()
	if err := f.begin(ctx, MethodDeleteStemcell); err != nil {
		return err
	}
	delete(f.stemcells, cid)
	return nil
}

// CreateVM implements cpi.CPI.
func (f *Fake) CreateVM(ctx context.Context, req cpi.CreateVMRequest) (cpi.CreateVMResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.persist()
	if err := f.begin(ctx, MethodCreateVM); err != nil {
		return cpi.CreateVMResult{}, err
	}
	props, err := objectProps(req.CloudProperties)
	if err != nil {
		return cpi.CreateVMResult{}, err
	}
	if err := f.checkKnown(props, "fail", "instance_type", "ephemeral_disk_size"); err != nil {
		return cpi.CreateVMResult{}, err
	}
	if v, ok := props["instance_type"]; ok {
		if _, ok := v.(string); !ok {
			return cpi.CreateVMResult{}, cpi.InvalidCloudProperty("instance_type", "must be a string, got %s", jsonType(v))
		}
	}
	fail := false
	if v, ok := props["fail"]; ok {
		b, ok := v.(bool)
		if !ok {
			return cpi.CreateVMResult{}, cpi.InvalidCloudProperty("fail", "must be a boolean, got %s", jsonType(v))
		}
		fail = b
	}
	if _, ok := f.stemcells[req.StemcellCID]; !ok {
		return cpi.CreateVMResult{}, fmt.Errorf("create vm: stemcell %q: %w", req.StemcellCID, cpi.ErrStemcellNotFound)
	}
	for _, d := range req.DiskCIDs {
		if _, ok := f.disks[d]; !ok {
			return cpi.CreateVMResult{}, fmt.Errorf("create vm: disk %q: %w", d, cpi.ErrDiskNotFound)
		}
	}
	if fail {
		return cpi.CreateVMResult{}, &cpi.Error{Code: cpi.CodeVMCreationFailed, Message: "create vm: cloud properties ask for a failure", Retryable: true}
	}

	inUse := map[string]string{}
	for _, vm := range f.vms {
		for _, n := range vm.Networks {
			if n.IP != "" {
				inUse[n.IP] = vm.CID
			}
		}
	}
	networks := make(map[string]cpi.Network, len(req.Networks))
	for name, n := range req.Networks {
		switch n.Type {
		case "manual", "vip":
			if _, err := netip.ParseAddr(n.IP); err != nil {
				return cpi.CreateVMResult{}, cpi.Errorf(cpi.CodeVMCreationFailed, "create vm: network %s: ip %q: %v", name, n.IP, err)
			}
			if other, ok := inUse[n.IP]; ok {
				return cpi.CreateVMResult{}, cpi.Errorf(cpi.CodeVMCreationFailed, "create vm: network %s: ip %s is in use by vm %s", name, n.IP, other)
			}
		case "dynamic":
			if !f.caps.DynamicNetworks {
				return cpi.CreateVMResult{}, cpi.Errorf(cpi.CodeNotImplemented, "create vm: network %s: dynamic networks are not supported", name)
			}
			for {
				ip := f.nextIP
				f.nextIP = f.nextIP.Next()
				if _, ok := inUse[ip.String()]; !ok {
					n.IP = ip.String()
					n.Netmask = "255.255.0.0"
					break
				}
			}
		default:
			return cpi.CreateVMResult{}, cpi.Errorf(cpi.CodeVMCreationFailed, "create vm: network %s: unknown type %q", name, n.Type)
		}
		inUse[n.IP] = "new"
		networks[name] = n
	}

	cid := f.newID("vm")
	settings, err := deliveredSettings(req.AgentSettings, cid, networks)
	if err != nil {
		return cpi.CreateVMResult{}, err
	}
	f.vms[cid] = &FakeVM{
		CID:             cid,
		AgentID:         req.AgentID,
		StemcellCID:     req.StemcellCID,
		CloudProperties: clone(req.CloudProperties),
		Networks:        networks,
		DiskCIDs:        slices.Clone(req.DiskCIDs),
		Env:             clone(req.Env),
		AgentSettings:   settings,
		Metadata:        map[string]string{},
		Tags:            maps.Clone(req.Tags),
	}
	return cpi.CreateVMResult{CID: cid, Networks: maps.Clone(networks)}, nil
}

// DeleteVM implements cpi.CPI.
func (f *Fake) DeleteVM(ctx context.Context, cid string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.persist()
	if err := f.begin(ctx, MethodDeleteVM); err != nil {
		return err
	}
	vm, ok := f.vms[cid]
	if !ok {
		return nil
	}
	for _, d := range vm.Disks {
		if disk, ok := f.disks[d]; ok {
			disk.AttachedTo = ""
		}
	}
	delete(f.vms, cid)
	return nil
}

// HasVM implements cpi.CPI.
func (f *Fake) HasVM(ctx context.Context, cid string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, MethodHasVM); err != nil {
		return false, err
	}
	_, ok := f.vms[cid]
	return ok, nil
}

// RebootVM implements cpi.CPI.
func (f *Fake) RebootVM(ctx context.Context, cid string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.persist()
	if err := f.begin(ctx, MethodRebootVM); err != nil {
		return err
	}
	vm, ok := f.vms[cid]
	if !ok {
		return fmt.Errorf("reboot vm %s: %w", cid, cpi.ErrVMNotFound)
	}
	vm.Reboots++
	return nil
}

// SetVMMetadata implements cpi.CPI.
func (f *Fake) SetVMMetadata(ctx context.Context, cid string, metadata map[string]string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.persist()
	if err := f.begin(ctx, MethodSetVMMetadata); err != nil {
		return err
	}
	vm, ok := f.vms[cid]
	if !ok {
		return fmt.Errorf("set metadata of vm %s: %w", cid, cpi.ErrVMNotFound)
	}
	maps.Copy(vm.Metadata, metadata)
	return nil
}

// CalculateVMCloudProperties implements cpi.CPI: it names an instance type
// after the resources.
func (f *Fake) CalculateVMCloudProperties(ctx context.Context, req cpi.VMResources) (json.RawMessage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, MethodCalculateVMCloudProperties); err != nil {
		return nil, err
	}
	if req.CPU < 0 || req.RAMMB < 0 || req.EphemeralDiskSize < 0 {
		return nil, cpi.Errorf(cpi.CodeUnknown, "calculate vm cloud properties: negative resources %+v", req)
	}
	return json.Marshal(map[string]any{
		"instance_type":       fmt.Sprintf("fake.c%d.m%d", req.CPU, req.RAMMB),
		"ephemeral_disk_size": req.EphemeralDiskSize,
	})
}

// CreateDisk implements cpi.CPI.
func (f *Fake) CreateDisk(ctx context.Context, req cpi.CreateDiskRequest) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.persist()
	if err := f.begin(ctx, MethodCreateDisk); err != nil {
		return "", err
	}
	props, err := objectProps(req.CloudProperties)
	if err != nil {
		return "", err
	}
	if err := f.checkKnown(props, "type"); err != nil {
		return "", err
	}
	if v, ok := props["type"]; ok {
		if _, ok := v.(string); !ok {
			return "", cpi.InvalidCloudProperty("type", "must be a string, got %s", jsonType(v))
		}
	}
	if req.SizeMB <= 0 {
		return "", cpi.Errorf(cpi.CodeUnknown, "create disk: size %d MB is not positive", req.SizeMB)
	}
	if req.VMCID != "" {
		if _, ok := f.vms[req.VMCID]; !ok {
			return "", fmt.Errorf("create disk near vm %s: %w", req.VMCID, cpi.ErrVMNotFound)
		}
	}
	cid := f.newID("disk")
	f.disks[cid] = &FakeDisk{CID: cid, SizeMB: req.SizeMB, CloudProperties: clone(req.CloudProperties), VMLocality: req.VMCID, Metadata: map[string]string{}, Tags: maps.Clone(req.Tags)}
	return cid, nil
}

// DeleteDisk implements cpi.CPI. Deleting an attached disk fails, as in most
// clouds.
func (f *Fake) DeleteDisk(ctx context.Context, cid string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.persist()
	if err := f.begin(ctx, MethodDeleteDisk); err != nil {
		return err
	}
	d, ok := f.disks[cid]
	if !ok {
		return nil
	}
	if d.AttachedTo != "" {
		return cpi.Errorf(cpi.CodeUnknown, "delete disk %s: attached to vm %s", cid, d.AttachedTo)
	}
	delete(f.disks, cid)
	return nil
}

// ResizeDisk implements cpi.CPI.
func (f *Fake) ResizeDisk(ctx context.Context, cid string, sizeMB int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.persist()
	if err := f.begin(ctx, MethodResizeDisk); err != nil {
		return err
	}
	if !f.caps.ResizeDisk {
		return fmt.Errorf("resize disk %s: %w", cid, cpi.ErrNotImplemented)
	}
	d, ok := f.disks[cid]
	if !ok {
		return fmt.Errorf("resize disk %s: %w", cid, cpi.ErrDiskNotFound)
	}
	if d.AttachedTo != "" {
		return cpi.Errorf(cpi.CodeUnknown, "resize disk %s: attached to vm %s", cid, d.AttachedTo)
	}
	if sizeMB < d.SizeMB {
		return cpi.Errorf(cpi.CodeUnknown, "resize disk %s: cannot shrink from %d to %d MB", cid, d.SizeMB, sizeMB)
	}
	d.SizeMB = sizeMB
	return nil
}

// AttachDisk implements cpi.CPI.
func (f *Fake) AttachDisk(ctx context.Context, vmCID, diskCID string) (cpi.DiskHint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.persist()
	if err := f.begin(ctx, MethodAttachDisk); err != nil {
		return cpi.DiskHint{}, err
	}
	vm, ok := f.vms[vmCID]
	if !ok {
		return cpi.DiskHint{}, fmt.Errorf("attach disk %s to vm %s: %w", diskCID, vmCID, cpi.ErrVMNotFound)
	}
	d, ok := f.disks[diskCID]
	if !ok {
		return cpi.DiskHint{}, fmt.Errorf("attach disk %s to vm %s: %w", diskCID, vmCID, cpi.ErrDiskNotFound)
	}
	switch d.AttachedTo {
	case "":
	case vmCID:
		return f.hint(vm, diskCID), nil
	default:
		return cpi.DiskHint{}, cpi.Errorf(cpi.CodeUnknown, "attach disk %s to vm %s: attached to vm %s", diskCID, vmCID, d.AttachedTo)
	}
	d.AttachedTo = vmCID
	vm.Disks = append(vm.Disks, diskCID)
	return f.hint(vm, diskCID), nil
}

func (f *Fake) hint(vm *FakeVM, diskCID string) cpi.DiskHint {
	if !f.caps.DiskHints {
		return cpi.DiskHint{}
	}
	i := slices.Index(vm.Disks, diskCID)
	return cpi.DiskHint{Path: fmt.Sprintf("/dev/fake%c", 'b'+i%25), VolumeID: diskCID}
}

// DetachDisk implements cpi.CPI.
func (f *Fake) DetachDisk(ctx context.Context, vmCID, diskCID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.persist()
	if err := f.begin(ctx, MethodDetachDisk); err != nil {
		return err
	}
	vm, ok := f.vms[vmCID]
	if !ok {
		return fmt.Errorf("detach disk %s from vm %s: %w", diskCID, vmCID, cpi.ErrVMNotFound)
	}
	d, ok := f.disks[diskCID]
	if !ok {
		return fmt.Errorf("detach disk %s from vm %s: %w", diskCID, vmCID, cpi.ErrDiskNotFound)
	}
	if d.AttachedTo != vmCID {
		return fmt.Errorf("detach disk %s from vm %s: not attached to it: %w", diskCID, vmCID, cpi.ErrDiskNotFound)
	}
	d.AttachedTo = ""
	vm.Disks = slices.DeleteFunc(vm.Disks, func(s string) bool { return s == diskCID })
	return nil
}

// HasDisk implements cpi.CPI.
func (f *Fake) HasDisk(ctx context.Context, cid string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, MethodHasDisk); err != nil {
		return false, err
	}
	_, ok := f.disks[cid]
	return ok, nil
}

// GetDisks implements cpi.CPI.
func (f *Fake) GetDisks(ctx context.Context, vmCID string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, MethodGetDisks); err != nil {
		return nil, err
	}
	vm, ok := f.vms[vmCID]
	if !ok {
		return nil, fmt.Errorf("get disks of vm %s: %w", vmCID, cpi.ErrVMNotFound)
	}
	return slices.Clone(vm.Disks), nil
}

// SetDiskMetadata implements cpi.CPI.
func (f *Fake) SetDiskMetadata(ctx context.Context, cid string, metadata map[string]string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.persist()
	if err := f.begin(ctx, MethodSetDiskMetadata); err != nil {
		return err
	}
	d, ok := f.disks[cid]
	if !ok {
		return fmt.Errorf("set metadata of disk %s: %w", cid, cpi.ErrDiskNotFound)
	}
	maps.Copy(d.Metadata, metadata)
	return nil
}

// SnapshotDisk implements cpi.CPI.
func (f *Fake) SnapshotDisk(ctx context.Context, cid string, metadata map[string]string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.persist()
	if err := f.begin(ctx, MethodSnapshotDisk); err != nil {
		return "", err
	}
	if !f.caps.Snapshots {
		return "", fmt.Errorf("snapshot disk %s: %w", cid, cpi.ErrNotImplemented)
	}
	if _, ok := f.disks[cid]; !ok {
		return "", fmt.Errorf("snapshot disk %s: %w", cid, cpi.ErrDiskNotFound)
	}
	sid := f.newID("snapshot")
	f.snapshots[sid] = &FakeSnapshot{CID: sid, DiskCID: cid, Metadata: maps.Clone(metadata)}
	return sid, nil
}

// DeleteSnapshot implements cpi.CPI.
func (f *Fake) DeleteSnapshot(ctx context.Context, cid string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.persist()
	if err := f.begin(ctx, MethodDeleteSnapshot); err != nil {
		return err
	}
	if !f.caps.Snapshots {
		return fmt.Errorf("delete snapshot %s: %w", cid, cpi.ErrNotImplemented)
	}
	delete(f.snapshots, cid)
	return nil
}

// ListVMs implements cpi.CPI: the VMs whose tags pass the filter, by cid.
func (f *Fake) ListVMs(ctx context.Context, filter cpi.ListFilter) ([]cpi.VMInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, MethodListVMs); err != nil {
		return nil, err
	}
	if !f.caps.ListVMs {
		return nil, fmt.Errorf("list vms: %w", cpi.ErrNotImplemented)
	}
	out := []cpi.VMInfo{}
	for _, cid := range slices.Sorted(maps.Keys(f.vms)) {
		vm := f.vms[cid]
		if filter.Match(vm.Tags) {
			out = append(out, cpi.VMInfo{CID: cid, AgentID: vm.AgentID, Tags: maps.Clone(vm.Tags)})
		}
	}
	return out, nil
}

// ListDisks implements cpi.CPI: the disks whose tags pass the filter, by cid.
func (f *Fake) ListDisks(ctx context.Context, filter cpi.ListFilter) ([]cpi.DiskInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, MethodListDisks); err != nil {
		return nil, err
	}
	if !f.caps.ListDisks {
		return nil, fmt.Errorf("list disks: %w", cpi.ErrNotImplemented)
	}
	out := []cpi.DiskInfo{}
	for _, cid := range slices.Sorted(maps.Keys(f.disks)) {
		d := f.disks[cid]
		if filter.Match(d.Tags) {
			out = append(out, cpi.DiskInfo{CID: cid, VMCID: d.AttachedTo, SizeMB: d.SizeMB, Tags: maps.Clone(d.Tags)})
		}
	}
	return out, nil
}

// DeliveredSettings implements SettingsReader: the settings the VM was
// given, as the agent would read them.
func (f *Fake) DeliveredSettings(_ context.Context, vmCID string) (json.RawMessage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	vm, ok := f.vms[vmCID]
	if !ok {
		return nil, fmt.Errorf("settings of vm %s: %w", vmCID, cpi.ErrVMNotFound)
	}
	return clone(vm.AgentSettings), nil
}

// objectProps decodes cloud properties that must be a JSON object (or empty).
func objectProps(raw json.RawMessage) (map[string]any, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return map[string]any{}, nil
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, cpi.InvalidCloudProperty("", "cloud properties must be a JSON object: %v", err)
	}
	return m, nil
}

func jsonType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	case []any:
		return "an array"
	default:
		return "an object"
	}
}

func clone(raw json.RawMessage) json.RawMessage {
	if raw == nil {
		return nil
	}
	return slices.Clone(raw)
}

// deliveredSettings sets "networks" and "vm" in the agent settings, as every
// plugin does before delivering them.
func deliveredSettings(raw json.RawMessage, cid string, networks map[string]cpi.Network) (json.RawMessage, error) {
	settings := map[string]json.RawMessage{}
	if len(raw) > 0 && string(raw) != "null" {
		if err := json.Unmarshal(raw, &settings); err != nil {
			return nil, cpi.Errorf(cpi.CodeUnknown, "create vm: agent settings must be a JSON object: %v", err)
		}
	}
	n, err := json.Marshal(networks)
	if err != nil {
		return nil, fmt.Errorf("create vm: encode networks: %w", err)
	}
	settings["networks"] = n
	settings["vm"], _ = json.Marshal(map[string]string{"cid": cid})
	return json.Marshal(settings)
}
