package cpitest

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"sync"
	"testing"

	"github.com/compleat/compleat/cpi"
)

// The checks added after an outside author planted bugs in a plugin that
// an earlier suite let pass: settings delivery, networks in both modes,
// disks around a deleted VM, cancelled contexts.

// settingsReader returns how to read delivered settings, or nil.
func (s *suite) settingsReader() func(ctx context.Context, vmCID string) (json.RawMessage, error) {
	if r, ok := s.c.(SettingsReader); ok {
		return r.DeliveredSettings
	}
	return s.cfg.DeliveredSettings
}

func testAgentSettings(t *testing.T, s *suite) {
	read := s.settingsReader()
	if read == nil {
		t.Skip("settings delivery is not checked: set Config.DeliveredSettings (or implement cpitest.SettingsReader) to read the settings a VM was given")
	}
	stemcell := s.stemcell(t)
	req := s.vmRequest(0, stemcell)
	res := s.vmFrom(t, 0, req)
	raw, err := read(s.ctx, res.CID)
	if err != nil {
		t.Fatalf("reading the settings delivered to VM %s: %v", res.CID, err)
	}
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("the settings delivered to VM %s are not a JSON object: %v (%.200s)", res.CID, err, raw)
	}
	var want map[string]any
	if err := json.Unmarshal(req.AgentSettings, &want); err != nil {
		t.Fatalf("cpitest: Config.AgentSettings is not a JSON object: %v", err)
	}
	for k, v := range want {
		if k == "networks" || k == "vm" {
			continue
		}
		if !reflect.DeepEqual(got[k], v) {
			t.Errorf("the settings delivered to VM %s have %q = %v, want %v (deliver req.AgentSettings to the VM unchanged but for \"networks\" and \"vm\")", res.CID, k, got[k], v)
		}
	}
	nets, _ := got["networks"].(map[string]any)
	for name, n := range req.Networks {
		d, ok := nets[name].(map[string]any)
		if !ok {
			t.Errorf("the settings delivered to VM %s lack network %q (set \"networks\" to the networks as configured)", res.CID, name)
			continue
		}
		if n.IP != "" && d["ip"] != n.IP {
			t.Errorf("the settings delivered to VM %s give network %q ip %v, want %s (the agent configures what it is given)", res.CID, name, d["ip"], n.IP)
		}
	}
}

// manualNetworks returns Config.ManualNetworks, or Networks when manual.
func (s *suite) manualNetworks() func(i int) map[string]cpi.Network {
	if s.cfg.ManualNetworks != nil {
		return s.cfg.ManualNetworks
	}
	for _, n := range s.cfg.Networks(0) {
		if n.Type == "manual" {
			return s.cfg.Networks
		}
	}
	return nil
}

// dynamicNetworks returns the networks of the i-th VM on dynamic networks:
// Networks when dynamic, else the manual ones with the address left out.
func (s *suite) dynamicNetworks(i int) map[string]cpi.Network {
	nets := s.cfg.Networks(i)
	if m := s.manualNetworks(); m != nil {
		nets = m(i)
	}
	out := map[string]cpi.Network{}
	for k, n := range nets {
		if n.Type == "manual" {
			n.Type, n.IP, n.Netmask, n.Gateway = "dynamic", "", "", ""
		}
		out[k] = n
	}
	return out
}

func (s *suite) vmOn(t *testing.T, i int, stemcell string, nets map[string]cpi.Network) (cpi.CreateVMResult, error) {
	t.Helper()
	req := s.vmRequest(i, stemcell)
	req.Networks = nets
	res, err := s.c.CreateVM(s.ctx, req)
	if err == nil {
		t.Cleanup(func() {
			s.cleanup(t, "DeleteVM", func(ctx context.Context) error { return s.c.DeleteVM(ctx, res.CID) })
		})
	}
	return res, err
}

