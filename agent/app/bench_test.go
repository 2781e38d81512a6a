package app_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/director/mbus"
	"github.com/compleat/compleat/director/pki"
)

// agentBinary returns the built agent: $COMPLEAT_BIN/agent, else a fresh
// build.
func agentBinary(tb testing.TB) string {
	if dir := os.Getenv("COMPLEAT_BIN"); dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "agent")); err == nil {
			return filepath.Join(dir, "agent")
		}
	}
	out := filepath.Join(tb.TempDir(), "agent")
	cmd := exec.Command("go", "build", "-o", out, "github.com/compleat/compleat/agent")
	if msg, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("build agent: %v\n%s", err, msg)
	}
	return out
}

// BenchmarkAgentIdle starts the built agent binary against a real bus, waits
// until it is connected and idle, and reports its resident set size and the
// size of an idle heartbeat.
func BenchmarkAgentIdle(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bin := agentBinary(b)
	ca, _ := pki.NewCA("ca", 0)
	srv, _ := ca.IssueServer([]string{"127.0.0.1"}, 0)
	bus, err := mbus.Start(ctx, mbus.Config{Listen: "127.0.0.1:0", CA: ca.CertPEM(), ServerCert: srv.CertPEM, ServerKey: srv.KeyPEM})
	if err != nil {
		b.Fatal(err)
	}
	defer bus.Shutdown()
	dir, _ := ca.IssueClient(pki.DirectorCN, 0)
	nc, err := mbus.Connect(ctx, bus.URL(), ca.CertPEM(), dir.CertPEM, dir.KeyPEM)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	hb := make(chan *nats.Msg, 16)
	nc.ChanSubscribe(protocol.HeartbeatSubject("bench-agent"), hb)
	nc.Flush()

	work := b.TempDir()
	kp, _ := ca.IssueClient("bench-agent", 0)
	doc, _ := json.Marshal(map[string]any{
		"agent_id":           "bench-agent",
		"mbus":               map[string]string{"url": bus.URL(), "ca_cert": string(ca.CertPEM()), "cert": string(kp.CertPEM), "key": string(kp.KeyPEM)},
		"heartbeat_interval": "500ms",
	})
	os.WriteFile(filepath.Join(work, "settings.json"), doc, 0o600)
	cmd := exec.Command(bin, "--infrastructure", "local", "--settings-file", filepath.Join(work, "settings.json"), "--base-dir", filepath.Join(work, "vcap"), "--job-user", "root")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}()
	var size int
	for i := 0; i < 4; i++ { // let it settle over a few heartbeats
		select {
		case m := <-hb:
			size = len(m.Data)
		case <-ctx.Done():
			b.Fatal("no heartbeat from the agent binary")
		}
	}
	for b.Loop() {
		// The figures are the idle footprint; there is nothing to time.
	}
	b.ReportMetric(float64(rssKB(b, cmd.Process.Pid)), "rss-KB")
	b.ReportMetric(float64(size), "heartbeat-bytes")
}

func rssKB(b *testing.B, pid int) int {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	b.Fatal("no VmRSS")
	return 0
}
