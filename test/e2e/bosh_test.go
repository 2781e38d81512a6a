package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/director/release/releasetest"
)

// TestBOSHRelease deploys testdata/kv-release, a release written the BOSH
// way (ERB templates using a link, a bpm job started through monit, a plain
// monit job with a ctl script and depends on, a package with a dependency),
// on the local CPI; checks that its processes run under the names bpm and
// monit gave them with bpm's log paths, that a property change rolls
// through with drain, and that the same release as a BOSH tarball (sha1
// digests) uploads and deploys.
func TestBOSHRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the director, agents and the local CPI")
	}
	if os.Geteuid() != 0 {
		t.Skip("the release's templates name /var/vcap paths, which a local VM has only in its own mount namespace (root)")
	}
	if _, err := exec.LookPath("ruby"); err != nil {
		t.Skip("ruby is not installed (Debian package ruby; .ci/run installs it): ERB templates cannot be rendered")
	}
	bin := binaries(t)
	work := t.TempDir()
	data := filepath.Join(work, "data")
	t.Cleanup(func() { killAgents(data) })
	stemcell := filepath.Join(work, "local.tgz")
	if out, err := exec.Command(filepath.Join(bin, "director"), "create-stemcell", "--agent", filepath.Join(bin, "agent"), "--tarball", stemcell).CombinedOutput(); err != nil {
		t.Fatalf("create-stemcell: %v\n%s", err, out)
	}
	d := startDirector(t, bin, data)
	deployed := map[string]bool{}
	t.Cleanup(func() {
		for name := range deployed {
			if out, err := d.command("-n", "-d", name, "delete-deployment", "--force").CombinedOutput(); err != nil {
				t.Logf("cleanup: delete-deployment %s: %v\n%s", name, err, out)
			}
		}
	})
	src := filepath.Join(repoRoot(), "test", "e2e", "testdata", "kv-release")
	d.run("-n", "upload-release", src)
	d.run("-n", "upload-stemcell", stemcell)
	prefix := fmt.Sprintf("127.%d.", 100+(os.Getpid()+37)%100)
	moved := func(file string, replace ...string) string {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(raw), "127.77.", prefix)
		for i := 0; i+1 < len(replace); i += 2 {
			text = strings.ReplaceAll(text, replace[i], replace[i+1])
		}
		out := filepath.Join(work, filepath.Base(file))
		if err := os.WriteFile(out, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return out
	}
	d.run("-n", "update-cloud-config", moved(filepath.Join(repoRoot(), "manifests", "local", "cloud-config.yml")))
	kv0, kv1 := prefix+"1.15", prefix+"2.15"

	deployed["kv"] = true
	d.deploy(moved(filepath.Join(repoRoot(), "test", "e2e", "testdata", "kv.yml")))

	t.Run("processes run under bpm and monit names", func(t *testing.T) {
		ps := d.run("-d", "kv", "instances", "--ps")
		for _, want := range []string{"kv/kv ", "kv-peers/kv-peers "} {
			if n := countRunning(ps, want); n != 2 {
				t.Errorf("%d rows %q running, want 2:\n%s", n, want, ps)
			}
		}
		for _, ip := range []string{kv0, kv1} {
			if got := httpGet(t, "http://"+ip+":8080/"); !strings.HasPrefix(got, "hello kv/") {
				t.Errorf("%s answers %q, want hello kv/N", ip, got)
			}
		}
		// kv-peers renders the kv link's instances through ERB.
		peers := httpGet(t, "http://"+kv0+":8081/")
		for _, want := range []string{"kv kv/", kv0 + ":8080 az=z1", kv1 + ":8080 az=z2", "bootstrap=true", "bootstrap=false"} {
			if !strings.Contains(peers, want) {
				t.Errorf("kv-peers answers %q, want it to contain %q", peers, want)
			}
		}
		// bpm's log paths and its pre_start hook; the monit job's own logs.
		for _, f := range []string{"sys/log/kv/kv.stdout.log", "sys/log/kv-peers/kv-peers.stdout.log", "data/kv"} {
			if got := vmFiles(t, data, f); got != 2 {
				t.Errorf("%s on %d VMs, want 2", f, got)
			}
		}
		if !strings.Contains(vmFileText(t, data, "sys/log/kv/kv.programs.log"), "pre_start hook") {
			t.Errorf("bpm pre_start hook not run (kv.programs.log)")
		}
		// bpm's pid file for the job's scripts; the ctl script's own pid
		// file left as it wrote it (one pid).
		for _, f := range []string{"sys/run/bpm/kv/kv.pid", "sys/run/kv-peers/kv-peers.pid"} {
			for _, line := range strings.Split(strings.TrimSpace(vmFileText(t, data, f)), "\n") {
				if _, err := strconv.Atoi(line); err != nil {
					t.Errorf("%s holds %q, want a pid", f, line)
				}
			}
		}
	})

	t.Run("a property change rolls through with drain", func(t *testing.T) {
		_, res := d.deploy(moved(filepath.Join(repoRoot(), "test", "e2e", "testdata", "kv.yml"), "greeting: hello", "greeting: bonjour"))
		t.Logf("deploy: %s", res.Result)
		for _, ip := range []string{kv0, kv1} {
			if got := httpGet(t, "http://"+ip+":8080/"); !strings.HasPrefix(got, "bonjour kv/") {
				t.Errorf("%s answers %q after the change, want bonjour kv/N", ip, got)
			}
		}
		if got := vmFiles(t, data, "sys/log/kv/drain.log"); got != 2 {
			t.Errorf("drain ran on %d VMs, want 2", got)
		}
		if log := vmFileText(t, data, "sys/log/kv/drain.log"); !strings.Contains(log, "drained greeting=hello pid=") || strings.Contains(log, "pid= ") {
			t.Errorf("drain.log = %q, want the old greeting drained", log)
		}
		if got := httpGet(t, "http://"+kv0+":8080/health"); got != "ok\n" {
			t.Errorf("/health after the rollout = %q: the pre_start hook did not clear the drain flag", got)
		}
	})

	t.Run("the same release as a BOSH tarball with sha1 digests", func(t *testing.T) {
		tarball := releasetest.BOSHTarball(t, src, "kv-bosh", "7", releasetest.SHA1)
		d.run("-n", "upload-release", tarball)
		if list := d.run("releases"); !strings.Contains(list, "kv-bosh") {
			t.Fatalf("releases after upload:\n%s", list)
		}
		deployed["kv-tgz"] = true
		manifest := moved(filepath.Join(repoRoot(), "test", "e2e", "testdata", "kv.yml"),
			"name: kv\n\nreleases:\n- name: kv\n", "name: kv-tgz\n\nreleases:\n- name: kv-bosh\n",
			"release: kv\n", "release: kv-bosh\n", "1.15", "1.16", "2.15", "2.16", "greeting: hello", "greeting: from-tarball")
		d.deploy(manifest)
		for _, ip := range []string{prefix + "1.16", prefix + "2.16"} {
			if got := httpGet(t, "http://"+ip+":8080/"); !strings.HasPrefix(got, "from-tarball kv/") {
				t.Errorf("%s answers %q, want from-tarball kv/N", ip, got)
			}
		}
		if peers := httpGet(t, "http://"+prefix+"1.16:8081/"); !strings.Contains(peers, "kv-tgz kv-bosh/7") {
			t.Errorf("kv-peers of the tarball deployment answers %q, want spec.deployment and spec.release", peers)
		}
	})

	t.Run("a job the agent cannot run is refused at upload", func(t *testing.T) {
		// The same release with a monit resource test the agent would not
		// carry out: refused naming the file and line, exit status 2.
		bad := filepath.Join(work, "kv-release-bad")
		if out, err := exec.Command("cp", "-R", src, bad).CombinedOutput(); err != nil {
			t.Fatalf("copy release: %v\n%s", err, out)
		}
		f, err := os.OpenFile(filepath.Join(bad, "jobs", "kv-peers", "monit"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(f, "  if totalmem > 512 MB for 3 cycles then restart")
		f.Close()
		out, err := d.command("-n", "upload-release", bad).CombinedOutput()
		if code := exitCode(err); code != 2 || !strings.Contains(string(out), "jobs/kv-peers") || !strings.Contains(string(out), `monit:7: monit statement "if" is not supported`) {
			t.Errorf("upload-release of a job that cannot run: exit %d, want 2 naming jobs/kv-peers and monit:7:\n%s", code, out)
		}
	})

	t.Run("a BOSH compiled release deploys without compiling", func(t *testing.T) {
		stemcells := d.run("stemcells")
		if !strings.Contains(stemcells, "linux") {
			t.Fatalf("stemcells:\n%s", stemcells)
		}
		tarball := releasetest.BOSHCompiledTarball(t, src, "kv-compiled", "1", "linux/1")
		d.run("-n", "upload-release", tarball)
		deployed["kv-compiled"] = true
		manifest := moved(filepath.Join(repoRoot(), "test", "e2e", "testdata", "kv.yml"),
			"name: kv\n\nreleases:\n- name: kv\n", "name: kv-compiled\n\nreleases:\n- name: kv-compiled\n",
			"release: kv\n", "release: kv-compiled\n", "1.15", "1.17", "2.15", "2.17", "greeting: hello", "greeting: precompiled")
		evs, _ := d.deploy(manifest)
		for _, e := range evs {
			if e.Stage == "Compiling packages" {
				t.Errorf("a package was compiled: %+v", e)
			}
		}
		for _, ip := range []string{prefix + "1.17", prefix + "2.17"} {
			if got := httpGet(t, "http://"+ip+":8080/"); !strings.HasPrefix(got, "precompiled kv/") {
				t.Errorf("%s answers %q, want precompiled kv/N", ip, got)
			}
		}
	})

	t.Run("a deploy through a type: external CPI", func(t *testing.T) {
		// The local CPI behind BOSH's JSON protocol, as an operator would
		// install a BOSH CPI executable: in a place the director allows
		// (serve --dev: DATA/external-cpis).
		cpiBin := filepath.Join(data, "external-cpis", "boshcpi")
		build := exec.Command("go", "build", "-o", cpiBin, "./testdata/boshcpi")
		build.Dir = filepath.Join(repoRoot(), "cpi", "local")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build boshcpi: %v\n%s", err, out)
		}
		cloud := filepath.Join(work, "bosh-cloud")
		t.Cleanup(func() { killAgents(cloud) })
		cpiConfig := filepath.Join(work, "cpi.yml")
		if err := os.WriteFile(cpiConfig, []byte(fmt.Sprintf(`cpis:
- name: local
  type: local
  default: true
  properties: {data_dir: %s, dynamic_range: 127.77.0.0/16}
- name: bosh
  type: external
  exec_path: %s
  properties: {data_dir: %s, dynamic_range: %s0.0/16}
`, data, cpiBin, cloud, prefix)), 0o644); err != nil {
			t.Fatal(err)
		}
		d.run("-n", "update-cpi-config", cpiConfig)
		d.run("-n", "upload-stemcell", stemcell)
		cc := moved(filepath.Join(repoRoot(), "manifests", "local", "cloud-config.yml"),
			"- name: z2\n\nvm_types", "- name: z2\n- name: z3\n  cpi: bosh\n\nvm_types",
			"\ncompilation:", "  - range: "+prefix+"3.0/24\n    gateway: "+prefix+"3.1\n    reserved: ["+prefix+"3.2 - "+prefix+"3.9]\n    static: ["+prefix+"3.10 - "+prefix+"3.19]\n    az: z3\n\ncompilation:")
		if raw, _ := os.ReadFile(cc); !strings.Contains(string(raw), "cpi: bosh") || !strings.Contains(string(raw), "az: z3") {
			t.Fatalf("cloud config edit failed:\n%s", raw)
		}
		d.run("-n", "update-cloud-config", cc)
		deployed["kv-ext"] = true
		manifest := moved(filepath.Join(repoRoot(), "test", "e2e", "testdata", "kv.yml"),
			"name: kv\n\nreleases", "name: kv-ext\n\nreleases", "azs: [z1, z2]", "azs: [z3]",
			prefix+"1.15, "+prefix+"2.15", prefix+"3.15, "+prefix+"3.16", "greeting: hello", "greeting: via-external-cpi")
		d.deploy(manifest)
		for _, ip := range []string{prefix + "3.15", prefix + "3.16"} {
			if got := httpGet(t, "http://"+ip+":8080/"); !strings.HasPrefix(got, "via-external-cpi kv/") {
				t.Errorf("%s answers %q, want via-external-cpi kv/N", ip, got)
			}
		}
		if got := vmFiles(t, cloud, "sys/log/kv/kv.stdout.log"); got != 2 {
			t.Errorf("%d VMs of the external CPI run kv, want 2", got)
		}
		if l := d.logs.String(); !strings.Contains(l, "cpi_name=bosh") || !strings.Contains(l, "request_id=cpi-") {
			t.Errorf("the external CPI's log is not in the director's log")
		}
	})
}

