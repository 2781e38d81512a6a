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

// TestDiskResizeOrMigrate grows the persistent disks of a deployment whose
// two AZs are served by two local CPIs: one that can resize disks (its Info
// says so) and one configured as a cloud that cannot (resize_disk: false).
// The instance in the first keeps its disk, resized; the one in the second
// gets a new disk with the data moved and the old one orphaned. Both keep
// what was written on their disk. The group sizes its VMs with
// vm_resources (so does the compilation block): each CPI's
// CalculateVMCloudProperties is asked once per deploy and its answer is
// what the VMs are created with.
func TestDiskResizeOrMigrate(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the director, agents and two local CPIs, and compiles releases/web")
	}
	if os.Geteuid() != 0 {
		t.Skip("the sample's process files name /var/vcap paths, which a local VM has only in its own mount namespace (root)")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("releases/web compiles with the host's Go toolchain; none found")
	}
	bin := binaries(t)
	work := t.TempDir()
	data := filepath.Join(work, "data")
	grow, fixed := filepath.Join(work, "grow"), filepath.Join(work, "fixed")
	t.Cleanup(func() { killAgents(grow); killAgents(fixed) })
	stemcell := filepath.Join(work, "local.tgz")
	if out, err := exec.Command(filepath.Join(bin, "director"), "create-stemcell", "--agent", filepath.Join(bin, "agent"), "--tarball", stemcell).CombinedOutput(); err != nil {
		t.Fatalf("create-stemcell: %v\n%s", err, out)
	}
	d := startDirector(t, bin, data)
	t.Cleanup(func() {
		if out, err := d.command("-n", "-d", "disks", "delete-deployment", "--force").CombinedOutput(); err != nil {
			t.Logf("cleanup: delete-deployment: %v\n%s", err, out)
		}
	})
	write := func(name, content string) string {
		t.Helper()
		p := filepath.Join(work, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	prefix := freeRange(t)
	d.run("-n", "update-cpi-config", write("cpi.yml", fmt.Sprintf(`cpis:
- name: grow
  type: local
  default: true
  properties: {data_dir: %s}
- name: fixed
  type: local
  properties: {data_dir: %s, resize_disk: false}
`, grow, fixed)))
	d.run("-n", "upload-release", "releases/web")
	d.run("-n", "upload-stemcell", stemcell)
	cc, err := os.ReadFile(filepath.Join(repoRoot(), "manifests", "local", "cloud-config.yml"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(cc), "127.77.", prefix)
	text = strings.Replace(strings.Replace(text, "- name: z1\n", "- name: z1\n  cpi: grow\n", 1), "- name: z2\n", "- name: z2\n  cpi: fixed\n", 1)
	text = strings.Replace(text, "  az: z1\n  vm_type: default\n", "  az: z1\n  vm_resources: {cpu: 2, ram: 1024, ephemeral_disk_size: 2048}\n", 1) // compilation
	if !strings.Contains(text, "vm_resources") {
		t.Fatalf("the sample cloud config's compilation block changed:\n%s", text)
	}
	d.run("-n", "update-cloud-config", write("cloud-config.yml", text))

	manifest := write("disks.yml", `name: disks
releases:
- {name: web, version: latest}
stemcells:
- {alias: default, os: linux, version: latest}
update:
  canaries: 1
  max_in_flight: 1
  canary_watch_time: 1000-30000
  update_watch_time: 1000-30000
instance_groups:
- name: web
  azs: [z1, z2]
  instances: 2
  vm_resources: {cpu: 2, ram: 1024, ephemeral_disk_size: 2048}
  stemcell: default
  persistent_disk: ((disk_mb))
  networks:
  - name: default
  jobs:
  - name: web
    release: web
    properties: {port: 8080}
`)
	type disk struct {
		CID        string `json:"cid"`
		CPI        string `json:"cpi"`
		InstanceID string `json:"instance_id"`
		SizeMB     int    `json:"size_mb"`
		Orphaned   bool   `json:"orphaned"`
	}
	disks := func(args ...string) map[string]disk { // by cpi
		t.Helper()
		var ds []disk
		if err := json.Unmarshal([]byte(d.run(append([]string{"-d", "disks", "--json", "disks"}, args...)...)), &ds); err != nil {
			t.Fatal(err)
		}
		out := map[string]disk{}
		for _, x := range ds {
			out[x.CPI] = x
		}
		return out
	}

	d.deploy(manifest, "-v", "disk_mb=1024")
	// One CalculateVMCloudProperties per CPI (the compilation block's
	// resources are the group's, in z1's CPI), and the VMs of both CPIs
	// made with its answer.
	calls := 0
	for _, line := range strings.Split(d.logs.String(), "\n") {
		if strings.Contains(line, "vm_resources") && strings.Contains(line, "cloud_properties") {
			calls++
		}
	}
	if calls != 2 {
		t.Errorf("%d vm_resources calculations logged by the first deploy, want 2 (one per cpi)", calls)
	}
	for _, home := range []string{grow, fixed} {
		vms, _ := filepath.Glob(filepath.Join(home, "vms", "*", "vm.json"))
		if len(vms) != 1 {
			t.Errorf("%d vms in %s, want 1", len(vms), filepath.Base(home))
		}
		for _, vm := range vms {
			var rec struct {
				CloudProperties map[string]int `json:"cloud_properties"`
			}
			raw, err := os.ReadFile(vm)
			if err == nil {
				err = json.Unmarshal(raw, &rec)
			}
			if err != nil || fmt.Sprint(rec.CloudProperties) != "map[cpu:2 ephemeral_disk_size:2048 ram:1024]" {
				t.Errorf("vm %s: cloud properties %v (%v), want what CalculateVMCloudProperties gave", vm, rec.CloudProperties, err)
			}
		}
	}
	before := disks()
	if before["grow"].SizeMB != 1024 || before["fixed"].SizeMB != 1024 {
		t.Fatalf("disks after the first deploy: %+v", before)
	}
	d.run("-d", "disks", "ssh", "web", "-c", "echo kept-$(hostname) > /var/vcap/store/kept && sync")
	wrote := d.run("-d", "disks", "ssh", "web", "-c", "cat /var/vcap/store/kept")

	dry := d.run("-n", "-d", "disks", "deploy", manifest, "-v", "disk_mb=2048", "--dry-run")
	if !strings.Contains(dry, "disk: "+before["grow"].CID+" resized from 1024 MB to 2048 MB") || !strings.Contains(dry, "data moved from "+before["fixed"].CID) {
		t.Errorf("plan of the bigger disks does not resize in grow and move in fixed:\n%s", dry)
	}
	d.deploy(manifest, "-v", "disk_mb=2048")
	after := disks()
	if g := after["grow"]; g.CID != before["grow"].CID || g.SizeMB != 2048 {
		t.Errorf("in the cpi that resizes: disk %+v, want %s kept at 2048 MB", g, before["grow"].CID)
	}
	if f := after["fixed"]; f.CID == before["fixed"].CID || f.SizeMB != 2048 {
		t.Errorf("in the cpi that cannot resize: disk %+v, want a new 2048 MB disk in place of %s", f, before["fixed"].CID)
	}
	orphaned := disks("--orphaned")
	if o := orphaned["fixed"]; o.CID != before["fixed"].CID || !o.Orphaned {
		t.Errorf("orphaned disks %+v, want %s of cpi fixed", orphaned, before["fixed"].CID)
	}
	if _, ok := orphaned["grow"]; ok {
		t.Errorf("the resized disk was orphaned: %+v", orphaned)
	}
	var rec struct {
		SizeMB int64 `json:"size_mb"`
	}
	raw, err := os.ReadFile(filepath.Join(grow, "disks", before["grow"].CID, "disk.json"))
	if err == nil {
		err = json.Unmarshal(raw, &rec)
	}
	if err != nil || rec.SizeMB != 2048 {
		t.Errorf("the grow cpi's own record of disk %s: %s (%v), want 2048 MB", before["grow"].CID, raw, err)
	}
	if got := d.run("-d", "disks", "ssh", "web", "-c", "cat /var/vcap/store/kept"); got != wrote {
		t.Errorf("data on the disks after the change:\n%s\nwant\n%s", got, wrote)
	}
}
