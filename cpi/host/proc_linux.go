package host

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
)

// setDeathSignal makes the kernel kill the plugin when the thread that forks
// it (the launcher's) dies, which happens at the latest when the host
// process dies, however it dies.
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// processAlive reports whether pid runs: it exists and is not a zombie
// waiting to be reaped.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
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
	return !killPending(pid)
}

// killPending reports whether a SIGKILL waits to be delivered to pid: the
// process is as good as dead (between kill(2) and the exit, it still shows
// as running), and a call sent to it now would fail without having run.
func killPending(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return true
	}
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
