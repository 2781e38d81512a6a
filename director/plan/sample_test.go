package plan_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compleat/compleat/director/manifest"
	"github.com/compleat/compleat/director/plan"
	"github.com/compleat/compleat/director/release"
)

// TestSampleWebDeployment plans manifests/local/web.yml with the real
// releases/web (built and opened as an upload would) and checks the
// rendered process files: the template contract as the sample release uses
// it.
func TestSampleWebDeployment(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	tarball := filepath.Join(t.TempDir(), "web.tgz")
	if _, _, err := release.Create(filepath.Join(root, "releases", "web"), release.CreateOptions{Version: "1", Tarball: tarball}); err != nil {
		t.Fatalf("create release: %v", err)
	}
	a, err := release.Open(tarball)
	if err != nil {
		t.Fatalf("open release: %v", err)
	}
	defer a.Close()
	rel := plan.Release{Manifest: a.Manifest, Jobs: map[string]*release.Job{}}
	for _, j := range a.Jobs {
		rel.Jobs[j.Name] = j.Job
	}
	read := func(p string) []byte {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cc, err := manifest.ParseCloudConfig("cloud-config.yml", read("manifests/local/cloud-config.yml"))
	if err != nil {
		t.Fatal(err)
	}
	dep, err := manifest.ParseDeployment("web.yml", read("manifests/local/web.yml"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := plan.Compute(plan.Desired{
		Manifest: dep, CloudConfig: cc,
		Releases:  map[string]plan.Release{"web": rel},
		Stemcells: map[string]plan.Stemcell{"default": {OS: "local", Version: "1", CID: "sc"}},
		IDs:       &plan.SequentialIDs{Prefix: "id-"},
	}, plan.State{})
	if err != nil {
		t.Fatal(err)
	}
	file := func(group, job, path string) (string, os.FileMode) {
		for _, g := range p.Groups {
			if g.Name != group {
				continue
			}
			for _, j := range g.Instances[0].Jobs {
				if j.Name != job {
					continue
				}
				for _, f := range j.Rendered.Files {
					if f.Path == path {
						return string(f.Content), f.Mode
					}
				}
			}
		}
		t.Fatalf("no %s in job %s of %s", path, job, group)
		return "", 0
	}
	web := p.Groups[0].Instances[0]
	procs, _ := file("web", "web", "config/processes.yml")
	if !strings.Contains(procs, `"`+web.Address()+`:8080"`) {
		t.Errorf("web process file does not listen on %s:8080:\n%s", web.Address(), procs)
	}
	if _, mode := file("web", "web", "bin/drain"); mode.Perm() != 0o755 {
		t.Errorf("bin/drain mode %v", mode)
	}
	lb, _ := file("lb", "lb", "config/processes.yml")
	for _, in := range p.Groups[0].Instances {
		if !strings.Contains(lb, `"`+in.Address()+`:8080"`) {
			t.Errorf("lb does not balance over %s:\n%s", in.Address(), lb)
		}
	}
	if got := p.Groups[1].Instances[0].Address(); got != "127.77.1.10" {
		t.Errorf("lb address %s, want its static IP", got)
	}
	var b strings.Builder
	p.Format(&b)
	t.Log(b.String())
}
