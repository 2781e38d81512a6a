package cpitest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi"
)

// Config tells the conformance suite what the plugin under test needs.
type Config struct {
	// Stemcell is what the suite passes to CreateStemcell: an image file the
	// plugin accepts (empty for a cloud without images, or light stemcells
	// whose cloud properties name the image) and the stemcell's cloud
	// properties.
	Stemcell cpi.CreateStemcellRequest

	// VMCloudProperties are valid cloud properties for CreateVM (a JSON
	// object; nil means {}).
	VMCloudProperties json.RawMessage

	// Networks returns the networks of the i-th VM the suite creates in one
	// test (i counts from 0). Manual networks must give each i its own IP;
	// dynamic networks leave IP empty and the plugin must report the address
	// it assigned. Nil means one dynamic network named "default".
	Networks func(i int) map[string]cpi.Network

	// AgentSettings returns the agent settings document for a VM (nil means
	// {"agent_id": agentID}). Plugins that boot a real program may need more.
	AgentSettings func(agentID string) json.RawMessage

	// DiskCloudProperties are valid cloud properties for CreateDisk (nil
	// means {}).
	DiskCloudProperties json.RawMessage

	// InvalidVMCloudProperties are VM cloud properties the plugin must reject
	// with ErrInvalidCloudProperties naming InvalidField. Required.
	InvalidVMCloudProperties json.RawMessage
	InvalidField             string

	// VMAlive, when set, lets the suite check that a VM really runs after
	// CreateVM and really is gone after DeleteVM (e.g. the local CPI's agent
	// process). It reports whether the VM's workload is running.
	VMAlive func(t *testing.T, vmCID string) bool

	// ManualNetworks returns manual networks with addresses valid in the
	// cloud for the i-th VM of a test, like Networks. The suite checks with
	// them that a manual network's IP is honoured whatever Networks holds.
	// Nil means Networks when those are manual; with neither, the Networks
	// test fails asking for it.
	ManualNetworks func(i int) map[string]cpi.Network

	// VIPNetworks returns vip networks (with addresses the cloud can give
	// a VM: an elastic IP, a floating IP) for the i-th VM of a test. The
	// Networks test then places a VM on a manual network and these, and
	// checks that each vip address is reported and delivered. Nil: vip
	// networks are not checked (the test log says so).
	VIPNetworks func(i int) map[string]cpi.Network

	// DeliveredSettings, when set, returns the agent settings document as
	// the plugin delivered it to the VM (what the agent will read: the
	// local CPI's settings file, EC2 user data, ...), so that the suite can
	// check that the settings arrive. A CPI under test that implements
	// SettingsReader is asked directly instead (RunInProcess passes the
	// implementation's through). With neither, the AgentSettings test is
	// skipped, saying so.
	DeliveredSettings func(ctx context.Context, vmCID string) (json.RawMessage, error)

	// IgnoresUnknownKeys declares that the plugin deliberately ignores
	// cloud property keys it does not know (cpi-aws does, so that
	// vm_extensions may carry keys for other tools; document it). Then the
	// suite checks that such a key does no harm; otherwise it must be
	// refused with ErrInvalidCloudProperties naming it.
	IgnoresUnknownKeys bool

	// Timeout bounds each test of the suite (default 2 minutes).
	Timeout time.Duration
}

// SettingsReader is the optional test hook through which the suite reads
// the settings a VM was given (see Config.DeliveredSettings). The Fake
// implements it.
type SettingsReader interface {
	DeliveredSettings(ctx context.Context, vmCID string) (json.RawMessage, error)
}

// ManualNetworks returns a Config.Networks giving the i-th VM the address
// base+i on a manual network named "default"; base is an IPv4 address such
// as "127.77.0.10". It panics when base is not one (a mistake in the test,
// not in the plugin).
func ManualNetworks(base string) func(i int) map[string]cpi.Network {
	return func(i int) map[string]cpi.Network {
		var a, b, c, d int
		if _, err := fmt.Sscanf(base, "%d.%d.%d.%d", &a, &b, &c, &d); err != nil {
			panic(fmt.Sprintf("cpitest.ManualNetworks: base %q is not an IPv4 address", base))
		}
		n := (a<<24 | b<<16 | c<<8 | d) + i
		ip := fmt.Sprintf("%d.%d.%d.%d", n>>24&0xff, n>>16&0xff, n>>8&0xff, n&0xff)
		return map[string]cpi.Network{"default": {
			Type: "manual", IP: ip, Netmask: "255.255.0.0", Default: []string{"dns", "gateway"},
		}}
	}
}

