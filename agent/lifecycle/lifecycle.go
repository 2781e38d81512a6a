// Package lifecycle runs the lifecycle scripts of the jobs installed on a
// VM, with BOSH's arguments, environment and exit contracts.
//
// A rendered job may hold bin/pre-start, bin/post-start, bin/pre-stop,
// bin/drain, bin/post-stop and bin/post-deploy. Run runs one of them for
// every job (or the jobs named), all jobs in parallel; a job without the
// script is skipped. A script fails when it exits non-zero or outlives the
// configured timeout (it is then killed with its process group); the error
// names the job and carries the tail of its output. Each script's stdout and
// stderr are appended to <log dir>/<job>/<script>.stdout.log and
// .stderr.log.
//
//	runner, err := lifecycle.New(logger, lifecycle.Config{
//		JobsDir: "/var/vcap/jobs", LogDir: "/var/vcap/sys/log", Timeout: 5 * time.Minute,
//	})
//	results, err := runner.Run(ctx, lifecycle.PreStart, nil) // nil: every job
//	results, err = runner.RunWithEnv(ctx, lifecycle.PreStop, nil,
//		lifecycle.PreStopEnv(lifecycle.Delete, lifecycle.Delete, lifecycle.Keep))
//	drained, err := runner.Drain(ctx, lifecycle.DrainParams{
//		Kind: lifecycle.JobShutdown, Hash: lifecycle.HashUnchanged,
//	}, nil)
//
// Drain calls bin/drain with the arguments `<kind> <hash> [updated
// packages...]` and BOSH_JOB_STATE / BOSH_JOB_NEXT_STATE in its environment.
// The script must exit 0 and print one integer: n ≥ 0 means "wait n seconds,
// then the job is drained"; n < 0 means "call me again in |n| seconds", and
// it is called again with `job_check_status hash_unchanged` until it prints
// n ≥ 0. Anything else is an error. See docs/processes.md.
//
// The exported API (Script and its constants, Scripts, Config, New, Runner
// with Jobs, Run, RunWithEnv and Drain, Result, ScriptError, ErrTimeout,
// DrainParams, DrainKind, HashChange, DrainResult, NextState, PreStopEnv)
// is stable: it only grows.
package lifecycle

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Script names a lifecycle script, the file bin/<Script> of a job.
type Script string

// The lifecycle scripts, in the order a deploy meets them.
const (
	PreStart   Script = "pre-start"
	PostStart  Script = "post-start"
	PostDeploy Script = "post-deploy"
	PreStop    Script = "pre-stop"
	Drain      Script = "drain"
	PostStop   Script = "post-stop"
)

// Scripts lists every lifecycle script.
var Scripts = []Script{PreStart, PostStart, PostDeploy, PreStop, Drain, PostStop}

// Defaults for Config fields left zero.
const (
	DefaultPath      = "/var/vcap/bosh/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	DefaultTailBytes = 4096
)

// ErrTimeout is matched (errors.Is) by the error of a script that ran
// longer than Config.Timeout.
var ErrTimeout = errors.New("script timed out")

// Config configures a Runner. JobsDir and LogDir are required.
type Config struct {
	// JobsDir holds one directory per installed job (<base>/jobs).
	JobsDir string
	// LogDir is the log root (<base>/sys/log); a script's output is appended
	// to LogDir/<job>/<script>.stdout.log and .stderr.log.
	LogDir string
	// Timeout bounds each run of a script; the script's process group is
	// killed when it passes. Zero means no limit, as in BOSH.
	Timeout time.Duration
	// Env is the environment every script starts from (the agent's own is
	// not inherited); PATH defaults to DefaultPath.
	Env map[string]string
	// TailBytes is how much of the end of a script's output an error
	// carries (stdout and stderr interleaved); default DefaultTailBytes.
	TailBytes int
}

// Result is the outcome of one job's script.
type Result struct {
	Job    string
	Script Script
	// Skipped: the job has no such script.
	Skipped  bool
	ExitCode int
	Duration time.Duration
	// Tail is the end of the script's output.
	Tail string
	// Err is this job's error, also part of the error Run returns.
	Err error
}

// ScriptError is the failure of one job's script.
type ScriptError struct {
	Job      string
	Script   Script
	ExitCode int // -1 when the script did not exit by itself
	Tail     string
	Err      error // the cause: an exit status, ErrTimeout, a start error
}