func testNetworks(t *testing.T, s *suite) {
	manual := s.manualNetworks()
	if manual == nil {
		t.Fatal("cpitest: no manual networks to test: set Config.ManualNetworks to manual networks with addresses valid in your cloud (the suite checks that a manual IP is honoured)")
	}
	stemcell := s.stemcell(t)
	req := manual(0)
	m, err := s.vmOn(t, 0, stemcell, req)
	if err != nil {
		t.Fatalf("CreateVM on manual networks %v: %v", req, err)
	}
	manualIPs := map[string]bool{}
	for name, want := range req {
		got := m.Networks[name]
		if want.IP != "" && got.IP != want.IP {
			t.Errorf("CreateVM on manual network %q asked for ip %s and configured %q (a manual network's ip is the director's choice: configure exactly it)", name, want.IP, got.IP)
		}
		manualIPs[want.IP] = true
	}

	s.checkVIP(t, stemcell, manual)

	const n = 4
	results := make([]cpi.CreateVMResult, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			defer recovered(t)
			results[i], errs[i] = s.vmOn(t, i+1, stemcell, s.dynamicNetworks(i+1))
		})
	}
	wg.Wait()
	if !s.info.Capabilities.DynamicNetworks {
		for i, err := range errs {
			if err == nil {
				t.Errorf("CreateVM #%d on a dynamic network succeeded although Info does not claim dynamic_networks: claim it, or refuse dynamic networks", i+1)
			}
		}
		return
	}
	ips := map[string]int{}
	for i, err := range errs {
		if err != nil {
			t.Errorf("CreateVM #%d on a dynamic network: %v (Info says dynamic_networks: assign the address and report it)", i+1, err)
			continue
		}
		for name, nw := range results[i].Networks {
			switch {
			case nw.IP == "":
				t.Errorf("CreateVM #%d: dynamic network %q has no ip in the result (report the address assigned)", i+1, name)
			case manualIPs[nw.IP]:
				t.Errorf("CreateVM #%d: dynamic network %q got ip %s, which a manual network of VM %s holds", i+1, name, nw.IP, m.CID)
			default:
				if j, ok := ips[nw.IP]; ok {
					t.Errorf("CreateVM #%d and #%d both got dynamic ip %s (hand out each address once)", j, i+1, nw.IP)
				}
				ips[nw.IP] = i + 1
			}
		}
	}
}