func (c Config) withDefaults() Config {
	if c.Networks == nil {
		c.Networks = func(int) map[string]cpi.Network {
			return map[string]cpi.Network{"default": {Type: "dynamic", Default: []string{"dns", "gateway"}}}
		}
	}
	if c.AgentSettings == nil {
		c.AgentSettings = func(agentID string) json.RawMessage {
			b, _ := json.Marshal(map[string]string{"agent_id": agentID})
			return b
		}
	}
	if c.VMCloudProperties == nil {
		c.VMCloudProperties = json.RawMessage(`{}`)
	}
	if c.DiskCloudProperties == nil {
		c.DiskCloudProperties = json.RawMessage(`{}`)
	}
	if c.Stemcell.CloudProperties == nil {
		c.Stemcell.CloudProperties = json.RawMessage(`{}`)
	}
	if c.Timeout == 0 {
		c.Timeout = 2 * time.Minute
	}
	return c
}

// Run is the conformance suite: the definition of a working CPI. It drives
// the CPI that newCPI returns through the whole contract, one subtest per
// part. newCPI is called once per subtest and must return a fresh plugin
// whose resources are released by t.Cleanup (see RunInProcess and RunBinary
// for plugins served over gRPC).
func Run(t *testing.T, newCPI func(t *testing.T) cpi.CPI, cfg Config) {
	t.Helper()
	if cfg.InvalidVMCloudProperties == nil {
		t.Fatal("cpitest: Config.InvalidVMCloudProperties is required")
	}
	cfg = cfg.withDefaults()
	tests := []struct {
		name string
		fn   func(*testing.T, *suite)
	}{
		{"Info", testInfo},
		{"Stemcell", testStemcell},
		{"VMLifecycle", testVMLifecycle},
		{"DiskLifecycle", testDiskLifecycle},
		{"MissingObjects", testMissingObjects},
		{"ConcurrentCreateVM", testConcurrentCreateVM},
		{"InvalidCloudProperties", testInvalidCloudProperties},
		{"CalculateVMCloudProperties", testCalculateVMCloudProperties},
		{"ListVMs", testListVMs},
		{"ListDisks", testListDisks},
		{"AgentSettings", testAgentSettings},
		{"Networks", testNetworks},
		{"DiskAttachment", testDiskAttachment},
		{"CancelledContext", testCancelledContext},
		{"Restart", testRestart},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			defer recovered(t)
			ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
			defer cancel()
			s := &suite{cfg: cfg, c: newCPI(t), newCPI: newCPI, ctx: ctx, director: newDirectorID()}
			info, err := s.c.Info(ctx)
			if err != nil {
				t.Fatalf("Info: %v", err)
			}
			s.info = info
			tc.fn(t, s)
		})
	}
}

// recovered turns a panic of the plugin under test (called in-process)
// into the failure of the test that made the call, so the rest of the
// suite still runs. Deferred at the top of every test and goroutine.
func recovered(t *testing.T) {
	if r := recover(); r != nil {
		t.Errorf("the plugin panicked: %v (a CPI method must return an error, never panic: the plugin process serves every call of the director)\n%s", r, debug.Stack())
	}
}

// suite is one subtest's state.
type suite struct {
	cfg Config
	c   cpi.CPI
	// newCPI starts another plugin on the same cloud (Restart).
	newCPI func(t *testing.T) cpi.CPI
	ctx    context.Context
	info   cpi.Info
	// director is the director id in the tags of every VM and disk this
	// subtest creates: unique per subtest, so that a cloud shared between
	// runs (moto, a real account) does not mix their objects.
	director string
}

var directorSeq atomic.Int64

func newDirectorID() string {
	return fmt.Sprintf("cpitest-%d-%d", time.Now().UnixNano(), directorSeq.Add(1))
}

// tags are the standard tags the director gives the i-th VM (and its disk).
func (s *suite) tags(i int) map[string]string {
	return map[string]string{
		cpi.TagDirector:      s.director,
		cpi.TagDeployment:    "cpitest",
		cpi.TagInstanceGroup: "web",
		cpi.TagInstanceID:    fmt.Sprintf("instance-%d", i),
		cpi.TagAgentID:       fmt.Sprintf("cpitest-agent-%d", i),
	}
}

// stemcell creates a stemcell that is deleted when the test ends.
func (s *suite) stemcell(t *testing.T) string {
	t.Helper()
	cid, err := s.c.CreateStemcell(s.ctx, s.cfg.Stemcell)
	if err != nil {
		t.Fatalf("CreateStemcell(%s): %v", s.cfg.Stemcell.ImagePath, err)
	}
	if cid == "" {
		t.Fatal("CreateStemcell returned an empty cid")
	}
	t.Cleanup(func() {
		s.cleanup(t, "DeleteStemcell", func(ctx context.Context) error { return s.c.DeleteStemcell(ctx, cid) })
	})
	return cid
}

