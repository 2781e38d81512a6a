package plan_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/rogpeppe/go-internal/txtar"
	yaml "go.yaml.in/yaml/v3"

	"github.com/compleat/compleat/director/manifest"
	"github.com/compleat/compleat/director/plan"
	"github.com/compleat/compleat/director/release"
	"github.com/compleat/compleat/director/template"
)

var updateGolden = flag.Bool("update", false, "rewrite want.txt in testdata/*.txtar")

// directorFile is director.yml in a golden file: what the director knows
// besides the manifest (uploaded releases and stemcells).
type directorFile struct {
	Stemcells map[string]plan.Stemcell `yaml:"stemcells"`
	Releases  []struct {
		Name     string `yaml:"name"`
		Version  string `yaml:"version"`
		Packages []struct {
			Name         string   `yaml:"name"`
			Fingerprint  string   `yaml:"fingerprint"`
			Dependencies []string `yaml:"dependencies"`
		} `yaml:"packages"`
		Jobs []struct {
			Name        string `yaml:"name"`
			Fingerprint string `yaml:"fingerprint"`
			Spec        string `yaml:"spec"`
		} `yaml:"jobs"`
	} `yaml:"releases"`
	Recreate bool `yaml:"recreate"`
	// ResizeDisk: the (one, unnamed) CPI reports the ResizeDisk capability.
	ResizeDisk bool `yaml:"resize_disk"`
	// VMCloudProperties are what the (one, unnamed) CPI's
	// CalculateVMCloudProperties answers for each vm_resources.
	VMCloudProperties []struct {
		CPU             int            `yaml:"cpu"`
		RAM             int            `yaml:"ram"`
		Ephemeral       int            `yaml:"ephemeral_disk_size"`
		CloudProperties map[string]any `yaml:"cloud_properties"`
	} `yaml:"vm_cloud_properties"`
	// ShowCloudProperties: the golden output lists each instance's and the
	// compilation's cloud properties.
	ShowCloudProperties bool `yaml:"show_cloud_properties"`
	// Unresponsive lists instance ids whose agent did not answer (--fix).
	Unresponsive []string `yaml:"unresponsive"`
	// ShowRendered lists instance groups whose rendered files the golden
	// output shows in full.
	ShowRendered []string `yaml:"show_rendered"`
}

type golden struct {
	sections map[string][]byte
}

func (g golden) get(t testing.TB, name string) []byte {
	t.Helper()
	b, ok := g.sections[name]
	if !ok {
		t.Fatalf("no section %s", name)
	}
	return b
}

// desired builds a Desired from a manifest section and director.yml
// (templates come from sections templates/<release>/<job>/<file>).
func (g golden) desired(t testing.TB, manifestSection, directorSection string, ids plan.IDSource) (plan.Desired, directorFile) {
	t.Helper()
	var df directorFile
	if err := yaml.Unmarshal(g.get(t, directorSection), &df); err != nil {
		t.Fatalf("%s: %v", directorSection, err)
	}
	cc, err := manifest.ParseCloudConfig("cloud-config.yml", g.get(t, "cloud-config.yml"))
	if err != nil {
		t.Fatalf("cloud-config.yml: %v", err)
	}
	d := plan.Desired{CloudConfig: cc, Releases: map[string]plan.Release{}, Stemcells: df.Stemcells, IDs: ids, Recreate: df.Recreate, ERB: erbRenderer()}
	if df.ResizeDisk {
		d.ResizeDiskCPIs = map[string]bool{"": true}
	}
	for _, v := range df.VMCloudProperties {
		if d.VMCloudProperties == nil {
			d.VMCloudProperties = map[plan.VMResourcesKey]map[string]any{}
		}
		d.VMCloudProperties[plan.VMResourcesKey{Resources: manifest.VMResources{CPU: v.CPU, RAM: v.RAM, EphemeralDiskSize: v.Ephemeral}}] = v.CloudProperties
	}
	for _, id := range df.Unresponsive {
		if d.Unresponsive == nil {
			d.Unresponsive = map[string]bool{}
		}
		d.Unresponsive[id] = true
	}
	d.Manifest, err = manifest.ParseDeployment(manifestSection, g.get(t, manifestSection))
	if err != nil {
		// An error here is the golden file's expected output.
		return plan.Desired{Manifest: nil, CloudConfig: cc}, df
	}
	for _, r := range df.Releases {
		rel := plan.Release{Manifest: &release.Manifest{Name: r.Name, Version: r.Version}, Jobs: map[string]*release.Job{}}
		for _, p := range r.Packages {
			rel.Manifest.Packages = append(rel.Manifest.Packages, release.PackageEntry{Name: p.Name, Version: p.Fingerprint[:4], Fingerprint: p.Fingerprint, Dependencies: p.Dependencies})
		}
		for _, j := range r.Jobs {
			spec, err := release.ParseJobSpec(r.Name+"/"+j.Name+"/spec", []byte(j.Spec))
			if err != nil {
				t.Fatalf("spec of %s/%s: %v", r.Name, j.Name, err)
			}
			job := &release.Job{Spec: spec, Templates: map[string][]byte{}}
			for src := range spec.Templates {
				job.Templates[src] = g.get(t, fmt.Sprintf("templates/%s/%s/%s", r.Name, j.Name, src))
			}
			if monit, ok := g.sections[fmt.Sprintf("monit/%s/%s", r.Name, j.Name)]; ok {
				job.Monit = monit
			}
			rel.Jobs[j.Name] = job
			rel.Manifest.Jobs = append(rel.Manifest.Jobs, release.JobEntry{Name: j.Name, Version: j.Fingerprint[:4], Fingerprint: j.Fingerprint, Packages: spec.Packages})
		}
		d.Releases[r.Name] = rel
	}
	return d, df
}

