package deploy_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/compleat/compleat/cpi/cpitest"
)

// TestVMResourcesThroughTheCPI: a group sized with vm_resources in two AZs
// of one CPI costs one CalculateVMCloudProperties per deploy, and its VMs
// are created with the CPI's answer (no vm_type in sight).
func TestVMResourcesThroughTheCPI(t *testing.T) {
	r := newRig(t)
	manifest := strings.Replace(benchManifest(3, "v1", 0), "  vm_type: small\n", "  vm_resources: {cpu: 2, ram: 4096, ephemeral_disk_size: 10240}\n", 1)
	r.deploy(manifest, false)
	if n := r.cloud.Calls(cpitest.MethodCalculateVMCloudProperties); n != 1 {
		t.Errorf("%d CalculateVMCloudProperties calls for one vm_resources in one cpi, want 1", n)
	}
	vms := r.cloud.VMs()
	if len(vms) != 3 {
		t.Fatalf("%d vms, want 3", len(vms))
	}
	for _, vm := range vms {
		var props map[string]any
		if err := json.Unmarshal(vm.CloudProperties, &props); err != nil || props["instance_type"] != "fake.c2.m4096" || props["ephemeral_disk_size"] != float64(10240) {
			t.Errorf("vm %s created with cloud properties %s (%v), want the cpi's answer for the resources", vm.CID, vm.CloudProperties, err)
		}
	}
	// Same resources, same answer: nothing to recreate.
	if res, _ := r.deploy(manifest, false); !strings.Contains(res, "No changes") {
		t.Errorf("second deploy: %s", res)
	}
	if n := r.cloud.Calls(cpitest.MethodCalculateVMCloudProperties); n != 2 {
		t.Errorf("%d CalculateVMCloudProperties calls after two deploys, want 2", n)
	}
}
