package host

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
)

// setDeathSignal makes the kernel kill the plugin when the thread that forks
// it (the launcher's) dies, which happens at the latest when the host
// process dies, however it dies.
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// procWatch tells whether a process runs from its /proc files, kept open
// for the process's life: a look is two reads (pread), not two opens,
// reads and closes, since the host looks before every call.
type procWatch struct {
	pid          int
	mu           sync.Mutex
	stat, status *os.File // nil: opened on each look
	buf          []byte
}

// watchProcess opens pid's /proc files (a process gone since reads as
// not running).
func watchProcess(pid int) *procWatch {
	w := &procWatch{pid: pid, buf: make([]byte, 8192)}
	stat, err1 := os.Open(fmt.Sprintf("/proc/%d/stat", pid))
	status, err2 := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err1 == nil && err2 == nil {
		w.stat, w.status = stat, status
		return w
	}
	if stat != nil {
		stat.Close()
	}
	if status != nil {
		status.Close()
	}
	return w
}

// alive reports whether the process runs: it exists, is not a zombie
// waiting to be reaped or exiting, and has no SIGKILL pending.
func (w *procWatch) alive() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stat == nil {
		return processAlive(w.pid)
	}
	b, ok := w.read(w.stat)
	if !ok || !runningStat(b) {
		return false
	}
	b, ok = w.read(w.status)
	return ok && !sigkillPending(b)
}

// read reads f from its start into w.buf (the process's /proc entry is
// generated anew on each read; once it is reaped, reads fail).
func (w *procWatch) read(f *os.File) ([]byte, bool) {
	n, err := f.ReadAt(w.buf, 0)
	if n == 0 || (err != nil && err != io.EOF) {
		return nil, false
	}
	return w.buf[:n], true
}

// close closes the files.
func (w *procWatch) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stat != nil {
		w.stat.Close()
		w.status.Close()
		w.stat, w.status = nil, nil
	}
}

// processAlive reports whether pid runs: it exists and is not a zombie
// waiting to be reaped.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil || !runningStat(b) {
		return false
	}
	return !killPending(pid)
}

// runningStat reports whether a /proc/PID/stat says running: not a zombie
// and not exiting.
func runningStat(b []byte) bool {
	// The state follows the parenthesised command name, which may itself
	// hold parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	switch b[i+2] {
	case 'Z', 'X', 'x':
		return false
	}
	// The flags (the 7th field after the name) say PF_EXITING from the
	// start of the exit, before the process turns zombie.
	const pfExiting = 0x4
	if f := bytes.Fields(b[i+1:]); len(f) > 6 {
		if flags, err := strconv.ParseUint(string(f[6]), 10, 64); err == nil && flags&pfExiting != 0 {
			return false
		}
	}
	return true
}

// killPending reports whether a SIGKILL waits to be delivered to pid: the
// process is as good as gone (or gone: true when it cannot be read).
func killPending(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return true
	}
	return sigkillPending(b)
}

// sigkillPending reports whether a /proc/PID/status shows a SIGKILL
// pending (for the thread or the process).
func sigkillPending(b []byte) bool {
	const sigkill = uint64(1) << (9 - 1)
	for line := range bytes.Lines(b) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok || (string(k) != "SigPnd" && string(k) != "ShdPnd") {
			continue
		}
		mask, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 16, 64)
		if err == nil && mask&sigkill != 0 {
			return true
		}
	}
	return false
}
