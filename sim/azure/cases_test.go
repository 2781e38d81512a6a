package azure_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi"
	azurecpi "github.com/compleat/compleat/cpi/azure"
	"github.com/compleat/compleat/cpi/cpitest"
	"github.com/compleat/compleat/sim/azure"
)

// The suite against the cpi-azure binary: started through cpi/host and
// kept running, and called the BOSH way (a process per call), which works
// because the plugin keeps all its state in Azure.
func TestConformanceBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cpi-azure")
	}
	s := newSim(t)
	bin := pluginBinary(t)
	cfg := conformanceConfig(t, s)
	t.Run("grpc", func(t *testing.T) { cpitest.RunBinary(t, bin, properties(s, nil), cfg) })
	t.Run("json", func(t *testing.T) { cpitest.RunJSON(t, bin, properties(s, nil), cfg) })
	checkNothingLeft(t, s)
}

// pluginBinary is $COMPLEAT_BIN/cpi-azure when set, else cpi-azure built
// into the test's directory.
func pluginBinary(t testing.TB) string {
	t.Helper()
	if dir := os.Getenv("COMPLEAT_BIN"); dir != "" {
		p := filepath.Join(dir, "cpi-azure")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p := filepath.Join(t.TempDir(), "cpi-azure")
	out, err := exec.Command("go", "build", "-o", p, "github.com/compleat/compleat/cpi/azure/cmd/cpi-azure").CombinedOutput()
	if err != nil {
		t.Fatalf("build cpi-azure: %v\n%s", err, out)
	}
	return p
}

// fixture is a simulator, a plugin and a stemcell for the cloud cases.
type fixture struct {
	s        *azure.Server
	c        *azurecpi.CPI
	stemcell string
	ctx      context.Context
}

func newFixture(t *testing.T, extra map[string]any) *fixture {
	return newFixtureOn(t, newSim(t), extra)
}

func newFixtureOn(t *testing.T, s *azure.Server, extra map[string]any) *fixture {
	c := newCPI(t, s, extra)
	ctx := t.Context()
	p := strings.Split(testImage, ":")
	props, _ := json.Marshal(map[string]any{"image": map[string]string{"publisher": p[0], "offer": p[1], "sku": p[2], "version": p[3]}})
	st, err := c.CreateStemcell(ctx, cpi.CreateStemcellRequest{CloudProperties: props})
	if err != nil {
		t.Fatalf("CreateStemcell: %v", err)
	}
	return &fixture{s: s, c: c, stemcell: st, ctx: ctx}
}

func (f *fixture) request(agent, ip string) cpi.CreateVMRequest {
	n := cpi.Network{Type: "manual", IP: ip, Netmask: "255.255.255.0", Default: []string{"dns", "gateway"}, CloudProperties: netProps}
	if ip == "" {
		n = cpi.Network{Type: "dynamic", Default: []string{"dns", "gateway"}, CloudProperties: netProps}
	}
	return cpi.CreateVMRequest{
		AgentID: agent, StemcellCID: f.stemcell,
		CloudProperties: json.RawMessage(`{"instance_type": "Standard_B2s", "assign_dynamic_public_ip": true, "load_balancer": "lb"}`),
		Networks:        map[string]cpi.Network{"default": n},
		AgentSettings:   json.RawMessage(`{"agent_id": "` + agent + `"}`),
		Tags:            map[string]string{cpi.TagDirector: "d1", cpi.TagAgentID: agent, cpi.TagDeployment: "cases"},
	}
}

func (f *fixture) count(t *testing.T) map[string]int {
	out := map[string]int{}
	for _, typ := range []string{"Microsoft.Compute/virtualMachines", "Microsoft.Network/networkInterfaces", "Microsoft.Network/publicIPAddresses", "Microsoft.Compute/disks"} {
		out[typ] = f.s.Count(typ)
		if typ == "Microsoft.Network/publicIPAddresses" {
			out[typ] -= len(f.s.Config().PublicIPs) // the vip addresses, there from the start
		}
	}
	return out
}

func (f *fixture) wantNothing(t *testing.T, when string) {
	t.Helper()
	for typ, n := range f.count(t) {
		if n != 0 {
			t.Errorf("%s: %d %s left behind", when, n, typ)
		}
	}
}

// A create that fails after the NIC and public IP were made leaves
// nothing, so the retry with the same agent id and address succeeds
// (bosh-azure-cpi #765: an orphaned NIC kept the IP and every retry
// failed with PrivateIPAddressInUse). Capacity answers are retryable,
// a quota answer is not.
func TestFailedCreateLeavesNothing(t *testing.T) {
	for _, tc := range []struct {
		name      string
		fault     azure.Fault
		retryable bool
	}{
		{"allocation failed (async)", azure.Fault{Method: "PUT", Path: "/virtualmachines/", Async: true, Code: "AllocationFailed",
			Message: "Allocation failed. We do not have sufficient capacity for the requested VM size in this region."}, true},
		{"zonal allocation failed (async)", azure.Fault{Method: "PUT", Path: "/virtualmachines/", Async: true, Code: "ZonalAllocationFailed",
			Message: "Allocation failed. We do not have sufficient capacity for the requested VM size in this zone."}, true},
		{"quota (sync 409)", azure.Fault{Method: "PUT", Path: "/virtualmachines/", Status: 409, Code: "OperationNotAllowed",
			Message: "Operation could not be completed as it results in exceeding approved standardBSFamily Cores quota."}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			f.s.Inject(tc.fault)
			req := f.request("agent-fail", "127.80.1.20")
			_, err := f.c.CreateVM(f.ctx, req)
			if !errors.Is(err, cpi.ErrVMCreationFailed) {
				t.Fatalf("CreateVM: %v, want VMCreationFailed", err)
			}
			if got := cpi.IsRetryable(err); got != tc.retryable {
				t.Errorf("CreateVM: retryable = %v, want %v (%v)", got, tc.retryable, err)
			}
			if !strings.Contains(err.Error(), tc.fault.Code) {
				t.Errorf("CreateVM: %v does not name Azure's code %s", err, tc.fault.Code)
			}
			f.wantNothing(t, "after the failed create")
			res, err := f.c.CreateVM(f.ctx, req)
			if err != nil {
				t.Fatalf("CreateVM again with the same agent id and address: %v", err)
			}
			if err := f.c.DeleteVM(f.ctx, res.CID); err != nil {
				t.Fatalf("DeleteVM: %v", err)
			}
			f.wantNothing(t, "after DeleteVM")
		})
	}
}

