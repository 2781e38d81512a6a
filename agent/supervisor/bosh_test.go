package supervisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseMonit(t *testing.T) {
	good := `# the web job
check process web
  with pidfile /var/vcap/sys/run/web/web.pid
  start program "/var/vcap/jobs/web/bin/ctl start" with timeout 60 seconds
  stop program "/var/vcap/jobs/web/bin/ctl stop"
  group vcap
  depends on db, cache

check process worker pidfile /var/vcap/sys/run/web/worker.pid
  start program = "/bin/sh -c 'exec worker'"
`
	procs, err := ParseMonit("web", "monit", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(procs) != 2 {
		t.Fatalf("processes %+v", procs)
	}
	w := procs[0]
	if w.Name != "web" || w.Monit.PidFile != "/var/vcap/sys/run/web/web.pid" || w.Monit.Start != "/var/vcap/jobs/web/bin/ctl start" ||
		w.Monit.Stop != "/var/vcap/jobs/web/bin/ctl stop" || w.Monit.StartTimeout != time.Minute || strings.Join(w.After, ",") != "db,cache" {
		t.Errorf("web = %+v %+v", w, w.Monit)
	}
	if procs[1].Monit.Start != "/bin/sh -c 'exec worker'" || procs[1].Monit.StartTimeout != DefaultMonitStartTimeout {
		t.Errorf("worker = %+v", procs[1].Monit)
	}
	if p, err := ParseMonit("errand", "monit", []byte("\n# nothing\n")); err != nil || len(p) != 0 {
		t.Errorf("empty monit: %v %v", p, err)
	}

	bad := []struct{ text, want string }{
		{"check process web\n  with pidfile /p\n  start program \"/x\"\n  if totalmem > 2 GB then alert\n", "monit:4: monit statement \"if\" is not supported"},
		{"check file cfg with path /etc/x\n", "monit:1: \"check\" before the first check process"},
		{"check process web\n  matching \"web\"\n", "monit:2: check process … matching is not supported"},
		{"check process web\n with pidfile /p\n start program \"/x\" as uid vcap and gid vcap\n", "monit:3: start program as uid/gid is not supported"},
		{"check process web\n with pidfile /p\n start program \"/x\" with timeout 3 cycles\n", "monit:3: timeouts in cycles"},
		{"check process web\n start program \"/x\"\n", "monit: web: check process has no pidfile"},
		{"check process web\n with pidfile relative.pid\n", "monit:2: pidfile \"relative.pid\" is not an absolute path"},
		{"check process web\n with pidfile /p\n start program /x\n", "monit:3: start program needs a quoted command"},
		{"check process web\n with pidfile /p\n start program \"/x\n", "monit:3: unterminated quoted string"},
		{"check process web\n with pidfile /p\n start program \"/x\"\n  mode manual\n", "monit:4: monit statement \"mode\""},
	}
	for _, c := range bad {
		_, err := ParseMonit("web", "monit", []byte(c.text))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseMonit(%q) = %v, want %q", c.text, err, c.want)
		}
	}
}

func TestParseBPM(t *testing.T) {
	text := `processes:
- name: web
  executable: /var/vcap/packages/web/bin/web
  args: [--port, "8080"]
  env: {LOG_LEVEL: debug}
  limits: {open_files: 4096, memory: 1G, processes: 50}
  ephemeral_disk: true
  persistent_disk: true
  additional_volumes:
  - path: /var/vcap/data/shared
    writable: true
  hooks: {pre_start: /var/vcap/jobs/web/bin/bpm-pre-start}
  shutdown_signal: INT
  capabilities: [NET_BIND_SERVICE]
- name: worker
  executable: /var/vcap/packages/web/bin/worker
  workdir: /var/vcap/data/web/work
`
	procs, err := ParseBPM("web", "/var/vcap", "config/bpm.yml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	w := procs[0]
	if w.Name != "web" || w.Executable != "/var/vcap/packages/web/bin/web" || strings.Join(w.Args, " ") != "--port 8080" ||
		w.Env["LOG_LEVEL"] != "debug" || w.Env["TMPDIR"] != "/var/vcap/data/web/tmp" || w.Limits.OpenFiles != 4096 ||
		w.Workdir != "/var/vcap/jobs/web" || w.PreStart != "/var/vcap/jobs/web/bin/bpm-pre-start" || w.Shutdown.Signal != syscall.SIGINT ||
		w.PidFile != "/var/vcap/sys/run/bpm/web/web.pid" {
		t.Errorf("web = %+v", w)
	}
	want := "/var/vcap/data/web/tmp /var/vcap/data/web /var/vcap/store/web /var/vcap/data/shared"
	if got := strings.Join(w.Dirs, " "); got != want {
		t.Errorf("dirs = %s, want %s", got, want)
	}
	if procs[1].Workdir != "/var/vcap/data/web/work" {
		t.Errorf("worker = %+v", procs[1])
	}
	bad := []struct{ text, want string }{
		{"processes: []\n", "processes: must be a non-empty list"},
		{"processes:\n- name: a\n  executable: bin/a\n", "config/bpm.yml:3: processes[0].executable: \"bin/a\" must be an absolute path"},
		{"processes:\n- name: a\n  executable: /a\n  additional_volumes: [{path: /etc}]\n", "processes[0].additional_volumes[0].path: \"/etc\" is outside"},
		{"processes:\n- name: a\n  executable: /a\n  unsafe: {privileged: true}\n", "processes[0].unsafe.privileged: is not supported"},
		{"processes:\n- name: a\n  executable: /a\n  limits: {memory: lots}\n", "processes[0].limits.memory: \"lots\" is not a size"},
		{"processes:\n- name: a\n  executable: /a\n  volumes: []\n", "processes[0].volumes: unknown field"},
	}
	for _, c := range bad {
		_, err := ParseBPM("web", "/var/vcap", "config/bpm.yml", []byte(c.text))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseBPM(%q) = %v, want %q", c.text, err, c.want)
		}
	}
}

