package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func sh(name, script string) Process {
	return Process{Name: name, Executable: "/bin/sh", Args: []string{"-c", script}}
}

func hasSeq(states []State, seq ...State) bool {
	i := 0
	for _, s := range states {
		if i < len(seq) && s == seq[i] {
			i++
		}
	}
	return i == len(seq)
}

// A process that crashes is reported failing, restarted, and running again.
func TestCrashedProcessIsRestarted(t *testing.T) {
	t.Parallel()
	sup, rec := newSupervisor(t, Config{})
	ctx := testContext(t)
	dir := t.TempDir()
	counter := filepath.Join(dir, "runs")
	// Crashes on its first two runs, then stays up.
	p := sh("flaky", fmt.Sprintf(`n=$(cat %[1]s 2>/dev/null || echo 0); echo $((n+1)) > %[1]s
if [ "$n" -lt 2 ]; then echo "crash $n" >&2; exit 7; fi
echo up; exec sleep 1000`, counter))
	if err := sup.Start(ctx, "job", []Process{p}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "flaky", "running after two crashes", func(s []State) bool {
		return hasSeq(s, StateRunning, StateFailing, StateRunning, StateFailing, StateRunning)
	})
	if err := sup.Wait(ctx, "job", StateRunning); err != nil {
		t.Fatal(err)
	}
	st, _ := sup.JobStatus("job")
	ps := st.Processes[0]
	if ps.Restarts != 2 || ps.State != StateRunning || ps.PID == 0 || ps.LastError != "exited with status 7" {
		t.Errorf("status after restarts: %+v", ps)
	}
	var failing []Event
	for _, e := range rec.eventsOf("flaky") {
		if e.To == StateFailing {
			failing = append(failing, e)
		}
	}
	if len(failing) != 2 || failing[0].Reason != "exited with status 7" || failing[0].JobState != StateFailing {
		t.Errorf("failing events: %+v", failing)
	}
	waitFileContains(t, counter, "3")
}

// The delay before each restart doubles from MinBackoff up to MaxBackoff.
func TestRestartBackoffGrowsAndIsCapped(t *testing.T) {
	t.Parallel()
	minB, maxB := 40*time.Millisecond, 160*time.Millisecond
	sup, rec := newSupervisor(t, Config{MinBackoff: minB, MaxBackoff: maxB})
	ctx := testContext(t)
	if err := sup.Start(ctx, "job", []Process{sh("crasher", "exit 1")}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "crasher", "six crashes", func(s []State) bool {
		n := 0
		for _, st := range s {
			if st == StateFailing {
				n++
			}
		}
		return n >= 6
	})
	if err := sup.Stop(ctx, "job"); err != nil {
		t.Fatal(err)
	}
	// From each crash (→ failing) to the next start (→ running) at least the
	// backoff passed: 40, 80, 160, 160, 160 ms.
	evs := rec.eventsOf("crasher")
	var gaps []time.Duration
	for i := 1; i < len(evs); i++ {
		if evs[i-1].To == StateFailing && evs[i].To == StateRunning {
			gaps = append(gaps, evs[i].Time.Sub(evs[i-1].Time))
		}
	}
	if len(gaps) < 5 {
		t.Fatalf("gaps %v", gaps)
	}
	want := minB
	for i, g := range gaps[:5] {
		if g < want {
			t.Errorf("restart %d came after %s, before its backoff %s", i+1, g, want)
		}
		want = min(want*2, maxB)
	}
	st, _ := sup.JobStatus("job")
	if st.State != StateStopped || st.Processes[0].PID != 0 {
		t.Errorf("after stop: %+v", st)
	}
}

// The restart delay doubles from min to max and is reset by a stable run.
func TestBackoffPolicy(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	b := newBackoff(10*ms, 50*ms, time.Second)
	var got []time.Duration
	for _, ran := range []time.Duration{0, 0, ms, 0, 0, 2 * time.Second, 0, 999 * ms} {
		got = append(got, b.delay(ran))
	}
	want := []time.Duration{10 * ms, 20 * ms, 40 * ms, 50 * ms, 50 * ms, 10 * ms, 20 * ms, 40 * ms}
	if !slices.Equal(got, want) {
		t.Errorf("delays %v, want %v", got, want)
	}
}