func testDiskAttachment(t *testing.T, s *suite) {
	stemcell := s.stemcell(t)
	a := s.vm(t, 0, stemcell)
	b := s.vm(t, 1, stemcell)
	disk, err := s.c.CreateDisk(s.ctx, cpi.CreateDiskRequest{SizeMB: 64, CloudProperties: s.cfg.DiskCloudProperties, VMCID: a.CID, Tags: s.tags(0)})
	if err != nil {
		t.Fatalf("CreateDisk: %v", err)
	}
	t.Cleanup(func() {
		s.cleanup(t, "DetachDisk", func(ctx context.Context) error {
			if err := s.c.DetachDisk(ctx, b.CID, disk); err != nil && !errors.Is(err, cpi.ErrDiskNotFound) && !errors.Is(err, cpi.ErrVMNotFound) {
				return err
			}
			return nil
		})
		s.cleanup(t, "DeleteDisk", func(ctx context.Context) error { return s.c.DeleteDisk(ctx, disk) })
	})
	if _, err := s.c.AttachDisk(s.ctx, a.CID, disk); err != nil {
		t.Fatalf("AttachDisk(%s, %s): %v", a.CID, disk, err)
	}
	attachedToA := func(when string) {
		t.Helper()
		disks, err := s.c.GetDisks(s.ctx, a.CID)
		if err != nil {
			t.Fatalf("GetDisks(%s): %v", a.CID, err)
		}
		if !slices.Contains(disks, disk) {
			t.Errorf("%s, disk %s is no longer attached to VM %s (GetDisks = %v)", when, disk, a.CID, disks)
		}
	}

	err = s.c.DetachDisk(s.ctx, b.CID, disk)
	wantCode(t, "DetachDisk of a disk attached to another VM (check where the disk is attached; detach nothing)", err, cpi.ErrDiskNotFound)
	attachedToA("after DetachDisk from another VM")

	if _, err := s.c.AttachDisk(s.ctx, b.CID, disk); err == nil {
		t.Errorf("AttachDisk of disk %s to VM %s succeeded while it is attached to VM %s (refuse: a disk is attached to one VM)", disk, b.CID, a.CID)
	}
	attachedToA("after AttachDisk to another VM")

	if err := s.c.DeleteDisk(s.ctx, disk); err == nil {
		t.Errorf("DeleteDisk of disk %s attached to VM %s succeeded (refuse to delete an attached disk; the director detaches first)", disk, a.CID)
	} else if has, err := s.c.HasDisk(s.ctx, disk); err != nil || !has {
		t.Fatalf("HasDisk(%s) after a refused DeleteDisk = %v, %v; want true, nil", disk, has, err)
	}

	if err := s.c.DeleteVM(s.ctx, a.CID); err != nil {
		t.Fatalf("DeleteVM(%s) with a disk attached: %v (detach its disks, leave them alone, delete the VM)", a.CID, err)
	}
	if has, err := s.c.HasDisk(s.ctx, disk); err != nil || !has {
		t.Fatalf("HasDisk(%s) after DeleteVM of its VM = %v, %v; want true, nil (DeleteVM leaves persistent disks alone)", disk, has, err)
	}
	if s.info.Capabilities.ListDisks {
		if d, ok := s.listedDisk(t, cpi.ListFilter{DirectorID: s.director}, disk); ok && d.VMCID != "" {
			t.Errorf("ListDisks: disk %s lists vm cid %q after DeleteVM of %s (DeleteVM detaches its disks)", disk, d.VMCID, a.CID)
		}
	}
	if _, err := s.c.AttachDisk(s.ctx, b.CID, disk); err != nil {
		t.Fatalf("AttachDisk(%s, %s) after DeleteVM of the VM it was attached to: %v (DeleteVM must detach the VM's disks)", b.CID, disk, err)
	}
	if err := s.c.DetachDisk(s.ctx, b.CID, disk); err != nil {
		t.Fatalf("DetachDisk(%s, %s): %v", b.CID, disk, err)
	}
}

func testCancelledContext(t *testing.T, s *suite) {
	stemcell := s.stemcell(t)
	vm := s.vm(t, 0, stemcell)
	disk, err := s.c.CreateDisk(s.ctx, cpi.CreateDiskRequest{SizeMB: 64, CloudProperties: s.cfg.DiskCloudProperties, Tags: s.tags(0)})
	if err != nil {
		t.Fatalf("CreateDisk: %v", err)
	}
	t.Cleanup(func() {
		s.cleanup(t, "DeleteDisk", func(ctx context.Context) error { return s.c.DeleteDisk(ctx, disk) })
	})
	vmsBefore := s.vmCount(t)

	ctx, cancel := context.WithCancel(s.ctx)
	cancel()
	const fix = "with a cancelled context succeeded (pass ctx to every cloud call and wait, and return ctx.Err() once it is done)"
	req := s.vmRequest(1, stemcell)
	if res, err := s.c.CreateVM(ctx, req); err == nil {
		s.cleanup(t, "DeleteVM", func(ctx context.Context) error { return s.c.DeleteVM(ctx, res.CID) })
		t.Errorf("CreateVM %s", fix)
	}
	if cid, err := s.c.CreateDisk(ctx, cpi.CreateDiskRequest{SizeMB: 64, CloudProperties: s.cfg.DiskCloudProperties, Tags: s.tags(1)}); err == nil {
		s.cleanup(t, "DeleteDisk", func(ctx context.Context) error { return s.c.DeleteDisk(ctx, cid) })
		t.Errorf("CreateDisk %s", fix)
	}
	if err := s.c.DeleteVM(ctx, vm.CID); err == nil {
		t.Errorf("DeleteVM %s", fix)
	}
	if _, err := s.c.AttachDisk(ctx, vm.CID, disk); err == nil {
		t.Errorf("AttachDisk %s", fix)
	}
	if err := s.c.DeleteDisk(ctx, disk); err == nil {
		t.Errorf("DeleteDisk %s", fix)
	}
	if n := s.vmCount(t); n > vmsBefore {
		t.Errorf("ListVMs lists %d VMs of this test after a cancelled CreateVM, %d before (a cancelled call must leave nothing behind)", n, vmsBefore)
	}
}

