package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	simaws "github.com/compleat/compleat/sim/aws"
)

// awsDeployment is web deployed through cpi-aws on the simulated AWS.
type awsDeployment struct {
	d        *director
	sim      *awsSim
	ec2      *ec2.Client
	work     string
	manifest string // the deployed manifest's text
	lb       string // the lb's address
}

// awsCPI is the cpi config entry of cpi-aws on the simulator.
func awsCPI(name string, sim *awsSim) cpiEntry {
	return cpiEntry{Name: name, Type: "aws", Properties: map[string]any{
		"region": sim.env["AWS_DEFAULT_REGION"], "endpoint": sim.env["AWS_ENDPOINT_URL"],
		"access_key_id": sim.env["AWS_ACCESS_KEY_ID"], "secret_access_key": sim.env["AWS_SECRET_ACCESS_KEY"],
		"poll_interval": "100ms",
	}}
}

// awsManifest reads a file of manifests/aws/cloudsim with the VPC moved
// from 127.80 to net (e.g. "127.85.") and the subnets filled in.
func awsManifest(t testing.TB, file, net string, sim *awsSim) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(), "manifests", "aws", "cloudsim", file))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.ReplaceAll(string(raw), "127.80.", net)
	s = strings.ReplaceAll(s, "((subnet_z1))", sim.env["COMPLEAT_AWS_SUBNET_1"])
	return strings.ReplaceAll(s, "((subnet_z2))", sim.env["COMPLEAT_AWS_SUBNET_2"])
}