// Readiness gates running: a TCP check passes only once the port is open.
func TestReadinessTCPGatesRunning(t *testing.T) {
	t.Parallel()
	sup, rec := newSupervisor(t, Config{})
	ctx := testContext(t)
	addr := freeAddr(t)
	gate := filepath.Join(t.TempDir(), "gate")
	p := helperProcess(t, "tcp", "tcp", addr, gate)
	p.Readiness = &Readiness{TCP: addr, Interval: 20 * time.Millisecond, Timeout: time.Second}
	if err := sup.Start(ctx, "job", []Process{p}); err != nil {
		t.Fatal(err)
	}
	assertStaysStarting(t, sup, rec, "job", "tcp")
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := sup.Wait(ctx, "job", StateRunning); err != nil {
		t.Fatal(err)
	}
	rec.expect(t, "tcp", StateStarting, StateRunning)
}

// assertStaysStarting checks that the process is starting and stays so
// while several readiness checks fail.
func assertStaysStarting(t *testing.T, sup *Supervisor, rec *recorder, job, process string) {
	t.Helper()
	rec.waitFor(t, process, "starting", func(s []State) bool { return slices.Contains(s, StateStarting) })
	time.Sleep(200 * time.Millisecond) // ten check intervals
	st, _ := sup.JobStatus(job)
	if st.State != StateStarting {
		t.Fatalf("job %s is %s before the check can pass; want starting (%v)", job, st.State, rec.transitions(process))
	}
}

// Readiness gates running: an HTTP check passes only on the wanted status.
func TestReadinessHTTPStatus(t *testing.T) {
	t.Parallel()
	sup, rec := newSupervisor(t, Config{ReadinessFailures: 2})
	ctx := testContext(t)
	addr := freeAddr(t)
	gate := filepath.Join(t.TempDir(), "gate")
	p := helperProcess(t, "web", "http", addr, gate)
	p.Readiness = &Readiness{HTTP: &HTTPCheck{URL: "http://" + addr + "/health", Status: 200}, Interval: 20 * time.Millisecond, Timeout: time.Second}
	if err := sup.Start(ctx, "job", []Process{p}); err != nil {
		t.Fatal(err)
	}
	assertStaysStarting(t, sup, rec, "job", "web") // answers 503
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := sup.Wait(ctx, "job", StateRunning); err != nil {
		t.Fatal(err)
	}
	// Once running, a check that keeps failing makes it failing (without
	// restarting it), and passing again makes it running.
	pid := mustStatus(t, sup, "job").Processes[0].PID
	if err := os.Remove(gate); err != nil {
		t.Fatal(err)
	}
	if err := sup.Wait(ctx, "job", StateFailing); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "web", "failing", func(s []State) bool { return s[len(s)-1] == StateFailing })
	evs := rec.eventsOf("web")
	if last := evs[len(evs)-1]; !strings.Contains(last.Reason, "status 503, want 200") {
		t.Errorf("failing reason %q", last.Reason)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := sup.Wait(ctx, "job", StateRunning); err != nil {
		t.Fatal(err)
	}
	st := mustStatus(t, sup, "job").Processes[0]
	if st.PID != pid || st.Restarts != 0 {
		t.Errorf("readiness failure restarted the process: %+v (pid was %d)", st, pid)
	}
}

func mustStatus(t *testing.T, sup *Supervisor, job string) JobStatus {
	t.Helper()
	st, ok := sup.JobStatus(job)
	if !ok {
		t.Fatalf("job %s unknown", job)
	}
	return st
}

// Readiness gates running: an exec check passes when the command exits 0;
// a process not ready within the start grace is failing until it is.
func TestReadinessExecAndStartGrace(t *testing.T) {
	t.Parallel()
	sup, rec := newSupervisor(t, Config{StartGrace: 100 * time.Millisecond})
	ctx := testContext(t)
	gate := filepath.Join(t.TempDir(), "gate")
	p := sh("worker", "exec sleep 1000")
	p.Env = map[string]string{"GATE": gate}
	p.Readiness = &Readiness{Exec: []string{"sh", "-c", `test -f "$GATE"`}, Interval: 20 * time.Millisecond, Timeout: time.Second}
	if err := sup.Start(ctx, "job", []Process{p}); err != nil {
		t.Fatal(err)
	}
	if err := sup.Wait(ctx, "job", StateFailing); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := sup.Wait(ctx, "job", StateRunning); err != nil {
		t.Fatal(err)
	}
	rec.expect(t, "worker", StateStarting, StateFailing, StateRunning)
	if got := mustStatus(t, sup, "job").Processes[0]; got.Restarts != 0 || !strings.Contains(got.LastError, "not ready") {
		t.Errorf("status %+v", got)
	}
}