// vmCount is the number of VMs ListVMs lists for this test's director, or
// 0 without the capability.
func (s *suite) vmCount(t *testing.T) int {
	t.Helper()
	if !s.info.Capabilities.ListVMs {
		return 0
	}
	vms, err := s.c.ListVMs(s.ctx, cpi.ListFilter{DirectorID: s.director})
	if err != nil {
		t.Fatalf("ListVMs: %v", err)
	}
	return len(vms)
}

// testRestart checks that a plugin started again (after a crash, an
// upgrade) never hands out a cid the first one gave: ids must come from the
// cloud or be random, not from a counter in the process.
func testRestart(t *testing.T, s *suite) {
	stemcell := s.stemcell(t)
	first := s.vm(t, 0, stemcell)
	second := s.newCPI(t)
	if has, err := second.HasVM(s.ctx, first.CID); err != nil || !has {
		t.Skipf("a second plugin does not see VM %s of the first (HasVM = %v, %v): each plugin has a cloud of its own, so cids across restarts are not checked", first.CID, has, err)
	}
	req := s.vmRequest(1, stemcell)
	res, err := second.CreateVM(s.ctx, req)
	if err != nil {
		t.Fatalf("CreateVM through a restarted plugin: %v", err)
	}
	t.Cleanup(func() {
		s.cleanup(t, "DeleteVM", func(ctx context.Context) error { return second.DeleteVM(ctx, res.CID) })
	})
	if res.CID == first.CID {
		t.Fatalf("a restarted plugin created VM %s, the cid the first plugin gave to another VM (make cids unique across plugin processes: the cloud's ids, or random ones)", res.CID)
	}
	if has, err := s.c.HasVM(s.ctx, first.CID); err != nil || !has {
		t.Errorf("HasVM(%s) after a restarted plugin created VM %s = %v, %v; want true, nil", first.CID, res.CID, has, err)
	}
}

// checkVIP places a VM on a manual network and Config.VIPNetworks: each vip
// address must be reported and delivered to the VM.
func (s *suite) checkVIP(t *testing.T, stemcell string, manual func(int) map[string]cpi.Network) {
	t.Helper()
	if s.cfg.VIPNetworks == nil {
		t.Log("vip networks are not checked: set Config.VIPNetworks to vip networks valid in your cloud")
		return
	}
	nets := manual(5)
	vips := s.cfg.VIPNetworks(5)
	for k, n := range vips {
		nets[k] = n
	}
	req := s.vmRequest(5, stemcell)
	req.Networks = nets
	res, err := s.c.CreateVM(s.ctx, req)
	if err != nil {
		t.Errorf("CreateVM on a manual network and vip networks %v: %v", vips, err)
		return
	}
	t.Cleanup(func() {
		s.cleanup(t, "DeleteVM", func(ctx context.Context) error { return s.c.DeleteVM(ctx, res.CID) })
	})
	var delivered map[string]any
	if read := s.settingsReader(); read != nil {
		if raw, err := read(s.ctx, res.CID); err == nil {
			var doc struct {
				Networks map[string]any `json:"networks"`
			}
			if json.Unmarshal(raw, &doc) == nil {
				delivered = doc.Networks
			}
		}
	}
	for name, want := range vips {
		if got := res.Networks[name]; got.IP != want.IP || got.Type != "vip" {
			t.Errorf("CreateVM: vip network %q configured as %+v, want type vip and ip %s (give the VM the vip address and report it)", name, got, want.IP)
		}
		if delivered != nil {
			if d, _ := delivered[name].(map[string]any); d == nil || d["ip"] != want.IP {
				t.Errorf("the settings delivered to VM %s give vip network %q as %v, want ip %s", res.CID, name, delivered[name], want.IP)
			}
		}
	}
}