// deployed turns a plan into the state the director would record after
// carrying it out: VMs and disks get cids derived from instance ids.
func deployed(p plan.Plan) plan.State {
	st := plan.State{Deployment: p.Deployment, ConsumedLinks: p.Consumed}
	for _, g := range p.Groups {
		for _, in := range g.Instances {
			s := in.State()
			s.VMCID = "vm-" + in.ID
			if s.Disk != nil && s.Disk.CID == "" {
				s.Disk.CID = "disk-" + in.ID
			}
			st.Instances = append(st.Instances, s)
		}
	}
	return st
}

func formatResult(p plan.Plan, err error, df directorFile) string {
	if err != nil {
		return "error:\n" + err.Error() + "\n"
	}
	var b strings.Builder
	if err := p.Format(&b); err != nil {
		return "format error: " + err.Error()
	}
	if df.ShowCloudProperties {
		b.WriteString("\n== cloud properties\n")
		for _, g := range p.Groups {
			for _, in := range g.Instances {
				raw, _ := json.Marshal(in.CloudProperties)
				fmt.Fprintf(&b, "%s: %s\n", in.Name(), raw)
			}
		}
		raw, _ := json.Marshal(p.Compilation.CloudProperties)
		fmt.Fprintf(&b, "compilation: %s\n", raw)
	}
	for _, g := range p.Groups {
		show := false
		for _, name := range df.ShowRendered {
			show = show || name == g.Name
		}
		if !show {
			continue
		}
		for _, in := range g.Instances {
			for _, j := range in.Jobs {
				for _, f := range j.Rendered.Files {
					fmt.Fprintf(&b, "\n== %s job %s: %s (%04o)\n%s", in.Name(), j.Name, f.Path, f.Mode.Perm(), f.Content)
				}
			}
		}
	}
	return b.String()
}

