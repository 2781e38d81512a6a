package local

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/proctree"
)

// placeholderAgent is the test agent (testdata/agent), built once.
var placeholderAgent string

func TestMain(m *testing.M) {
	if p := os.Getenv(unprivilegedAgentEnv); p != "" {
		placeholderAgent = p // built by the privileged parent
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "cpi-local-test-")
	if err == nil {
		err = os.Chmod(dir, 0o755) // for TestUnprivileged's child
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	placeholderAgent = filepath.Join(dir, "agent")
	cmd := exec.Command("go", "build", "-o", placeholderAgent, "./testdata/agent")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build placeholder agent:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, nil))
}

func props(t testing.TB, dataDir string) json.RawMessage {
	b, err := json.Marshal(map[string]string{"data_dir": dataDir, "dynamic_range": "127.79.0.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newTestCPI returns a local CPI on a fresh data directory. Every VM left at
// the end of the test is deleted, which ends its processes.
func newTestCPI(t testing.TB) *CPI {
	t.Helper()
	return newTestCPIOn(t, t.TempDir())
}

func newTestCPIOn(t testing.TB, dataDir string) *CPI {
	t.Helper()
	c, err := New(props(t, dataDir), WithLogger(testLogger(t)), WithStopTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteAllVMs(t, c) })
	return c
}

func deleteAllVMs(t testing.TB, c *CPI) {
	entries, _ := os.ReadDir(c.dir(kindVM))
	for _, e := range entries {
		if err := c.DeleteVM(context.Background(), e.Name()); err != nil {
			t.Errorf("cleanup: delete vm %s: %v", e.Name(), err)
		}
	}
}

// tarEntry is one entry of a test archive.
type tarEntry struct {
	name     string
	typ      byte
	mode     int64
	body     string
	linkname string
}

func writeTGZ(t testing.TB, path string, entries ...tarEntry) {
	t.Helper()
	if !writeTGZQuiet(path, entries...) {
		t.Fatalf("cannot write %s", path)
	}
}

// writeTGZQuiet writes a gzipped tarball of the entries; false when tar
// cannot encode them.
func writeTGZQuiet(path string, entries ...tarEntry) bool {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.linkname, Size: int64(len(e.body))}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return false
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				return false
			}
		}
	}
	if tw.Close() != nil || zw.Close() != nil {
		return false
	}
	return os.WriteFile(path, buf.Bytes(), 0o644) == nil
}

// placeholderImage writes a stemcell image holding the placeholder agent.
func placeholderImage(t testing.TB) string {
	t.Helper()
	body, err := os.ReadFile(placeholderAgent)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "image.tgz")
	writeTGZ(t, path,
		tarEntry{name: "./", typ: tar.TypeDir, mode: 0o755},
		tarEntry{name: "./agent", typ: tar.TypeReg, mode: 0o755, body: string(body)},
		tarEntry{name: "./etc/os-release", typ: tar.TypeReg, mode: 0o644, body: "ID=placeholder\n"},
	)
	return path
}

func createStemcell(t testing.TB, c *CPI) string {
	t.Helper()
	cid, err := c.CreateStemcell(context.Background(), cpi.CreateStemcellRequest{ImagePath: placeholderImage(t)})
	if err != nil {
		t.Fatal(err)
	}
	return cid
}

// vmRequest asks for a VM on the stemcell, on a manual network when ip is
// set, else on a dynamic one.
func vmRequest(stemcell, ip string, env map[string]any) cpi.CreateVMRequest {
	nets := map[string]cpi.Network{"default": {Type: "dynamic"}}
	if ip != "" {
		nets = map[string]cpi.Network{"default": {Type: "manual", IP: ip, Netmask: "255.255.255.0", Gateway: "127.77.0.1"}}
	}
	settings, _ := json.Marshal(map[string]any{"agent_id": "agent-1", "env": env, "mbus": map[string]string{"url": "nats://127.0.0.1:4222"}})
	return cpi.CreateVMRequest{AgentID: "agent-1", StemcellCID: stemcell, Networks: nets, AgentSettings: settings}
}

// waitFile waits for a file the placeholder agent writes and returns its
// contents.
func waitFile(t testing.TB, path string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitPID(t testing.TB, path string) int {
	t.Helper()
	pid, err := strconv.Atoi(strings.TrimSpace(waitFile(t, path)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return pid
}

// alive reports whether the process runs (exists and is no zombie).
func alive(pid int) bool {
	st, err := proctree.ReadStat(pid)
	return err == nil && st.State != 'Z' && st.State != 'X'
}

// agentFiles is where the placeholder agent of a VM reports, seen from the
// host.
func (c *CPI) agentFiles(cid string) string {
	return filepath.Join(c.vmDir(cid), rootDirName, "agent")
}

// askVM connects to the address the VM's agent listens on and returns the
// cid it answers.
func askVM(t testing.TB, addr string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("connect to %s: %v", addr, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("read from %s: %v", addr, err)
	}
	return strings.TrimSpace(line)
}

func diskRequest() cpi.CreateDiskRequest { return cpi.CreateDiskRequest{SizeMB: 64} }