func (s *suite) vmRequest(i int, stemcell string) cpi.CreateVMRequest {
	agentID := fmt.Sprintf("cpitest-agent-%d", i)
	return cpi.CreateVMRequest{
		AgentID:         agentID,
		StemcellCID:     stemcell,
		CloudProperties: s.cfg.VMCloudProperties,
		Networks:        s.cfg.Networks(i),
		Env:             json.RawMessage(`{"bosh":{"group":"cpitest"}}`),
		AgentSettings:   s.cfg.AgentSettings(agentID),
		Tags:            s.tags(i),
	}
}

// vm creates the i-th VM, deleted when the test ends, and checks the
// networks it reports.
func (s *suite) vm(t *testing.T, i int, stemcell string) cpi.CreateVMResult {
	t.Helper()
	return s.vmFrom(t, i, s.vmRequest(i, stemcell))
}

// vmFrom creates the i-th VM from req, as vm does.
func (s *suite) vmFrom(t *testing.T, i int, req cpi.CreateVMRequest) cpi.CreateVMResult {
	t.Helper()
	res, err := s.c.CreateVM(s.ctx, req)
	if err != nil {
		t.Fatalf("CreateVM #%d: %v", i, err)
	}
	if res.CID == "" {
		t.Fatalf("CreateVM #%d returned an empty cid", i)
	}
	t.Cleanup(func() {
		s.cleanup(t, "DeleteVM", func(ctx context.Context) error { return s.c.DeleteVM(ctx, res.CID) })
	})
	for name, want := range req.Networks {
		got, ok := res.Networks[name]
		if !ok {
			t.Fatalf("CreateVM #%d: network %q missing from the result %+v", i, name, res.Networks)
		}
		switch {
		case want.IP != "" && got.IP != want.IP:
			t.Errorf("CreateVM #%d: network %q configured with ip %q, want %q", i, name, got.IP, want.IP)
		case want.Type == "dynamic" && got.IP == "":
			t.Errorf("CreateVM #%d: dynamic network %q has no ip in the result", i, name)
		}
	}
	return res
}

// cleanup runs a delete with its own deadline, logging (not failing) on
// error: the test already reports what went wrong.
func (s *suite) cleanup(t *testing.T, what string, fn func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	if err := fn(ctx); err != nil {
		t.Logf("cleanup %s: %v", what, err)
	}
}

func (s *suite) checkAlive(t *testing.T, cid string, want bool) {
	t.Helper()
	if s.cfg.VMAlive == nil {
		return
	}
	if got := s.cfg.VMAlive(t, cid); got != want {
		t.Errorf("VM %s alive = %v, want %v", cid, got, want)
	}
}

func wantCode(t *testing.T, call string, err error, sentinel *cpi.Error) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Errorf("%s: error %v, want %s", call, err, sentinel.Code)
	}
}

func testInfo(t *testing.T, s *suite) {
	if s.info.Name == "" {
		t.Error("Info.Name is empty")
	}
	if s.info.APIVersion != cpi.APIVersion {
		t.Errorf("Info.APIVersion = %d, want %d", s.info.APIVersion, cpi.APIVersion)
	}
	if len(s.info.StemcellFormats) == 0 {
		t.Error("Info.StemcellFormats is empty")
	}
}

func testStemcell(t *testing.T, s *suite) {
	cid, err := s.c.CreateStemcell(s.ctx, s.cfg.Stemcell)
	if err != nil {
		t.Fatalf("CreateStemcell: %v", err)
	}
	if cid == "" {
		t.Fatal("CreateStemcell returned an empty cid")
	}
	other, err := s.c.CreateStemcell(s.ctx, s.cfg.Stemcell)
	if err != nil {
		t.Fatalf("second CreateStemcell: %v", err)
	}
	if other == cid {
		t.Errorf("two CreateStemcell calls returned the same cid %q", cid)
	}
	for _, c := range []string{cid, other} {
		if err := s.c.DeleteStemcell(s.ctx, c); err != nil {
			t.Fatalf("DeleteStemcell(%s): %v", c, err)
		}
	}
	if err := s.c.DeleteStemcell(s.ctx, cid); err != nil {
		t.Errorf("DeleteStemcell of a deleted stemcell: %v (deletes are idempotent)", err)
	}
	_, err = s.c.CreateVM(s.ctx, s.vmRequest(0, cid))
	wantCode(t, "CreateVM on a deleted stemcell", err, cpi.ErrStemcellNotFound)
}