func TestGolden(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("testdata/*.txtar")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files (%v)", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txtar"), func(t *testing.T) {
			t.Parallel()
			if strings.HasPrefix(filepath.Base(file), "bosh_") && erbRenderer() == nil {
				t.Skip("ruby is not installed (Debian package ruby): BOSH jobs' ERB templates cannot be rendered")
			}
			ar, err := txtar.ParseFile(file)
			if err != nil {
				t.Fatal(err)
			}
			g := golden{sections: map[string][]byte{}}
			for _, f := range ar.Files {
				g.sections[f.Name] = f.Data
			}
			ids := &plan.SequentialIDs{Prefix: "id-"}
			var actual plan.State
			if _, ok := g.sections["deployed.yml"]; ok {
				dirSection := "director.yml"
				if _, ok := g.sections["deployed-director.yml"]; ok {
					dirSection = "deployed-director.yml"
				}
				prevDesired, _ := g.desired(t, "deployed.yml", dirSection, ids)
				var prevState plan.State
				if raw, ok := g.sections["deployed-state.json"]; ok {
					// What other deployments provided then.
					if err := json.Unmarshal(raw, &prevState); err != nil {
						t.Fatalf("deployed-state.json: %v", err)
					}
				}
				prev, err := plan.Compute(prevDesired, prevState)
				if err != nil {
					t.Fatalf("planning deployed.yml: %v", err)
				}
				actual = deployed(prev)
			}
			if raw, ok := g.sections["state.json"]; ok {
				var extra plan.State
				if err := json.Unmarshal(raw, &extra); err != nil {
					t.Fatalf("state.json: %v", err)
				}
				actual.OtherIPs = extra.OtherIPs
				actual.Links = extra.Links
				if extra.ConsumedLinks != nil {
					actual.ConsumedLinks = extra.ConsumedLinks
				}
				actual.Instances = append(actual.Instances, extra.Instances...)
				if extra.Deployment != "" {
					actual.Deployment = extra.Deployment
				}
			}
			if names, ok := g.sections["ignored.txt"]; ok {
				// GROUP/INDEX of deployed instances the operator ignored.
				for _, name := range strings.Fields(string(names)) {
					found := false
					for i := range actual.Instances {
						in := &actual.Instances[i]
						if fmt.Sprintf("%s/%d", in.Group, in.Index) == name {
							in.Ignore, found = true, true
						}
					}
					if !found {
						t.Fatalf("ignored.txt: no deployed instance %s", name)
					}
				}
			}
			desired, df := g.desired(t, "manifest.yml", "director.yml", ids)
			var got string
			if desired.Manifest == nil {
				_, perr := manifest.ParseDeployment("manifest.yml", g.get(t, "manifest.yml"))
				got = formatResult(plan.Plan{}, perr, df)
			} else {
				p, err := plan.Compute(desired, actual)
				got = formatResult(p, err, df)
				if err == nil {
					checkInvariants(t, p, actual)
				}
				if verbs, ok := g.sections["lifecycle.txt"]; ok && err == nil {
					got += formatLifecycle(t, &p, verbs, g.sections["states.yml"])
				}
				if names, ok := g.sections["errands.txt"]; ok && err == nil {
					got += formatErrands(t, desired, actual, strings.Fields(string(names)), df)
				}
			}
			idx := -1
			for i, f := range ar.Files {
				if f.Name == "want.txt" {
					idx = i
				}
			}
			if *updateGolden {
				if idx < 0 {
					ar.Files = append(ar.Files, txtar.File{Name: "want.txt"})
					idx = len(ar.Files) - 1
				}
				ar.Files[idx].Data = []byte(got)
				if err := os.WriteFile(file, txtar.Format(ar), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if idx < 0 {
				t.Fatalf("no want.txt (run go test -update)")
			}
			if want := string(ar.Files[idx].Data); got != want {
				t.Errorf("plan differs from %s\n--- got\n%s--- want\n%s", file, got, want)
			}
		})
	}
}

// checkInvariants holds for every plan: unique ids, indexes and manual
// addresses; every deployed disk is kept by exactly one instance or
// orphaned; no disk still kept is orphaned.
func checkInvariants(t *testing.T, p plan.Plan, actual plan.State) {
	t.Helper()
	ids := map[string]bool{}
	ips := map[string]string{}
	kept := map[string]string{}
	for _, g := range p.Groups {
		idx := map[int]bool{}
		for _, in := range g.Instances {
			if ids[in.ID] {
				t.Errorf("id %s used twice", in.ID)
			}
			ids[in.ID] = true
			if idx[in.Index] {
				t.Errorf("index %d used twice in %s", in.Index, g.Name)
			}
			idx[in.Index] = true
			for _, n := range in.Networks {
				if n.Type == "manual" && n.IP.IsValid() {
					k := n.Name + " " + n.IP.String()
					if other, dup := ips[k]; dup {
						t.Errorf("address %s given to %s and %s", k, other, in.Name())
					}
					ips[k] = in.Name()
				}
			}
			if in.Disk != nil && in.Disk.CID != "" {
				if other, dup := kept[in.Disk.CID]; dup {
					t.Errorf("disk %s kept by %s and %s", in.Disk.CID, other, in.Name())
				}
				kept[in.Disk.CID] = in.Name()
			}
		}
	}
	for _, d := range p.Delete {
		for _, g := range p.Groups {
			for _, in := range g.Instances {
				if g.Name == d.Instance.Group && in.Index == d.Instance.Index {
					t.Errorf("%s has index %d of %s/%s, which is being deleted", in.Name(), in.Index, d.Instance.Group, d.Instance.ID)
				}
			}
		}
		for name, a := range d.Instance.Networks {
			if holder, ok := ips[name+" "+a.String()]; ok && a.IsValid() {
				t.Errorf("address %s of deleted %s/%s given to %s", a, d.Instance.Group, d.Instance.ID, holder)
			}
		}
	}
	// An address a deployed instance holds goes to no other instance in the
	// same deploy (its VM may still hold it).
	for _, st := range actual.Instances {
		for name, a := range st.Networks {
			if holder, ok := ips[name+" "+a.String()]; ok && a.IsValid() && holder != st.Group+"/"+st.ID {
				t.Errorf("address %s of %s/%s given to %s", a, st.Group, st.ID, holder)
			}
		}
	}
	for _, n := range p.Compilation.Addresses {
		k := n.Name + " " + n.IP.String()
		if holder, ok := ips[k]; ok {
			t.Errorf("compile address %s is %s's", k, holder)
		}
		ips[k] = "a compile VM"
	}
	orphaned := map[string]bool{}
	for _, o := range p.OrphanDisks {
		if holder, ok := kept[o.CID]; ok {
			t.Errorf("disk %s is orphaned while %s keeps it", o.CID, holder)
		}
		orphaned[o.CID] = true
	}
	var lost []string
	for _, st := range actual.Instances {
		if st.Disk != nil && st.Disk.CID != "" && kept[st.Disk.CID] == "" && !orphaned[st.Disk.CID] {
			lost = append(lost, st.Disk.CID)
		}
	}
	sort.Strings(lost)
	if len(lost) > 0 {
		t.Errorf("disks neither kept nor orphaned: %v", lost)
	}
}

