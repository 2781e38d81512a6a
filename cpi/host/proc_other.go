//go:build !linux

package host

import (
	"os/exec"
	"syscall"
)

// setDeathSignal does nothing outside Linux: there is no parent-death
// signal, so a plugin outlives a host killed with SIGKILL (Close still
// stops it).
func setDeathSignal(*exec.Cmd) {}

// processAlive reports whether pid exists (a zombie counts as alive here;
// go-plugin's exit detection covers it shortly after).
func processAlive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

// procWatch tells whether a process runs.
type procWatch struct{ pid int }

func watchProcess(pid int) *procWatch { return &procWatch{pid: pid} }

func (w *procWatch) alive() bool { return processAlive(w.pid) }

func (w *procWatch) close() {}