// A job's state aggregates its processes: one starting process keeps the
// job starting while the other is running.
func TestJobStateAggregates(t *testing.T) {
	t.Parallel()
	sup, rec := newSupervisor(t, Config{})
	ctx := testContext(t)
	gate := filepath.Join(t.TempDir(), "gate")
	slow := sh("slow", "exec sleep 1000")
	slow.Readiness = &Readiness{Exec: []string{"/bin/sh", "-c", "test -f " + gate}, Interval: 20 * time.Millisecond, Timeout: time.Second}
	if err := sup.Start(ctx, "job", []Process{sh("fast", "exec sleep 1000"), slow}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "fast", "running", func(s []State) bool { return slices.Contains(s, StateRunning) })
	if st := mustStatus(t, sup, "job"); st.State != StateStarting {
		t.Errorf("job with one starting process is %s", st.State)
	}
	os.WriteFile(gate, nil, 0o644)
	if err := sup.Wait(ctx, "job", StateRunning); err != nil {
		t.Fatal(err)
	}
	if err := sup.Stop(ctx, "job"); err != nil {
		t.Fatal(err)
	}
	st := mustStatus(t, sup, "job")
	if st.State != StateStopped {
		t.Errorf("after stop: %s", st.State)
	}
	for _, p := range st.Processes {
		if p.State != StateStopped || p.PID != 0 {
			t.Errorf("process after stop: %+v", p)
		}
	}
}

// Stop sends the shutdown signal, waits the shutdown timeout, then kills:
// a process that ignores TERM is killed only after the timeout.
func TestStopKillsAfterTimeout(t *testing.T) {
	t.Parallel()
	logDir := t.TempDir()
	sup, rec := newSupervisor(t, Config{LogDir: logDir})
	ctx := testContext(t)
	p := helperProcess(t, "stubborn", "ignore-term")
	p.Shutdown = Shutdown{Signal: syscall.SIGTERM, Timeout: 700 * time.Millisecond}
	if err := sup.Start(ctx, "job", []Process{p}); err != nil {
		t.Fatal(err)
	}
	stdout := filepath.Join(logDir, "job", "stubborn.stdout.log")
	waitFileContains(t, stdout, "ready")
	pid := mustStatus(t, sup, "job").Processes[0].PID
	begin := time.Now()
	if err := sup.Stop(ctx, "job"); err != nil {
		t.Fatal(err)
	}
	took := time.Since(begin)
	if took < p.Shutdown.Timeout {
		t.Errorf("process killed after %s, before its shutdown timeout %s", took, p.Shutdown.Timeout)
	}
	waitFileContains(t, stdout, "TERM received")
	waitDead(t, pid)
	rec.expect(t, "stubborn", StateStarting, StateRunning, StateStopped)
}

// A process that honours TERM stops without waiting for the timeout, and
// its whole process group goes with it.
func TestStopGracefulAndProcessGroup(t *testing.T) {
	t.Parallel()
	sup, _ := newSupervisor(t, Config{})
	ctx := testContext(t)
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	p := sh("parent", fmt.Sprintf("sleep 1000 & echo $! > %s; wait", pidFile))
	p.Shutdown = Shutdown{Signal: syscall.SIGTERM, Timeout: time.Hour}
	if err := sup.Start(ctx, "job", []Process{p}); err != nil {
		t.Fatal(err)
	}
	child := waitPidFile(t, pidFile)
	parent := mustStatus(t, sup, "job").Processes[0].PID
	stopCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := sup.Stop(stopCtx, "job"); err != nil {
		t.Fatalf("stop of a process that honours TERM: %v", err)
	}
	for _, pid := range []int{parent, child} {
		waitDead(t, pid)
	}
}

