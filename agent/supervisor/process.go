package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// proc is one supervised process: one goroutine (run) owns its lifecycle
// from launch to stopped; its status fields are guarded by Supervisor.mu.
type proc struct {
	job string
	def Process

	stopOnce sync.Once
	stop     chan struct{} // closed to ask run to stop
	done     chan struct{} // closed when run has returned

	// guarded by Supervisor.mu
	state     State
	pid       int
	restarts  int
	startedAt time.Time
	lastErr   string
}

func (s *Supervisor) newProc(jobName string, def Process) *proc {
	return &proc{
		job:   jobName,
		def:   def,
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
		state: StateStopped,
	}
}

func (p *proc) requestStop() { p.stopOnce.Do(func() { close(p.stop) }) }

func (p *proc) stopRequested() bool {
	select {
	case <-p.stop:
		return true
	default:
		return false
	}
}

// launch reports p starting and starts the goroutine that supervises it.
func (s *Supervisor) launch(p *proc) {
	s.setState(p, StateStarting, "")
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(p.done)
		s.run(p)
	}()
}

// running is one launched instance of a process.
type running struct {
	cmd     *exec.Cmd
	pgid    int
	exited  chan struct{} // closed when cmd.Wait returned, with waitErr set
	waitErr error
	copied  chan struct{} // closed when both output copiers returned
	readers []*os.File
	// monit is set for a process run through a monit start program: pgid
	// is then the pid read from its pidfile, not our child.
	monit bool
}

// run supervises p until it is asked to stop.
func (s *Supervisor) run(p *proc) {
	log := s.logger.With("job", p.job, "process", p.def.Name)
	dir := filepath.Join(s.cfg.LogDir, p.job)
	var stdout, stderr io.Writer = io.Discard, io.Discard
	if outLog, errLog, err := s.openLogs(dir, p.def.Name); err != nil {
		// Without log files the process still runs; its output is dropped.
		log.Error("open process logs", "err", err)
	} else {
		stdout, stderr = outLog, errLog
		defer outLog.Close()
		defer errLog.Close()
	}

	s.stopLeftover(p)
	backoff := newBackoff(s.cfg.MinBackoff, s.cfg.MaxBackoff, s.cfg.StableAfter)
	for {
		if p.stopRequested() {
			s.setState(p, StateStopped, "stopped")
			return
		}
		r, err := s.start(p, stdout, stderr)
		if err != nil {
			delay := backoff.delay(0)
			log.Warn("process did not start", "err", err, "retry_in", delay)
			s.setState(p, StateFailing, err.Error())
			if !s.sleep(p, delay) {
				s.setState(p, StateStopped, "stopped")
				return
			}
			continue
		}
		exitErr, stopped := s.watch(p, r)
		s.mu.Lock()
		ranFor := time.Since(p.startedAt)
		s.mu.Unlock()
		s.cleanup(p, r)
		if stopped {
			s.setState(p, StateStopped, "stopped")
			return
		}
		s.mu.Lock()
		p.restarts++
		s.mu.Unlock()
		delay := backoff.delay(ranFor)
		reason := exitReason(exitErr)
		log.Warn("process exited", "reason", reason, "ran_for", ranFor.Round(time.Millisecond), "restart_in", delay)
		s.setState(p, StateFailing, reason)
		if !s.sleep(p, delay) {
			s.setState(p, StateStopped, "stopped")
			return
		}
	}
}

// backoff is the restart policy: the delay doubles from min up to max and
// is back to min after a run of at least stable.
type backoff struct {
	min, max, stable, next time.Duration
}

func newBackoff(min, max, stable time.Duration) *backoff {
	return &backoff{min: min, max: max, stable: stable, next: min}
}

// delay returns the wait before the next start, after a run of ranFor (0
// when the process could not be started).
func (b *backoff) delay(ranFor time.Duration) time.Duration {
	if ranFor >= b.stable {
		b.next = b.min
	}
	d := b.next
	b.next = min(b.next*2, b.max)
	return d
}

// sleep waits d; false if p was asked to stop meanwhile.
func (s *Supervisor) sleep(p *proc, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.stop:
		return false
	}
}