func testVMLifecycle(t *testing.T, s *suite) {
	stemcell := s.stemcell(t)
	vm := s.vm(t, 0, stemcell)

	has, err := s.c.HasVM(s.ctx, vm.CID)
	if err != nil || !has {
		t.Fatalf("HasVM(%s) after CreateVM = %v, %v; want true, nil", vm.CID, has, err)
	}
	s.checkAlive(t, vm.CID, true)

	md := map[string]string{"deployment": "cpitest", "job": "web", "index": "0", "name": "web/0"}
	if err := s.c.SetVMMetadata(s.ctx, vm.CID, md); err != nil {
		t.Fatalf("SetVMMetadata: %v", err)
	}
	if err := s.c.RebootVM(s.ctx, vm.CID); err != nil {
		t.Fatalf("RebootVM: %v", err)
	}
	has, err = s.c.HasVM(s.ctx, vm.CID)
	if err != nil || !has {
		t.Fatalf("HasVM(%s) after RebootVM = %v, %v; want true, nil", vm.CID, has, err)
	}
	s.checkAlive(t, vm.CID, true)

	if err := s.c.DeleteVM(s.ctx, vm.CID); err != nil {
		t.Fatalf("DeleteVM: %v", err)
	}
	has, err = s.c.HasVM(s.ctx, vm.CID)
	if err != nil || has {
		t.Fatalf("HasVM(%s) after DeleteVM = %v, %v; want false, nil", vm.CID, has, err)
	}
	s.checkAlive(t, vm.CID, false)
	if err := s.c.DeleteVM(s.ctx, vm.CID); err != nil {
		t.Errorf("DeleteVM of a deleted VM: %v (deletes are idempotent)", err)
	}
	wantCode(t, "RebootVM of a deleted VM", s.c.RebootVM(s.ctx, vm.CID), cpi.ErrVMNotFound)
	wantCode(t, "SetVMMetadata of a deleted VM", s.c.SetVMMetadata(s.ctx, vm.CID, md), cpi.ErrVMNotFound)
}

func testDiskLifecycle(t *testing.T, s *suite) {
	stemcell := s.stemcell(t)
	vm := s.vm(t, 0, stemcell)

	disk, err := s.c.CreateDisk(s.ctx, cpi.CreateDiskRequest{SizeMB: 64, CloudProperties: s.cfg.DiskCloudProperties, VMCID: vm.CID})
	if err != nil {
		t.Fatalf("CreateDisk: %v", err)
	}
	if disk == "" {
		t.Fatal("CreateDisk returned an empty cid")
	}
	deleted := false
	t.Cleanup(func() {
		if !deleted {
			s.cleanup(t, "DetachDisk", func(ctx context.Context) error { return s.c.DetachDisk(ctx, vm.CID, disk) })
			s.cleanup(t, "DeleteDisk", func(ctx context.Context) error { return s.c.DeleteDisk(ctx, disk) })
		}
	})
	if has, err := s.c.HasDisk(s.ctx, disk); err != nil || !has {
		t.Fatalf("HasDisk(%s) = %v, %v; want true, nil", disk, has, err)
	}
	if err := s.c.SetDiskMetadata(s.ctx, disk, map[string]string{"deployment": "cpitest", "instance_group": "web"}); err != nil {
		t.Fatalf("SetDiskMetadata: %v", err)
	}

	hint, err := s.c.AttachDisk(s.ctx, vm.CID, disk)
	if err != nil {
		t.Fatalf("AttachDisk(%s, %s): %v", vm.CID, disk, err)
	}
	if s.info.Capabilities.DiskHints && hint == (cpi.DiskHint{}) {
		t.Errorf("AttachDisk returned an empty hint although Info says disk_hints")
	}
	disks, err := s.c.GetDisks(s.ctx, vm.CID)
	if err != nil {
		t.Fatalf("GetDisks: %v", err)
	}
	if !slices.Contains(disks, disk) {
		t.Errorf("GetDisks(%s) = %v after attach, want it to hold %s", vm.CID, disks, disk)
	}

	if err := s.c.DetachDisk(s.ctx, vm.CID, disk); err != nil {
		t.Fatalf("DetachDisk: %v", err)
	}
	disks, err = s.c.GetDisks(s.ctx, vm.CID)
	if err != nil {
		t.Fatalf("GetDisks after detach: %v", err)
	}
	if slices.Contains(disks, disk) {
		t.Errorf("GetDisks(%s) = %v after detach, want it without %s", vm.CID, disks, disk)
	}

	// Sizes whole GiB apart, for clouds that round to GiB.
	err = s.c.ResizeDisk(s.ctx, disk, 2048)
	if s.info.Capabilities.ResizeDisk {
		if err != nil {
			t.Errorf("ResizeDisk: %v (Info says resize_disk)", err)
		}
		if err := s.c.ResizeDisk(s.ctx, disk, 1024); err == nil {
			t.Errorf("ResizeDisk of disk %s from 2048 to 1024 MB succeeded (refuse to shrink a disk: its data would not fit)", disk)
		}
	} else {
		wantCode(t, "ResizeDisk without the resize_disk capability", err, cpi.ErrNotImplemented)
	}

	snap, err := s.c.SnapshotDisk(s.ctx, disk, map[string]string{"deployment": "cpitest"})
	if s.info.Capabilities.Snapshots {
		if err != nil {
			t.Errorf("SnapshotDisk: %v (Info says snapshots)", err)
		} else if snap == "" {
			t.Error("SnapshotDisk returned an empty cid")
		} else {
			if err := s.c.DeleteSnapshot(s.ctx, snap); err != nil {
				t.Errorf("DeleteSnapshot: %v", err)
			}
			if err := s.c.DeleteSnapshot(s.ctx, snap); err != nil {
				t.Errorf("DeleteSnapshot of a deleted snapshot: %v (deletes are idempotent)", err)
			}
		}
	} else {
		wantCode(t, "SnapshotDisk without the snapshots capability", err, cpi.ErrNotImplemented)
	}

	if err := s.c.DeleteDisk(s.ctx, disk); err != nil {
		t.Fatalf("DeleteDisk: %v", err)
	}
	deleted = true
	if has, err := s.c.HasDisk(s.ctx, disk); err != nil || has {
		t.Errorf("HasDisk(%s) after DeleteDisk = %v, %v; want false, nil", disk, has, err)
	}
	if err := s.c.DeleteDisk(s.ctx, disk); err != nil {
		t.Errorf("DeleteDisk of a deleted disk: %v (deletes are idempotent)", err)
	}
	_, err = s.c.AttachDisk(s.ctx, vm.CID, disk)
	wantCode(t, "AttachDisk of a deleted disk", err, cpi.ErrDiskNotFound)
	wantCode(t, "SetDiskMetadata of a deleted disk", s.c.SetDiskMetadata(s.ctx, disk, map[string]string{"a": "b"}), cpi.ErrDiskNotFound)
}