// When the main process crashes, what it left in its process group is
// killed before the restart.
func TestCrashKillsProcessGroup(t *testing.T) {
	t.Parallel()
	sup, rec := newSupervisor(t, Config{})
	ctx := testContext(t)
	dir := t.TempDir()
	p := sh("p", fmt.Sprintf(`sleep 1000 & echo $! > %s/child.$$; if [ -e %s/stay ]; then wait; fi; exit 1`, dir, dir))
	if err := sup.Start(ctx, "job", []Process{p}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "p", "a crash", func(s []State) bool { return slices.Contains(s, StateFailing) })
	os.WriteFile(filepath.Join(dir, "stay"), nil, 0o644)
	rec.waitFor(t, "p", "crash then a start", func(s []State) bool { return hasSeq(s, StateRunning, StateFailing, StateRunning) })
	matches, _ := filepath.Glob(filepath.Join(dir, "child.*"))
	if len(matches) == 0 {
		t.Fatal("no child pid files")
	}
	waitDead(t, waitPidFile(t, matches[0]))
}

// Environment: a minimal base with PATH, the process's env over it, nothing
// inherited from the supervisor; workdir created; open files limit applied.
func TestEnvWorkdirAndLimits(t *testing.T) {
	t.Parallel()
	logDir := t.TempDir()
	sup, _ := newSupervisor(t, Config{LogDir: logDir, BaseEnv: map[string]string{"BASE": "b", "OVER": "base"}})
	ctx := testContext(t)
	work := filepath.Join(t.TempDir(), "data", "work")
	p := sh("env", "env | sort; pwd; echo done; exec sleep 1000")
	p.Env = map[string]string{"OVER": "proc", "LOG_LEVEL": "info"}
	p.Workdir = work
	p.Limits.OpenFiles = 1234
	if err := sup.Start(ctx, "job", []Process{p}); err != nil {
		t.Fatal(err)
	}
	out := waitFileContains(t, filepath.Join(logDir, "job", "env.stdout.log"), "done")
	for _, want := range []string{"PATH=" + DefaultPath, "BASE=b", "OVER=proc", "LOG_LEVEL=info", work} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "HOME=") || strings.Contains(out, "OVER=base") {
		t.Errorf("environment leaked:\n%s", out)
	}
	pid := mustStatus(t, sup, "job").Processes[0].PID
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Skip("no /proc:", err)
	}
	for _, line := range strings.Split(string(limits), "\n") {
		if strings.HasPrefix(line, "Max open files") {
			if f := strings.Fields(line); len(f) < 5 || f[3] != "1234" || f[4] != "1234" {
				t.Errorf("limit line %q, want 1234 1234", line)
			}
		}
	}
}

// Output goes to <log dir>/<job>/<process>.stdout.log and .stderr.log,
// rotated by size, keeping LogKeep old files.
func TestLogsWrittenAndRotated(t *testing.T) {
	t.Parallel()
	logDir := t.TempDir()
	sup, _ := newSupervisor(t, Config{LogDir: logDir, LogMaxBytes: 1000, LogKeep: 2})
	ctx := testContext(t)
	// 40 lines of 101 bytes on stdout: about 4 files' worth. One line on stderr.
	p := sh("chatty", `echo oops >&2; i=0; while [ $i -lt 40 ]; do printf '%0100d\n' $i; i=$((i+1)); done; echo END; exec sleep 1000`)
	if err := sup.Start(ctx, "job", []Process{p}); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(logDir, "job", "chatty.stdout.log")
	waitFileContains(t, base, "END")
	if got := waitFileContains(t, filepath.Join(logDir, "job", "chatty.stderr.log"), "oops"); got != "oops\n" {
		t.Errorf("stderr log %q", got)
	}
	for _, name := range []string{base, base + ".1", base + ".2"} {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > 1000 || fi.Size() == 0 {
			t.Errorf("%s has %d bytes", name, fi.Size())
		}
	}
	if _, err := os.Stat(base + ".3"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s.3 should not be kept: %v", base, err)
	}
	// The newest rotated file ends where the current one begins.
	older, _ := os.ReadFile(base + ".1")
	lines := strings.Split(strings.TrimSpace(string(older)), "\n")
	last, _ := strconv.Atoi(lines[len(lines)-1])
	cur, _ := os.ReadFile(base)
	if !strings.HasPrefix(string(cur), fmt.Sprintf("%0100d\n", last+1)) {
		t.Errorf("current log does not continue %s.1 (last line %d): %.40q", base, last, cur)
	}
}

