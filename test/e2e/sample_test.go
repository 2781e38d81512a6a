package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// deploySample starts a director of the test's own on a fresh data directory
// and deploys the web sample (manifests/local) on it, moved to the address
// range prefix ("127.N.") so that tests running side by side do not collide.
// edit, when not nil, changes the manifest's text before the deploy. It
// returns once the lb answers v1 from both web instances; the deployment and
// its agents are removed when the test ends.
func deploySample(t *testing.T, prefix string, edit func(manifest string) string) (d *director, data string) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the director, agents and the local CPI, and compiles releases/web")
	}
	if _, err := exec.LookPath("go"); err != nil {
		if _, err := os.Stat("/usr/local/go/bin/go"); err != nil {
			t.Skip("releases/web compiles with the host's Go toolchain; none found")
		}
	}
	bin := binaries(t)
	work := t.TempDir()
	data = filepath.Join(work, "data")
	t.Cleanup(func() { killAgents(data) })
	stemcell := filepath.Join(work, "local.tgz")
	if out, err := exec.Command(filepath.Join(bin, "director"), "create-stemcell", "--agent", filepath.Join(bin, "agent"), "--tarball", stemcell).CombinedOutput(); err != nil {
		t.Fatalf("create-stemcell: %v\n%s", err, out)
	}
	d = startDirector(t, bin, data)
	t.Cleanup(func() {
		// Unless the test deleted it already (or its director is gone).
		if list, _ := d.command("--json", "deployments").Output(); !strings.Contains(string(list), `"name": "web"`) && !strings.Contains(string(list), `"name":"web"`) {
			return
		}
		if out, err := d.command("-n", "-d", "web", "delete-deployment", "--force").CombinedOutput(); err != nil {
			t.Logf("cleanup: delete-deployment: %v\n%s", err, out)
		}
	})
	d.run("-n", "upload-release", "releases/web")
	d.run("-n", "upload-stemcell", stemcell)
	lbAddr = prefix + "1.10:8080"
	moved := func(file string) string {
		raw, err := os.ReadFile(filepath.Join(repoRoot(), "manifests", "local", file))
		if err != nil {
			t.Fatal(err)
		}
		return strings.ReplaceAll(string(raw), "127.77.", prefix)
	}
	ccFile := filepath.Join(work, "cloud-config.yml")
	if err := os.WriteFile(ccFile, []byte(moved("cloud-config.yml")), 0o644); err != nil {
		t.Fatal(err)
	}
	d.run("-n", "update-cloud-config", ccFile)
	text := moved("web.yml")
	if edit != nil {
		text = edit(text)
	}
	manifest := filepath.Join(work, "web.yml")
	if err := os.WriteFile(manifest, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	d.deploy(manifest)
	lbAnswers(t, "v1", 2)
	return d, data
}

// instanceRow is a row of `director --json instances`.
type instanceRow struct {
	Group    string   `json:"group"`
	ID       string   `json:"id"`
	Index    int      `json:"index"`
	VMCID    string   `json:"vm_cid"`
	AgentID  string   `json:"agent_id"`
	DiskCIDs []string `json:"disk_cids"`
	IPs      []string `json:"ips"`
	Ignore   bool     `json:"ignore"`
}

// findInstance returns the deployment's instance GROUP/INDEX as
// `instances --json` lists it.
func (d *director) findInstance(t *testing.T, deployment, group string, index int) instanceRow {
	t.Helper()
	var is []instanceRow
	if err := json.Unmarshal([]byte(d.run("--json", "-d", deployment, "instances")), &is); err != nil {
		t.Fatal(err)
	}
	for _, i := range is {
		if i.Group == group && i.Index == index {
			return i
		}
	}
	t.Fatalf("no instance %s/%d in %s: %+v", group, index, deployment, is)
	return instanceRow{}
}

// localSetup is a dev director with releases/web, the local stemcell
// (version 1) and the local cloud config on a free address range uploaded:
// where the tests that write their own manifests start.
type localSetup struct {
	d                       *director
	bin, work, data, prefix string
	// cloudConfig is the cloud config's text, its addresses in prefix.
	cloudConfig string
}

func newLocalSetup(t *testing.T) *localSetup {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the director, agents and the local CPI, and compiles releases/web")
	}
	s := &localSetup{bin: binaries(t), work: t.TempDir()}
	s.data = filepath.Join(s.work, "data")
	t.Cleanup(func() { killAgents(s.data) })
	stemcell := s.stemcell(t, "1")
	s.d = startDirector(t, s.bin, s.data)
	s.d.run("-n", "upload-release", "releases/web")
	s.d.run("-n", "upload-stemcell", stemcell)
	s.prefix = freeRange(t)
	raw, err := os.ReadFile(filepath.Join(repoRoot(), "manifests", "local", "cloud-config.yml"))
	if err != nil {
		t.Fatal(err)
	}
	s.cloudConfig = strings.ReplaceAll(string(raw), "127.77.", s.prefix)
	s.d.run("-n", "update-cloud-config", s.write(t, "cloud-config.yml", s.cloudConfig))
	return s
}

// stemcell writes the local stemcell of version and returns its path.
func (s *localSetup) stemcell(t *testing.T, version string) string {
	t.Helper()
	path := filepath.Join(s.work, "local-"+version+".tgz")
	if out, err := exec.Command(filepath.Join(s.bin, "director"), "create-stemcell", "--agent", filepath.Join(s.bin, "agent"), "--version", version, "--tarball", path).CombinedOutput(); err != nil {
		t.Fatalf("create-stemcell: %v\n%s", err, out)
	}
	return path
}

// write writes text to name in the work directory and returns its path.
func (s *localSetup) write(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(s.work, name)
	writeFile(t, path, text)
	return path
}
