package releases

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/compleat/compleat/director/release"
)

type dagFile struct {
	Packages map[string]struct {
		BuildTime    float64  `yaml:"build_time"`
		Dependencies []string `yaml:"dependencies"`
	} `yaml:"packages"`
	TotalBuildTime float64 `yaml:"total_build_time"`
	CriticalPath   struct {
		BuildTime float64  `yaml:"build_time"`
		Packages  []string `yaml:"packages"`
	} `yaml:"critical_path"`
}

// TestDAGReleaseMatchesItsDescription checks releases/dag against dag.yml:
// the packages, their dependencies and build times, the critical path, and
// that the job needs exactly the leaves.
func TestDAGReleaseMatchesItsDescription(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("dag", "dag.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var d dagFile
	if err := yaml.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	src, err := release.LoadSource("dag")
	if err != nil {
		t.Fatal(err)
	}
	if len(src.Packages) < 20 || len(src.Packages) != len(d.Packages) {
		t.Fatalf("%d packages in the release, %d in dag.yml; want the same, at least 20", len(src.Packages), len(d.Packages))
	}
	total := 0.0
	dependedOn := map[string]bool{}
	for _, p := range src.Packages {
		want, ok := d.Packages[p.Spec.Name]
		if !ok {
			t.Errorf("package %s is not in dag.yml", p.Spec.Name)
			continue
		}
		if !slices.Equal(p.Spec.Dependencies, want.Dependencies) {
			t.Errorf("package %s: dependencies %v, dag.yml says %v", p.Spec.Name, p.Spec.Dependencies, want.Dependencies)
		}
		raw, err := os.ReadFile(filepath.Join("dag", "src", p.Spec.Name, "build_time"))
		if err != nil {
			t.Fatal(err)
		}
		bt, err := strconv.ParseFloat(strings.TrimSpace(string(raw)), 64)
		if err != nil || bt != want.BuildTime {
			t.Errorf("package %s: build_time file %q, dag.yml says %v", p.Spec.Name, raw, want.BuildTime)
		}
		total += want.BuildTime
		for _, dep := range p.Spec.Dependencies {
			dependedOn[dep] = true
		}
	}
	if math.Abs(total-d.TotalBuildTime) > 1e-9 {
		t.Errorf("total build time %v, dag.yml says %v", total, d.TotalBuildTime)
	}

	// The critical path: the longest chain of build times through the DAG.
	type path struct {
		time float64
		pkgs []string
	}
	memo := map[string]path{}
	var longest func(name string) path
	longest = func(name string) path {
		if p, ok := memo[name]; ok {
			return p
		}
		best := path{}
		for _, dep := range d.Packages[name].Dependencies {
			if p := longest(dep); p.time > best.time {
				best = p
			}
		}
		p := path{best.time + d.Packages[name].BuildTime, append(slices.Clone(best.pkgs), name)}
		memo[name] = p
		return p
	}
	var leaves []string
	for name := range d.Packages {
		if !dependedOn[name] {
			leaves = append(leaves, name)
		}
	}
	slices.Sort(leaves)
	crit := path{}
	for _, l := range leaves {
		if p := longest(l); p.time > crit.time {
			crit = p
		}
	}
	if math.Abs(crit.time-d.CriticalPath.BuildTime) > 1e-9 || !slices.Equal(crit.pkgs, d.CriticalPath.Packages) {
		t.Errorf("critical path %v (%vs), dag.yml says %v (%vs)", crit.pkgs, crit.time, d.CriticalPath.Packages, d.CriticalPath.BuildTime)
	}
	if len(src.Jobs) != 1 {
		t.Fatalf("%d jobs", len(src.Jobs))
	}
	jobPkgs := slices.Sorted(slices.Values(src.Jobs[0].Spec.Packages))
	if !slices.Equal(jobPkgs, leaves) {
		t.Errorf("job needs %v, the leaves are %v", jobPkgs, leaves)
	}
	t.Logf("%d packages, %d leaves, serial build time %.1fs, critical path %.1fs: %s",
		len(d.Packages), len(leaves), total, crit.time, strings.Join(crit.pkgs, " -> "))
}

// TestDAGPackagingChecksDependencies compiles a small part of the DAG with
// its packaging scripts, and shows a package refuses to build without its
// dependencies.
func TestDAGPackagingChecksDependencies(t *testing.T) {
	needTools(t, "bash", "sleep")
	c := compileRelease(t, "dag", "lib-2")
	built, err := os.ReadFile(filepath.Join(c.packages, "lib-2", "built"))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(built); got != "lib-2 built in 0.3s on: base-a base-b\n" {
		t.Errorf("lib-2 built = %q", got)
	}

	// mid-1 needs lib-1, which is not compiled.
	mid1 := c.pkg(t, "mid-1")
	dir := t.TempDir()
	f, err := os.Open(mid1.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := extract(f, dir); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "-e", "packaging")
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "BOSH_INSTALL_TARGET=" + t.TempDir(), "BOSH_PACKAGES_DIR=" + c.packages}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "mid-1: dependency lib-1 is not compiled") {
		t.Errorf("mid-1 without lib-1: %v %s", err, out)
	}
}