func testMissingObjects(t *testing.T, s *suite) {
	const (
		vm       = "cpitest-missing-vm"
		disk     = "cpitest-missing-disk"
		stemcell = "cpitest-missing-stemcell"
		snapshot = "cpitest-missing-snapshot"
	)
	for name, err := range map[string]error{
		"DeleteVM":       s.c.DeleteVM(s.ctx, vm),
		"DeleteDisk":     s.c.DeleteDisk(s.ctx, disk),
		"DeleteStemcell": s.c.DeleteStemcell(s.ctx, stemcell),
	} {
		if err != nil {
			t.Errorf("%s of a missing object: %v (deletes are idempotent)", name, err)
		}
	}
	err := s.c.DeleteSnapshot(s.ctx, snapshot)
	if s.info.Capabilities.Snapshots && err != nil {
		t.Errorf("DeleteSnapshot of a missing snapshot: %v (deletes are idempotent)", err)
	}
	if !s.info.Capabilities.Snapshots && err != nil && !errors.Is(err, cpi.ErrNotImplemented) {
		t.Errorf("DeleteSnapshot without the snapshots capability: %v, want nil or NotImplemented", err)
	}
	if has, err := s.c.HasVM(s.ctx, vm); err != nil || has {
		t.Errorf("HasVM(missing) = %v, %v; want false, nil", has, err)
	}
	if has, err := s.c.HasDisk(s.ctx, disk); err != nil || has {
		t.Errorf("HasDisk(missing) = %v, %v; want false, nil", has, err)
	}
	wantCode(t, "RebootVM(missing)", s.c.RebootVM(s.ctx, vm), cpi.ErrVMNotFound)
	_, err = s.c.GetDisks(s.ctx, vm)
	wantCode(t, "GetDisks(missing vm)", err, cpi.ErrVMNotFound)
	_, err = s.c.AttachDisk(s.ctx, vm, disk)
	if !errors.Is(err, cpi.ErrVMNotFound) && !errors.Is(err, cpi.ErrDiskNotFound) {
		t.Errorf("AttachDisk(missing vm, missing disk): %v, want VMNotFound or DiskNotFound", err)
	}
	_, err = s.c.CreateVM(s.ctx, s.vmRequest(0, stemcell))
	wantCode(t, "CreateVM(missing stemcell)", err, cpi.ErrStemcellNotFound)
	_, err = s.c.SnapshotDisk(s.ctx, disk, nil)
	if s.info.Capabilities.Snapshots {
		wantCode(t, "SnapshotDisk(missing)", err, cpi.ErrDiskNotFound)
	}
	if s.info.Capabilities.ResizeDisk {
		wantCode(t, "ResizeDisk(missing) (look the disk up; never answer success for a disk that does not exist)", s.c.ResizeDisk(s.ctx, disk, 128), cpi.ErrDiskNotFound)
	}
	cid, err := s.c.CreateDisk(s.ctx, cpi.CreateDiskRequest{SizeMB: 64, CloudProperties: s.cfg.DiskCloudProperties, VMCID: vm, Tags: s.tags(0)})
	if err == nil {
		s.cleanup(t, "DeleteDisk", func(ctx context.Context) error { return s.c.DeleteDisk(ctx, cid) })
	}
	wantCode(t, "CreateDisk near a missing VM (look up req.VMCID to place the disk; a VM that does not exist is VMNotFound)", err, cpi.ErrVMNotFound)
}

