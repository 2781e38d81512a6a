package cpitest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/cpitest"
)

// Broken CPIs: each breaks one rule of the contract. The suite must fail
// on every one of them, naming the rule.
type (
	// deleteMissingFails answers VMNotFound when deleting a missing VM.
	deleteMissingFails struct{ *cpitest.Fake }
	// sameIP gives every VM on a dynamic network the same address.
	sameIP struct{ *cpitest.Fake }
	// noField rejects bad cloud properties without naming the field.
	noField struct{ *cpitest.Fake }
	// lyingCapabilities claims snapshots but does not take them.
	lyingCapabilities struct{ *cpitest.Fake }
	// stringErrors loses the error codes (returns plain errors).
	stringErrors struct{ *cpitest.Fake }
	// listIgnoresFilter lists every VM whatever the director filter.
	listIgnoresFilter struct{ *cpitest.Fake }
	// listNoTags lists VMs without the tags they were created with.
	listNoTags struct{ *cpitest.Fake }
	// listLyingCapability claims list_disks but does not list.
	listLyingCapability struct{ *cpitest.Fake }
)

// The kinds of bug that an outside author planted in a plugin and that an
// earlier suite let pass, one broken CPI each.
type (
	// noSettings never delivers the agent settings to the VM.
	noSettings struct{ *cpitest.Fake }
	// ignoresContext goes on with calls whose context is cancelled.
	ignoresContext struct{ *cpitest.Fake }
	// manualIPIgnored gives a manual network an address of its own choice.
	manualIPIgnored struct{ *cpitest.Fake }
	// dynamicIPRepeats hands out one dynamic address to every VM; the test
	// configures manual networks, so only a suite that checks dynamic
	// networks whenever Info claims them finds it.
	dynamicIPRepeats struct{ *cpitest.Fake }
	// dynamicClaimedUnsupported claims dynamic_networks but refuses them.
	dynamicClaimedUnsupported struct{ *cpitest.Fake }
	// dynamicWorksUnclaimed configures dynamic networks without claiming it.
	dynamicWorksUnclaimed struct{ *cpitest.Fake }
	// deleteVMLeavesDisk deletes a VM but leaves its disks attached to it.
	deleteVMLeavesDisk struct {
		*cpitest.Fake
		mu     *sync.Mutex
		zombie map[string]string // disk -> deleted vm
	}
	// diskNearMissingVM creates a disk "near" a VM that does not exist.
	diskNearMissingVM struct{ *cpitest.Fake }
	// detachElsewhere answers success detaching a disk attached to another VM.
	detachElsewhere struct{ *cpitest.Fake }
	// resizeMissing answers success resizing a disk that does not exist.
	resizeMissing struct{ *cpitest.Fake }
	// calcNotImplemented does not implement CalculateVMCloudProperties.
	calcNotImplemented struct{ *cpitest.Fake }
	// panics panics in RebootVM.
	panics struct{ *cpitest.Fake }
)

func (b noSettings) CreateVM(ctx context.Context, req cpi.CreateVMRequest) (cpi.CreateVMResult, error) {
	req.AgentSettings = nil
	return b.Fake.CreateVM(ctx, req)
}

func (b ignoresContext) CreateVM(ctx context.Context, req cpi.CreateVMRequest) (cpi.CreateVMResult, error) {
	return b.Fake.CreateVM(context.WithoutCancel(ctx), req)
}

func (b ignoresContext) CreateDisk(ctx context.Context, req cpi.CreateDiskRequest) (string, error) {
	return b.Fake.CreateDisk(context.WithoutCancel(ctx), req)
}

func (b ignoresContext) DeleteVM(ctx context.Context, cid string) error {
	return b.Fake.DeleteVM(context.WithoutCancel(ctx), cid)
}

func (b manualIPIgnored) CreateVM(ctx context.Context, req cpi.CreateVMRequest) (cpi.CreateVMResult, error) {
	nets := map[string]cpi.Network{}
	for k, n := range req.Networks {
		if n.Type == "manual" {
			n.Type, n.IP = "dynamic", ""
		}
		nets[k] = n
	}
	req.Networks = nets
	return b.Fake.CreateVM(ctx, req)
}

func (b dynamicIPRepeats) CreateVM(ctx context.Context, req cpi.CreateVMRequest) (cpi.CreateVMResult, error) {
	res, err := b.Fake.CreateVM(ctx, req)
	for k, n := range res.Networks {
		if req.Networks[k].Type == "dynamic" {
			n.IP = "127.200.9.9"
			res.Networks[k] = n
		}
	}
	return res, err
}

