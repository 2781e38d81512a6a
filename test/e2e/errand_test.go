package e2e

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// errandRelease is a release of two jobs and no packages: server provides
// the link "db" (no processes), smoke consumes it and its bin/run prints
// the link's addresses, writes its pid to errand.pid in its working
// directory, sleeps and exits as its properties say; check is a job with
// a bin/run colocated on the server group.
var errandRelease = map[string]string{
	"config/final.yml": "name: errands\n",
	"jobs/server/spec": `name: server
templates:
  check.tmpl: bin/run
  secret.tmpl: config/secret
provides:
- name: db
  type: db
  properties: [port]
properties:
  port: {default: 5432}
  password: {default: none}
`,
	"jobs/server/templates/check.tmpl":  "#!/bin/sh\necho check on {{ spec.Name }}/{{ spec.Index }}\n",
	"jobs/server/templates/secret.tmpl": "{{ p \"password\" }}\n",
	"jobs/smoke/spec": `name: smoke
templates:
  run.tmpl: bin/run
consumes:
- name: db
  type: db
properties:
  exit_code: {default: 0}
  sleep: {default: 0}
`,
	"jobs/smoke/templates/run.tmpl": `#!/bin/sh
echo $$ > errand.pid
{{- range (link "db").Instances }}
echo "db at {{ .Address }}:{{ (link "db").P "port" }}"
{{- end }}
echo "smoke stderr line" >&2
sleep {{ p "sleep" }}
exit {{ p "exit_code" }}
`,
}

const errandManifest = `name: errands
releases:
- {name: errands, version: latest}
stemcells:
- {alias: default, os: linux, version: latest}
update: {canaries: 1, max_in_flight: 2, canary_watch_time: 1000-30000, update_watch_time: 1000-30000}
instance_groups:
- name: server
  azs: [z1]
  instances: 2
  vm_type: default
  stemcell: default
  networks: [{name: default}]
  jobs:
  - {name: server, release: errands, properties: {password: ((db_password))}}
- name: smoke
  lifecycle: errand
  azs: [z1]
  instances: 1
  vm_type: default
  stemcell: default
  networks: [{name: default}]
  jobs:
  - {name: smoke, release: errands}
- name: failing
  lifecycle: errand
  azs: [z1]
  instances: 1
  vm_type: default
  stemcell: default
  networks: [{name: default}]
  jobs:
  - {name: smoke, release: errands, properties: {exit_code: 3}}
- name: slow
  lifecycle: errand
  azs: [z1]
  instances: 1
  vm_type: default
  stemcell: default
  networks: [{name: default}]
  jobs:
  - {name: smoke, release: errands, properties: {sleep: 300}}
`

