package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/compleat/compleat/agent/applyspec"
	"github.com/compleat/compleat/agent/client"
	"github.com/compleat/compleat/director/mbus"
	"github.com/compleat/compleat/director/pki"
)

// TestBinaryStopsItsJobsOnSIGTERM runs the built agent as the local CPI
// does, starts a job, then terminates the agent: the job's process must be
// stopped gracefully with it, leaving nothing behind.
func TestBinaryStopsItsJobsOnSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent")
	}
	bin := agentBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ca, _ := pki.NewCA("ca", 0)
	srvKP, _ := ca.IssueServer([]string{"127.0.0.1"}, 0)
	bus, err := mbus.Start(ctx, mbus.Config{Listen: "127.0.0.1:0", CA: ca.CertPEM(), ServerCert: srvKP.CertPEM, ServerKey: srvKP.KeyPEM})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Shutdown)
	dirKP, _ := ca.IssueClient(pki.DirectorCN, 0)
	nc, err := mbus.Connect(ctx, bus.URL(), ca.CertPEM(), dirKP.CertPEM, dirKP.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)

	blobs := newBlobServer(t)
	addr := freeAddr(t, fmt.Sprintf("127.78.%d.%d", rand.IntN(200)+10, rand.IntN(200)+10))
	work := t.TempDir()
	events := filepath.Join(work, "events")
	self, _ := os.Executable()
	web := blobs.add(t, map[string]string{"config/processes.yml": fmt.Sprintf(`processes:
- name: web
  executable: %s
  args: ["-test.run=^$", "%s"]
  env: {AGENT_TEST_HELPER: listen, EVENTS_FILE: %s}
  readiness: {tcp: "%s", interval: 100ms}
`, self, addr, events, addr)})

	agentKP, _ := ca.IssueClient("bin-agent", 0)
	doc, _ := json.Marshal(map[string]any{
		"agent_id":  "bin-agent",
		"mbus":      map[string]string{"url": bus.URL(), "ca_cert": string(ca.CertPEM()), "cert": string(agentKP.CertPEM), "key": string(agentKP.KeyPEM)},
		"blobstore": map[string]string{"ca_cert": string(pemOf(blobs))},
	})
	os.WriteFile(filepath.Join(work, "settings.json"), doc, 0o600)
	logf, _ := os.Create(filepath.Join(work, "agent.log"))
	defer logf.Close()
	var cmd *exec.Cmd
	var exited chan error
	startAgent := func() {
		cmd = exec.Command(bin, "--infrastructure", "local", "--settings-file", filepath.Join(work, "settings.json"), "--base-dir", filepath.Join(work, "vcap"), "--job-user", "root")
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited = make(chan error, 1)
		go func(c *exec.Cmd, ch chan error) { ch <- c.Wait() }(cmd, exited)
	}
	startAgent()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(work, "agent.log"))
			t.Logf("agent log:\n%s", b)
		}
	})

	c := client.New(nc, "bin-agent", client.Options{PollInterval: 20 * time.Millisecond})
	if err := c.WaitReady(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(ctx, applyspec.Spec{Jobs: []applyspec.Job{{Name: "web", Blob: web}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	st, err := c.WaitRunning(wctx, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	oldPID := st.Jobs[0].Processes[0].PID

	// The agent crashes (SIGKILL: its job process is left running) and is
	// started again: it takes over, replacing the orphan, and runs the job.
	cmd.Process.Kill()
	<-exited
	startAgent()
	if err := c.WaitReady(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	st, err = c.WaitRunning(wctx, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if pid := st.Jobs[0].Processes[0].PID; pid == oldPID || alive(oldPID) {
		t.Fatalf("orphan %d still alive (new pid %d)", oldPID, pid)
	}
	os.Remove(events)

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("agent exit: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("agent did not exit after SIGTERM")
	}
	if b, _ := os.ReadFile(events); string(b) != "stopped\n" {
		t.Fatalf("job process not stopped gracefully: events %q", b)
	}
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Fatal("job process still listening after the agent exited")
	}
}

// alive reports whether pid runs (a zombie waiting for a reaper does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z'
}