func (e *ScriptError) Error() string {
	msg := fmt.Sprintf("job %s: %s: %v", e.Job, e.Script, e.Err)
	if t := strings.TrimSpace(e.Tail); t != "" {
		msg += "; output ends with:\n" + t
	}
	return msg
}

func (e *ScriptError) Unwrap() error { return e.Err }

// Runner runs lifecycle scripts. It is safe for concurrent use.
type Runner struct {
	logger *slog.Logger
	cfg    Config
}

// New returns a Runner.
func New(logger *slog.Logger, cfg Config) (*Runner, error) {
	if cfg.JobsDir == "" || cfg.LogDir == "" {
		return nil, errors.New("lifecycle config: jobs dir and log dir are required")
	}
	if cfg.TailBytes <= 0 {
		cfg.TailBytes = DefaultTailBytes
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Runner{logger: logger, cfg: cfg}, nil
}

// Jobs lists the jobs installed under the jobs dir, sorted.
func (r *Runner) Jobs() ([]string, error) {
	entries, err := os.ReadDir(r.cfg.JobsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	var jobs []string
	for _, e := range entries {
		// Jobs may be symlinks to their versioned directories.
		fi, err := os.Stat(filepath.Join(r.cfg.JobsDir, e.Name()))
		if err == nil && fi.IsDir() {
			jobs = append(jobs, e.Name())
		}
	}
	sort.Strings(jobs)
	return jobs, nil
}

// Run runs script for each of jobs (nil: every installed job), in parallel,
// and waits for all of them. Results are in job order. The error joins the
// *ScriptError of every job whose script failed.
func (r *Runner) Run(ctx context.Context, script Script, jobs []string) ([]Result, error) {
	return r.RunWithEnv(ctx, script, jobs, nil)
}

// RunWithEnv is Run with extra environment variables for the scripts, over
// Config.Env (for pre-stop: BOSH_VM_NEXT_STATE and friends).
func (r *Runner) RunWithEnv(ctx context.Context, script Script, jobs []string, env map[string]string) ([]Result, error) {
	if err := validScript(script); err != nil {
		return nil, err
	}
	jobs, err := r.jobList(jobs)
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", script, err)
	}
	results := make([]Result, len(jobs))
	var wg sync.WaitGroup
	for i, job := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], _ = r.runOne(ctx, job, script, nil, env)
		}()
	}
	wg.Wait()
	var errs []error
	for _, res := range results {
		if res.Err != nil {
			errs = append(errs, res.Err)
		}
	}
	return results, errors.Join(errs...)
}

func validScript(s Script) error {
	for _, known := range Scripts {
		if s == known {
			return nil
		}
	}
	return fmt.Errorf("unknown lifecycle script %q", s)
}