// countRunning counts the `instances --ps` rows naming job/process that are
// running.
func countRunning(ps, proc string) int {
	n := 0
	for _, line := range strings.Split(ps, "\n") {
		if strings.Contains(line, proc) && strings.Contains(line, "running") {
			n++
		}
	}
	return n
}

// httpGet fetches url, retrying for a few seconds while it does not answer.
func httpGet(t *testing.T, url string) string {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := client.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return string(body)
		}
		if time.Now().After(deadline) {
			t.Errorf("GET %s: %v", url, err)
			return ""
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// vmFiles counts the VMs whose /var/vcap holds rel.
func vmFiles(t *testing.T, data, rel string) int {
	t.Helper()
	n := 0
	for _, vm := range vmDirs(t, data) {
		if _, err := os.Stat(filepath.Join(data, "vms", vm, "root", filepath.FromSlash(rel))); err == nil {
			n++
		}
	}
	return n
}

// vmFileText joins rel's content on every VM, in VM order.
func vmFileText(t *testing.T, data, rel string) string {
	t.Helper()
	vms := vmDirs(t, data)
	sort.Strings(vms)
	var b strings.Builder
	for _, vm := range vms {
		raw, _ := os.ReadFile(filepath.Join(data, "vms", vm, "root", filepath.FromSlash(rel)))
		b.Write(raw)
	}
	return b.String()
}