func testConcurrentCreateVM(t *testing.T, s *suite) {
	const n = 8
	stemcell := s.stemcell(t)
	results := make([]cpi.CreateVMResult, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			defer recovered(t)
			results[i], errs[i] = s.c.CreateVM(s.ctx, s.vmRequest(i, stemcell))
		})
	}
	wg.Wait()
	for i, res := range results {
		if res.CID != "" {
			t.Cleanup(func() {
				s.cleanup(t, "DeleteVM", func(ctx context.Context) error { return s.c.DeleteVM(ctx, res.CID) })
			})
		}
		if errs[i] != nil {
			t.Errorf("concurrent CreateVM #%d: %v", i, errs[i])
		}
	}
	if t.Failed() {
		return
	}
	cids := map[string]int{}
	ips := map[string]int{}
	for i, res := range results {
		if j, ok := cids[res.CID]; ok || res.CID == "" {
			t.Errorf("CreateVM #%d and #%d returned the same cid %q", j, i, res.CID)
		}
		cids[res.CID] = i
		for name, n := range res.Networks {
			if n.IP == "" {
				t.Errorf("CreateVM #%d: network %q has no ip", i, name)
				continue
			}
			if j, ok := ips[n.IP]; ok {
				t.Errorf("CreateVM #%d and #%d both got ip %s", j, i, n.IP)
			}
			ips[n.IP] = i
		}
	}
	for _, res := range results {
		if has, err := s.c.HasVM(s.ctx, res.CID); err != nil || !has {
			t.Errorf("HasVM(%s) = %v, %v; want true, nil", res.CID, has, err)
		}
	}
	var dwg sync.WaitGroup
	for _, res := range results {
		dwg.Go(func() {
			defer recovered(t)
			if err := s.c.DeleteVM(s.ctx, res.CID); err != nil {
				t.Errorf("concurrent DeleteVM(%s): %v", res.CID, err)
			}
		})
	}
	dwg.Wait()
}

func testInvalidCloudProperties(t *testing.T, s *suite) {
	stemcell := s.stemcell(t)
	req := s.vmRequest(0, stemcell)
	req.CloudProperties = s.cfg.InvalidVMCloudProperties
	res, err := s.c.CreateVM(s.ctx, req)
	if err == nil {
		s.cleanup(t, "DeleteVM", func(ctx context.Context) error { return s.c.DeleteVM(ctx, res.CID) })
		t.Fatalf("CreateVM with cloud properties %s succeeded, want ErrInvalidCloudProperties", s.cfg.InvalidVMCloudProperties)
	}
	if !errors.Is(err, cpi.ErrInvalidCloudProperties) {
		t.Fatalf("CreateVM with cloud properties %s: %v, want ErrInvalidCloudProperties", s.cfg.InvalidVMCloudProperties, err)
	}
	var e *cpi.Error
	if !errors.As(err, &e) || e.Field != s.cfg.InvalidField {
		t.Errorf("ErrInvalidCloudProperties names field %q, want %q (error: %v)", fieldOf(err), s.cfg.InvalidField, err)
	}
	_, err = s.c.CreateVM(s.ctx, cpi.CreateVMRequest{
		AgentID: "cpitest-not-an-object", StemcellCID: stemcell, CloudProperties: json.RawMessage(`["not", "an", "object"]`),
		Networks: req.Networks, AgentSettings: req.AgentSettings,
	})
	wantCode(t, "CreateVM with cloud properties that are not an object", err, cpi.ErrInvalidCloudProperties)

	// An unknown key is refused, naming it: a misspelt property must not
	// be silently ignored.
	const unknown = "cpitest_unknown_key"
	req = s.vmRequest(0, stemcell)
	req.CloudProperties = withKey(t, s.cfg.VMCloudProperties, unknown)
	res, err = s.c.CreateVM(s.ctx, req)
	if err == nil {
		s.cleanup(t, "DeleteVM", func(ctx context.Context) error { return s.c.DeleteVM(ctx, res.CID) })
	}
	s.checkUnknownKey(t, "CreateVM", unknown, err)
	disk, err := s.c.CreateDisk(s.ctx, cpi.CreateDiskRequest{SizeMB: 64, CloudProperties: withKey(t, s.cfg.DiskCloudProperties, unknown)})
	if err == nil {
		s.cleanup(t, "DeleteDisk", func(ctx context.Context) error { return s.c.DeleteDisk(ctx, disk) })
	}
	s.checkUnknownKey(t, "CreateDisk", unknown, err)
}