// Status reports pid, uptime and usage of running processes.
func TestStatusReportsUsage(t *testing.T) {
	t.Parallel()
	sup, _ := newSupervisor(t, Config{})
	ctx := testContext(t)
	if err := sup.Start(ctx, "b-job", []Process{sh("idle", "exec sleep 1000")}); err != nil {
		t.Fatal(err)
	}
	if err := sup.Start(ctx, "a-job", nil); err != nil {
		t.Fatal(err)
	}
	if err := sup.Wait(ctx, "b-job", StateRunning); err != nil {
		t.Fatal(err)
	}
	all := sup.Status()
	if len(all) != 2 || all[0].Name != "a-job" || all[0].State != StateRunning || all[1].Name != "b-job" {
		t.Fatalf("status %+v", all)
	}
	// Usage is sampled from /proc: right after exec the new image may not
	// show a resident set yet, so wait (bounded by ctx) for a sample that has one.
	p := all[1].Processes[0]
	for p.MemoryBytes == 0 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
		p = sup.Status()[1].Processes[0]
	}
	if p.PID == 0 || p.StartedAt.IsZero() || p.Uptime <= 0 || p.MemoryBytes == 0 {
		t.Errorf("process status %+v", p)
	}
	if err := sup.Stop(ctx, "a-job"); err != nil {
		t.Fatal(err)
	}
	if st := mustStatus(t, sup, "a-job"); st.State != StateStopped {
		t.Errorf("job without processes after stop: %s", st.State)
	}
}

// Start is idempotent for the same processes, restarts stopped ones, and
// replaces changed ones.
func TestStartIdempotentRestartAndReplace(t *testing.T) {
	t.Parallel()
	sup, rec := newSupervisor(t, Config{})
	ctx := testContext(t)
	procs := []Process{sh("a", "exec sleep 1000")}
	if err := sup.Start(ctx, "job", procs); err != nil {
		t.Fatal(err)
	}
	if err := sup.Wait(ctx, "job", StateRunning); err != nil {
		t.Fatal(err)
	}
	pid := mustStatus(t, sup, "job").Processes[0].PID
	if err := sup.Start(ctx, "job", procs); err != nil {
		t.Fatal(err)
	}
	if got := mustStatus(t, sup, "job").Processes[0].PID; got != pid {
		t.Errorf("same processes restarted: pid %d → %d", pid, got)
	}
	if err := sup.Stop(ctx, "job"); err != nil {
		t.Fatal(err)
	}
	if err := sup.Start(ctx, "job", procs); err != nil {
		t.Fatal(err)
	}
	if err := sup.Wait(ctx, "job", StateRunning); err != nil {
		t.Fatal(err)
	}
	if got := mustStatus(t, sup, "job").Processes[0].PID; got == pid || got == 0 {
		t.Errorf("stopped job not started again: pid %d", got)
	}
	if err := sup.Start(ctx, "job", []Process{sh("b", "exec sleep 1000")}); err != nil {
		t.Fatal(err)
	}
	if err := sup.Wait(ctx, "job", StateRunning); err != nil {
		t.Fatal(err)
	}
	st := mustStatus(t, sup, "job")
	if len(st.Processes) != 1 || st.Processes[0].Name != "b" {
		t.Errorf("replaced job: %+v", st)
	}
	rec.expect(t, "a", StateStarting, StateRunning, StateStopped, StateStarting, StateRunning, StateStopped)
	if err := sup.Remove(ctx, "job"); err != nil {
		t.Fatal(err)
	}
	if _, ok := sup.JobStatus("job"); ok {
		t.Error("removed job still known")
	}
	if err := sup.Stop(ctx, "job"); !errors.Is(err, ErrUnknownJob) {
		t.Errorf("stop of removed job: %v", err)
	}
}

// A missing executable is failing and retried, not a Start error.
func TestMissingExecutableIsFailing(t *testing.T) {
	t.Parallel()
	sup, rec := newSupervisor(t, Config{})
	ctx := testContext(t)
	if err := sup.Start(ctx, "job", []Process{{Name: "ghost", Executable: "no-such-program"}}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "ghost", "failing", func(s []State) bool { return slices.Contains(s, StateFailing) })
	evs := rec.eventsOf("ghost")
	if evs[1].To != StateFailing || !strings.Contains(evs[1].Reason, `"no-such-program" not found in PATH`) {
		t.Errorf("reason %q", evs[0].Reason)
	}
}