func (b dynamicClaimedUnsupported) CreateVM(ctx context.Context, req cpi.CreateVMRequest) (cpi.CreateVMResult, error) {
	for k, n := range req.Networks {
		if n.Type == "dynamic" {
			return cpi.CreateVMResult{}, cpi.Errorf(cpi.CodeVMCreationFailed, "network %s: dynamic networks are not supported", k)
		}
	}
	return b.Fake.CreateVM(ctx, req)
}

func (b dynamicWorksUnclaimed) Info(ctx context.Context) (cpi.Info, error) {
	info, err := b.Fake.Info(ctx)
	info.Capabilities.DynamicNetworks = false
	return info, err
}

// strictFake is the Fake as the contract wants a plugin: refusing unknown
// cloud property keys.
func strictFake() *cpitest.Fake {
	f := cpitest.NewFake()
	f.RefuseUnknownCloudProperties()
	return f
}

// ignoresUnknownKeys ignores cloud property keys it does not know.
type ignoresUnknownKeys struct{ *cpitest.Fake }

// vipDropped leaves vip networks out of the VM it creates.
type vipDropped struct{ *cpitest.Fake }

func (b vipDropped) CreateVM(ctx context.Context, req cpi.CreateVMRequest) (cpi.CreateVMResult, error) {
	nets := map[string]cpi.Network{}
	for k, n := range req.Networks {
		if n.Type != "vip" {
			nets[k] = n
		}
	}
	req.Networks = nets
	return b.Fake.CreateVM(ctx, req)
}

// noHints claims disk_hints but attaches without saying where.
type noHints struct{ *cpitest.Fake }

func (b noHints) AttachDisk(ctx context.Context, vm, disk string) (cpi.DiskHint, error) {
	_, err := b.Fake.AttachDisk(ctx, vm, disk)
	return cpi.DiskHint{}, err
}

// missingIsSuccess answers success for GetDisks of a VM that does not exist.
type missingIsSuccess struct{ *cpitest.Fake }

func (b missingIsSuccess) GetDisks(ctx context.Context, vm string) ([]string, error) {
	disks, err := b.Fake.GetDisks(ctx, vm)
	if errors.Is(err, cpi.ErrVMNotFound) {
		return nil, nil
	}
	return disks, err
}

// shrinks resizes a disk to a smaller size.
type shrinks struct{ *cpitest.Fake }

func (b shrinks) ResizeDisk(ctx context.Context, disk string, mb int64) error {
	if err := b.Fake.ResizeDisk(ctx, disk, mb); err != nil && mb > 0 {
		if has, _ := b.Fake.HasDisk(ctx, disk); has {
			return nil
		}
		return err
	}
	return nil
}

// counterIDs names VMs from a counter in the process, so that a plugin
// started again on the same cloud hands out the first one's names again
// (the cloud here is one Fake shared by every instance).
type counterIDs struct {
	*cpitest.Fake
	n *int
}

var (
	sharedCloud   = strictFake()
	sharedCloudMu sync.Mutex
	aliases       = map[string]string{} // counter id -> the cloud's
)

func newCounterIDs() cpi.CPI { return counterIDs{Fake: sharedCloud, n: new(int)} }

func (b counterIDs) CreateVM(ctx context.Context, req cpi.CreateVMRequest) (cpi.CreateVMResult, error) {
	res, err := b.Fake.CreateVM(ctx, req)
	if err != nil {
		return res, err
	}
	sharedCloudMu.Lock()
	defer sharedCloudMu.Unlock()
	*b.n++
	id := fmt.Sprintf("vm-%d", *b.n)
	aliases[id] = res.CID
	res.CID = id
	return res, nil
}

func (b counterIDs) cloudID(id string) string {
	sharedCloudMu.Lock()
	defer sharedCloudMu.Unlock()
	if c, ok := aliases[id]; ok {
		return c
	}
	return id
}

func (b counterIDs) HasVM(ctx context.Context, id string) (bool, error) {
	return b.Fake.HasVM(ctx, b.cloudID(id))
}

func (b counterIDs) DeleteVM(ctx context.Context, id string) error {
	return b.Fake.DeleteVM(ctx, b.cloudID(id))
}

func newDeleteVMLeavesDisk() deleteVMLeavesDisk {
	return deleteVMLeavesDisk{Fake: strictFake(), mu: &sync.Mutex{}, zombie: map[string]string{}}
}

func (b deleteVMLeavesDisk) DeleteVM(ctx context.Context, cid string) error {
	disks, _ := b.Fake.GetDisks(ctx, cid)
	b.mu.Lock()
	for _, d := range disks {
		b.zombie[d] = cid
	}
	b.mu.Unlock()
	return b.Fake.DeleteVM(ctx, cid)
}