// start launches the process in its own process group with its limits,
// environment and working directory, its output copied into the logs.
func (s *Supervisor) start(p *proc, stdout, stderr io.Writer) (*running, error) {
	if p.def.Monit != nil {
		return s.startMonit(p)
	}
	env := s.env(p.def.Env)
	for _, d := range p.def.Dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	if err := s.giveJobDirs(p); err != nil {
		return nil, err
	}
	if p.def.PreStart != "" {
		if err := s.runProgram(p, "pre_start hook", p.def.PreStart, p.def.Shutdown.Timeout+time.Minute); err != nil {
			return nil, err
		}
	}
	path, err := lookPath(p.def.Executable, env)
	if err != nil {
		return nil, err
	}
	dir := p.def.Workdir
	if dir == "" {
		dir = "/"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create workdir: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	cmd := &exec.Cmd{
		Path:        path,
		Args:        append([]string{p.def.Executable}, p.def.Args...),
		Env:         envList(env),
		Dir:         dir,
		Stdout:      outW,
		Stderr:      errW,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Credential: s.cfg.RunAs},
	}
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("start %s: %w", p.def.Executable, err)
	}
	pid := cmd.Process.Pid
	if n := p.def.Limits.OpenFiles; n > 0 {
		lim := unix.Rlimit{Cur: n, Max: n}
		if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
			s.logger.Warn("set open files limit", "job", p.job, "process", p.def.Name, "limit", n, "err", err)
		}
	}
	r := &running{
		cmd:     cmd,
		pgid:    pid,
		exited:  make(chan struct{}),
		copied:  make(chan struct{}),
		readers: []*os.File{outR, errR},
	}
	var copiers sync.WaitGroup
	for i, w := range []io.Writer{stdout, stderr} {
		copiers.Add(1)
		go func(src *os.File, dst io.Writer) {
			defer copiers.Done()
			io.Copy(dst, src) //nolint:errcheck // ends when every writer is gone or the pipe is closed
		}(r.readers[i], w)
	}
	go func() { copiers.Wait(); close(r.copied) }()
	go func() { r.waitErr = cmd.Wait(); close(r.exited) }()

	s.writePidFile(p, pid)
	s.writeExtraPidFile(p, pid)
	s.mu.Lock()
	p.pid = pid
	p.startedAt = time.Now()
	s.mu.Unlock()
	if p.def.Readiness == nil {
		s.setState(p, StateRunning, "")
	} else {
		s.setState(p, StateStarting, "")
	}
	return r, nil
}

// watch follows a launched process until it exits (returns its Wait error)
// or a stop is requested (stops it and returns stopped = true).
func (s *Supervisor) watch(p *proc, r *running) (exitErr error, stopped bool) {
	var results <-chan error
	ctx, cancel := context.WithCancel(context.Background())
	checkerDone := make(chan struct{})
	if rd := p.def.Readiness; rd != nil {
		ch := make(chan error)
		results = ch
		go func() {
			defer close(checkerDone)
			dir := p.def.Workdir
			if dir == "" {
				dir = "/"
			}
			s.checkLoop(ctx, rd, s.env(p.def.Env), dir, ch)
		}()
	} else {
		close(checkerDone)
	}
	defer func() { cancel(); <-checkerDone }()

	grace := time.NewTimer(s.cfg.StartGrace)
	defer grace.Stop()
	ready := p.def.Readiness == nil // no check: ready once started
	fails := 0
	for {
		select {
		case <-r.exited:
			return r.waitErr, false
		case <-p.stop:
			s.terminate(p, r)
			return nil, true
		case <-grace.C:
			if !ready {
				s.setState(p, StateFailing, fmt.Sprintf("readiness: not ready %s after start", s.cfg.StartGrace))
			}
		case err := <-results:
			if err == nil {
				fails = 0
				ready = true
				s.setState(p, StateRunning, "")
				continue
			}
			fails++
			if ready && fails >= s.cfg.ReadinessFailures {
				s.setState(p, StateFailing, "readiness: "+err.Error())
			}
		}
	}
}

