package app_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/compleat/compleat/agent/app"
	"github.com/compleat/compleat/agent/applyspec"
	"github.com/compleat/compleat/agent/client"
	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/cpi/tarball"
	"github.com/compleat/compleat/director/mbus"
	"github.com/compleat/compleat/director/pki"
)

// TestMain lets the test binary double as a job's process: with
// AGENT_TEST_HELPER=listen it listens on its argument until SIGTERM, then
// appends "stopped" to $EVENTS_FILE.
func TestMain(m *testing.M) {
	if os.Getenv("AGENT_TEST_HELPER") == "listen" {
		helperListen(os.Args[len(os.Args)-1])
		return
	}
	os.Exit(m.Run())
}

func helperListen(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := os.ReadFile(filepath.Join(os.Getenv("PKG_DIR"), "greeting.txt"))
		w.Write(b)
	}))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
	f, _ := os.OpenFile(os.Getenv("EVENTS_FILE"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	fmt.Fprintln(f, "stopped")
	f.Close()
	os.Exit(0)
}

// blobServer serves blobs by signed URL (HMAC of the path and expiry) over
// TLS, as the director's blobstore does.
type blobServer struct {
	*httptest.Server
	key   []byte
	mu    sync.Mutex
	blobs map[string][]byte
}

func newBlobServer(t *testing.T) *blobServer {
	b := &blobServer{key: []byte("signing-key"), blobs: map[string][]byte{}}
	b.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimPrefix(r.URL.Path, "/blobs/")
		if !hmac.Equal([]byte(r.URL.Query().Get("signature")), []byte(b.sign(id, r.URL.Query().Get("expires")))) {
			http.Error(w, "bad signature", http.StatusForbidden)
			return
		}
		b.mu.Lock()
		data, ok := b.blobs[id]
		b.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(data)
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *blobServer) sign(id, expires string) string {
	m := hmac.New(sha256.New, b.key)
	fmt.Fprintf(m, "GET /blobs/%s %s", id, expires)
	return hex.EncodeToString(m.Sum(nil))
}

// add archives files and returns a blob reference with a signed URL.
func (b *blobServer) add(t *testing.T, files map[string]string) applyspec.Blob {
	t.Helper()
	src := t.TempDir()
	for name, content := range files {
		p := filepath.Join(src, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		mode := os.FileMode(0o644)
		if strings.HasPrefix(name, "bin/") {
			mode = 0o755
		}
		os.WriteFile(p, []byte(content), mode)
	}
	var buf bytes.Buffer
	if err := tarball.Create(&buf, src, nil); err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(buf.Bytes())
	sum := hex.EncodeToString(s[:])
	id := sum[:16]
	b.mu.Lock()
	b.blobs[id] = buf.Bytes()
	b.mu.Unlock()
	expires := fmt.Sprint(time.Now().Add(time.Hour).Unix())
	return applyspec.Blob{URL: fmt.Sprintf("%s/blobs/%s?expires=%s&signature=%s", b.URL, id, expires, b.sign(id, expires)), SHA256: sum, Size: int64(buf.Len())}
}

// pemOf is the blob server's certificate, the CA agents must trust.
func pemOf(b *blobServer) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.Certificate().Raw})
}

