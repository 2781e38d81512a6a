package cpimanager_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/cpitest"
	"github.com/compleat/compleat/director/cpimanager"
)

// localModule is the cpi/local module's directory, where the test CPI
// (testdata/boshcpi) and the placeholder agent live.
func localModule() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "cpi", "local")
}

var external struct {
	sync.Once
	dir string
	err error
}

// externalBinaries builds the BOSH-protocol test CPI and the placeholder
// agent once per test binary.
func externalBinaries(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the local CPI behind the external JSON protocol")
	}
	external.Do(func() {
		external.dir, external.err = os.MkdirTemp("", "cpimanager-external-")
		if external.err != nil {
			return
		}
		for _, b := range []struct{ out, pkg string }{{"boshcpi", "./testdata/boshcpi"}, {"agent", "./testdata/agent"}} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(external.dir, b.out), b.pkg)
			cmd.Dir = localModule()
			if out, err := cmd.CombinedOutput(); err != nil {
				external.err = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
				return
			}
		}
	})
	if external.err != nil {
		t.Fatal(external.err)
	}
	return external.dir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if external.dir != "" {
		os.RemoveAll(external.dir)
	}
	os.Exit(code)
}

// stemcellImage is a local stemcell image holding the placeholder agent.
func stemcellImage(t *testing.T, agent string) string {
	t.Helper()
	body, err := os.ReadFile(agent)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range []struct {
		name string
		mode int64
		body []byte
	}{{"./agent", 0o755, body}, {"./etc/os-release", 0o644, []byte("ID=placeholder\n")}} {
		tw.WriteHeader(&tar.Header{Name: e.name, Mode: e.mode, Size: int64(len(e.body)), Typeflag: tar.TypeReg}) //nolint:errcheck // bytes.Buffer
		tw.Write(e.body)                                                                                         //nolint:errcheck // bytes.Buffer
	}
	tw.Close()
	zw.Close()
	p := filepath.Join(t.TempDir(), "image.tgz")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, string(p))
	return len(p), nil
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "")
}

// killVMs stops the agents of the VMs left under dataDir.
func killVMs(t *testing.T, dataDir string) {
	t.Cleanup(func() {
		vms, _ := os.ReadDir(filepath.Join(dataDir, "vms"))
		for _, vm := range vms {
			raw, err := os.ReadFile(filepath.Join(dataDir, "vms", vm.Name(), "agent.pid"))
			if err != nil {
				continue
			}
			if pid, err := strconv.Atoi(strings.TrimSpace(string(raw))); err == nil && pid > 1 {
				syscall.Kill(pid, syscall.SIGKILL) //nolint:errcheck // gone is fine
			}
		}
	})
}

// The conformance suite passes against a CPI executable that speaks only
// BOSH's JSON protocol, configured as a `type: external` cpi config entry:
// each call is a process with director_uuid, request_id and the properties
// in its context; BOSH's error classes come back as typed errors; the
// CPI's log is re-emitted through the director's logger.
func TestExternalCPIConformance(t *testing.T) {
	t.Parallel()
	dir := externalBinaries(t)
	dataDir := t.TempDir()
	killVMs(t, dataDir)
	cfg, err := cpimanager.ParseConfig("cpi.yml", []byte(fmt.Sprintf(`cpis:
- name: bosh
  type: external
  exec_path: %s
  properties: {data_dir: %s, dynamic_range: 127.81.0.0/24}
`, filepath.Join(dir, "boshcpi"), dataDir)))
	if err != nil {
		t.Fatal(err)
	}
	var logs logLines
	var observedMu sync.Mutex
	observed := map[string]int{}
	m := cpimanager.New(cfg, cpimanager.Options{
		Observer: func(cpiName, method string, took time.Duration, err error) {
			observedMu.Lock()
			observed[cpiName+" "+method]++
			observedMu.Unlock()
		},
		Logger:       slog.New(slog.NewTextHandler(&logs, nil)),
		ExternalCPIs: []string{dir},
		DirectorUUID: "d1rect0r-uuid",
	})
	defer m.Close()
	ctx := context.Background()
	c, err := m.Get(ctx, "bosh")
	if err != nil {
		t.Fatal(err)
	}
	info, err := m.Info(ctx, "bosh")
	if err != nil || info.Name != "local" {
		t.Fatalf("info %+v, %v", info, err)
	}
	if _, err := c.HasVM(ctx, "no-such-vm"); err != nil {
		t.Fatalf("has_vm of a missing vm: %v", err)
	}
	if err := c.RebootVM(ctx, "no-such-vm"); !errors.Is(err, cpi.ErrVMNotFound) {
		t.Fatalf("reboot_vm of a missing vm = %v, want VMNotFound mapped from Bosh::Clouds::VMNotFound", err)
	}
	if l := logs.String(); !strings.Contains(l, "director_uuid=d1rect0r-uuid") || !strings.Contains(l, "request_id=cpi-") || !strings.Contains(l, "cpi_method=reboot_vm") {
		t.Fatalf("the CPI's log was not re-emitted with the context:\n%s", l)
	}
	cpitest.Run(t, func(t *testing.T) cpi.CPI { return c }, cpitest.Config{
		Stemcell:                 cpi.CreateStemcellRequest{ImagePath: stemcellImage(t, filepath.Join(dir, "agent"))},
		VMCloudProperties:        json.RawMessage(`{"cpu": 1, "ram": 512}`),
		DiskCloudProperties:      json.RawMessage(`{"type": "directory"}`),
		InvalidVMCloudProperties: json.RawMessage(`{"ram": "lots"}`),
		InvalidField:             "ram",
		ManualNetworks:           cpitest.ManualNetworks("127.81.1.10"),
	})
	observedMu.Lock()
	defer observedMu.Unlock()
	if observed["bosh CreateVM"] == 0 || observed["bosh RebootVM"] == 0 || observed["bosh Info"] == 0 {
		t.Errorf("calls observed for the metrics: %v", observed)
	}
}

// An external entry may only run an executable from the director's own
// directory or the places director.yml lists: a cpi config (uploaded with
// an API token) cannot run an arbitrary program of the host.
func TestExternalCPIPlaces(t *testing.T) {
	allowed := t.TempDir()
	other := t.TempDir()
	for _, d := range []string{allowed, other} {
		if err := os.WriteFile(filepath.Join(d, "cpi"), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(other, "cpi"), filepath.Join(allowed, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(allowed, "plain"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ exec, want string }{
		{filepath.Join(allowed, "cpi"), ""},
		{filepath.Join(other, "cpi"), "outside the places CPI executables may run from"},
		{filepath.Join(allowed, "escape"), "outside the places"},
		{filepath.Join(allowed, "..", filepath.Base(other), "cpi"), "outside the places"},
		{filepath.Join(allowed, "plain"), "not an executable file"},
		{"/bin/sh", "outside the places"},
	}
	for _, c := range cases {
		m := cpimanager.New(cpimanager.Config{CPIs: []cpimanager.Plugin{{Name: "x", Type: cpimanager.TypeExternal, ExecPath: c.exec}}},
			cpimanager.Options{ExternalCPIs: []string{allowed}})
		_, err := m.Get(context.Background(), "x")
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("exec_path %s: %v, want %q", c.exec, err, c.want)
		}
	}
	if _, err := cpimanager.ParseConfig("cpi.yml", []byte("cpis:\n- name: x\n  type: external\n  exec_path: relative/cpi\n")); err == nil || !strings.Contains(err.Error(), "cpis[0].exec_path") {
		t.Errorf("relative exec_path: %v", err)
	}
}
