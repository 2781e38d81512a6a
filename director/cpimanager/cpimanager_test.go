package cpimanager_test

import (
	"context"
	"encoding/json"
	"errors"
	"google.golang.org/grpc"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/cpitest"
	"github.com/compleat/compleat/director/cpimanager"
)

// launcher starts in-process fakes and remembers what it was given.
type launcher struct {
	t        testing.TB
	mu       sync.Mutex
	launched []cpimanager.Plugin
	binaries []string
	fakes    map[string]*proc
}

// proc is a launched plugin: a Fake served over real gRPC in-process, so
// that calls pass through the connection's interceptors as in production.
type proc struct {
	cpi.CPI
	fake   *cpitest.Fake
	closed bool
}

func (p *proc) Close() error { p.closed = true; return nil }

func (l *launcher) Launch(ctx context.Context, binary string, p cpimanager.Plugin, observe cpi.CallObserver) (cpimanager.Process, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.launched = append(l.launched, p)
	l.binaries = append(l.binaries, binary)
	if l.fakes == nil {
		l.fakes = map[string]*proc{}
	}
	fake := cpitest.NewFake()
	var opts []grpc.DialOption
	if observe != nil {
		opts = append(opts, grpc.WithUnaryInterceptor(cpi.ObserveCalls(observe)))
	}
	pr := &proc{CPI: cpitest.ServeInProcess(l.t, fake, opts...), fake: fake}
	l.fakes[p.Name] = pr
	return pr, nil
}

const twoCPIs = `cpis:
- name: local
  type: local
  exec_path: /opt/cpi-local
  properties: {data_dir: /tmp/x}
- name: aws-east
  type: aws
  default: true
  exec_path: /opt/cpi-aws
  properties: {secret_access_key: hunter2-secret}
`

// pluginDir holds executable cpi-local and cpi-aws, and twoCPIs with its
// exec_paths pointing there.
func pluginDir(t *testing.T) (dir, config string) {
	dir = t.TempDir()
	for _, n := range []string{"cpi-local", "cpi-aws"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir, strings.ReplaceAll(twoCPIs, "/opt/", dir+"/")
}

func TestParseConfig(t *testing.T) {
	t.Parallel()
	cfg, err := cpimanager.ParseConfig("cpi.yml", []byte(twoCPIs))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.CPIs) != 2 || cfg.CPIs[1].Name != "aws-east" || !cfg.CPIs[1].Default {
		t.Fatalf("config = %+v", cfg)
	}
	var props map[string]string
	json.Unmarshal(cfg.CPIs[0].Properties, &props)
	if props["data_dir"] != "/tmp/x" {
		t.Errorf("properties = %s", cfg.CPIs[0].Properties)
	}
	if s := cfg.CPIs[1].String(); strings.Contains(s, "hunter2") {
		t.Errorf("String() shows the credentials: %s", s)
	}
	raw, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	again, err := cpimanager.ParseConfig("again.yml", raw)
	if err != nil || len(again.CPIs) != 2 || string(again.CPIs[1].Properties) != string(cfg.CPIs[1].Properties) {
		t.Errorf("round trip: %+v, %v", again, err)
	}
}

func TestParseConfigErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ doc, want string }{
		{"cpis: []\n", "cpi.yml: cpis: at least one cpi is required"},
		{"cpis:\n- type: local\n  properties: {}\n", "cpi.yml:3: cpis[0].name: required"},
		{"cpis:\n- name: a\n  properties: {}\n", "cpis[0].type: required"},
		{"cpis:\n- {name: a, type: x}\n- {name: a, type: x}\n", `cpis[1].name: duplicate cpi "a"`},
		{"cpis:\n- {name: a, type: x, default: true}\n- {name: b, type: x, default: true}\n", "more than one cpi has default: true"},
		{"cpis:\n- {name: a, type: x, properties: [1]}\n", "cpis[0].properties: must be a map"},
		{"cpis:\n- {name: a, type: x, colour: red}\n", "field colour not found"},
	} {
		_, err := cpimanager.ParseConfig("cpi.yml", []byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.doc, err, tc.want)
		}
	}
}