func freeAddr(t *testing.T, ip string) string {
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Skipf("cannot listen on %s: %v", ip, err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestAgentEndToEnd runs an agent from a settings file against the
// director's real message bus (mutual TLS, per-agent certificate): apply
// installs a job whose process listens on the VM's IP, get_state reports
// it running, a killed process is seen failing and restarted, and stop
// runs drain before stopping it.
func TestAgentEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	ca, err := pki.NewCA("test ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	serverKP, _ := ca.IssueServer([]string{"127.0.0.1"}, 0)
	bus, err := mbus.Start(ctx, mbus.Config{Listen: "127.0.0.1:0", CA: ca.CertPEM(), ServerCert: serverKP.CertPEM, ServerKey: serverKP.KeyPEM})
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
	heartbeats := make(chan protocol.Heartbeat, 64)
	alerts := make(chan protocol.Alert, 64)
	var hbSize atomic.Int64
	nc.Subscribe(protocol.HeartbeatSubject("agent-1"), func(m *nats.Msg) { hbSize.Store(int64(len(m.Data))) })
	client.Heartbeats(nc, func(id string, hb protocol.Heartbeat) {
		if id == "agent-1" {
			heartbeats <- hb
		}
	})
	client.Alerts(nc, func(id string, a protocol.Alert) {
		if id == "agent-1" {
			alerts <- a
		}
	})
	nc.Flush()

	blobs := newBlobServer(t)
	vmIP := fmt.Sprintf("127.77.%d.%d", rand.IntN(200)+10, rand.IntN(200)+10)
	addr := freeAddr(t, vmIP)
	work := t.TempDir()
	base := filepath.Join(work, "vcap")
	events := filepath.Join(work, "events")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}

	greeting := blobs.add(t, map[string]string{"greeting.txt": "hello from the package"})
	processes := fmt.Sprintf(`processes:
- name: web
  executable: %s
  args: ["-test.run=^$", "%s"]
  env: {AGENT_TEST_HELPER: listen, EVENTS_FILE: %s, PKG_DIR: %s}
  readiness:
    tcp: "%s"
    interval: 100ms
  shutdown: {signal: TERM, timeout: 10s}
`, self, addr, events, filepath.Join(base, "packages", "greeting"), addr)
	drain := fmt.Sprintf("#!/bin/sh\necho \"drain $*\" >> %s\necho 0\n", events)
	web := blobs.add(t, map[string]string{"config/processes.yml": processes, "bin/drain": drain})

	agentKP, _ := ca.IssueClient("agent-1", 0)
	settingsDoc, _ := json.Marshal(map[string]any{
		"agent_id":           "agent-1",
		"vm":                 map[string]string{"cid": "vm-1"},
		"mbus":               map[string]string{"url": bus.URL(), "ca_cert": string(ca.CertPEM()), "cert": string(agentKP.CertPEM), "key": string(agentKP.KeyPEM)},
		"blobstore":          map[string]string{"ca_cert": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: blobs.Certificate().Raw}))},
		"networks":           map[string]any{"default": map[string]any{"type": "manual", "ip": vmIP, "default": []string{"dns", "gateway"}}},
		"heartbeat_interval": "200ms",
	})
	settingsFile := filepath.Join(work, "settings.json")
	os.WriteFile(settingsFile, settingsDoc, 0o600)

	agentCtx, stopAgent := context.WithCancel(context.Background())
	var logs syncBuffer
	agentDone := make(chan error, 1)
	go func() {
		agentDone <- app.Run(agentCtx, []string{"--infrastructure", "local", "--settings-file", settingsFile, "--base-dir", base, "--job-user", "root"}, &logs, &logs)
	}()
	t.Cleanup(func() {
		stopAgent()
		select {
		case err := <-agentDone:
			if err != nil {
				t.Errorf("agent: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("agent did not stop")
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	})

	// A heartbeat arrives once the agent is connected.
	select {
	case hb := <-heartbeats:
		if hb.AgentID != "agent-1" || hb.Time.IsZero() {
			t.Fatalf("heartbeat %+v", hb)
		}
	case <-ctx.Done():
		t.Fatal("no heartbeat")
	}

	c := client.New(nc, "agent-1", client.Options{PollInterval: 20 * time.Millisecond, RequestTimeout: 5 * time.Second})
	if err := c.WaitReady(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.Call(ctx, "reboot_everything", nil, nil); !errors.Is(err, protocol.ErrUnknownMethod) {
		t.Fatalf("unknown method: err = %v", err)
	}

	spec := applyspec.Spec{
		Deployment: "demo", Name: "web", ID: "0f1e", Index: 0,
		Networks: map[string]applyspec.Network{"default": {IP: vmIP}},
		Jobs:     []applyspec.Job{{Name: "web", Blob: web}},
		Packages: []applyspec.Package{{Name: "greeting", Version: "1", Blob: greeting}},
	}
	if err := c.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	st := waitRunning(ctx, t, c)
	if st.Spec == nil || st.Spec.Deployment != "demo" || len(st.Jobs) != 1 || len(st.Jobs[0].Processes) != 1 {
		t.Fatalf("state %+v", st)
	}
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("job process does not answer on the VM's IP: %v", err)
	}
	body := new(bytes.Buffer)
	body.ReadFrom(resp.Body)
	resp.Body.Close()
	if body.String() != "hello from the package" {
		t.Fatalf("job answered %q", body)
	}

	// Kill the process: the agent sees it failing and restarts it.
	pid := st.Jobs[0].Processes[0].PID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	sawFailing := false
	for !sawFailing {
		select {
		case a := <-alerts:
			sawFailing = a.State == protocol.StateFailing && a.Process == "web" && a.Job == "web"
		case <-ctx.Done():
			t.Fatal("no failing alert after the process was killed")
		}
	}
	st = waitRunning(ctx, t, c)
	if p := st.Jobs[0].Processes[0]; p.PID == pid || p.Restarts < 1 {
		t.Fatalf("process not restarted: %+v", p)
	}

	// Heartbeat size, for the record.
	select {
	case hb := <-heartbeats:
		for len(heartbeats) > 0 {
			hb = <-heartbeats
		}
		if len(hb.Jobs) != 1 || len(hb.Jobs[0].Processes) != 1 || hb.Spec != nil {
			t.Fatalf("heartbeat %+v", hb)
		}
		t.Logf("heartbeat size with one job and one process: %d bytes", hbSize.Load())
	case <-ctx.Done():
	}

	// Stop with drain: drain runs first, then the process gets its signal.
	os.Remove(events)
	if err := c.Stop(ctx, protocol.StopRequest{Drain: &protocol.DrainRequest{Type: protocol.DrainShutdown}}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(events)
	if string(got) != "drain job_shutdown hash_unchanged\nstopped\n" {
		t.Fatalf("events %q: want drain then stop", got)
	}
	st, err = c.GetState(ctx)
	if err != nil || st.JobState != protocol.StateStopped {
		t.Fatalf("after stop: %+v %v", st.JobState, err)
	}
}

func waitRunning(ctx context.Context, t *testing.T, c *client.Client) protocol.State {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	st, err := c.WaitRunning(wctx, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