func (r *Runner) jobList(jobs []string) ([]string, error) {
	if jobs == nil {
		return r.Jobs()
	}
	for _, j := range jobs {
		if j == "" || j == "." || j == ".." || strings.ContainsAny(j, `/\`) {
			return nil, fmt.Errorf("invalid job name %q", j)
		}
	}
	return jobs, nil
}

// runOne runs one job's script once with args and extra environment; it
// returns the result and the start of the script's stdout.
func (r *Runner) runOne(ctx context.Context, job string, script Script, args []string, extraEnv map[string]string) (Result, []byte) {
	res := Result{Job: job, Script: script}
	path := filepath.Join(r.cfg.JobsDir, job, "bin", string(script))
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		res.Skipped = true
		return res, nil
	}
	fail := func(code int, cause error) (Result, []byte) {
		res.ExitCode = code
		res.Err = &ScriptError{Job: job, Script: script, ExitCode: code, Tail: res.Tail, Err: cause}
		return res, nil
	}
	if err != nil {
		return fail(-1, err)
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return fail(-1, fmt.Errorf("%s is not an executable file", path))
	}
	out, err := r.run(ctx, job, script, path, args, extraEnv)
	res.Duration = out.duration
	res.Tail = out.tail
	res.ExitCode = out.exitCode
	if err != nil {
		return fail(out.exitCode, err)
	}
	return res, out.stdout
}

type output struct {
	stdout   []byte // first 64 KiB of stdout
	tail     string
	exitCode int
	duration time.Duration
}

// run executes a script in its own process group, its output appended to
// the job's log files, within the timeout.
func (r *Runner) run(ctx context.Context, job string, script Script, path string, args []string, extraEnv map[string]string) (output, error) {
	log := r.logger.With("job", job, "script", string(script))
	var out output
	logDir := filepath.Join(r.cfg.LogDir, job)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return out, fmt.Errorf("create log dir: %w", err)
	}
	stdoutLog, err := os.OpenFile(filepath.Join(logDir, string(script)+".stdout.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return out, fmt.Errorf("open log: %w", err)
	}
	defer stdoutLog.Close()
	stderrLog, err := os.OpenFile(filepath.Join(logDir, string(script)+".stderr.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return out, fmt.Errorf("open log: %w", err)
	}
	defer stderrLog.Close()

	runCtx := ctx
	cancel := context.CancelFunc(func() {})
	if r.cfg.Timeout > 0 {
		runCtx, cancel = context.WithTimeout(ctx, r.cfg.Timeout)
	}
	defer cancel()

	tail := &tailBuffer{max: r.cfg.TailBytes}
	stdout := &headBuffer{max: 64 << 10}
	cmd := exec.CommandContext(runCtx, path, args...)
	cmd.Dir = filepath.Join(r.cfg.JobsDir, job)
	cmd.Env = r.env(extraEnv)
	cmd.Stdout = io.MultiWriter(stdoutLog, tail, stdout)
	cmd.Stderr = io.MultiWriter(stderrLog, tail)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	start := time.Now()
	log.Info("running script", "args", args)
	err = cmd.Run()
	out.duration = time.Since(start)
	out.tail = tail.String()
	out.stdout = stdout.Bytes()
	out.exitCode = -1
	if cmd.ProcessState != nil {
		out.exitCode = cmd.ProcessState.ExitCode()
	}
	// Whatever happened, leave nothing of the script behind.
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) //nolint:errcheck // ESRCH: group gone
	}
	switch {
	case runCtx.Err() != nil && ctx.Err() == nil:
		log.Warn("script timed out", "timeout", r.cfg.Timeout)
		out.exitCode = -1
		return out, fmt.Errorf("%w after %s (killed)", ErrTimeout, r.cfg.Timeout)
	case ctx.Err() != nil:
		out.exitCode = -1
		return out, fmt.Errorf("interrupted: %w", ctx.Err())
	case err != nil:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			log.Warn("script failed", "exit_code", out.exitCode)
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				return out, fmt.Errorf("killed by signal %s", ws.Signal())
			}
			return out, fmt.Errorf("exited with status %d", out.exitCode)
		}
		return out, fmt.Errorf("run %s: %w", path, err)
	}
	log.Info("script done", "duration", out.duration.Round(time.Millisecond))
	return out, nil
}

func (r *Runner) env(extra map[string]string) []string {
	env := map[string]string{"PATH": DefaultPath}
	for k, v := range r.cfg.Env {
		env[k] = v
	}
	for k, v := range extra {
		env[k] = v
	}
	list := make([]string, 0, len(env))
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	sort.Strings(list)
	return list
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// headBuffer keeps the first max bytes written to it.
type headBuffer struct {
	max int
	buf bytes.Buffer
}

func (h *headBuffer) Write(p []byte) (int, error) {
	if room := h.max - h.buf.Len(); room > 0 {
		h.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (h *headBuffer) Bytes() []byte { return h.buf.Bytes() }

// NextState says what becomes of a VM, an instance or a deployment after a
// stop, for pre-stop scripts.
type NextState string

// Next states.
const (
	Keep   NextState = "keep"
	Delete NextState = "delete"
)

// PreStopEnv is the environment BOSH gives pre-stop scripts, for
// RunWithEnv: BOSH_VM_NEXT_STATE, BOSH_INSTANCE_NEXT_STATE and
// BOSH_DEPLOYMENT_NEXT_STATE, each keep or delete.
func PreStopEnv(vm, instance, deployment NextState) map[string]string {
	return map[string]string{
		"BOSH_VM_NEXT_STATE":         string(vm),
		"BOSH_INSTANCE_NEXT_STATE":   string(instance),
		"BOSH_DEPLOYMENT_NEXT_STATE": string(deployment),
	}
}