// terminate stops a running process: its shutdown signal to the process
// group, then SIGKILL to the group if the process has not exited within the
// shutdown timeout.
func (s *Supervisor) terminate(p *proc, r *running) {
	s.waitDependents(p)
	if r.monit {
		s.terminateMonit(p, r)
		return
	}
	log := s.logger.With("job", p.job, "process", p.def.Name, "pid", r.pgid)
	sig := p.def.Shutdown.Signal
	log.Info("stopping process", "signal", sig.String(), "timeout", p.def.Shutdown.Timeout)
	if err := syscall.Kill(-r.pgid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		log.Warn("signal process group", "err", err)
	}
	t := time.NewTimer(p.def.Shutdown.Timeout)
	defer t.Stop()
	select {
	case <-r.exited:
	case <-t.C:
		log.Warn("process did not stop in time, killing it", "timeout", p.def.Shutdown.Timeout)
		syscall.Kill(-r.pgid, syscall.SIGKILL) //nolint:errcheck // ESRCH: already gone
	}
}

// cleanup makes sure nothing of a launched process is left: the main
// process reaped, the rest of its process group killed, output copied.
func (s *Supervisor) cleanup(p *proc, r *running) {
	<-r.exited
	if r.monit {
		s.removePidFile(p)
		s.mu.Lock()
		p.pid = 0
		p.startedAt = time.Time{}
		s.mu.Unlock()
		return
	}
	syscall.Kill(-r.pgid, syscall.SIGKILL) //nolint:errcheck // ESRCH: group already empty
	t := time.NewTimer(2 * time.Second)
	defer t.Stop()
	select {
	case <-r.copied:
	case <-t.C:
		// A descendant that left the process group holds the output pipe
		// open; stop reading it.
		for _, f := range r.readers {
			f.Close()
		}
		<-r.copied
	}
	for _, f := range r.readers {
		f.Close()
	}
	s.removePidFile(p)
	if p.def.PidFile != "" {
		os.Remove(p.def.PidFile) //nolint:errcheck // may not exist
	}
	s.mu.Lock()
	p.pid = 0
	p.startedAt = time.Time{}
	s.mu.Unlock()
}

func exitReason(err error) string {
	if err == nil {
		return "exited with status 0"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by signal " + ws.Signal().String()
		}
		return fmt.Sprintf("exited with status %d", ee.ExitCode())
	}
	return err.Error()
}

// env merges the process environment over the base environment.
func (s *Supervisor) env(procEnv map[string]string) map[string]string {
	env := map[string]string{"PATH": DefaultPath}
	for k, v := range s.cfg.BaseEnv {
		env[k] = v
	}
	for k, v := range procEnv {
		env[k] = v
	}
	return env
}

func envList(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// lookPath resolves a bare command name in the process's own PATH.
func lookPath(executable string, env map[string]string) (string, error) {
	if strings.Contains(executable, "/") {
		if err := checkExecutable(executable); err != nil {
			return "", err
		}
		return executable, nil
	}
	for _, dir := range filepath.SplitList(env["PATH"]) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue
		}
		candidate := filepath.Join(dir, executable)
		if checkExecutable(candidate) == nil {
			return candidate, nil
		}
	}
	return "", fmt.Errorf("executable %q not found in PATH %s", executable, env["PATH"])
}

func checkExecutable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("executable: %w", err)
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("executable %s: not an executable file", path)
	}
	return nil
}

// giveJobDirs makes the job's own directories and the process's dirs and
// gives them to Config.RunAs, so that a process running as it can write
// where BOSH jobs write (data, logs, pid files, the persistent store).
func (s *Supervisor) giveJobDirs(p *proc) error {
	u := s.cfg.RunAs
	if u == nil {
		return nil
	}
	var dirs []string
	for _, root := range []string{s.cfg.DataDir, s.cfg.LogDir, s.cfg.RunDir, s.cfg.StoreDir} {
		if root != "" {
			dirs = append(dirs, filepath.Join(root, p.job))
		}
	}
	dirs = append(dirs, p.def.Dirs...)
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
		if err := os.Chown(d, int(u.Uid), int(u.Gid)); err != nil {
			return fmt.Errorf("give %s to uid %d: %w", d, u.Uid, err)
		}
	}
	return nil
}