// A persistent disk takes the lowest free LUN (0 is the ephemeral disk's);
// attaching it again answers the same LUN; a LUN freed by a detach is
// taken again; detaching a disk that is not attached says so.
func TestDiskLUNs(t *testing.T) {
	f := newFixture(t, nil)
	vm, err := f.c.CreateVM(f.ctx, f.request("agent-luns", ""))
	if err != nil {
		t.Fatal(err)
	}
	var disks []string
	for range 3 {
		d, err := f.c.CreateDisk(f.ctx, cpi.CreateDiskRequest{SizeMB: 1024, VMCID: vm.CID, CloudProperties: json.RawMessage(`{"caching": "ReadOnly"}`)})
		if err != nil {
			t.Fatal(err)
		}
		disks = append(disks, d)
	}
	attach := func(d, want string) {
		t.Helper()
		h, err := f.c.AttachDisk(f.ctx, vm.CID, d)
		if err != nil {
			t.Fatalf("AttachDisk(%s): %v", d, err)
		}
		if h.LUN != want {
			t.Errorf("AttachDisk(%s) = LUN %q, want %q", d, h.LUN, want)
		}
	}
	attach(disks[0], "1")
	attach(disks[0], "1") // again: same LUN, no second attachment
	attach(disks[1], "2")
	if got, _ := f.c.GetDisks(f.ctx, vm.CID); len(got) != 2 {
		t.Errorf("GetDisks = %v, want the two attached disks", got)
	}
	if err := f.c.DetachDisk(f.ctx, vm.CID, disks[0]); err != nil {
		t.Fatal(err)
	}
	attach(disks[2], "1")
	err = f.c.DetachDisk(f.ctx, vm.CID, disks[0])
	if !errors.Is(err, cpi.ErrDiskNotFound) || !strings.Contains(err.Error(), "not attached") {
		t.Errorf("DetachDisk of a disk not attached: %v, want DiskNotFound saying it is not attached", err)
	}
	if err := f.c.DeleteDisk(f.ctx, disks[1]); err == nil {
		t.Errorf("DeleteDisk of an attached disk succeeded; Azure refuses it")
	}
	// Deleting the VM detaches its persistent disks and keeps them.
	if err := f.c.DeleteVM(f.ctx, vm.CID); err != nil {
		t.Fatal(err)
	}
	for _, d := range disks {
		if has, err := f.c.HasDisk(f.ctx, d); err != nil || !has {
			t.Errorf("HasDisk(%s) after DeleteVM = %v, %v; want the persistent disk kept", d, has, err)
		}
		if err := f.c.DeleteDisk(f.ctx, d); err != nil {
			t.Errorf("DeleteDisk(%s): %v", d, err)
		}
	}
	f.wantNothing(t, "after the deletes")
}

