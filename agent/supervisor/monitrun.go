package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// monitPoll is how often a monit process's pid is checked.
const monitPoll = 200 * time.Millisecond

// startMonit runs a monit process's start program once the processes it
// depends on are running, waits for its pidfile to name a live process, and
// watches that pid. The programs' output goes to
// LogDir/<job>/<process>.programs.log (the daemon usually writes its own logs).
func (s *Supervisor) startMonit(p *proc) (*running, error) {
	if !s.waitAfter(p) {
		return nil, errors.New("stopped while waiting for the processes it depends on")
	}
	m := p.def.Monit
	os.Remove(m.PidFile) //nolint:errcheck // a stale pidfile must not pass for the new process
	if err := s.runProgram(p, "start", m.Start, m.StartTimeout); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(m.StartTimeout)
	var pid int
	for {
		if pid = livePid(m.PidFile); pid > 0 {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("start program ran but pidfile %s names no live process after %s", m.PidFile, m.StartTimeout)
		}
		if !s.sleep(p, monitPoll) {
			return nil, errors.New("stopped while waiting for the pidfile")
		}
	}
	r := &running{pgid: pid, exited: make(chan struct{}), copied: make(chan struct{}), monit: true}
	close(r.copied)
	go func() {
		defer close(r.exited)
		for {
			if _, ok := procStartTime(pid); !ok {
				r.waitErr = fmt.Errorf("pid %d from %s is gone", pid, m.PidFile)
				return
			}
			time.Sleep(monitPoll)
		}
	}()
	s.writePidFile(p, pid)
	s.mu.Lock()
	p.pid = pid
	p.startedAt = time.Now()
	s.mu.Unlock()
	s.setState(p, StateRunning, "")
	return r, nil
}

// terminateMonit runs the stop program (SIGTERM to the pid without one),
// then SIGKILL if the pid is still there after the stop timeout.
func (s *Supervisor) terminateMonit(p *proc, r *running) {
	log := s.logger.With("job", p.job, "process", p.def.Name, "pid", r.pgid)
	timeout := p.def.Shutdown.Timeout
	if stop := p.def.Monit.Stop; stop != "" {
		if err := s.runProgram(p, "stop", stop, timeout); err != nil {
			log.Warn("stop program failed", "err", err)
		}
	} else {
		syscall.Kill(r.pgid, p.def.Shutdown.Signal) //nolint:errcheck // ESRCH: gone
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-r.exited:
	case <-t.C:
		log.Warn("process did not stop in time, killing it", "timeout", timeout)
		syscall.Kill(r.pgid, syscall.SIGKILL) //nolint:errcheck // ESRCH: already gone
		<-r.exited
	}
}

// runProgram runs a monit start or stop program through /bin/sh -c, in its
// own process group, with the process's environment, bounded by timeout.
func (s *Supervisor) runProgram(p *proc, what, command string, timeout time.Duration) error {
	dir := filepath.Join(s.cfg.LogDir, p.job)
	var out *os.File
	if err := os.MkdirAll(dir, 0o755); err == nil {
		out, _ = os.OpenFile(filepath.Join(dir, p.def.Name+".programs.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	}
	if out != nil {
		defer out.Close()
		fmt.Fprintf(out, "%s %s program: %s\n", time.Now().UTC().Format(time.RFC3339), what, command)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Env = envList(s.env(p.def.Env))
	cmd.Dir = "/"
	if out != nil {
		// A file, not a pipe: a daemon that keeps the descriptors does not
		// hold the program's end open.
		cmd.Stdout, cmd.Stderr = out, out
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s program did not end within %s", what, timeout)
		}
		return fmt.Errorf("%s program: %s", what, exitReason(err))
	}
	return nil
}

// livePid reads a pidfile; 0 when it is missing, malformed or names a
// process that is gone.
func livePid(file string) int {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return 0
	}
	if _, ok := procStartTime(pid); !ok {
		return 0
	}
	return pid
}

// waitAfter waits until every process p.def.After names (in any job) is
// running, also one no job has yet (the agent starts jobs one after the
// other); meanwhile p is starting, "waiting for <name>". False when p was
// asked to stop meanwhile.
func (s *Supervisor) waitAfter(p *proc) bool {
	reported := ""
	for {
		pending := ""
		s.mu.Lock()
		for _, name := range p.def.After {
			running := false
			for _, j := range s.jobs {
				for _, q := range j.procs {
					if q.def.Name == name && q != p && q.state == StateRunning {
						running = true
					}
				}
			}
			if !running {
				pending = name
			}
		}
		s.mu.Unlock()
		if pending == "" {
			return true
		}
		if pending != reported {
			s.setState(p, StateStarting, "waiting for "+pending)
			reported = pending
		}
		if !s.sleep(p, monitPoll) {
			return false
		}
	}
}

// waitDependents holds p's stop, as monit does, until the processes that
// depend on it and are being stopped too have stopped (at most p's
// shutdown timeout): a dependent is stopped before what it depends on.
func (s *Supervisor) waitDependents(p *proc) {
	deadline := time.Now().Add(p.def.Shutdown.Timeout)
	for time.Now().Before(deadline) {
		pending := false
		s.mu.Lock()
		for _, j := range s.jobs {
			for _, q := range j.procs {
				if q != p && q.state != StateStopped && q.stopRequested() && slices.Contains(q.def.After, p.def.Name) {
					pending = true
				}
			}
		}
		s.mu.Unlock()
		if !pending {
			return
		}
		time.Sleep(monitPoll / 4)
	}
}
