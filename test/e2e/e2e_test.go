package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/compleat/compleat/test/testbin"
)

// repoRoot is the repository's root.
func repoRoot() string { return testbin.Root() }

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

// binaries returns a directory holding director, agent and cpi-local
// (test/testbin: $COMPLEAT_BIN, or built once for this test binary).
func binaries(t *testing.T) string {
	t.Helper()
	dir, err := testbin.Build(testbin.Core...)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// syncBuffer holds a process's output while a test reads it.
type syncBuffer = testbin.Buffer

// director is a running `director serve --dev` and the CLI pointed at it.
type director struct {
	t    *testing.T
	bin  string
	data string
	env  map[string]string
	proc *testbin.Process
	// logs, cmd and done are proc's.
	logs *syncBuffer
	cmd  *exec.Cmd
	done chan struct{}
}

// startDirector starts a dev director on data and waits until it wrote
// DIR/env.
func startDirector(t *testing.T, bin, data string) *director {
	t.Helper()
	envFile := filepath.Join(data, "env")
	os.Remove(envFile)
	p := testbin.Start(t, filepath.Join(bin, "director"), []string{"serve", "--dev", "--data", data, "--listen", "127.0.0.1:0"},
		func(string) bool { _, err := os.Stat(envFile); return err == nil })
	d := &director{t: t, bin: bin, data: data, proc: p, logs: p.Logs, cmd: p.Cmd, done: p.Done, env: map[string]string{}}
	t.Cleanup(func() { d.stop(syscall.SIGTERM) })
	raw, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "="); ok && !strings.HasPrefix(k, "#") {
			d.env[k] = v
		}
	}
	return d
}

// stop signals the director and waits for it to exit.
func (d *director) stop(sig syscall.Signal) {
	if err := d.proc.Stop(sig); err != nil {
		d.t.Error(err)
	}
}

// command is the CLI with the director's target, token and CA.
func (d *director) command(args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(d.bin, "director"), args...)
	cmd.Env = append(os.Environ(), "DIRECTOR_TARGET="+d.env["DIRECTOR_TARGET"], "DIRECTOR_TOKEN="+d.env["DIRECTOR_TOKEN"], "DIRECTOR_CA_CERT="+d.env["DIRECTOR_CA_CERT"])
	cmd.Dir = repoRoot()
	return cmd
}

// run runs the CLI and fails the test when it exits non-zero.
func (d *director) run(args ...string) string {
	d.t.Helper()
	out, err := d.command(args...).CombinedOutput()
	if err != nil {
		d.t.Fatalf("director %s: %v\n%s\ndirector log tail:\n%s", strings.Join(args, " "), err, out, tail(d.logs.String(), 40))
	}
	return string(out)
}

// killDuring runs cmd (a command following a task with --json), calls kill
// once the task has started stage, and waits for cmd to end. It reports
// whether the stage was reached.
func killDuring(t *testing.T, cmd *exec.Cmd, stage string, kill func()) bool {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reached := false
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Stage == stage && e.State == "started" {
			kill()
			reached = true
			break
		}
	}
	io.Copy(io.Discard, out)
	cmd.Wait()
	return reached
}

// event is a task event as the CLI prints it with --json.
type event struct {
	Seq   uint64   `json:"seq"`
	Stage string   `json:"stage"`
	Step  string   `json:"step"`
	State string   `json:"state"`
	Tags  []string `json:"tags"`
	Error string   `json:"error"`
	Data  struct {
		Text string `json:"text"`
	} `json:"data"`
}

// taskResult is the task record the CLI prints last with --json.
type taskResult struct {
	ID     uint64 `json:"id"`
	State  string `json:"state"`
	Result string `json:"result"`
	Error  string `json:"error"`
}

// deploy runs `deploy --json` and returns the task's events and result.
func (d *director) deploy(args ...string) ([]event, taskResult) {
	d.t.Helper()
	out := d.run(append([]string{"-n", "--json", "deploy"}, args...)...)
	return parseTask(d.t, out)
}