// TestErrands runs errands on the local CPI: the errand groups get no VM
// at deploy; run-errand creates the VM, runs bin/run with its link, shows
// its output and exits 0, deleting the VM after; a failing errand exits 1
// with its output; --keep-alive keeps the VM (and a second run reuses
// it); a colocated errand runs on the deployed instances; a run cancelled
// mid-way kills the errand and leaves no VM.
func TestErrands(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the director, agents and the local CPI")
	}
	bin := binaries(t)
	work := t.TempDir()
	data := filepath.Join(work, "data")
	t.Cleanup(func() { killAgents(data) })
	stemcell := filepath.Join(work, "local.tgz")
	if out, err := exec.Command(filepath.Join(bin, "director"), "create-stemcell", "--agent", filepath.Join(bin, "agent"), "--tarball", stemcell).CombinedOutput(); err != nil {
		t.Fatalf("create-stemcell: %v\n%s", err, out)
	}
	rel := filepath.Join(work, "release")
	for name, content := range errandRelease {
		p := filepath.Join(rel, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(rel, "packages"), 0o755)
	d := startDirector(t, bin, data)
	t.Cleanup(func() {
		if out, err := d.command("-n", "-d", "errands", "delete-deployment", "--force").CombinedOutput(); err != nil {
			t.Logf("cleanup: delete-deployment: %v\n%s", err, out)
		}
	})
	d.run("-n", "upload-release", rel)
	d.run("-n", "upload-stemcell", stemcell)
	prefix := fmt.Sprintf("127.%d.", 100+(os.Getpid()+37)%100)
	cc, err := os.ReadFile(filepath.Join(repoRoot(), "manifests", "local", "cloud-config.yml"))
	if err != nil {
		t.Fatal(err)
	}
	ccFile := filepath.Join(work, "cloud-config.yml")
	os.WriteFile(ccFile, []byte(strings.ReplaceAll(string(cc), "127.77.", prefix)), 0o644)
	d.run("-n", "update-cloud-config", ccFile)
	manifest := filepath.Join(work, "errands.yml")
	os.WriteFile(manifest, []byte(errandManifest), 0o644)
	const secret = "S3cret-e2e-Qx71Lm"
	d.deploy(manifest, "-v", "db_password="+secret)
	if got := vmDirs(t, data); len(got) != 2 {
		t.Fatalf("after deploy: %d VMs, want the 2 servers (errands get none): %v", len(got), got)
	}
	checkSecret(t, d, data, work, secret)

	runErrand := func(args ...string) (string, int) {
		t.Helper()
		out, err := d.command(append([]string{"-d", "errands", "run-errand"}, args...)...).CombinedOutput()
		code := 0
		if ee, ok := err.(interface{ ExitCode() int }); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}

	list := d.run("-d", "errands", "errands")
	for _, want := range []string{"smoke", "failing", "slow", "server"} {
		if !strings.Contains(list, want) {
			t.Errorf("errands lists no %s:\n%s", want, list)
		}
	}

	logsDir := filepath.Join(work, "errand-logs")
	os.MkdirAll(logsDir, 0o755)
	out, code := runErrand("smoke", "--download-logs", logsDir)
	if logs, _ := filepath.Glob(filepath.Join(logsDir, "errands.smoke.*.tgz")); len(logs) != 1 {
		t.Errorf("--download-logs saved %v, want one errands.smoke.*.tgz", logs)
	}
	if code != 0 || !strings.Contains(out, "db at "+prefix+"1.") || !strings.Contains(out, "smoke stderr line") || !strings.Contains(out, "exit code 0") {
		t.Errorf("run-errand smoke: exit %d\n%s", code, out)
	}
	if got := vmDirs(t, data); len(got) != 2 {
		t.Errorf("after run-errand smoke: %d VMs, want 2 (the errand's deleted): %v", len(got), got)
	}

	out, code = runErrand("failing")
	if code != 1 || !strings.Contains(out, "exit code 3") || !strings.Contains(out, "smoke stderr line") {
		t.Errorf("run-errand failing: exit %d, want 1 with the output\n%s", code, out)
	}
	if got := vmDirs(t, data); len(got) != 2 {
		t.Errorf("after a failed errand: %d VMs, want 2: %v", len(got), got)
	}

	out, code = runErrand("smoke", "--keep-alive")
	if code != 0 {
		t.Errorf("run-errand --keep-alive: exit %d\n%s", code, out)
	}
	kept := vmDirs(t, data)
	if len(kept) != 3 {
		t.Errorf("--keep-alive: %d VMs, want 3: %v", len(kept), kept)
	}
	out, code = runErrand("smoke")
	if code != 0 {
		t.Errorf("a run on the kept VM: exit %d\n%s", code, out)
	}
	if got := vmDirs(t, data); len(got) != 2 {
		t.Errorf("a run without --keep-alive after one with: %d VMs, want 2: %v", len(got), got)
	}

	out, code = runErrand("smoke", "--when-changed")
	if code != 0 || !strings.Contains(out, "skipped") {
		t.Errorf("run-errand --when-changed after a successful run of the same manifest: exit %d, want skipped\n%s", code, out)
	}

	out, code = runErrand("server")
	if code != 0 || !strings.Contains(out, "check on server/0") || !strings.Contains(out, "check on server/1") {
		t.Errorf("colocated errand on every server: exit %d\n%s", code, out)
	}
	out, code = runErrand("server", "--instance", "server/1")
	if code != 0 || !strings.Contains(out, "check on server/1") || strings.Contains(out, "check on server/0") {
		t.Errorf("colocated errand on server/1: exit %d\n%s", code, out)
	}

	// Cancel mid-run: the errand's process is killed, its VM deleted.
	cmd := d.command("-d", "errands", "run-errand", "slow")
	var slowOut syncBuffer
	cmd.Stdout, cmd.Stderr = &slowOut, &slowOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	deadline := time.Now().Add(2 * time.Minute)
	for pid == 0 && time.Now().Before(deadline) {
		filepath.WalkDir(filepath.Join(data, "vms"), func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.Name() == "errand.pid" {
				raw, _ := os.ReadFile(p)
				pid, _ = strconv.Atoi(strings.TrimSpace(string(raw)))
			}
			return nil
		})
		time.Sleep(200 * time.Millisecond)
	}
	if pid == 0 {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("the slow errand never started:\n%s", slowOut.String())
	}
	var tasks []struct {
		ID    uint64 `json:"id"`
		Type  string `json:"type"`
		State string `json:"state"`
	}
	json.Unmarshal([]byte(d.run("--json", "tasks")), &tasks)
	for _, tk := range tasks {
		if tk.Type == "run-errand" && tk.State == "processing" {
			d.run("cancel-task", fmt.Sprint(tk.ID))
		}
	}
	err = cmd.Wait()
	if err == nil {
		t.Errorf("a cancelled run-errand exited 0:\n%s", slowOut.String())
	}
	alive := func() bool {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		return err == nil && !strings.Contains(string(st), ") Z ") && syscall.Kill(pid, 0) == nil
	}
	for end := time.Now().Add(15 * time.Second); alive() && time.Now().Before(end); {
		time.Sleep(100 * time.Millisecond) // a killed process may take a moment to be reaped
	}
	if alive() {
		raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		t.Errorf("the cancelled errand's process %d (%q) still runs", pid, raw)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	if got := vmDirs(t, data); len(got) != 2 {
		t.Errorf("after a cancelled errand: %d VMs, want 2: %v", len(got), got)
	}
}