func (b deleteVMLeavesDisk) stillAttached(disk string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if vm, ok := b.zombie[disk]; ok {
		return cpi.Errorf(cpi.CodeUnknown, "disk %s is attached to vm %s", disk, vm)
	}
	return nil
}

func (b deleteVMLeavesDisk) AttachDisk(ctx context.Context, vm, disk string) (cpi.DiskHint, error) {
	if err := b.stillAttached(disk); err != nil {
		return cpi.DiskHint{}, err
	}
	return b.Fake.AttachDisk(ctx, vm, disk)
}

func (b deleteVMLeavesDisk) DeleteDisk(ctx context.Context, disk string) error {
	if err := b.stillAttached(disk); err != nil {
		return err
	}
	return b.Fake.DeleteDisk(ctx, disk)
}

func (b diskNearMissingVM) CreateDisk(ctx context.Context, req cpi.CreateDiskRequest) (string, error) {
	if has, _ := b.Fake.HasVM(ctx, req.VMCID); !has {
		req.VMCID = ""
	}
	return b.Fake.CreateDisk(ctx, req)
}

func (b detachElsewhere) DetachDisk(ctx context.Context, vm, disk string) error {
	err := b.Fake.DetachDisk(ctx, vm, disk)
	if has, _ := b.Fake.HasVM(ctx, vm); has && errors.Is(err, cpi.ErrDiskNotFound) {
		return nil
	}
	return err
}

func (b resizeMissing) ResizeDisk(ctx context.Context, disk string, mb int64) error {
	if has, _ := b.Fake.HasDisk(ctx, disk); !has {
		return nil
	}
	return b.Fake.ResizeDisk(ctx, disk, mb)
}

func (calcNotImplemented) CalculateVMCloudProperties(context.Context, cpi.VMResources) (json.RawMessage, error) {
	return nil, cpi.ErrNotImplemented
}

func (panics) RebootVM(context.Context, string) error {
	panic("reboot: nil map")
}

func (b listIgnoresFilter) ListVMs(ctx context.Context, _ cpi.ListFilter) ([]cpi.VMInfo, error) {
	return b.Fake.ListVMs(ctx, cpi.ListFilter{})
}

func (b listNoTags) ListVMs(ctx context.Context, f cpi.ListFilter) ([]cpi.VMInfo, error) {
	vms, err := b.Fake.ListVMs(ctx, f)
	for i := range vms {
		vms[i].Tags = map[string]string{cpi.TagDirector: vms[i].Tags[cpi.TagDirector]}
	}
	return vms, err
}

func (b listLyingCapability) ListDisks(context.Context, cpi.ListFilter) ([]cpi.DiskInfo, error) {
	return nil, cpi.ErrNotImplemented
}

func (b deleteMissingFails) DeleteVM(ctx context.Context, cid string) error {
	if has, _ := b.Fake.HasVM(ctx, cid); !has {
		return cpi.ErrVMNotFound
	}
	return b.Fake.DeleteVM(ctx, cid)
}

func (b sameIP) CreateVM(ctx context.Context, req cpi.CreateVMRequest) (cpi.CreateVMResult, error) {
	res, err := b.Fake.CreateVM(ctx, req)
	for k, n := range res.Networks {
		n.IP = "127.200.9.9"
		res.Networks[k] = n
	}
	return res, err
}

func (b noField) CreateVM(ctx context.Context, req cpi.CreateVMRequest) (cpi.CreateVMResult, error) {
	res, err := b.Fake.CreateVM(ctx, req)
	if err != nil {
		if e, ok := err.(*cpi.Error); ok {
			e.Field = ""
		}
	}
	return res, err
}

func (b lyingCapabilities) SnapshotDisk(ctx context.Context, cid string, md map[string]string) (string, error) {
	return "", cpi.ErrNotImplemented
}

func (b stringErrors) RebootVM(ctx context.Context, cid string) error {
	if err := b.Fake.RebootVM(ctx, cid); err != nil {
		return &cpi.Error{Code: cpi.CodeUnknown, Message: err.Error()}
	}
	return nil
}

// manual configures manual networks, as an author whose cloud has them
// would, so that dynamic networks are only tested when Info claims them.
func manual(c *cpitest.Config) { c.Networks = cpitest.ManualNetworks("127.77.0.10") }

