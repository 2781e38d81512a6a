package host

import (
	"fmt"
	"os"
	"testing"
)

// statLine is a /proc/PID/stat line of a process named comm in state st,
// with its flags (field 9) and pending signals (field 31).
func statLine(comm string, st byte, flags, pending uint64) []byte {
	b := fmt.Appendf(nil, "4242 (%s) %c 1 4242 4242 0 -1 %d", comm, st, flags)
	for n := 10; n <= 52; n++ {
		v := uint64(n)
		if n == 31 {
			v = pending
		}
		b = fmt.Appendf(b, " %d", v)
	}
	return append(b, '\n')
}

func TestRunningStat(t *testing.T) {
	const pfExiting, pfForkNoExec = 0x4, 0x40
	sigkill, sigterm := uint64(1)<<8, uint64(1)<<14
	for _, c := range []struct {
		name string
		stat []byte
		want bool
	}{
		{"sleeping", statLine("cpi-local", 'S', pfForkNoExec, 0), true},
		{"running, a SIGTERM pending", statLine("cpi-local", 'R', 0, sigterm), true},
		{"a name with parentheses and spaces", statLine("a) Z (b", 'S', 0, 0), true},
		{"zombie", statLine("cpi-local", 'Z', 0, 0), false},
		{"dead", statLine("cpi-local", 'X', 0, 0), false},
		{"exiting", statLine("cpi-local", 'R', pfExiting, 0), false},
		{"SIGKILL pending", statLine("cpi-local", 'D', 0, sigkill|sigterm), false},
		{"SIGKILL pending, a name that looks like fields", statLine("x) S 1 2 3 4 5 6 0", 'S', 0, sigkill), false},
		{"truncated", []byte("4242 (cpi"), false},
	} {
		if got := runningStat(c.stat); got != c.want {
			t.Errorf("%s: running %v, want %v\n%s", c.name, got, c.want, c.stat)
		}
	}
	// This process: running, and its own stat parses.
	w := watchProcess(os.Getpid())
	defer w.close()
	if !w.alive() {
		t.Errorf("this process reads as not running")
	}
}