// A monit process runs as monit runs it: the start program leaves a daemon
// whose pid is in the pidfile; the supervisor watches the pid, starts it
// again when it dies, waits for what it depends on, and stops it with the
// stop program.
func TestMonitProcessLifecycle(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sup, rec := newSupervisor(t, Config{})
	ctx := testContext(t)
	pid := filepath.Join(dir, "d.pid")
	stopped := filepath.Join(dir, "stopped")
	ctl := filepath.Join(dir, "ctl")
	script := fmt.Sprintf(`#!/bin/sh
case $1 in
start) sleep 1000 >/dev/null 2>&1 & echo $! > %[1]s ;;
stop) kill $(cat %[1]s); echo stopped >> %[2]s ;;
esac
`, pid, stopped)
	if err := os.WriteFile(ctl, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	monit := fmt.Sprintf("check process daemon\n  with pidfile %s\n  start program \"%s start\" with timeout 10 seconds\n  stop program \"%s stop\"\n  depends on first\n", pid, ctl, ctl)
	procs, err := ParseMonit("j", "monit", []byte(monit))
	if err != nil {
		t.Fatal(err)
	}
	if err := sup.Start(ctx, "j", procs); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if st := mustStatus(t, sup, "j"); st.State == StateRunning {
		t.Fatal("daemon running before the process it depends on")
	}
	first := sh("first", fmt.Sprintf(`trap 'echo first stopped >> %s; exit 0' TERM; while :; do sleep 0.05; done`, stopped))
	if err := sup.Start(ctx, "first", []Process{first}); err != nil {
		t.Fatal(err)
	}
	if err := sup.Wait(ctx, "j", StateRunning); err != nil {
		t.Fatal(err)
	}
	daemon := mustStatus(t, sup, "j").Processes[0].PID
	data, _ := os.ReadFile(pid)
	if strconv.Itoa(daemon) != strings.TrimSpace(string(data)) {
		t.Fatalf("status pid %d, pidfile %q", daemon, data)
	}
	// The daemon dies: the start program runs again.
	syscall.Kill(daemon, syscall.SIGKILL) //nolint:errcheck // test
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := mustStatus(t, sup, "j")
		if st.State == StateRunning && st.Processes[0].PID != daemon && st.Processes[0].PID != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not restarted: %+v (events %v)", st, rec)
		}
		time.Sleep(50 * time.Millisecond)
	}
	second := mustStatus(t, sup, "j").Processes[0].PID
	// Stopping everything stops the daemon before what it depends on.
	if err := sup.StopAll(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := procStartTime(second); ok {
		t.Errorf("daemon %d still alive after stop", second)
	}
	if b, err := os.ReadFile(stopped); err != nil || string(b) != "stopped\nfirst stopped\n" {
		t.Errorf("stop order: %q %v, want the daemon's stop program before first's exit", b, err)
	}
}

// A job directory declares its processes by processes.yml, bpm.yml or monit,
// in that order; an empty monit file runs nothing; a monit file that starts
// bpm without a bpm.yml is refused.
func TestLoadJob(t *testing.T) {
	write := func(dir string, files map[string]string) {
		for name, text := range files {
			p := filepath.Join(dir, name)
			os.MkdirAll(filepath.Dir(p), 0o755) //nolint:errcheck // test
			if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	bpmMonit := "check process web\n with pidfile /var/vcap/sys/run/bpm/web/web.pid\n start program \"/var/vcap/jobs/bpm/bin/bpm start web\"\n stop program \"/var/vcap/jobs/bpm/bin/bpm stop web\"\n"
	cases := []struct {
		name  string
		files map[string]string
		want  string // process names, or the error
	}{
		{"errand", map[string]string{"monit": "", "bin/run": "#!/bin/sh\n"}, ""},
		{"nothing", map[string]string{"bin/pre-start": "#!/bin/sh\n"}, ""},
		{"bpm via monit", map[string]string{"monit": bpmMonit, "config/bpm.yml": "processes:\n- name: web\n  executable: /bin/true\n"}, "web"},
		{"monit", map[string]string{"monit": "check process d\n with pidfile /p\n start program \"/x\"\n"}, "d"},
		{"bpm without bpm.yml", map[string]string{"monit": bpmMonit}, "started by bpm but the job has no config/bpm.yml"},
		{"unsupported monit", map[string]string{"monit": "check host x with address 1.2.3.4\n"}, "monit:1"},
		{"unrendered", map[string]string{"monit": "<% if p('x') %>check process d<% end %>\n"}, "still holds ERB tags"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			write(dir, c.files)
			procs, err := LoadJob("/var/vcap", "web", dir)
			var names []string
			for _, p := range procs {
				names = append(names, p.Name)
			}
			got := strings.Join(names, ",")
			if err != nil {
				got = err.Error()
			}
			if (err == nil && got != c.want) || (err != nil && (c.want == "" || !strings.Contains(got, c.want))) {
				t.Fatalf("LoadJob = %q, want %q", got, c.want)
			}
		})
	}
	if _, err := LoadJob("/var/vcap", "web", filepath.Join(t.TempDir(), "absent")); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
}