// checkUnknownKey checks the answer to cloud properties with an unknown key.
func (s *suite) checkUnknownKey(t *testing.T, call, key string, err error) {
	t.Helper()
	if s.cfg.IgnoresUnknownKeys {
		if err != nil {
			t.Errorf("%s with the unknown cloud property %q: %v (Config.IgnoresUnknownKeys says it is ignored)", call, key, err)
		}
		return
	}
	if !errors.Is(err, cpi.ErrInvalidCloudProperties) || fieldOf(err) != key {
		t.Errorf("%s with the unknown cloud property %q: %v, want ErrInvalidCloudProperties naming it (refuse keys you do not know, as cpi.DecodeCloudProperties does; or ignore them on purpose, document it and set Config.IgnoresUnknownKeys)", call, key, err)
	}
}

// withKey returns the JSON object raw with one more key.
func withKey(t *testing.T, raw json.RawMessage, key string) json.RawMessage {
	t.Helper()
	m := map[string]json.RawMessage{}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("cpitest: cloud properties %s are not an object: %v", raw, err)
		}
	}
	m[key] = json.RawMessage(`1`)
	b, _ := json.Marshal(m)
	return b
}

func fieldOf(err error) string {
	var e *cpi.Error
	if errors.As(err, &e) {
		return e.Field
	}
	return ""
}

func testCalculateVMCloudProperties(t *testing.T, s *suite) {
	props, err := s.c.CalculateVMCloudProperties(s.ctx, cpi.VMResources{CPU: 2, RAMMB: 2048, EphemeralDiskSize: 4096})
	if errors.Is(err, cpi.ErrNotImplemented) {
		t.Fatal("CalculateVMCloudProperties answers NotImplemented: it is required (the director sizes vm_resources with it); return the cloud properties of the smallest VM type with the resources")
	}
	if err != nil {
		t.Fatalf("CalculateVMCloudProperties: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(props, &m); err != nil {
		t.Fatalf("CalculateVMCloudProperties returned %s, want a JSON object: %v", props, err)
	}
	stemcell := s.stemcell(t)
	req := s.vmRequest(0, stemcell)
	req.CloudProperties = props
	res, err := s.c.CreateVM(s.ctx, req)
	if err != nil {
		t.Fatalf("CreateVM with the cloud properties CalculateVMCloudProperties returned (%s): %v (they must be valid VM cloud properties)", props, err)
	}
	s.cleanup(t, "DeleteVM", func(ctx context.Context) error { return s.c.DeleteVM(ctx, res.CID) })
}

// listedVM finds cid in ListVMs(filter).
func (s *suite) listedVM(t *testing.T, filter cpi.ListFilter, cid string) (cpi.VMInfo, bool) {
	t.Helper()
	vms, err := s.c.ListVMs(s.ctx, filter)
	if err != nil {
		t.Fatalf("ListVMs(%+v): %v (Info says list_vms)", filter, err)
	}
	for _, vm := range vms {
		if vm.CID == cid {
			return vm, true
		}
	}
	return cpi.VMInfo{}, false
}

// listedDisk finds cid in ListDisks(filter).
func (s *suite) listedDisk(t *testing.T, filter cpi.ListFilter, cid string) (cpi.DiskInfo, bool) {
	t.Helper()
	disks, err := s.c.ListDisks(s.ctx, filter)
	if err != nil {
		t.Fatalf("ListDisks(%+v): %v (Info says list_disks)", filter, err)
	}
	for _, d := range disks {
		if d.CID == cid {
			return d, true
		}
	}
	return cpi.DiskInfo{}, false
}

// wantTags checks that every tag given at creation came back.
func wantTags(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: tag %q = %q, want %q (apply every tag of the create request at creation; got tags %v)", what, k, got[k], v, got)
		}
	}
}