func TestStartRejectsBadInput(t *testing.T) {
	t.Parallel()
	sup, _ := newSupervisor(t, Config{})
	ctx := testContext(t)
	for _, c := range []struct {
		job   string
		procs []Process
		want  string
	}{
		{"../x", nil, "invalid job name"},
		{"j", []Process{{Name: "a", Executable: "bin/a"}}, "must be absolute or a bare command name"},
		{"j", []Process{{Name: "a", Executable: "/a"}, {Name: "a", Executable: "/a"}}, "used twice"},
		{"j", []Process{{Name: "a", Executable: "/a", Readiness: &Readiness{}}}, "exactly one of"},
		{"j", []Process{{Name: "a", Executable: "/a", Env: map[string]string{"A=B": "c"}}}, "not a valid environment variable name"},
	} {
		if err := sup.Start(ctx, c.job, c.procs); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Start(%q, %+v) = %v, want %q", c.job, c.procs, err, c.want)
		}
	}
	if _, err := New(nil, Config{LogDir: "relative"}); err == nil {
		t.Error("relative log dir accepted")
	}
}

// After Close every process is stopped and Start is refused.
func TestCloseStopsEverything(t *testing.T) {
	t.Parallel()
	sup, _ := newSupervisor(t, Config{})
	ctx := testContext(t)
	if err := sup.Start(ctx, "one", []Process{sh("a", "exec sleep 1000")}); err != nil {
		t.Fatal(err)
	}
	if err := sup.Start(ctx, "two", []Process{sh("b", "exec sleep 1000"), sh("c", "exec sleep 1000")}); err != nil {
		t.Fatal(err)
	}
	for _, job := range []string{"one", "two"} {
		if err := sup.Wait(ctx, job, StateRunning); err != nil {
			t.Fatal(err)
		}
	}
	var pids []int
	for _, j := range sup.Status() {
		for _, p := range j.Processes {
			pids = append(pids, p.PID)
		}
	}
	if err := sup.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		waitDead(t, pid)
	}
	if err := sup.Start(ctx, "three", nil); !errors.Is(err, ErrClosed) {
		t.Errorf("start after close: %v", err)
	}
}

// processAlive reports whether pid is a live (not zombie) process.
func processAlive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}

// waitDead waits (test deadline 10s) for pid to be gone: a SIGKILL is
// delivered asynchronously.
func waitDead(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			t.Errorf("process %d still alive", pid)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitPidFile(t *testing.T, path string) int {
	t.Helper()
	out := waitFileContains(t, path, "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("pid file %s: %q", path, out)
	}
	return pid
}

// waitFileContains waits (test deadline 20s) until path contains s and
// returns its content.
func waitFileContains(t *testing.T, path, s string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		data, _ := os.ReadFile(path)
		if strings.Contains(string(data), s) {
			return string(data)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not contain %q: %q", path, s, data)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A process left running by a previous supervisor (recorded in its pid
// file) is stopped before the process is started again; a pid file naming
// a pid that now belongs to another process is ignored.
func TestLeftoverProcessIsStopped(t *testing.T) {
	t.Parallel()
	runDir := t.TempDir()
	// The leftover: started by "another agent", in its own process group.
	old := exec.Command("/bin/sh", "-c", "exec sleep 1000")
	old.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { old.Process.Kill() })
	go old.Wait() //nolint:errcheck // reaps it once killed
	start, ok := procStartTime(old.Process.Pid)
	if !ok {
		t.Skip("no /proc")
	}
	os.MkdirAll(filepath.Join(runDir, "job"), 0o755)
	os.WriteFile(filepath.Join(runDir, "job", "web.pid"), []byte(fmt.Sprintf("%d %d\n", old.Process.Pid, start)), 0o644)
	// A stale pid file: right pid, wrong start time (the pid was reused).
	bystander := exec.Command("/bin/sh", "-c", "exec sleep 1000")
	if err := bystander.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bystander.Process.Kill(); bystander.Wait() })
	os.WriteFile(filepath.Join(runDir, "job", "other.pid"), []byte(fmt.Sprintf("%d 1\n", bystander.Process.Pid)), 0o644)

	sup, _ := newSupervisor(t, Config{RunDir: runDir})
	ctx := testContext(t)
	if err := sup.Start(ctx, "job", []Process{sh("web", "exec sleep 1000"), sh("other", "exec sleep 1000")}); err != nil {
		t.Fatal(err)
	}
	if err := sup.Wait(ctx, "job", StateRunning); err != nil {
		t.Fatal(err)
	}
	waitDead(t, old.Process.Pid)
	if !processAlive(bystander.Process.Pid) {
		t.Error("a process named by a stale pid file was killed")
	}
	// The new process is recorded.
	pid := mustStatus(t, sup, "job").Processes[0].PID
	data, _ := os.ReadFile(filepath.Join(runDir, "job", "web.pid"))
	if !strings.HasPrefix(string(data), strconv.Itoa(pid)+" ") {
		t.Errorf("pid file %q, process %d", data, pid)
	}
	if err := sup.Stop(ctx, "job"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(runDir, "job", "web.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid file left after stop: %v", err)
	}
}

