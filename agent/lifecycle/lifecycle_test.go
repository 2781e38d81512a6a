package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

type fixture struct {
	jobs, logs string
	runner     *Runner
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	base := t.TempDir()
	f := &fixture{jobs: filepath.Join(base, "jobs"), logs: filepath.Join(base, "sys", "log")}
	cfg.JobsDir, cfg.LogDir = f.jobs, f.logs
	r, err := New(slog.New(slog.NewTextHandler(testWriter{t}, nil)), cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.runner = r
	if err := os.MkdirAll(f.jobs, 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

// script installs jobs/<job>/bin/<name> with a /bin/sh body.
func (f *fixture) script(t *testing.T, job string, name Script, body string) {
	t.Helper()
	dir := filepath.Join(f.jobs, job, "bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, string(name)), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) job(t *testing.T, job string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(f.jobs, job), 0o755); err != nil {
		t.Fatal(err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Scripts of all jobs run in parallel; a job without the script is
// skipped; a failing script's error names the job and shows its output.
func TestRunAllJobsInParallel(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{Env: map[string]string{"DEPLOYMENT": "d1"}})
	rendezvous := t.TempDir()
	// a and b each wait for the other to have started: they can only both
	// succeed when they run at the same time.
	for _, pair := range [][2]string{{"a", "b"}, {"b", "a"}} {
		f.script(t, pair[0], PreStart, fmt.Sprintf(`touch %[1]s/%[2]s
i=0; while [ ! -e %[1]s/%[3]s ]; do i=$((i+1)); [ $i -gt 500 ] && exit 9; sleep 0.02; done
echo "pre-start of %[2]s in $(pwd) with $DEPLOYMENT $PATH"; echo "to stderr" >&2`, rendezvous, pair[0], pair[1]))
	}
	f.job(t, "c") // no script
	f.script(t, "d", PreStart, `echo "checking disk"; echo "disk not ready" >&2; exit 3`)

	results, err := f.runner.Run(testContext(t), PreStart, nil)
	if err == nil {
		t.Fatal("no error from a failing pre-start")
	}
	var se *ScriptError
	if !errors.As(err, &se) || se.Job != "d" || se.ExitCode != 3 {
		t.Fatalf("error %v (%#v)", err, se)
	}
	for _, want := range []string{"job d: pre-start: exited with status 3", "checking disk", "disk not ready"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "job a") || strings.Contains(err.Error(), "job b") {
		t.Errorf("error mentions succeeding jobs: %v", err)
	}
	if len(results) != 4 {
		t.Fatalf("results %+v", results)
	}
	for i, want := range []Result{{Job: "a"}, {Job: "b"}, {Job: "c", Skipped: true}, {Job: "d", ExitCode: 3}} {
		got := results[i]
		if got.Job != want.Job || got.Skipped != want.Skipped || got.ExitCode != want.ExitCode || (got.Err != nil) != (want.Job == "d") {
			t.Errorf("result %d: %+v, want %+v", i, got, want)
		}
	}
	out, err := os.ReadFile(filepath.Join(f.logs, "a", "pre-start.stdout.log"))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("pre-start of a in %s with d1 %s\n", filepath.Join(f.jobs, "a"), DefaultPath); string(out) != want {
		t.Errorf("stdout log %q, want %q", out, want)
	}
	if errOut, _ := os.ReadFile(filepath.Join(f.logs, "a", "pre-start.stderr.log")); string(errOut) != "to stderr\n" {
		t.Errorf("stderr log %q", errOut)
	}
	if _, err := os.Stat(filepath.Join(f.logs, "c")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("skipped job got a log dir: %v", err)
	}
}

// Run on named jobs only; logs are appended across runs.
func TestRunNamedJobsAppendsLogs(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.script(t, "a", PostStart, `echo run $NEXT`)
	f.script(t, "b", PostStart, `exit 1`)
	for range 2 {
		if _, err := f.runner.RunWithEnv(testContext(t), PostStart, []string{"a"}, map[string]string{"NEXT": "keep"}); err != nil {
			t.Fatal(err)
		}
	}
	out, _ := os.ReadFile(filepath.Join(f.logs, "a", "post-start.stdout.log"))
	if string(out) != "run keep\nrun keep\n" {
		t.Errorf("log %q", out)
	}
	if _, err := f.runner.Run(testContext(t), PostStart, []string{"../a"}); err == nil {
		t.Error("job name with a path accepted")
	}
	if _, err := f.runner.Run(testContext(t), Script("install"), nil); err == nil {
		t.Error("unknown script accepted")
	}
}

// A script that outlives the timeout is killed, with its children.
func TestTimeoutKillsHangingScript(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{Timeout: 300 * time.Millisecond})
	pidFile := filepath.Join(t.TempDir(), "pid")
	f.script(t, "hang", PreStop, fmt.Sprintf(`sleep 1000 & echo $! > %s; echo "waiting forever"; wait`, pidFile))
	begin := time.Now()
	results, err := f.runner.Run(testContext(t), PreStop, nil)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("error %v, want ErrTimeout", err)
	}
	if time.Since(begin) < 300*time.Millisecond {
		t.Errorf("killed before its timeout")
	}
	if !strings.Contains(err.Error(), "job hang: pre-stop: script timed out") || !strings.Contains(err.Error(), "waiting forever") {
		t.Errorf("error %q", err)
	}
	if results[0].ExitCode != -1 {
		t.Errorf("exit code %d", results[0].ExitCode)
	}
	data, _ := os.ReadFile(pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	if pid == 0 {
		t.Fatal("no child pid")
	}
	waitDead(t, pid)
}

// A script that is not executable is an error, not skipped.
func TestNotExecutableScript(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.script(t, "j", PostDeploy, "true")
	os.Chmod(filepath.Join(f.jobs, "j", "bin", "post-deploy"), 0o644)
	if _, err := f.runner.Run(testContext(t), PostDeploy, nil); err == nil || !strings.Contains(err.Error(), "not an executable file") {
		t.Errorf("error %v", err)
	}
}

// Drain gets BOSH's arguments and environment; a static answer n is
// waited for n seconds.
func TestDrainStatic(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	record := filepath.Join(t.TempDir(), "record")
	f.script(t, "web", Drain, fmt.Sprintf(`echo "args=$*" >> %[1]s
echo "state=$BOSH_JOB_STATE" >> %[1]s
echo "next=$BOSH_JOB_NEXT_STATE" >> %[1]s
echo 1`, record))
	f.job(t, "nodrain")
	begin := time.Now()
	results, err := f.runner.Drain(testContext(t), DrainParams{
		Kind:            JobChanged,
		Hash:            HashChanged,
		UpdatedPackages: []string{"ruby", "webapp"},
		CurrentState:    json.RawMessage(`{"persistent_disk":1024}`),
		NextState:       json.RawMessage(`{"persistent_disk":2048}`),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took < time.Second {
		t.Errorf("drain answered 1 but returned after %s", took)
	}
	if results[0] != (DrainResult{Job: "nodrain", Skipped: true}) {
		t.Errorf("job without drain: %+v", results[0])
	}
	if r := results[1]; r.Job != "web" || r.Calls != 1 || r.Waited != time.Second || r.Last != 1 || r.Err != nil {
		t.Errorf("drain result %+v", r)
	}
	got, _ := os.ReadFile(record)
	want := "args=job_changed hash_changed ruby webapp\nstate={\"persistent_disk\":1024}\nnext={\"persistent_disk\":2048}\n"
	if string(got) != want {
		t.Errorf("drain saw:\n%s\nwant:\n%s", got, want)
	}
}

// A negative answer makes a dynamic drain: called again with
// job_check_status after |n| seconds until it answers n ≥ 0.
func TestDrainDynamic(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	record := filepath.Join(t.TempDir(), "record")
	f.script(t, "db", Drain, fmt.Sprintf(`echo "$*" >> %[1]s
n=$(wc -l < %[1]s)
if [ "$n" -lt 3 ]; then echo -1; else echo 0; fi`, record))
	results, err := f.runner.Drain(testContext(t), DrainParams{Kind: JobShutdown, Hash: HashUnchanged}, []string{"db"})
	if err != nil {
		t.Fatal(err)
	}
	if r := results[0]; r.Calls != 3 || r.Waited != 2*time.Second || r.Last != 0 {
		t.Errorf("result %+v", r)
	}
	got, _ := os.ReadFile(record)
	want := "job_shutdown hash_unchanged\njob_check_status hash_unchanged\njob_check_status hash_unchanged\n"
	if string(got) != want {
		t.Errorf("calls:\n%s\nwant:\n%s", got, want)
	}
	env, _ := os.ReadFile(filepath.Join(f.logs, "db", "drain.stdout.log"))
	if string(env) != "-1\n-1\n0\n" {
		t.Errorf("drain stdout log %q", env)
	}
}

func TestDrainErrors(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.script(t, "words", Drain, `echo "in a minute"`)
	f.script(t, "exit", Drain, `echo 5; echo broken >&2; exit 2`)
	f.script(t, "ok", Drain, `echo 0`)
	results, err := f.runner.Drain(testContext(t), DrainParams{Kind: JobShutdown, Hash: HashUnchanged}, nil)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`job words: drain: printed "in a minute", want one integer`,
		"job exit: drain: exited with status 2",
		"broken",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "job ok") || results[1].Err != nil || results[1].Calls != 1 {
		t.Errorf("ok job: %+v / %v", results[1], err)
	}
	for _, p := range []DrainParams{
		{Kind: "job_maybe", Hash: HashUnchanged},
		{Kind: JobShutdown, Hash: "hash_maybe"},
		{Kind: JobCheckStatus, Hash: HashUnchanged},
		{Kind: JobShutdown, Hash: HashUnchanged, NextState: json.RawMessage(`{`)},
	} {
		if _, err := f.runner.Drain(testContext(t), p, nil); err == nil {
			t.Errorf("params %+v accepted", p)
		}
	}
}

// Cancelling the context interrupts a drain's wait.
func TestDrainInterrupted(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.script(t, "slow", Drain, `echo 3600`)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := f.runner.Drain(ctx, DrainParams{Kind: JobShutdown, Hash: HashUnchanged}, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v", err)
	}
}

func TestJobsListsDirectoriesAndLinks(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.job(t, "b")
	target := filepath.Join(t.TempDir(), "a-1")
	os.MkdirAll(target, 0o755)
	if err := os.Symlink(target, filepath.Join(f.jobs, "a")); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(f.jobs, "README"), nil, 0o644)
	jobs, err := f.runner.Jobs()
	if err != nil || strings.Join(jobs, ",") != "a,b" {
		t.Errorf("jobs %v, %v", jobs, err)
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

func TestPreStopEnv(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.script(t, "j", PreStop, `echo "$BOSH_VM_NEXT_STATE $BOSH_INSTANCE_NEXT_STATE $BOSH_DEPLOYMENT_NEXT_STATE"`)
	if _, err := f.runner.RunWithEnv(testContext(t), PreStop, nil, PreStopEnv(Delete, Keep, Keep)); err != nil {
		t.Fatal(err)
	}
	if out, _ := os.ReadFile(filepath.Join(f.logs, "j", "pre-stop.stdout.log")); string(out) != "delete keep keep\n" {
		t.Errorf("pre-stop saw %q", out)
	}
}
