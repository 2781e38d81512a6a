package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Pid files let a supervisor find the processes a previous one left running
// (the agent was killed or restarted): they cannot be adopted (their output
// pipes are gone), so they are stopped before the process starts again,
// which also frees the ports they hold. A pid file holds "<pid> <start
// time>" so that a reused pid is never mistaken for the old process.

func (s *Supervisor) pidFile(p *proc) string {
	if s.cfg.RunDir == "" {
		return ""
	}
	if p.def.Monit != nil {
		// <job>/<process>.pid is where BOSH ctl scripts keep their own
		// pidfile, in another format: keep out of its way.
		return filepath.Join(s.cfg.RunDir, p.job, p.def.Name+".agent.pid")
	}
	return filepath.Join(s.cfg.RunDir, p.job, p.def.Name+".pid")
}

// writeExtraPidFile writes the plain pid file a process definition asks
// for (bpm's /var/vcap/sys/run/bpm/<job>/<process>.pid, which BOSH jobs'
// scripts read).
func (s *Supervisor) writeExtraPidFile(p *proc, pid int) {
	path := p.def.PidFile
	if path == "" {
		return
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err == nil {
		if err = os.WriteFile(path, []byte(fmt.Sprintf("%d\n", pid)), 0o644); err == nil {
			return
		}
	}
	s.logger.Warn("write pid file", "job", p.job, "process", p.def.Name, "path", path)
}

func (s *Supervisor) writePidFile(p *proc, pid int) {
	path := s.pidFile(p)
	if path == "" {
		return
	}
	start, ok := procStartTime(pid)
	if !ok {
		return
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err == nil {
		err = os.WriteFile(path, []byte(fmt.Sprintf("%d %d\n", pid, start)), 0o644)
		if err == nil {
			return
		}
	}
	s.logger.Warn("write pid file", "job", p.job, "process", p.def.Name, "path", path)
}

func (s *Supervisor) removePidFile(p *proc) {
	if path := s.pidFile(p); path != "" {
		os.Remove(path) //nolint:errcheck // may not exist
	}
}

// stopLeftover stops the process a previous supervisor recorded for p, if
// it is still the same process: shutdown signal to its group, SIGKILL after
// the shutdown timeout (or when asked to stop).
func (s *Supervisor) stopLeftover(p *proc) {
	path := s.pidFile(p)
	if path == "" {
		return
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return
	}
	defer os.Remove(path) //nolint:errcheck // best effort
	f := strings.Fields(string(data))
	if len(f) != 2 {
		return
	}
	pid, err1 := strconv.Atoi(f[0])
	start, err2 := strconv.ParseUint(f[1], 10, 64)
	if err1 != nil || err2 != nil || pid <= 1 {
		return
	}
	alive := func() bool {
		now, ok := procStartTime(pid)
		return ok && now == start
	}
	if !alive() {
		return
	}
	log := s.logger.With("job", p.job, "process", p.def.Name, "pid", pid)
	log.Warn("stopping a process left running by a previous agent")
	// The process itself (a monit daemon need not lead its group), then
	// its group.
	syscall.Kill(pid, p.def.Shutdown.Signal)  //nolint:errcheck // ESRCH: gone
	syscall.Kill(-pid, p.def.Shutdown.Signal) //nolint:errcheck // ESRCH: gone
	deadline := time.NewTimer(p.def.Shutdown.Timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for alive() {
		select {
		case <-tick.C:
		case <-deadline.C:
			log.Warn("left-over process did not stop in time, killing it")
			syscall.Kill(pid, syscall.SIGKILL)  //nolint:errcheck // ESRCH: gone
			syscall.Kill(-pid, syscall.SIGKILL) //nolint:errcheck // ESRCH: gone
			return
		case <-p.stop:
			syscall.Kill(pid, syscall.SIGKILL)  //nolint:errcheck // ESRCH: gone
			syscall.Kill(-pid, syscall.SIGKILL) //nolint:errcheck // ESRCH: gone
			return
		}
	}
	syscall.Kill(-pid, syscall.SIGKILL) //nolint:errcheck // the rest of its group
}
