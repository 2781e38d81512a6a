package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	simaws "github.com/compleat/compleat/sim/aws"
)

// One deployment over two zones served by two CPIs: z1 by cpi-local, z2 by
// cpi-aws on the simulated AWS. Each VM is created by the CPI of its zone,
// the lb (in z1) answers from the web instances of both, and
// delete-deployment empties both clouds.
func TestMultiCPILocalAndAWS(t *testing.T) {
	requireSim(t)
	bin := binaries(t)
	work := t.TempDir()
	sim := startAWS(t, bin, work, "127.89.0.0/16")
	localData := filepath.Join(work, "local")
	d := startDirector(t, bin, work, []cpiEntry{
		{Name: "local", Type: "local", Properties: map[string]any{"data_dir": localData, "dynamic_range": "127.90.0.0/16"}},
		awsCPI("aws", sim),
	})
	t.Cleanup(func() {
		if out, err := d.command("-n", "-d", "web", "delete-deployment", "--force").CombinedOutput(); err != nil {
			t.Logf("cleanup: delete-deployment: %v\n%s", err, out)
		}
	})
	ec2c := simaws.NewClient(sim.env["AWS_ENDPOINT_URL"], sim.env["AWS_DEFAULT_REGION"])
	a := &awsDeployment{d: d, sim: sim, ec2: ec2c, work: work}

	// One stemcell for both: the local image, and the AMI for cpi-aws.
	stemcell := filepath.Join(work, "both.tgz")
	d.run(t, "create-stemcell", "--agent", filepath.Join(bin, "agent"), "--format", "aws-light",
		"--cloud-property", "ami_id="+sim.env["COMPLEAT_AWS_AMI"], "--tarball", stemcell)
	d.run(t, "-n", "upload-release", "releases/web")
	d.run(t, "-n", "upload-stemcell", stemcell)
	cc := fmt.Sprintf(`azs:
- name: z1
  cpi: local
- name: z2
  cpi: aws
  cloud_properties: {availability_zone: %s, instance_type: t3.small}
vm_types:
- name: default
disk_types:
- name: default
  disk_size: 1024
networks:
- name: default
  type: manual
  subnets:
  - range: 127.89.1.0/24
    gateway: 127.89.1.1
    reserved: [127.89.1.1 - 127.89.1.9]
    static: [127.89.1.10 - 127.89.1.19]
    az: z1
  - range: 127.89.2.0/24
    gateway: 127.89.2.1
    reserved: [127.89.2.1 - 127.89.2.9]
    static: [127.89.2.10 - 127.89.2.19]
    az: z2
    cloud_properties: {subnet: %s}
compilation:
  workers: 2
  az: z1
  vm_type: default
  network: default
`, sim.env["COMPLEAT_AWS_AZ_2"], sim.env["COMPLEAT_AWS_SUBNET_2"])
	d.run(t, "-n", "update-cloud-config", writeFile(t, filepath.Join(work, "cc.yml"), cc))
	raw, err := os.ReadFile(filepath.Join(repoRoot(), "manifests", "local", "web.yml"))
	if err != nil {
		t.Fatal(err)
	}
	manifest := strings.ReplaceAll(string(raw), "127.77.", "127.89.")
	d.run(t, "-n", "-d", "web", "deploy", writeFile(t, filepath.Join(work, "web.yml"), manifest))

	running := a.ec2Instances(t)[types.InstanceStateNameRunning]
	for _, i := range d.instances(t, "web") {
		switch i.AZ {
		case "z1":
			if !strings.HasPrefix(i.VMCID, "vm-") {
				t.Errorf("%s/%d in z1 (cpi-local) has vm %q, want a local vm", i.Group, i.Index, i.VMCID)
			}
			if _, err := os.Stat(filepath.Join(localData, "vms", i.VMCID)); err != nil {
				t.Errorf("%s/%d: no local vm %s: %v", i.Group, i.Index, i.VMCID, err)
			}
		case "z2":
			if !strings.HasPrefix(i.VMCID, "i-") || !contains(running, i.VMCID) {
				t.Errorf("%s/%d in z2 (cpi-aws) has vm %q, want a running EC2 instance (running: %v)", i.Group, i.Index, i.VMCID, running)
			}
		default:
			t.Errorf("%s/%d in az %q", i.Group, i.Index, i.AZ)
		}
	}
	if len(running) != 1 {
		t.Errorf("%d running EC2 instances, want 1 (web in z2)", len(running))
	}
	names := lbAnswers(t, "127.89.1.10:8080", "v1", 2)
	t.Logf("lb answers from %v", names)

	d.run(t, "-n", "-d", "web", "delete-deployment")
	left := a.ec2Instances(t)
	delete(left, types.InstanceStateNameTerminated)
	if len(left) != 0 {
		t.Errorf("instances left in EC2: %v", left)
	}
	if entries, _ := os.ReadDir(filepath.Join(localData, "vms")); len(entries) != 0 {
		t.Errorf("%d local vms left", len(entries))
	}
}