func writeFile(t testing.TB, path, text string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// deployAWS starts the simulated AWS with its VPC at net+"0.0/16" and a
// director with cpi-aws, and deploys manifests/aws/cloudsim/web.yml after
// edit.
func deployAWS(t testing.TB, net string, edit func(string) string) *awsDeployment {
	t.Helper()
	requireSim(t)
	bin := binaries(t)
	work := t.TempDir()
	sim := startAWS(t, bin, work, net+"0.0/16")
	d := startDirector(t, bin, work, []cpiEntry{awsCPI("aws", sim)})
	dep := &awsDeployment{d: d, sim: sim, work: work, lb: net + "1.10:8080",
		ec2: simaws.NewClient(sim.env["AWS_ENDPOINT_URL"], sim.env["AWS_DEFAULT_REGION"])}
	t.Cleanup(func() {
		if out, err := d.command("-n", "-d", "web", "delete-deployment", "--force").CombinedOutput(); err != nil {
			t.Logf("cleanup: delete-deployment: %v\n%s", err, out)
		}
	})
	stemcell := filepath.Join(work, "aws-light.tgz")
	d.run(t, "create-stemcell", "--light", "--name", "compleat-aws", "--format", "aws-light",
		"--cloud-property", "ami_id="+sim.env["COMPLEAT_AWS_AMI"], "--tarball", stemcell)
	d.run(t, "-n", "upload-release", "releases/web")
	d.run(t, "-n", "upload-stemcell", stemcell)
	d.run(t, "-n", "update-cloud-config", writeFile(t, filepath.Join(work, "cloud-config.yml"), awsManifest(t, "cloud-config.yml", net, sim)))
	text := awsManifest(t, "web.yml", net, sim)
	if edit != nil {
		text = edit(text)
	}
	dep.deploy(t, text)
	return dep
}

func (a *awsDeployment) deploy(t testing.TB, text string) {
	t.Helper()
	a.manifest = text
	a.d.run(t, "-n", "-d", "web", "deploy", writeFile(t, filepath.Join(a.work, "web.yml"), text))
}

// ec2Instances returns the instances EC2 reports in each state.
func (a *awsDeployment) ec2Instances(t testing.TB) map[types.InstanceStateName][]string {
	t.Helper()
	out := map[types.InstanceStateName][]string{}
	p := ec2.NewDescribeInstancesPaginator(a.ec2, &ec2.DescribeInstancesInput{})
	for p.HasMorePages() {
		page, err := p.NextPage(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page.Reservations {
			for _, i := range r.Instances {
				out[i.State.Name] = append(out[i.State.Name], aws.ToString(i.InstanceId))
			}
		}
	}
	return out
}

func (a *awsDeployment) ec2Volumes(t testing.TB) []string {
	t.Helper()
	out, err := a.ec2.DescribeVolumes(ctxT(t), &ec2.DescribeVolumesInput{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, v := range out.Volumes {
		ids = append(ids, aws.ToString(v.VolumeId)+" ("+string(v.State)+")")
	}
	return ids
}

// withPersistentDisk gives the web group a persistent disk.
func withPersistentDisk(text string) string {
	return strings.Replace(text, "  vm_type: default\n  stemcell: default\n", "  vm_type: default\n  persistent_disk_type: default\n  stemcell: default\n", 1)
}

// web.yml on the simulated AWS through cpi-aws, unchanged: instances are EC2
// instances booted here, an EBS volume keeps its data across a recreate,
// scaling adds an instance, an instance terminated through the EC2 API is
// resurrected, and delete-deployment leaves nothing running in EC2.
func TestAWS(t *testing.T) {
	// Volumes are loop devices in a VM's own mount namespace: root only.
	root := os.Geteuid() == 0
	edit := withPersistentDisk
	if !root {
		edit = nil
	}
	a := deployAWS(t, "127.85.", edit)
	lbAnswers(t, a.lb, "v1", 2)

	insts := a.d.instances(t, "web")
	running := a.ec2Instances(t)[types.InstanceStateNameRunning]
	if len(insts) != 3 {
		t.Fatalf("%d instances, want 3", len(insts))
	}
	var web0 instance
	for _, i := range insts {
		if !strings.HasPrefix(i.VMCID, "i-") || !contains(running, i.VMCID) {
			t.Errorf("instance %s/%s: vm %q is no running EC2 instance (running: %v)", i.Group, i.ID, i.VMCID, running)
		}
		if i.Group == "web" && i.Index == 0 {
			web0 = i
		}
	}
	if root && (len(web0.DiskCIDs) != 1 || !strings.HasPrefix(web0.DiskCIDs[0], "vol-")) {
		t.Fatalf("web/0 disks %v, want one EBS volume", web0.DiskCIDs)
	}

	t.Run("the aws cli sees the VMs through cloud.env", func(t *testing.T) {
		if _, err := exec.LookPath("aws"); err != nil {
			t.Skip("the aws command-line client is not on PATH")
		}
		cmd := exec.Command("sh", "-c", `. "$0" && aws ec2 describe-instances --filters Name=instance-state-name,Values=running --query 'Reservations[].Instances[].InstanceId' --output text`,
			filepath.Join(a.work, "cloud.env"))
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("aws ec2 describe-instances: %v\n%s", err, out)
		}
		for _, i := range insts {
			if !strings.Contains(string(out), i.VMCID) {
				t.Errorf("aws ec2 describe-instances does not list %s/%d's vm %s:\n%s", i.Group, i.Index, i.VMCID, out)
			}
		}
	})

	t.Run("persistent disk survives recreate", func(t *testing.T) {
		if !root {
			t.Skip("needs root: an EBS volume is a loop device in the VM's own mount namespace")
		}
		target := "web/" + web0.ID
		a.d.run(t, "-d", "web", "ssh", target, "-c", "echo kept-across-recreate > /var/vcap/store/marker && mountpoint /var/vcap/store")
		a.d.run(t, "-n", "-d", "web", "recreate", target)
		var after instance
		for _, i := range a.d.instances(t, "web") {
			if i.ID == web0.ID {
				after = i
			}
		}
		if after.VMCID == web0.VMCID || !strings.HasPrefix(after.VMCID, "i-") {
			t.Fatalf("recreate kept vm %s (now %q)", web0.VMCID, after.VMCID)
		}
		if len(after.DiskCIDs) != 1 || after.DiskCIDs[0] != web0.DiskCIDs[0] {
			t.Fatalf("disks after recreate %v, want %v", after.DiskCIDs, web0.DiskCIDs)
		}
		out := a.d.run(t, "-d", "web", "ssh", target, "-c", "cat /var/vcap/store/marker")
		if !strings.Contains(out, "kept-across-recreate") {
			t.Fatalf("the store after recreate holds %q", out)
		}
		lbAnswers(t, a.lb, "v1", 2)
	})

	t.Run("scale 2 to 3", func(t *testing.T) {
		a.deploy(t, strings.Replace(a.manifest, "instances: 2", "instances: 3", 1))
		names := lbAnswers(t, a.lb, "v1", 3)
		if len(names) != 3 {
			t.Fatalf("lb answers from %v", names)
		}
		if n := len(a.ec2Instances(t)[types.InstanceStateNameRunning]); n != 4 {
			t.Fatalf("%d running EC2 instances, want 4 (3 web, 1 lb)", n)
		}
	})

	t.Run("instance terminated through EC2 is resurrected", func(t *testing.T) {
		var victim instance
		for _, i := range a.d.instances(t, "web") {
			if i.Group == "web" && i.Index == 1 {
				victim = i
			}
		}
		if _, err := a.ec2.TerminateInstances(ctxT(t), &ec2.TerminateInstancesInput{InstanceIds: []string{victim.VMCID}}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(3 * time.Minute)
		for {
			var now instance
			for _, i := range a.d.instances(t, "web") {
				if i.ID == victim.ID {
					now = i
				}
			}
			if now.VMCID != "" && now.VMCID != victim.VMCID && contains(a.ec2Instances(t)[types.InstanceStateNameRunning], now.VMCID) {
				t.Logf("web/%d: vm %s terminated, resurrected as %s", victim.Index, victim.VMCID, now.VMCID)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("web/%d not resurrected within 3 minutes (vm %q)\n%s", victim.Index, now.VMCID, a.d.run(t, "-d", "web", "events"))
			}
			time.Sleep(time.Second)
		}
		lbAnswers(t, a.lb, "v1", 3)
		a.d.waitIdle(t)
	})

	t.Run("delete-deployment leaves nothing in EC2", func(t *testing.T) {
		a.d.run(t, "-n", "-d", "web", "delete-deployment")
		left := a.ec2Instances(t)
		delete(left, types.InstanceStateNameTerminated)
		if len(left) != 0 {
			t.Fatalf("instances left in EC2: %v", left)
		}
		if vols := a.ec2Volumes(t); len(vols) != 0 {
			t.Fatalf("volumes left in EC2: %v", vols)
		}
	})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