// The start grace only concerns processes with a readiness check.
func TestStartGraceIgnoresProcessesWithoutCheck(t *testing.T) {
	t.Parallel()
	sup, rec := newSupervisor(t, Config{StartGrace: 20 * time.Millisecond})
	ctx := testContext(t)
	if err := sup.Start(ctx, "job", []Process{sh("plain", "exec sleep 1000")}); err != nil {
		t.Fatal(err)
	}
	if err := sup.Wait(ctx, "job", StateRunning); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // ten start graces
	if st := mustStatus(t, sup, "job"); st.State != StateRunning {
		t.Errorf("process without a check is %s after the start grace (%v)", st.State, rec.transitions("plain"))
	}
}

// A log directory that cannot be created does not keep a process from
// running.
func TestUnwritableLogDirStillRuns(t *testing.T) {
	t.Parallel()
	blocker := filepath.Join(t.TempDir(), "file")
	os.WriteFile(blocker, nil, 0o644)
	sup, _ := newSupervisor(t, Config{LogDir: blocker})
	ctx := testContext(t)
	if err := sup.Start(ctx, "job", []Process{sh("p", "echo hello; exec sleep 1000")}); err != nil {
		t.Fatal(err)
	}
	if err := sup.Wait(ctx, "job", StateRunning); err != nil {
		t.Fatal(err)
	}
}

// An https readiness check accepts a server whose certificate it cannot
// verify (a probe, like Kubernetes'), and compares the status.
func TestReadinessHTTPS(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	sup, _ := newSupervisor(t, Config{})
	ctx := testContext(t)
	p := sh("p", "exec sleep 1000")
	p.Readiness = &Readiness{HTTP: &HTTPCheck{URL: srv.URL + "/health", Status: 204}, Interval: 20 * time.Millisecond, Timeout: time.Second}
	if err := sup.Start(ctx, "job", []Process{p}); err != nil {
		t.Fatal(err)
	}
	if err := sup.Wait(ctx, "job", StateRunning); err != nil {
		t.Fatal(err)
	}
}

// Stop bounded by a context that ends first returns its error; the process
// is still stopped, and Close waits for it.
func TestStopContextEndsFirst(t *testing.T) {
	t.Parallel()
	logDir := t.TempDir()
	sup, rec := newSupervisor(t, Config{LogDir: logDir})
	ctx := testContext(t)
	p := helperProcess(t, "stubborn", "ignore-term")
	p.Shutdown = Shutdown{Signal: syscall.SIGTERM, Timeout: 500 * time.Millisecond}
	if err := sup.Start(ctx, "job", []Process{p}); err != nil {
		t.Fatal(err)
	}
	waitFileContains(t, filepath.Join(logDir, "job", "stubborn.stdout.log"), "ready")
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := sup.Stop(short, "job"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("stop with a context shorter than the shutdown timeout: %v", err)
	}
	// The stop goes on: the process is killed after its timeout.
	rec.expect(t, "stubborn", StateStarting, StateRunning, StateStopped)
	if err := sup.Wait(ctx, "job", StateStopped); err != nil {
		t.Fatal(err)
	}
}

// CPU and memory are summed over the process group: here only a child
// the process forked uses CPU.
func TestStatusSumsProcessGroup(t *testing.T) {
	t.Parallel()
	sup, _ := newSupervisor(t, Config{})
	ctx := testContext(t)
	if err := sup.Start(ctx, "job", []Process{sh("p", "while :; do :; done & exec sleep 1000")}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		p := mustStatus(t, sup, "job").Processes[0]
		if p.CPU >= 50*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cpu of the group never reached 50ms: %+v", p)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := sup.Stop(ctx, "job"); err != nil {
		t.Fatal(err)
	}
}