func testListVMs(t *testing.T, s *suite) {
	if !s.info.Capabilities.ListVMs {
		_, err := s.c.ListVMs(s.ctx, cpi.ListFilter{DirectorID: s.director})
		wantCode(t, "ListVMs without the list_vms capability", err, cpi.ErrNotImplemented)
		return
	}
	stemcell := s.stemcell(t)
	mine := s.vm(t, 0, stemcell)
	want := s.tags(0)

	// A VM of another director, with the same agent id.
	otherReq := s.vmRequest(1, stemcell)
	otherReq.Tags[cpi.TagDirector] = newDirectorID()
	other, err := s.c.CreateVM(s.ctx, otherReq)
	if err != nil {
		t.Fatalf("CreateVM of another director: %v", err)
	}
	t.Cleanup(func() {
		s.cleanup(t, "DeleteVM", func(ctx context.Context) error { return s.c.DeleteVM(ctx, other.CID) })
	})

	byDirector := cpi.ListFilter{DirectorID: s.director}
	vm, ok := s.listedVM(t, byDirector, mine.CID)
	if !ok {
		t.Fatalf("ListVMs(director %s) does not list VM %s created with that director's tags (find VMs by the tags given at creation)", s.director, mine.CID)
	}
	if vm.AgentID != want[cpi.TagAgentID] {
		t.Errorf("ListVMs: VM %s has agent id %q, want %q", mine.CID, vm.AgentID, want[cpi.TagAgentID])
	}
	wantTags(t, "ListVMs: VM "+mine.CID, vm.Tags, want)
	if _, ok := s.listedVM(t, byDirector, other.CID); ok {
		t.Errorf("ListVMs(director %s) lists VM %s, created with director %s (filter on the %s tag)", s.director, other.CID, otherReq.Tags[cpi.TagDirector], cpi.TagDirector)
	}
	if _, ok := s.listedVM(t, cpi.ListFilter{}, other.CID); !ok {
		t.Errorf("ListVMs(no filter) does not list VM %s (the zero filter lists every VM with a %s tag)", other.CID, cpi.TagDirector)
	}

	if err := s.c.DeleteVM(s.ctx, mine.CID); err != nil {
		t.Fatalf("DeleteVM: %v", err)
	}
	if _, ok := s.listedVM(t, byDirector, mine.CID); ok {
		t.Errorf("ListVMs lists VM %s after DeleteVM (leave out deleted and terminated VMs)", mine.CID)
	}
}

func testListDisks(t *testing.T, s *suite) {
	if !s.info.Capabilities.ListDisks {
		_, err := s.c.ListDisks(s.ctx, cpi.ListFilter{DirectorID: s.director})
		wantCode(t, "ListDisks without the list_disks capability", err, cpi.ErrNotImplemented)
		return
	}
	stemcell := s.stemcell(t)
	vm := s.vm(t, 0, stemcell)
	want := s.tags(0)
	disk, err := s.c.CreateDisk(s.ctx, cpi.CreateDiskRequest{SizeMB: 64, CloudProperties: s.cfg.DiskCloudProperties, VMCID: vm.CID, Tags: want})
	if err != nil {
		t.Fatalf("CreateDisk: %v", err)
	}
	deleted := false
	t.Cleanup(func() {
		if !deleted {
			s.cleanup(t, "DetachDisk", func(ctx context.Context) error { return s.c.DetachDisk(ctx, vm.CID, disk) })
			s.cleanup(t, "DeleteDisk", func(ctx context.Context) error { return s.c.DeleteDisk(ctx, disk) })
		}
	})
	otherTags := s.tags(1)
	otherTags[cpi.TagDirector] = newDirectorID()
	other, err := s.c.CreateDisk(s.ctx, cpi.CreateDiskRequest{SizeMB: 64, CloudProperties: s.cfg.DiskCloudProperties, VMCID: vm.CID, Tags: otherTags})
	if err != nil {
		t.Fatalf("CreateDisk of another director: %v", err)
	}
	t.Cleanup(func() {
		s.cleanup(t, "DeleteDisk", func(ctx context.Context) error { return s.c.DeleteDisk(ctx, other) })
	})

	byDirector := cpi.ListFilter{DirectorID: s.director}
	d, ok := s.listedDisk(t, byDirector, disk)
	if !ok {
		t.Fatalf("ListDisks(director %s) does not list disk %s created with that director's tags (find disks by the tags given at creation)", s.director, disk)
	}
	wantTags(t, "ListDisks: disk "+disk, d.Tags, want)
	if d.VMCID != "" {
		t.Errorf("ListDisks: detached disk %s has vm cid %q, want empty", disk, d.VMCID)
	}
	if _, ok := s.listedDisk(t, byDirector, other); ok {
		t.Errorf("ListDisks(director %s) lists disk %s, created with director %s (filter on the %s tag)", s.director, other, otherTags[cpi.TagDirector], cpi.TagDirector)
	}

	if _, err := s.c.AttachDisk(s.ctx, vm.CID, disk); err != nil {
		t.Fatalf("AttachDisk(%s, %s): %v", vm.CID, disk, err)
	}
	if d, ok = s.listedDisk(t, byDirector, disk); !ok {
		t.Fatalf("ListDisks does not list disk %s once attached", disk)
	}
	if d.VMCID != vm.CID {
		t.Errorf("ListDisks: disk %s attached to %s lists vm cid %q", disk, vm.CID, d.VMCID)
	}
	if err := s.c.DetachDisk(s.ctx, vm.CID, disk); err != nil {
		t.Fatalf("DetachDisk: %v", err)
	}
	if err := s.c.DeleteDisk(s.ctx, disk); err != nil {
		t.Fatalf("DeleteDisk: %v", err)
	}
	deleted = true
	if _, ok := s.listedDisk(t, byDirector, disk); ok {
		t.Errorf("ListDisks lists disk %s after DeleteDisk (leave out deleted disks)", disk)
	}
}
