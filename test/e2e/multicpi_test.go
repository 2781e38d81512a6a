package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMultiCPI deploys the web sample over two AZs served by two different
// CPIs (two cpi-local, each with a data dir of its own): each VM is made by
// the CPI of its AZ, the lb answers from the web instances of both, and
// delete-deployment empties both clouds. Moving an AZ to the other CPI
// recreates its VMs there.
func TestMultiCPI(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the director, agents and two local CPIs, and compiles releases/web")
	}
	bin := binaries(t)
	work := t.TempDir()
	data := filepath.Join(work, "data")
	east, west := filepath.Join(work, "east"), filepath.Join(work, "west")
	t.Cleanup(func() { killAgents(east); killAgents(west) })
	prefix := fmt.Sprintf("127.%d.", 100+(os.Getpid()+71)%100)
	stemcell := filepath.Join(work, "local.tgz")
	if out, err := exec.Command(filepath.Join(bin, "director"), "create-stemcell", "--agent", filepath.Join(bin, "agent"), "--tarball", stemcell).CombinedOutput(); err != nil {
		t.Fatalf("create-stemcell: %v\n%s", err, out)
	}
	d := startDirector(t, bin, data)
	write := func(name, content string) string {
		p := filepath.Join(work, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	d.run("-n", "update-cpi-config", write("cpi.yml", fmt.Sprintf(`cpis:
- name: east
  type: local
  default: true
  properties: {data_dir: %s, dynamic_range: %s0.0/16}
- name: west
  type: local
  properties: {data_dir: %s, dynamic_range: %s0.0/16}
`, east, prefix, west, prefix)))
	t.Cleanup(func() {
		if !t.Failed() {
			return // the test deleted the deployment
		}
		if out, err := d.command("-n", "-d", "web", "delete-deployment", "--force").CombinedOutput(); err != nil {
			t.Logf("cleanup: delete-deployment: %v\n%s", err, out)
		}
	})
	d.run("-n", "upload-release", "releases/web")
	d.run("-n", "upload-stemcell", stemcell)

	// A cloud config naming a CPI the director does not have is refused,
	// naming the file, the line and the field.
	cc, err := os.ReadFile(filepath.Join(repoRoot(), "manifests", "local", "cloud-config.yml"))
	if err != nil {
		t.Fatal(err)
	}
	moved := strings.ReplaceAll(string(cc), "127.77.", prefix)
	bad := write("bad-cloud.yml", strings.Replace(moved, "- name: z2\n", "- name: z2\n  cpi: north\n", 1))
	out, err := d.command("-n", "update-cloud-config", bad).CombinedOutput()
	if code := exitCode(err); code != 2 || !strings.Contains(string(out), "bad-cloud.yml:6:8: azs[1].cpi") || !strings.Contains(string(out), "north") {
		t.Errorf("unknown cpi in the cloud config: exit %d\n%s", code, out)
	}
	d.run("-n", "update-cloud-config", write("cloud-config.yml", strings.Replace(strings.Replace(moved,
		"- name: z1\n", "- name: z1\n  cpi: east\n", 1), "- name: z2\n", "- name: z2\n  cpi: west\n", 1)))

	raw, err := os.ReadFile(filepath.Join(repoRoot(), "manifests", "local", "web.yml"))
	if err != nil {
		t.Fatal(err)
	}
	lbAddr = prefix + "1.10:8080"
	d.deploy(write("web.yml", strings.ReplaceAll(string(raw), "127.77.", prefix)))
	lbAnswers(t, "v1", 2)

	var insts []struct {
		Instance string `json:"instance"`
		AZ       string `json:"az"`
		VMCID    string `json:"vm_cid"`
	}
	if err := json.Unmarshal([]byte(d.run("-d", "web", "instances", "--json")), &insts); err != nil {
		t.Fatal(err)
	}
	azs := map[string]int{}
	for _, in := range insts {
		home, other := east, west
		if in.AZ == "z2" {
			home, other = west, east
		}
		azs[in.AZ]++
		if _, err := os.Stat(filepath.Join(home, "vms", in.VMCID)); err != nil {
			t.Errorf("%s (az %s): vm %s is not in the cpi of its az (%s): %v", in.Instance, in.AZ, in.VMCID, filepath.Base(home), err)
		}
		if _, err := os.Stat(filepath.Join(other, "vms", in.VMCID)); err == nil {
			t.Errorf("%s (az %s): vm %s is in the other cpi", in.Instance, in.AZ, in.VMCID)
		}
	}
	if len(insts) != 3 || azs["z1"] != 2 || azs["z2"] != 1 {
		t.Fatalf("instances %+v", insts)
	}

	// cloud-check asks both CPIs for their VMs and disks: nothing unknown.
	if out, err := d.command("-d", "web", "cloud-check", "--report").CombinedOutput(); err != nil {
		t.Errorf("cloud-check --report over two cpis: %v\n%s", err, out)
	}

	// z2 given to east: the next deploy recreates z2's VM in east; west
	// is left empty and the lb still answers from every web instance.
	d.run("-n", "update-cloud-config", write("cloud-config.yml", strings.Replace(strings.Replace(moved,
		"- name: z1\n", "- name: z1\n  cpi: east\n", 1), "- name: z2\n", "- name: z2\n  cpi: east\n", 1)))
	d.deploy(write("web.yml", strings.ReplaceAll(string(raw), "127.77.", prefix)))
	lbAnswers(t, "v1", 2)
	insts = nil
	if err := json.Unmarshal([]byte(d.run("-d", "web", "instances", "--json")), &insts); err != nil {
		t.Fatal(err)
	}
	for _, in := range insts {
		if _, err := os.Stat(filepath.Join(east, "vms", in.VMCID)); err != nil {
			t.Errorf("%s (az %s): vm %s is not in east after z2 moved there: %v", in.Instance, in.AZ, in.VMCID, err)
		}
	}
	if left, _ := os.ReadDir(filepath.Join(west, "vms")); len(left) != 0 {
		t.Errorf("%d vms left in west after z2 moved to east", len(left))
	}

	d.run("-n", "-d", "web", "delete-deployment")
	for _, dir := range []string{east, west} {
		left, _ := os.ReadDir(filepath.Join(dir, "vms"))
		if len(left) != 0 {
			t.Errorf("%d vms left in %s after delete-deployment", len(left), filepath.Base(dir))
		}
	}
}