// 429s with Retry-After are waited out and the call succeeds; a storm
// longer than max_retries is a retryable error.
func TestThrottling(t *testing.T) {
	f := newFixture(t, nil)
	vm, err := f.c.CreateVM(f.ctx, f.request("agent-429", ""))
	if err != nil {
		t.Fatal(err)
	}
	throttle := azure.Fault{Method: "GET", Path: "/virtualmachines/", Status: 429, Code: "SubscriptionRequestsThrottled",
		Message: "Number of 'read' requests for subscription exceeded. Please try again after '1' seconds.", RetryAfter: time.Second}
	throttle.Count = 2
	f.s.Inject(throttle)
	before := f.s.Calls()["GET Microsoft.Compute/virtualMachines"]
	has, err := f.c.HasVM(f.ctx, vm.CID)
	if err != nil || !has {
		t.Fatalf("HasVM through 2 throttled answers = %v, %v; want true, nil", has, err)
	}
	if n := f.s.Calls()["GET Microsoft.Compute/virtualMachines"] - before; n != 3 {
		t.Errorf("HasVM made %d GETs, want 3 (two throttled, one answered)", n)
	}
	throttle.Count = 10
	throttle.RetryAfter = 0 // the plugin's own backoff
	f.s.Inject(throttle)
	_, err = f.c.HasVM(f.ctx, vm.CID)
	if err == nil || !cpi.IsRetryable(err) {
		t.Errorf("HasVM through a storm longer than max_retries: %v, want a retryable error", err)
	}
	f.s.ClearFaults()
	if err := f.c.DeleteVM(f.ctx, vm.CID); err != nil {
		t.Fatal(err)
	}
}

// HasVM on a 5xx is an error, never false: a director that took a
// transient fault for "gone" would recreate a healthy VM (BOSH #1223).
func TestHasVMServerError(t *testing.T) {
	f := newFixture(t, nil)
	vm, err := f.c.CreateVM(f.ctx, f.request("agent-500", ""))
	if err != nil {
		t.Fatal(err)
	}
	for _, code := range []int{500, 503} {
		f.s.Inject(azure.Fault{Method: "GET", Path: "/virtualmachines/", Status: code, Code: "InternalServerError", Message: "An internal server error occurred.", Count: 20})
		has, err := f.c.HasVM(f.ctx, vm.CID)
		if err == nil || has {
			t.Errorf("HasVM on %d = %v, %v; want an error", code, has, err)
		}
		f.s.ClearFaults()
	}
	if err := f.c.DeleteVM(f.ctx, vm.CID); err != nil {
		t.Fatal(err)
	}
}

// A create whose operation is not seen to end is OutcomeUnknown, naming
// the VM; nothing is deleted, ListVMs finds the VM by its tags, and
// DeleteVM removes it with everything it was made with.
func TestPollTimeoutOutcomeUnknown(t *testing.T) {
	f := newFixture(t, map[string]any{"operation_timeout": "1s"})
	f.s.Inject(azure.Fault{Method: "PUT", Path: "/virtualmachines/", Hang: true})
	req := f.request("agent-hang", "127.80.1.30")
	_, err := f.c.CreateVM(f.ctx, req)
	if !errors.Is(err, cpi.ErrOutcomeUnknown) {
		t.Fatalf("CreateVM whose operation hangs: %v, want OutcomeUnknown", err)
	}
	if !strings.Contains(err.Error(), "vm-agent-hang") {
		t.Errorf("CreateVM: %v does not name the VM", err)
	}
	vms, err := f.c.ListVMs(f.ctx, cpi.ListFilter{DirectorID: "d1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(vms) != 1 || vms[0].AgentID != "agent-hang" {
		t.Fatalf("ListVMs = %+v, want the VM of agent-hang", vms)
	}
	if err := f.c.DeleteVM(f.ctx, vms[0].CID); err != nil {
		t.Fatalf("DeleteVM of the VM found: %v", err)
	}
	f.wantNothing(t, "after DeleteVM")
}

// A subnet or security group that does not exist is refused before
// anything is made, naming the field.
func TestMissingNetworkObjects(t *testing.T) {
	f := newFixture(t, nil)
	req := f.request("agent-net", "")
	n := req.Networks["default"]
	n.CloudProperties = json.RawMessage(`{"virtual_network_name": "vnet", "subnet_name": "nope", "resource_group_name": "compleat-net"}`)
	req.Networks["default"] = n
	_, err := f.c.CreateVM(f.ctx, req)
	var e *cpi.Error
	if !errors.As(err, &e) || e.Code != cpi.CodeInvalidCloudProperties || e.Field != "networks.default.subnet_name" {
		t.Errorf("CreateVM on a missing subnet: %v, want InvalidCloudProperties naming networks.default.subnet_name", err)
	}
	req = f.request("agent-net", "")
	req.CloudProperties = json.RawMessage(`{"instance_type": "Standard_B2s", "security_group": "nope"}`)
	_, err = f.c.CreateVM(f.ctx, req)
	if !errors.As(err, &e) || e.Field != "security_group" {
		t.Errorf("CreateVM with a missing security group: %v, want InvalidCloudProperties naming security_group", err)
	}
	f.wantNothing(t, "after the refusals")
}