// formatLifecycle plans each line of a lifecycle.txt section ("VERB
// [TARGET]") over p with the instance states of states.yml (id: state) and
// formats the results, for the golden files of the lifecycle verbs.
func formatLifecycle(t *testing.T, p *plan.Plan, verbs, statesYAML []byte) string {
	t.Helper()
	states := map[string]string{}
	if err := yaml.Unmarshal(statesYAML, &states); err != nil {
		t.Fatalf("states.yml: %v", err)
	}
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(string(verbs)), "\n") {
		verb, target, _ := strings.Cut(strings.TrimSpace(line), " ")
		fmt.Fprintf(&b, "\n$ %s\n", strings.TrimSpace(line))
		lp, err := plan.Lifecycle(p, plan.Verb(verb), target, states)
		if err != nil {
			fmt.Fprintf(&b, "error: %v\n", err)
			continue
		}
		b.WriteString(lp.Format())
	}
	return b.String()
}

var erbOnce struct {
	sync.Once
	erb *template.ERB
}

// erbRenderer is one ERB renderer for the package's tests, nil without
// ruby.
func erbRenderer() *template.ERB {
	erbOnce.Do(func() {
		if _, err := exec.LookPath("ruby"); err == nil {
			erbOnce.erb = template.NewERB("")
		}
	})
	return erbOnce.erb
}

// formatErrands shows, for each errand named, where it runs, the plan of
// its run (VMs for an errand group alone) and of the clean-up after it.
func formatErrands(t *testing.T, desired plan.Desired, actual plan.State, names []string, df directorFile) string {
	t.Helper()
	var b strings.Builder
	var all []string
	for _, e := range plan.Errands(desired) {
		all = append(all, e.Name)
	}
	fmt.Fprintf(&b, "\n== errands: %s\n", strings.Join(all, ", "))
	for _, name := range names {
		e, err := plan.FindErrand(desired, name)
		if err != nil {
			fmt.Fprintf(&b, "\n== run-errand %s\nerror: %v\n", name, err)
			continue
		}
		fmt.Fprintf(&b, "\n== run-errand %s\n%s\n", name, e)
		full, err := plan.Compute(plan.ErrandDesired(desired, e), actual)
		if err != nil {
			fmt.Fprintf(&b, "error: %v\n", err)
			continue
		}
		run := plan.ErrandPlan(full, e)
		b.WriteString("-- run:\n" + formatResult(run, nil, df))
		after := actual
		after.Instances = append(after.Instances, deployed(run).Instances...)
		targets, err := plan.ErrandTargets(e, after.Instances, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range targets {
			fmt.Fprintf(&b, "target %s/%d\n", in.Group, in.Index)
		}
		next, err := plan.Compute(desired, after)
		if err != nil {
			fmt.Fprintf(&b, "error: %v\n", err)
			continue
		}
		b.WriteString("-- clean-up:\n" + formatResult(plan.ErrandCleanup(next, e), nil, directorFile{}))
	}
	return b.String()
}