func parseTask(t *testing.T, out string) ([]event, taskResult) {
	t.Helper()
	var evs []event
	var res taskResult
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var probe map[string]any
		if json.Unmarshal([]byte(line), &probe) != nil {
			continue
		}
		if _, isEvent := probe["seq"]; isEvent {
			var e event
			json.Unmarshal([]byte(line), &e)
			evs = append(evs, e)
			continue
		}
		json.Unmarshal([]byte(line), &res)
	}
	if res.State != "done" {
		t.Fatalf("task %d %s: %s\n%s", res.ID, res.State, res.Error, out)
	}
	return evs, res
}

// updated lists the steps of a stage in the order they started.
func started(evs []event, stage string) []event {
	var out []event
	for _, e := range evs {
		if e.Stage == stage && e.State == "started" {
			out = append(out, e)
		}
	}
	return out
}

func finishedAt(evs []event, stage, step string) (uint64, bool) {
	for _, e := range evs {
		if e.Stage == stage && e.Step == step && e.State == "finished" {
			return e.Seq, true
		}
	}
	return 0, false
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// lbAddr is where the sample's lb listens in this test.
var lbAddr string

// lbAnswers asks the lb until it has seen want distinct instance names
// answering with version (or time runs out) and returns the names seen.
func lbAnswers(t *testing.T, version string, want int) []string {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	seen := map[string]bool{}
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		resp, err := client.Get("http://" + lbAddr + "/")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = strings.TrimSpace(string(body))
			if v, name, ok := strings.Cut(last, " "); ok && v == version && resp.StatusCode == 200 {
				seen[name] = true
				if len(seen) >= want {
					break
				}
			}
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	slices.Sort(names)
	if len(names) < want {
		t.Fatalf("lb answered %s from %v, want %d distinct instances (last answer %q)", version, names, want, last)
	}
	return names
}

// vmDirs lists the VM directories of the local CPI.
func vmDirs(t *testing.T, data string) []string {
	t.Helper()
	es, err := os.ReadDir(filepath.Join(data, "vms"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// agents lists the pids of live agent processes whose command line names a
// settings file under data.
func agents(data string) []int {
	var out []int
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		var pid int
		if _, err := fmt.Sscanf(p.Name(), "%d", &pid); err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(raw), "\x00")
		if len(args) > 0 && filepath.Base(args[0]) == "agent" && strings.Contains(string(raw), data+"/vms/") {
			if st, err := os.ReadFile(filepath.Join("/proc", p.Name(), "stat")); err == nil && strings.Contains(string(st), ") Z ") {
				continue // a zombie is not running
			}
			out = append(out, pid)
		}
	}
	return out
}

// processesUnder lists live processes whose command line mentions dir.
func processesUnder(dir string) []string {
	var out []string
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if p.Name()[0] < '0' || p.Name()[0] > '9' {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(raw), dir) {
			continue
		}
		if st, err := os.ReadFile(filepath.Join("/proc", p.Name(), "stat")); err == nil && strings.Contains(string(st), ") Z ") {
			continue
		}
		out = append(out, p.Name()+" "+strings.ReplaceAll(string(raw), "\x00", " "))
	}
	return out
}

// killAgents is the tests' last resort: no agent, and no process an agent
// started, outlives the test. A VM's processes share its agent's mount
// namespace (where the local CPI gives it one), else its process group.
func killAgents(data string) {
	self, _ := os.Readlink("/proc/self/ns/mnt")
	spaces := map[string]bool{}
	for _, pid := range agents(data) {
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && ns != self {
			spaces[ns] = true
		}
		syscall.Kill(-pid, syscall.SIGKILL)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	if len(spaces) == 0 {
		return
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		var pid int
		if _, err := fmt.Sscanf(p.Name(), "%d", &pid); err != nil {
			continue
		}
		if ns, err := os.Readlink(filepath.Join("/proc", p.Name(), "ns", "mnt")); err == nil && spaces[ns] {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// TestDeployWeb deploys the sample web deployment on the local CPI and
// takes it through its life with one director: first deploy, a version
// change (canary first, web only), a no-op deploy, scaling, a director
// killed mid-deploy, and delete-deployment.
func TestDeployWeb(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the director, agents and the local CPI, and compiles releases/web")
	}
	if os.Geteuid() != 0 {
		t.Skip("the sample's process files name /var/vcap paths, which a local VM has only in its own mount namespace (root)")
	}
	if _, err := exec.LookPath("go"); err != nil {
		if _, err := os.Stat("/usr/local/go/bin/go"); err != nil {
			t.Skip("releases/web compiles with the host's Go toolchain; none found")
		}
	}
	top := t
	bin := binaries(t)
	work := t.TempDir()
	data := filepath.Join(work, "data")
	t.Cleanup(func() { killAgents(data) })
	stemcell := filepath.Join(work, "local.tgz")
	if out, err := exec.Command(filepath.Join(bin, "director"), "create-stemcell", "--agent", filepath.Join(bin, "agent"), "--tarball", stemcell).CombinedOutput(); err != nil {
		t.Fatalf("create-stemcell: %v\n%s", err, out)
	}
	d := startDirector(t, bin, data)
	t.Cleanup(func() {
		// Whatever failed, the deployment goes (before the director stops).
		if list, _ := d.command("--json", "deployments").Output(); !strings.Contains(string(list), `"name": "web"`) && !strings.Contains(string(list), `"name":"web"`) {
			return
		}
		if out, err := d.command("-n", "-d", "web", "delete-deployment", "--force").CombinedOutput(); err != nil {
			t.Logf("cleanup: delete-deployment: %v\n%s", err, out)
		}
	})
	d.run("-n", "upload-release", "releases/web")
	d.run("-n", "upload-stemcell", stemcell)
	// The sample cloud config and manifest, moved to a /16 of their own so
	// that a demo or another test running the sample on this machine does
	// not share their addresses.
	prefix := fmt.Sprintf("127.%d.", 100+os.Getpid()%100)
	lbAddr = prefix + "1.10:8080"
	cc, err := os.ReadFile(filepath.Join(repoRoot(), "manifests", "local", "cloud-config.yml"))
	if err != nil {
		t.Fatal(err)
	}
	ccFile := filepath.Join(work, "cloud-config.yml")
	if err := os.WriteFile(ccFile, []byte(strings.ReplaceAll(string(cc), "127.77.", prefix)), 0o644); err != nil {
		t.Fatal(err)
	}
	d.run("-n", "update-cloud-config", ccFile)

	// The sample manifest with its version and web instance count as
	// variables (-v), as an operator would change them.
	raw, err := os.ReadFile(filepath.Join(repoRoot(), "manifests", "local", "web.yml"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(raw), "version: v1", "version: ((web_version))", 1)
	text = strings.Replace(text, "instances: 2", "instances: ((web_instances))", 1)
	text = strings.ReplaceAll(text, "127.77.", prefix)
	manifest := filepath.Join(work, "web.yml")
	if err := os.WriteFile(manifest, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	deploy := func(version string, n int, extra ...string) ([]event, taskResult) {
		t.Helper()
		began := time.Now()
		evs, res := d.deploy(append([]string{manifest, "-v", "web_version=" + version, "-v", fmt.Sprintf("web_instances=%d", n)}, extra...)...)
		t.Logf("deploy %s with %d web instances: %s (%s)", version, n, res.Result, time.Since(began).Round(10*time.Millisecond))
		return evs, res
	}
	running := func(wantVMs int) {
		t.Helper()
		if got := vmDirs(t, data); len(got) != wantVMs {
			t.Errorf("%d VM directories, want %d: %v", len(got), wantVMs, got)
		}
		if got := agents(data); len(got) != wantVMs {
			t.Errorf("%d agent processes, want %d: %v", len(got), wantVMs, got)
		}
	}

	t.Run("dry run changes nothing", func(t *testing.T) {
		evs, res := deploy("v1", 2, "--dry-run")
		// The plan and the manifest diff `deploy` shows before it asks:
		// all new, the properties redacted.
		var diff, plan string
		for _, e := range evs {
			switch e.Stage {
			case "Manifest diff":
				diff = e.Data.Text
			case "Plan":
				plan = e.Data.Text
			}
		}
		if !strings.Contains(plan, "3 to create") || !strings.HasPrefix(res.Result, "Dry run: nothing changed.") {
			t.Errorf("dry run result:\n%s\nplan:\n%s", res.Result, plan)
		}
		if !strings.Contains(diff, "+ name: web") || !strings.Contains(diff, "<redacted>") || strings.Contains(diff, "v1") {
			t.Errorf("dry run manifest diff:\n%s", diff)
		}
		if got := vmDirs(t, data); len(got) != 0 {
			t.Errorf("a dry run made VMs: %v", got)
		}
		if out := d.run("deployments"); !strings.Contains(out, "0 deployments") {
			t.Errorf("a dry run recorded a deployment:\n%s", out)
		}
	})

	t.Run("first deploy", func(t *testing.T) {
		evs, _ := deploy("v1", 2)
		if n := len(started(evs, "Creating missing vms")); n != 3 {
			t.Errorf("created %d VMs, want 3", n)
		}
		if n := len(started(evs, "Updating instance")); n != 3 {
			t.Errorf("updated %d instances, want 3", n)
		}
		names := lbAnswers(t, "v1", 2)
		if !slices.Equal(names, []string{"web/0", "web/1"}) {
			t.Errorf("lb answered from %v, want web/0 and web/1", names)
		}
		out := d.run("-d", "web", "instances")
		if strings.Count(out, "started") != 3 {
			t.Errorf("instances are not all started:\n%s", out)
		}
		running(3)
	})

	t.Run("version change updates web only, canary first", func(t *testing.T) {
		evs, res := deploy("v2", 2)
		ups := started(evs, "Updating instance")
		if len(ups) != 2 {
			t.Fatalf("updated %d instances, want the 2 web ones: %+v", len(ups), ups)
		}
		for _, u := range ups {
			if !strings.HasPrefix(u.Step, "web/") {
				t.Errorf("%s updated by a web property change", u.Step)
			}
		}
		if !slices.Contains(ups[0].Tags, "canary") || slices.Contains(ups[1].Tags, "canary") {
			t.Errorf("first update not the only canary: %+v", ups)
		}
		canaryDone, ok := finishedAt(evs, "Updating instance", ups[0].Step)
		if !ok || canaryDone > ups[1].Seq {
			t.Errorf("the second web instance started before the canary finished")
		}
		if len(started(evs, "Creating missing vms")) != 0 || len(started(evs, "Compiling packages")) != 0 {
			t.Errorf("a property change created VMs or compiled packages")
		}
		if !strings.Contains(res.Result, "2 updated") {
			t.Errorf("result %q", res.Result)
		}
		lbAnswers(t, "v2", 2)
		running(3)
	})

	t.Run("no-op deploy touches nothing", func(t *testing.T) {
		evs, res := deploy("v2", 2)
		if res.Result != "No changes: nothing to do." {
			t.Errorf("result %q, want the no-change message", res.Result)
		}
		for _, stage := range []string{"Creating missing vms", "Updating instance", "Deleting unneeded instances", "Compiling packages", "Running post-deploy"} {
			if n := len(started(evs, stage)); n != 0 {
				t.Errorf("no-op deploy: %d steps of %q", n, stage)
			}
		}
	})

	t.Run("scale web 2 to 3 to 1", func(t *testing.T) {
		evs, _ := deploy("v2", 3)
		if n := len(started(evs, "Creating missing vms")); n != 1 {
			t.Errorf("scaling to 3 created %d VMs, want 1", n)
		}
		names := lbAnswers(t, "v2", 3)
		if !slices.Equal(names, []string{"web/0", "web/1", "web/2"}) {
			t.Errorf("lb answered from %v after scaling to 3", names)
		}
		running(4)

		evs, _ = deploy("v2", 1)
		if n := len(started(evs, "Deleting unneeded instances")); n != 2 {
			t.Errorf("scaling to 1 deleted %d instances, want 2", n)
		}
		running(2)
		for i := 0; i < 10; i++ {
			if got := lbAnswers(t, "v2", 1); !slices.Equal(got, []string{"web/0"}) {
				t.Fatalf("after scaling to 1 the lb answered from %v", got)
			}
		}
	})

	t.Run("director killed mid-deploy converges on the next deploy", func(t *testing.T) {
		killed := killDuring(t, d.command("-n", "--json", "deploy", manifest, "-v", "web_version=v3", "-v", "web_instances=2"), "Creating missing vms", func() {
			// Aim at the CPI call: the intent is recorded, the VM being
			// made, the instance not yet pointing at it.
			time.Sleep(8 * time.Millisecond)
			d.stop(syscall.SIGKILL)
		})
		if !killed {
			t.Fatal("the deploy never reached VM creation")
		}
		d = startDirector(top, bin, data)
		evs, _ := deploy("v3", 2)
		for _, e := range started(evs, "Checking recorded state") {
			t.Logf("resolved: %s", e.Step)
		}
		lbAnswers(t, "v3", 2)
		running(3)
		vms := d.run("-d", "web", "vms")
		if strings.Contains(vms, "intent-") || strings.Contains(vms, "creating") || strings.Contains(vms, "deleting") {
			t.Errorf("intents left after the converging deploy:\n%s", vms)
		}
		if n := strings.Count(vms, "vm-"); n != 3 {
			t.Errorf("%d VMs recorded, want 3:\n%s", n, vms)
		}
	})

	t.Run("stop, start and recreate", func(t *testing.T) {
		d.run("-n", "-d", "web", "stop", "web/0")
		out := d.run("-d", "web", "instances")
		if strings.Count(out, "stopped") != 1 || strings.Count(out, "started") != 2 {
			t.Errorf("after stop web/0:\n%s", out)
		}
		// The lb takes the stopped instance out: only web/1 answers.
		time.Sleep(3 * time.Second)
		for i := 0; i < 5; i++ {
			if got := lbAnswers(t, "v3", 1); !slices.Equal(got, []string{"web/1"}) {
				t.Fatalf("with web/0 stopped the lb answered from %v", got)
			}
		}
		start := d.run("-n", "--json", "-d", "web", "start")
		evs, _ := parseTask(t, start)
		if ups := started(evs, "Updating instance"); len(ups) != 1 {
			t.Errorf("start touched %d instances, want only the stopped one", len(ups))
		}
		if n := len(started(evs, "Running post-deploy")); n != 0 {
			t.Errorf("start ran post-deploy on %d instances; post-deploy belongs to deploys", n)
		}
		lbAnswers(t, "v3", 2)

		before := d.run("-d", "web", "vms")
		d.run("-n", "-d", "web", "recreate", "lb")
		after := d.run("-d", "web", "vms")
		if before == after {
			t.Errorf("recreate lb changed no VM:\n%s", after)
		}
		lbAnswers(t, "v3", 2)
		running(3)
	})

	t.Run("cancelled deploy converges on the next deploy", func(t *testing.T) {
		cmd := d.command("-n", "--json", "deploy", manifest, "-v", "web_version=v4", "-v", "web_instances=3")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cancelled := false
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var e struct {
				event
				TaskID uint64 `json:"task_id"`
			}
			if json.Unmarshal(sc.Bytes(), &e) == nil && e.Stage == "Updating instance" && e.State == "started" && !cancelled {
				d.run("cancel-task", fmt.Sprint(e.TaskID))
				cancelled = true
			}
		}
		cmd.Wait()
		if !cancelled {
			t.Fatal("the deploy never reached the update")
		}
		evs, _ := deploy("v4", 3)
		if n := len(started(evs, "Updating instance")); n == 0 {
			t.Error("the deploy after the cancel updated nothing")
		}
		lbAnswers(t, "v4", 3)
		running(4)
	})

	t.Run("persistent disks survive recreation, grow in place and move when shrunk", func(t *testing.T) {
		ops := func(size int) string {
			f := filepath.Join(work, fmt.Sprintf("disk-%d.yml", size))
			body := fmt.Sprintf("- type: replace\n  path: /instance_groups/name=web/persistent_disk?\n  value: %d\n", size)
			if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			return f
		}
		disks := func() []string {
			es, _ := os.ReadDir(filepath.Join(data, "disks"))
			var out []string
			for _, e := range es {
				out = append(out, e.Name())
			}
			return out
		}
		deploy("v4", 3, "-o", ops(64))
		first := disks()
		if len(first) != 3 {
			t.Fatalf("%d disks after adding a persistent disk to 3 web instances, want 3", len(first))
		}
		// Data written on each disk, seen from the host (local disks are
		// directories).
		for _, cid := range first {
			if err := os.WriteFile(filepath.Join(data, "disks", cid, "data", "marker"), []byte(cid), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		d.run("-n", "-d", "web", "recreate", "web/0")
		if got := disks(); !slices.Equal(got, first) {
			t.Errorf("recreate changed the disks: %v, want %v", got, first)
		}
		lbAnswers(t, "v4", 3)

		// The local CPI's Info has ResizeDisk: a bigger disk is the same
		// disk, resized, its data in place.
		deploy("v4", 3, "-o", ops(128))
		if got := disks(); !slices.Equal(got, first) {
			t.Errorf("growing the disks changed them: %v, want %v resized", got, first)
		}
		for _, cid := range first {
			var rec struct {
				SizeMB int `json:"size_mb"`
			}
			raw, err := os.ReadFile(filepath.Join(data, "disks", cid, "disk.json"))
			if err == nil {
				err = json.Unmarshal(raw, &rec)
			}
			if err != nil || rec.SizeMB != 128 {
				t.Errorf("disk %s after growing: %s (%v), want 128 MB", cid, raw, err)
			}
			if raw, err := os.ReadFile(filepath.Join(data, "disks", cid, "data", "marker")); err != nil || string(raw) != cid {
				t.Errorf("disk %s lost its data when it grew: %q %v", cid, raw, err)
			}
		}
		lbAnswers(t, "v4", 3)

		// A smaller disk cannot be resized: a new one, the data moved.
		deploy("v4", 3, "-o", ops(96))
		var moved int
		for _, cid := range disks() {
			if slices.Contains(first, cid) {
				continue
			}
			raw, err := os.ReadFile(filepath.Join(data, "disks", cid, "data", "marker"))
			if err != nil {
				t.Errorf("new disk %s lacks the data of the old one: %v", cid, err)
				continue
			}
			if !slices.Contains(first, string(raw)) {
				t.Errorf("new disk %s holds %q", cid, raw)
			}
			moved++
		}
		if moved != 3 {
			t.Errorf("%d disks replaced by a shrink, want 3 (disks now %v)", moved, disks())
		}
		lbAnswers(t, "v4", 3)
		running(4)
	})

	t.Run("delete-deployment leaves nothing", func(t *testing.T) {
		d.run("-n", "-d", "web", "delete-deployment")
		running(0)
		if ds, _ := os.ReadDir(filepath.Join(data, "disks")); len(ds) != 0 {
			t.Errorf("%d disks left", len(ds))
		}
		if ps := processesUnder(filepath.Join(data, "vms")); len(ps) != 0 {
			t.Errorf("processes left:\n%s", strings.Join(ps, "\n"))
		}
		if out := d.run("deployments"); !strings.Contains(out, "0 deployments") {
			t.Errorf("deployments after delete:\n%s", out)
		}
	})
}