func TestPluginsLaunchLazilyOnceAndRestartOnChange(t *testing.T) {
	t.Parallel()
	dir, twoCPIs := pluginDir(t)
	cfg, _ := cpimanager.ParseConfig("cpi.yml", []byte(twoCPIs))
	l := &launcher{t: t}
	var calls []string
	var mu sync.Mutex
	m := cpimanager.New(cfg, cpimanager.Options{Launcher: l, SearchDirs: []string{dir}, Observer: func(c, method string, took time.Duration, err error) {
		mu.Lock()
		calls = append(calls, c+"."+method)
		mu.Unlock()
	}})
	defer m.Close()
	if len(l.launched) != 0 {
		t.Fatal("launched before first use")
	}
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		c, err := m.Get(ctx, "local")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.CreateStemcell(ctx, cpi.CreateStemcellRequest{ImagePath: "/x", CloudProperties: json.RawMessage(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if real, _ := filepath.EvalSymlinks(filepath.Join(dir, "cpi-local")); len(l.launched) != 1 || l.binaries[0] != real {
		t.Fatalf("launched %v from %v, want once from exec_path", l.launched, l.binaries)
	}
	if len(l.fakes["local"].fake.Stemcells()) != 3 {
		t.Errorf("stemcells in the plugin = %d", len(l.fakes["local"].fake.Stemcells()))
	}
	if len(calls) != 3 || calls[0] != "local.CreateStemcell" {
		t.Errorf("observed calls = %v", calls)
	}
	if _, err := m.Get(ctx, "nope"); !errors.Is(err, cpimanager.ErrUnknownCPI) {
		t.Errorf("unknown cpi: %v", err)
	}

	// Changing aws-east's properties leaves local running.
	m.Get(ctx, "aws-east")
	changed, _ := cpimanager.ParseConfig("cpi.yml", []byte(strings.Replace(twoCPIs, "hunter2-secret", "rotated", 1)))
	m.SetConfig(changed)
	if l.fakes["local"].closed || !l.fakes["aws-east"].closed {
		t.Errorf("after change: local closed=%v aws closed=%v", l.fakes["local"].closed, l.fakes["aws-east"].closed)
	}
	m.Get(ctx, "aws-east")
	if len(l.launched) != 3 {
		t.Errorf("launches = %d, want 3 (local, aws, aws again)", len(l.launched))
	}
}

func TestResolveAZCPI(t *testing.T) {
	t.Parallel()
	two, _ := cpimanager.ParseConfig("cpi.yml", []byte(twoCPIs))
	m := cpimanager.New(two, cpimanager.Options{})
	if n, err := m.Resolve(""); err != nil || n != "aws-east" {
		t.Errorf("default of two = %q, %v", n, err)
	}
	if n, err := m.Resolve("local"); err != nil || n != "local" {
		t.Errorf("named = %q, %v", n, err)
	}
	if _, err := m.Resolve("gcp"); !errors.Is(err, cpimanager.ErrUnknownCPI) {
		t.Errorf("unknown = %v", err)
	}
	one, _ := cpimanager.ParseConfig("cpi.yml", []byte("cpis:\n- {name: only, type: local}\n"))
	if n, _ := cpimanager.New(one, cpimanager.Options{}).Resolve(""); n != "only" {
		t.Errorf("only cpi = %q", n)
	}
	noDefault, _ := cpimanager.ParseConfig("cpi.yml", []byte("cpis:\n- {name: a, type: x}\n- {name: b, type: x}\n"))
	if _, err := cpimanager.New(noDefault, cpimanager.Options{}).Resolve(""); err == nil || !strings.Contains(err.Error(), "none is default") {
		t.Errorf("no default: %v", err)
	}
}

func TestBinaryFoundNextToTheDirectorThenOnPath(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "cpi-local")
	os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755)
	cfg, _ := cpimanager.ParseConfig("cpi.yml", []byte("cpis:\n- {name: local, type: local}\n- {name: x, type: nowhere}\n"))
	l := &launcher{t: t}
	m := cpimanager.New(cfg, cpimanager.Options{Launcher: l, SearchDirs: []string{dir}})
	defer m.Close()
	if _, err := m.Get(context.Background(), "local"); err != nil {
		t.Fatal(err)
	}
	if l.binaries[0] != bin {
		t.Errorf("binary = %s, want %s", l.binaries[0], bin)
	}
	t.Setenv("PATH", t.TempDir())
	_, err := m.Get(context.Background(), "x")
	if err == nil || !strings.Contains(err.Error(), "cpi-nowhere not found") || !strings.Contains(err.Error(), "exec_path") {
		t.Errorf("missing binary: %v", err)
	}
}

// An exec_path of any type runs only from next to the director or from
// director.yml's external_cpis: an admin token cannot make the director run
// a program of its choosing.
func TestExecPathOnlyFromAllowedPlaces(t *testing.T) {
	t.Parallel()
	dir, _ := pluginDir(t)
	other := t.TempDir()
	evil := filepath.Join(other, "cpi-local")
	if err := os.WriteFile(evil, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(evil, filepath.Join(dir, "escape")); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ exec, want string }{
		{filepath.Join(dir, "cpi-local"), ""},
		{"/bin/sh", "outside the places CPI executables may run from"},
		{evil, "outside the places"},
		{filepath.Join(dir, "escape"), "outside the places"},
		{filepath.Join(dir, "..", filepath.Base(other), "cpi-local"), "outside the places"},
	}
	for _, c := range cases {
		cfg, err := cpimanager.ParseConfig("cpi.yml", []byte("cpis:\n- name: x\n  type: local\n  exec_path: "+c.exec+"\n"))
		if err != nil {
			t.Fatal(err)
		}
		l := &launcher{t: t}
		m := cpimanager.New(cfg, cpimanager.Options{Launcher: l, SearchDirs: []string{dir}})
		_, err = m.Get(context.Background(), "x")
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("exec_path %s: %v, want %q", c.exec, err, c.want)
		}
		if c.want != "" && len(l.binaries) != 0 {
			t.Errorf("exec_path %s: launched %v", c.exec, l.binaries)
		}
		m.Close()
	}
	for _, bad := range []string{"type: ../../tmp/x", "type: local\n  exec_path: bin/cpi"} {
		if _, err := cpimanager.ParseConfig("cpi.yml", []byte("cpis:\n- name: x\n  "+bad+"\n")); err == nil || !strings.Contains(err.Error(), "cpis[0].") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
