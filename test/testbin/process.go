package testbin

import (
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Buffer is a bytes.Buffer that a process and a test may use at once.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// Process is a program a test started, in a process group of its own,
// its stdout and stderr in Logs.
type Process struct {
	Cmd  *exec.Cmd
	Logs *Buffer
	// Done is closed when it has exited; Err is then its exit error.
	Done chan struct{}
	Err  error
}

// ReadyWait is how long Start waits for a process to be ready.
const ReadyWait = 30 * time.Second

// Start runs path with args and waits until ready (polled every 20 ms
// with the output so far) says it is, failing the test if it exits first
// or is not ready within ReadyWait. Cleanup stops it with SIGTERM.
func Start(t testing.TB, path string, args []string, ready func(logs string) bool) *Process {
	t.Helper()
	p := &Process{Cmd: exec.Command(path, args...), Logs: &Buffer{}, Done: make(chan struct{})}
	p.Cmd.Stdout, p.Cmd.Stderr = p.Logs, p.Logs
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.Err = p.Cmd.Wait(); close(p.Done) }()
	t.Cleanup(func() { p.Stop(syscall.SIGTERM) })
	for deadline := time.Now().Add(ReadyWait); !ready(p.Logs.String()); {
		select {
		case <-p.Done:
			t.Fatalf("%s exited before it was ready: %v\n%s", path, p.Err, p.Logs)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %s:\n%s", path, ReadyWait, p.Logs)
		}
	}
	return p
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.Done:
		return true
	default:
		return false
	}
}

// Stop sends sig to the process (not its group: what it started lives on,
// as after a crash) and waits for it to exit. One that has not exited
// within 30 s is killed with its group, and Stop says so.
func (p *Process) Stop(sig syscall.Signal) error {
	if p.Exited() {
		return nil
	}
	p.Cmd.Process.Signal(sig)
	select {
	case <-p.Done:
		return nil
	case <-time.After(30 * time.Second):
		syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
		<-p.Done
		return fmt.Errorf("%s did not stop within 30s of %v", p.Cmd.Path, sig)
	}
}

// FreePort is a TCP port free on 127.0.0.1 a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