// checkSecret: a value given with -v at deploy (rendered into a job's
// config) is in no task's events or record, no audit event, not in the
// director's log, a backup, the state file or the variables list; only
// variables --reveal shows it, as a variable of type value.
func checkSecret(t *testing.T, d *director, data, work, secret string) {
	t.Helper()
	var where []string
	look := func(what, text string) {
		if strings.Contains(text, secret) {
			where = append(where, what)
		}
	}
	var tasks []struct {
		ID uint64 `json:"id"`
	}
	json.Unmarshal([]byte(d.run("--json", "tasks", "--recent=1000")), &tasks)
	if len(tasks) == 0 {
		t.Error("no tasks listed")
	}
	for _, tk := range tasks {
		out, _ := d.command("--json", "task", fmt.Sprint(tk.ID)).CombinedOutput()
		look(fmt.Sprintf("task %d", tk.ID), string(out))
	}
	look("audit events", d.run("--json", "events"))
	look("director log", d.logs.String())
	backup := filepath.Join(work, "backup.db")
	d.run("backup", backup)
	raw, _ := os.ReadFile(backup)
	look("backup", string(raw))
	raw, _ = os.ReadFile(filepath.Join(data, "state.db"))
	look("state file", string(raw))
	look("variables without --reveal", d.run("-d", "errands", "--json", "variables"))
	if len(where) > 0 {
		t.Errorf("the -v secret is in clear in: %v", where)
	}
	var vars []map[string]any
	if err := json.Unmarshal([]byte(d.run("-d", "errands", "--json", "variables", "--reveal")), &vars); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, v := range vars {
		if v["name"] == "/errands/db_password" && v["value"] == secret && v["created_at"] != nil {
			found = true
		}
	}
	if !found {
		t.Errorf("variables --reveal --json lacks /errands/db_password with its value: %v", vars)
	}
}