var broken = map[string]struct {
	newCPI func() cpi.CPI
	want   string
	cfg    func(*cpitest.Config)
}{
	"deleteMissingFails":  {func() cpi.CPI { return deleteMissingFails{strictFake()} }, "deletes are idempotent", nil},
	"sameIP":              {func() cpi.CPI { return sameIP{strictFake()} }, "both got ip 127.200.9.9", nil},
	"noField":             {func() cpi.CPI { return noField{strictFake()} }, `names field "", want "instance_type"`, nil},
	"lyingCapabilities":   {func() cpi.CPI { return lyingCapabilities{strictFake()} }, "Info says snapshots", nil},
	"stringErrors":        {func() cpi.CPI { return stringErrors{strictFake()} }, "want VMNotFound", nil},
	"listIgnoresFilter":   {func() cpi.CPI { return listIgnoresFilter{strictFake()} }, "filter on the compleat_director tag", nil},
	"listNoTags":          {func() cpi.CPI { return listNoTags{strictFake()} }, "apply every tag of the create request", nil},
	"listLyingCapability": {func() cpi.CPI { return listLyingCapability{strictFake()} }, "Info says list_disks", nil},

	"noSettings":                {func() cpi.CPI { return noSettings{strictFake()} }, "deliver req.AgentSettings to the VM", nil},
	"ignoresContext":            {func() cpi.CPI { return ignoresContext{strictFake()} }, "CreateVM with a cancelled context succeeded", nil},
	"manualIPIgnored":           {func() cpi.CPI { return manualIPIgnored{strictFake()} }, "configure exactly it", nil},
	"dynamicIPRepeats":          {func() cpi.CPI { return dynamicIPRepeats{strictFake()} }, "both got dynamic ip 127.200.9.9", manual},
	"dynamicClaimedUnsupported": {func() cpi.CPI { return dynamicClaimedUnsupported{strictFake()} }, "Info says dynamic_networks: assign the address", manual},
	"dynamicWorksUnclaimed":     {func() cpi.CPI { return dynamicWorksUnclaimed{strictFake()} }, "although Info does not claim dynamic_networks", manual},
	"deleteVMLeavesDisk":        {func() cpi.CPI { return newDeleteVMLeavesDisk() }, "DeleteVM must detach the VM's disks", nil},
	"diskNearMissingVM":         {func() cpi.CPI { return diskNearMissingVM{strictFake()} }, "CreateDisk near a missing VM", nil},
	"detachElsewhere":           {func() cpi.CPI { return detachElsewhere{strictFake()} }, "DetachDisk of a disk attached to another VM", nil},
	"resizeMissing":             {func() cpi.CPI { return resizeMissing{strictFake()} }, "ResizeDisk(missing)", nil},
	"calcNotImplemented":        {func() cpi.CPI { return calcNotImplemented{strictFake()} }, "CalculateVMCloudProperties answers NotImplemented: it is required", nil},
	"ignoresUnknownKeys":        {func() cpi.CPI { return ignoresUnknownKeys{cpitest.NewFake()} }, "refuse keys you do not know, as cpi.DecodeCloudProperties does", nil},
	"vipDropped":                {func() cpi.CPI { return vipDropped{strictFake()} }, "give the VM the vip address and report it", nil},
	"noHints":                   {func() cpi.CPI { return noHints{strictFake()} }, "empty hint although Info says disk_hints", nil},
	"missingIsSuccess":          {func() cpi.CPI { return missingIsSuccess{strictFake()} }, "GetDisks(missing vm): error <nil>, want VMNotFound", nil},
	"shrinks":                   {func() cpi.CPI { return shrinks{strictFake()} }, "refuse to shrink a disk", nil},
	"counterIDs":                {newCounterIDs, "make cids unique across plugin processes", nil},
	"panics":                    {func() cpi.CPI { return panics{strictFake()} }, "the plugin panicked: reboot: nil map", nil},
}

// TestBrokenCPIHelper runs the suite against one broken CPI when the parent
// test asks for it; it is a no-op otherwise.
func TestBrokenCPIHelper(t *testing.T) {
	name := os.Getenv("CPITEST_BROKEN")
	if name == "" {
		t.Skip("run by TestSuiteCatchesBrokenCPIs")
	}
	cfg := fakeConfig()
	if f := broken[name].cfg; f != nil {
		f(&cfg)
	}
	cpitest.Run(t, func(*testing.T) cpi.CPI { return broken[name].newCPI() }, cfg)
}

func TestSuiteCatchesBrokenCPIs(t *testing.T) {
	t.Parallel()
	for name, b := range broken {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run=^TestBrokenCPIHelper$", "-test.v")
			cmd.Env = append(os.Environ(), "CPITEST_BROKEN="+name)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a CPI that breaks the contract:\n%s", out)
			}
			if !strings.Contains(string(out), b.want) {
				t.Errorf("the suite failed without saying %q:\n%s", b.want, out)
			}
		})
	}
}
