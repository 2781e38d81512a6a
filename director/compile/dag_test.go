package compile_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	yaml "go.yaml.in/yaml/v3"

	"github.com/compleat/compleat/director/compile"
	"github.com/compleat/compleat/director/compile/compiletest"
	"github.com/compleat/compleat/director/release"
)

// dagDir is the synthetic release whose packaging scripts check that their
// dependencies are compiled and sleep a known build time.
var dagDir = filepath.Join("..", "..", "releases", "dag")

// dagPackages loads releases/dag: packages with real fingerprints and
// dependencies, Cost from dag.yml's build times, and the critical path.
func dagPackages(t testing.TB) ([]compile.Package, time.Duration) {
	t.Helper()
	src, err := release.LoadSource(dagDir)
	if err != nil {
		t.Skipf("releases/dag: %v", err)
	}
	raw, err := os.ReadFile(filepath.Join(dagDir, "dag.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Packages map[string]struct {
			BuildTime float64 `yaml:"build_time"`
		} `yaml:"packages"`
		CriticalPath struct {
			BuildTime float64 `yaml:"build_time"`
		} `yaml:"critical_path"`
	}
	if err := yaml.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	var pkgs []compile.Package
	for _, p := range src.Packages {
		pkgs = append(pkgs, compile.Package{
			Name: p.Spec.Name, Version: "1", Fingerprint: p.Fingerprint(), Dependencies: p.Spec.Dependencies,
			Cost: time.Duration(d.Packages[p.Spec.Name].BuildTime * float64(time.Second)),
		})
	}
	return pkgs, time.Duration(d.CriticalPath.BuildTime * float64(time.Second))
}

// scriptCloud compiles by really running each package's packaging script:
// a VM is a directory with its own /var/vcap/packages, dependencies are
// installed there from earlier results, and a result is the install target
// directory.
type scriptCloud struct {
	root string

	mu    sync.Mutex
	next  int
	vms   map[string]bool
	blobs map[string]string // blob id → directory
}

var _ compile.Cloud = (*scriptCloud)(nil)

func (c *scriptCloud) CreateVM(ctx context.Context, s compile.Stemcell) (compile.VM, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next++
	vm := compile.VM{CID: fmt.Sprintf("vm-%d", c.next)}
	if err := os.MkdirAll(filepath.Join(c.root, vm.CID, "packages"), 0o755); err != nil {
		return compile.VM{}, err
	}
	c.vms[vm.CID] = true
	return vm, nil
}

func (c *scriptCloud) WaitAgent(ctx context.Context, vm compile.VM) error { return nil }

func (c *scriptCloud) Compile(ctx context.Context, vm compile.VM, req compile.Request) (string, string, error) {
	vmDir := filepath.Join(c.root, vm.CID)
	pkgsDir := filepath.Join(vmDir, "packages")
	c.mu.Lock()
	for _, d := range req.Dependencies {
		if err := os.CopyFS(filepath.Join(pkgsDir, d.Name), os.DirFS(c.blobs[d.BlobID])); err != nil && !errors.Is(err, fs.ErrExist) {
			c.mu.Unlock()
			return "", "", err
		}
	}
	c.mu.Unlock()
	name := req.Package.Name
	work := filepath.Join(vmDir, "compile", name)
	if err := os.CopyFS(filepath.Join(work, name), os.DirFS(filepath.Join(dagDir, "src", name))); err != nil {
		return "", "", err
	}
	target := filepath.Join(vmDir, "install", name)
	script, err := filepath.Abs(filepath.Join(dagDir, "packages", name, "packaging"))
	if err != nil {
		return "", "", err
	}
	cmd := exec.CommandContext(ctx, "/bin/sh", script)
	cmd.Dir = work
	cmd.Env = []string{"PATH=/usr/bin:/bin", "BOSH_INSTALL_TARGET=" + target, "BOSH_PACKAGES_DIR=" + pkgsDir, "BOSH_COMPILE_TARGET=" + work}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", "", &compile.PackagingError{Package: name, Log: string(out), Err: err}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	id := fmt.Sprintf("blob-%s-%s", name, vm.CID)
	c.blobs[id] = target
	return id, strings.Repeat("0", 64), nil
}

func (c *scriptCloud) DeleteVM(ctx context.Context, vm compile.VM) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.vms, vm.CID) // the directory stays: its install/ holds the blobs
	return nil
}

// TestReleasesDAGCompilesInDependencyOrder runs the real packaging scripts
// of releases/dag, each of which fails unless its dependencies are already
// compiled, on 8 workers.
func TestReleasesDAGCompilesInDependencyOrder(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs 10 s of packaging scripts on 8 workers")
	}
	pkgs, _ := dagPackages(t)
	cloud := &scriptCloud{root: t.TempDir(), vms: map[string]bool{}, blobs: map[string]string{}}
	c := compile.New(cloud, compiletest.NewCache(), nil)
	res, err := c.Compile(context.Background(), []compile.Target{{Stemcell: ubuntu, Packages: pkgs}}, compile.Options{Workers: 8, ReuseVMs: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Built != len(pkgs) || len(pkgs) < 20 {
		t.Errorf("built %d of %d packages", res.Built, len(pkgs))
	}
	if len(cloud.vms) != 0 {
		t.Errorf("%d compile VMs left", len(cloud.vms))
	}
}

// BenchmarkCompileReleasesDAG compiles releases/dag with its real packaging
// scripts (each sleeps its build time) and reports the wall time against the
// DAG's critical path and the lower bound max(critical path, total/workers).
func BenchmarkCompileReleasesDAG(b *testing.B) {
	pkgs, critical := dagPackages(b)
	for _, workers := range []int{2, 3, 4, 8} {
		for _, naive := range []bool{false, true} {
			opts := compile.Options{Workers: workers, ReuseVMs: true}
			name := fmt.Sprintf("workers=%d/critical-path", workers)
			if naive {
				opts = compile.NaiveOrder(opts)
				name = fmt.Sprintf("workers=%d/naive", workers)
			}
			b.Run(name, func(b *testing.B) {
				_, bound := lowerBound(pkgs, workers)
				var wall time.Duration
				for b.Loop() {
					cloud := &scriptCloud{root: b.TempDir(), vms: map[string]bool{}, blobs: map[string]string{}}
					c := compile.New(cloud, compiletest.NewCache(), nil)
					start := time.Now()
					if _, err := c.Compile(context.Background(), []compile.Target{{Stemcell: ubuntu, Packages: pkgs}}, opts); err != nil {
						b.Fatal(err)
					}
					wall += time.Since(start)
				}
				avg := wall / time.Duration(b.N)
				b.ReportMetric(avg.Seconds(), "wall-s")
				b.ReportMetric(critical.Seconds(), "critical-path-s")
				b.ReportMetric(bound.Seconds(), "lower-bound-s")
				b.ReportMetric(float64(avg)/float64(bound), "wall/bound")
			})
		}
	}
}
