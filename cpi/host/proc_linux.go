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

// procWatch tells whether a process runs from its /proc/PID/stat, kept
// open for the process's life: a look is one read (pread), not an open, a
// read and a close, since the host looks before every call.
type procWatch struct {
	pid  int
	mu   sync.Mutex
	stat *os.File // nil: opened on each look
	buf  []byte
}

// watchProcess opens pid's /proc/PID/stat (a process gone since reads as
// not running).
func watchProcess(pid int) *procWatch {
	w := &procWatch{pid: pid, buf: make([]byte, 4096)}
	if f, err := os.Open(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		w.stat = f
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
	// The process's /proc entry is generated anew on each read; once it
	// is reaped, reads fail.
	n, err := w.stat.ReadAt(w.buf, 0)
	if n == 0 || (err != nil && err != io.EOF) {
		return false
	}
	return runningStat(w.buf[:n])
}

// close closes the file.
func (w *procWatch) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stat != nil {
		w.stat.Close()
		w.stat = nil
	}
}

// processAlive reports whether pid runs, as procWatch.alive does.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && runningStat(b)
}

// runningStat reports whether a /proc/PID/stat says running: not a zombie,
// not exiting and no SIGKILL pending.
func runningStat(b []byte) bool {
	// The state follows the parenthesised command name, which may itself
	// hold parentheses; the fields after it are numbered from 3 (state).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	switch b[i+2] {
	case 'Z', 'X', 'x':
		return false
	}
	f := bytes.Fields(b[i+1:])
	field := func(n int) (uint64, bool) {
		if n-3 >= len(f) {
			return 0, false
		}
		v, err := strconv.ParseUint(string(f[n-3]), 10, 64)
		return v, err == nil
	}
	// flags (9) say PF_EXITING from the start of the exit, before the
	// process turns zombie.
	const pfExiting = 0x4
	if flags, ok := field(9); ok && flags&pfExiting != 0 {
		return false
	}
	// signal (31) is the main thread's pending signals: a SIGKILL sent to
	// the process is put there at once (the kernel gives a fatal signal
	// to every thread), so the process is as good as gone.
	const sigkill = uint64(1) << (9 - 1)
	if pending, ok := field(31); ok && pending&sigkill != 0 {
		return false
	}
	return true
}
