package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// stemcellRow is a row of `director --json stemcells`.
type stemcellRow struct {
	Name        string            `json:"name"`
	Version     string            `json:"version"`
	CIDs        map[string]string `json:"cids"`
	Deployments []string          `json:"deployments"`
	Pending     []string          `json:"pending"`
}

// deploymentRow is a row of `director --json deployments`.
type deploymentRow struct {
	Name             string   `json:"name"`
	Stemcells        []string `json:"stemcells"`
	PendingStemcells []string `json:"pending_stemcells"`
}

// TestStemcellRolloutAndCleanUp is the CVE playbook of
// docs/stemcell-rollouts.md on the local CPI: two deployments on stemcell
// 1 (one pinned, one on latest); stemcell 2 uploaded; a deploy with it
// that fails leaves `deployments` on 1 and 2 pending; a dry run changes
// nothing; a rollout that fails half way (sc-b's vm_type gone from the
// cloud config) leaves sc-a on 2 and sc-b on 1, and `stemcells` and
// `deployments` say so; once fixed, the rollout again finds sc-a up to
// date and rolls sc-b, VMs made from 2; clean-up --all deletes stemcell 1
// from the CPI and sc-a's orphaned disk, and once the deployments are
// gone, the release, its blobs and stemcell 2.
func TestStemcellRolloutAndCleanUp(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the sample's process files name /var/vcap paths, which a local VM has only in its own mount namespace (root)")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("releases/web compiles with the host's Go toolchain; none found")
	}
	setup := newLocalSetup(t)
	d, work, data := setup.d, setup.work, setup.data
	t.Cleanup(func() {
		for _, name := range []string{"sc-a", "sc-b"} {
			d.command("-n", "-d", name, "delete-deployment", "--force").Run()
		}
	})
	withLarge := strings.Replace(setup.cloudConfig, "vm_types:\n- name: default\n", "vm_types:\n- name: default\n- name: large\n", 1)
	ccFile := setup.write(t, "cloud-config.yml", withLarge)
	d.run("-n", "update-cloud-config", ccFile)
	// sc-a has a persistent disk; sc-b runs on vm_type large.
	manifest := func(name, version, port string) string {
		path := filepath.Join(work, name+"-"+version+"-"+port+".yml")
		vmType, disk := "default", "  persistent_disk: 64\n"
		if name == "sc-b" {
			vmType, disk = "large", ""
		}
		if port == "nodisk" {
			port, disk = "8080", ""
		}
		writeFile(t, path, "name: "+name+`
releases:
- {name: web, version: latest}
stemcells:
- alias: default
  os: linux   # the CVE playbook rewrites this version
  version: "`+version+`"
update:
  canaries: 1
  max_in_flight: 1
  canary_watch_time: 1000-8000
  update_watch_time: 1000-8000
instance_groups:
- name: web
  azs: [z1]
  instances: 1
  vm_type: `+vmType+`
`+disk+`  stemcell: default
  networks:
  - name: default
  jobs:
  - name: web
    release: web
    properties:
      port: `+port+`
      version: `+name+`
`)
		return path
	}
	d.deploy(manifest("sc-a", "1", "8080"))
	d.deploy(manifest("sc-b", "latest", "8081"))

	stemcells := func() map[string]stemcellRow {
		var rows []stemcellRow
		if err := json.Unmarshal([]byte(d.run("--json", "stemcells")), &rows); err != nil {
			t.Fatal(err)
		}
		out := map[string]stemcellRow{}
		for _, r := range rows {
			out[r.Version] = r
		}
		return out
	}
	deployments := func() map[string]deploymentRow {
		var rows []deploymentRow
		if err := json.Unmarshal([]byte(d.run("--json", "deployments")), &rows); err != nil {
			t.Fatal(err)
		}
		out := map[string]deploymentRow{}
		for _, r := range rows {
			out[r.Name] = r
		}
		return out
	}
	vmStemcells := func(deployment string) []string {
		var vms []struct {
			Stemcell string `json:"stemcell"`
		}
		if err := json.Unmarshal([]byte(d.run("--json", "-d", deployment, "vms")), &vms); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, v := range vms {
			out = append(out, v.Stemcell)
		}
		return out
	}
	if got := stemcells()["1"].Deployments; !slices.Equal(got, []string{"sc-a", "sc-b"}) {
		t.Fatalf("stemcell 1 used by %v, want sc-a and sc-b", got)
	}

	d.run("-n", "upload-stemcell", setup.stemcell(t, "2"))
	sc := stemcells()
	v1cid, v2cid := sc["1"].CIDs["local"], sc["2"].CIDs["local"]
	if v1cid == "" || v2cid == "" || len(sc["2"].Deployments) != 0 {
		t.Fatalf("after uploading 2: %+v", sc)
	}

	// A deploy with stemcell 2 that fails (its job cannot listen) records
	// 2 as pending, not as deployed.
	if out, err := d.command("-n", "-d", "sc-a", "deploy", manifest("sc-a", "2", "99999")).CombinedOutput(); err == nil {
		t.Fatalf("a deploy whose job cannot start succeeded:\n%s", out)
	}
	if dep := deployments()["sc-a"]; !slices.Equal(dep.Stemcells, []string{"compleat-local/1"}) || !slices.Equal(dep.PendingStemcells, []string{"compleat-local/2"}) {
		t.Errorf("after a failed deploy with stemcell 2, sc-a records %v (pending %v), want 1 (pending 2)", dep.Stemcells, dep.PendingStemcells)
	}
	if got := stemcells()["2"].Pending; !slices.Equal(got, []string{"sc-a"}) {
		t.Errorf("stemcell 2 pending for %v, want sc-a", got)
	}

	// Deleting a stemcell in use is refused, naming its users.
	out, err := d.command("-n", "delete-stemcell", "compleat-local/1").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use by sc-a, sc-b") {
		t.Errorf("delete-stemcell of a stemcell in use: %v\n%s", err, out)
	}

	// A dry run plans both and changes nothing.
	dry := d.run("-n", "upgrade-stemcell", "linux", "--all", "--dry-run")
	for _, dep := range []string{"sc-a", "sc-b"} {
		if _, plan, _ := strings.Cut(dry, "Plan of "+dep); !strings.Contains(plan, "to update") {
			t.Errorf("the dry run shows no plan of %s:\n%s", dep, dry)
		}
	}
	if got := vmStemcells("sc-b"); !slices.Equal(got, []string{v1cid}) {
		t.Errorf("after a dry run sc-b's VMs are on %v, want %s", got, v1cid)
	}

	// A rollout that fails half way: vm_type large is gone from the cloud
	// config, so sc-b's deploy fails after sc-a's succeeded (sc-a from
	// its last successful manifest, port 8080, its pin rewritten to 2).
	writeFile(t, ccFile, setup.cloudConfig)
	d.run("-n", "update-cloud-config", ccFile)
	half, err := d.command("-n", "upgrade-stemcell", "linux", "--all").CombinedOutput()
	if err == nil || !strings.Contains(string(half), "upgraded") || !strings.Contains(string(half), "failed") {
		t.Fatalf("a rollout failing at sc-b: %v\n%s", err, tail(string(half), 20))
	}
	if dep := deployments(); !slices.Equal(dep["sc-a"].Stemcells, []string{"compleat-local/2"}) || !slices.Equal(dep["sc-b"].Stemcells, []string{"compleat-local/1"}) {
		t.Errorf("after the rollout failed at sc-b, deployments: %+v", dep)
	}
	if sc := stemcells(); !slices.Equal(sc["2"].Deployments, []string{"sc-a"}) || !slices.Equal(sc["1"].Deployments, []string{"sc-b"}) {
		t.Errorf("after the rollout failed at sc-b, stemcells: 1 %+v, 2 %+v", sc["1"], sc["2"])
	}

	// The cause fixed, the rollout again: sc-a is up to date, sc-b is rolled.
	writeFile(t, ccFile, withLarge)
	d.run("-n", "update-cloud-config", ccFile)
	rollout := d.run("-n", "upgrade-stemcell", "linux", "--all", "--max-parallel", "2")
	t.Logf("rollout:\n%s", tail(rollout, 20))
	if !strings.Contains(rollout, "up to date") || !strings.Contains(rollout, "upgraded") {
		t.Errorf("the second rollout: want sc-a up to date and sc-b upgraded:\n%s", rollout)
	}
	for _, name := range []string{"sc-a", "sc-b"} {
		dep := deployments()[name]
		if !slices.Equal(dep.Stemcells, []string{"compleat-local/2"}) || len(dep.PendingStemcells) != 0 {
			t.Errorf("after the rollout %s records %v (pending %v), want 2", name, dep.Stemcells, dep.PendingStemcells)
		}
		if got := vmStemcells(name); !slices.Equal(got, []string{v2cid}) {
			t.Errorf("after the rollout %s's VMs are on %v, want %s", name, got, v2cid)
		}
	}
	if got := stemcells()["1"]; len(got.Deployments)+len(got.Pending) != 0 {
		t.Errorf("stemcell 1 still used after the rollout: %+v", got)
	}
	again := d.run("-n", "upgrade-stemcell", "linux", "--deployments", "sc-b")
	if !strings.Contains(again, "up to date") {
		t.Errorf("a second rollout to sc-b did not find it up to date:\n%s", again)
	}

	// sc-a's disk is orphaned by a deploy without it.
	d.deploy(manifest("sc-a", "2", "nodisk"))
	diskDirs := func() []string { return dirNames(t, filepath.Join(data, "disks")) }
	if n := len(diskDirs()); n != 1 {
		t.Fatalf("%d disks in the local CPI, want sc-a's orphaned one", n)
	}

	// clean-up --all deletes stemcell 1 from the CPI and the orphaned disk;
	// the release and stemcell in use stay.
	stemcellDirs := func() []string { return dirNames(t, filepath.Join(data, "stemcells")) }
	res := d.run("-n", "clean-up", "--all")
	if !strings.Contains(res, "0 releases") || !strings.Contains(res, "1 stemcells") || !strings.Contains(res, "1 orphaned disks") {
		t.Errorf("clean-up --all with both deployments on 2:\n%s", res)
	}
	if dirs := stemcellDirs(); slices.Contains(dirs, v1cid) || !slices.Contains(dirs, v2cid) {
		t.Errorf("local CPI stemcells after clean-up: %v (1 is %s, 2 is %s)", dirs, v1cid, v2cid)
	}
	if dirs := diskDirs(); len(dirs) != 0 {
		t.Errorf("local CPI disks after clean-up --all: %v, want none", dirs)
	}
	if out, err := d.command("-n", "delete-release", "web").CombinedOutput(); err == nil || !strings.Contains(string(out), "in use") {
		t.Errorf("delete-release of a release in use: %v\n%s", err, out)
	}

	// With the deployments gone, everything goes: the release and its
	// blobs, stemcell 2 and its compiled packages.
	blobs := func() int {
		n := 0
		root := filepath.Join(data, "blobs")
		filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
			if rel, _ := filepath.Rel(root, p); err == nil && !e.IsDir() && !strings.HasPrefix(rel, "tmp") {
				n++
			}
			return nil
		})
		return n
	}
	d.run("-n", "-d", "sc-a", "delete-deployment")
	d.run("-n", "-d", "sc-b", "delete-deployment")
	before := blobs()
	res = d.run("-n", "clean-up", "--all")
	after := blobs()
	t.Logf("clean-up --all: %s; blobs %d -> %d", strings.TrimSpace(tail(res, 3)), before, after)
	if !strings.Contains(res, "1 releases") || !strings.Contains(res, "1 stemcells") {
		t.Errorf("clean-up --all without deployments:\n%s", res)
	}
	if dirs := stemcellDirs(); len(dirs) != 0 {
		t.Errorf("local CPI stemcells left: %v", dirs)
	}
	if rs := d.run("--json", "releases"); strings.TrimSpace(rs) != "[]" {
		t.Errorf("releases left: %s", rs)
	}
	if after >= before || after > before/2 {
		t.Errorf("clean-up deleted %d of %d blobs; the release's jobs, packages and compiled packages should go", before-after, before)
	}
}

// dirNames lists the directories in dir (none when it does not exist).
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	return out
}
