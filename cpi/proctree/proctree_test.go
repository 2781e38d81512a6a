package proctree_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi/proctree"
)

// TestStartWaitsForABusyBinary: an agent binary still open for writing
// (as in a process forked while it was being written, until that child
// execs) cannot be run (ETXTBSY); Start tries again until it can, instead
// of failing the VM.
func TestStartWaitsForABusyBinary(t *testing.T) {
	data, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Skipf("no /bin/sleep to run: %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "agent")
	w, err := os.OpenFile(bin, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if probe := exec.Command(bin, "0"); probe.Start() == nil {
		probe.Wait()
		t.Skip("this kernel runs a binary open for writing: nothing to wait for")
	}
	released := make(chan struct{})
	go func() {
		defer close(released)
		time.Sleep(100 * time.Millisecond) // the busy window
		w.Close()
	}()
	p, err := proctree.Start(proctree.Spec{Path: bin, Args: []string{"30"}, Root: dir, Log: filepath.Join(dir, "agent.log")})
	<-released
	if err != nil {
		t.Fatalf("start while the binary was busy for 100 ms: %v", err)
	}
	defer syscall.Kill(p.PID, syscall.SIGKILL)
	if p.PID <= 0 || p.StartTime == 0 {
		t.Errorf("started process %+v", p)
	}
}
