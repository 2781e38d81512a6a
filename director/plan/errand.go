package plan

import (
	"fmt"
	"sort"
	"strings"

	"github.com/compleat/compleat/director/manifest"
)

// Errand says where `run-errand NAME` runs, BOSH's way: NAME is an
// instance group with lifecycle: errand, whose instances get VMs for the
// run (every job of the group with a bin/run runs), else the name of a job
// with a bin/run colocated on service groups, which runs on their deployed
// instances.
type Errand struct {
	Name string
	// Group is the lifecycle: errand group; "" for a colocated errand.
	Group string
	// Runs are the jobs whose bin/run is run, with the group they are in.
	Runs []ErrandRun
}

// ErrandRun is one job's bin/run in one group.
type ErrandRun struct {
	Group string
	Job   string
}

// ErrandScript is where a job renders the script an errand runs.
const ErrandScript = "bin/run"

// hasRun reports whether the job renders bin/run.
func (d Desired) hasRun(j manifest.Job) bool {
	rel, ok := d.Releases[j.Release]
	if !ok {
		return false
	}
	job, ok := rel.Jobs[j.Name]
	if !ok || job.Spec == nil {
		return false
	}
	for _, dst := range job.Spec.Templates {
		if dst == ErrandScript {
			return true
		}
	}
	return false
}

// Errands lists the deployment's errands: its errand groups, then the
// jobs with a bin/run on service groups, each once, sorted by name.
func Errands(d Desired) []Errand {
	byName := map[string]*Errand{}
	var names []string
	add := func(name, group string, run ErrandRun) {
		e, ok := byName[name]
		if !ok {
			e = &Errand{Name: name, Group: group}
			byName[name] = e
			names = append(names, name)
		}
		e.Runs = append(e.Runs, run)
	}
	if d.Manifest == nil {
		return nil
	}
	for _, ig := range d.Manifest.InstanceGroups {
		if ig.Lifecycle != manifest.Errand {
			continue
		}
		for _, j := range ig.Jobs {
			if d.hasRun(j) {
				add(ig.Name, ig.Name, ErrandRun{Group: ig.Name, Job: j.Name})
			}
		}
	}
	for _, ig := range d.Manifest.InstanceGroups {
		if ig.Lifecycle == manifest.Errand || ig.Instances == 0 {
			continue
		}
		for _, j := range ig.Jobs {
			if _, isGroup := byName[j.Name]; isGroup && byName[j.Name].Group != "" {
				continue // an errand group of that name wins, as in BOSH
			}
			if d.hasRun(j) {
				add(j.Name, "", ErrandRun{Group: ig.Name, Job: j.Name})
			}
		}
	}
	sort.Strings(names)
	out := make([]Errand, 0, len(names))
	for _, n := range names {
		out = append(out, *byName[n])
	}
	return out
}

// FindErrand finds the errand called name.
func FindErrand(d Desired, name string) (Errand, error) {
	var known []string
	for _, e := range Errands(d) {
		if e.Name == name {
			return e, nil
		}
		known = append(known, e.Name)
	}
	if d.Manifest != nil {
		for _, ig := range d.Manifest.InstanceGroups {
			if ig.Name == name && ig.Lifecycle == manifest.Errand {
				return Errand{}, fmt.Errorf("errand group %s has no job with a %s", name, ErrandScript)
			}
		}
	}
	if len(known) == 0 {
		return Errand{}, fmt.Errorf("no errand %s: the deployment has no errands", name)
	}
	return Errand{}, fmt.Errorf("no errand %s (errands: %s)", name, strings.Join(known, ", "))
}

// ErrandDesired is d with the errand's group deployed as a service group,
// the input of the plan that gives it VMs for a run. Nothing else changes.
func ErrandDesired(d Desired, e Errand) Desired {
	if e.Group == "" || d.Manifest == nil {
		return d
	}
	m := *d.Manifest
	m.InstanceGroups = append([]manifest.InstanceGroup(nil), m.InstanceGroups...)
	for i := range m.InstanceGroups {
		if m.InstanceGroups[i].Name == e.Group {
			m.InstanceGroups[i].Lifecycle = manifest.Service
		}
	}
	d.Manifest = &m
	return d
}

// WithErrands is d with every errand group deployed as a service group:
// planning it checks the errands' links, properties and templates at
// deploy, as BOSH does, although their VMs wait for run-errand.
func WithErrands(d Desired) Desired {
	if d.Manifest == nil {
		return d
	}
	m := *d.Manifest
	m.InstanceGroups = append([]manifest.InstanceGroup(nil), m.InstanceGroups...)
	flipped := false
	for i := range m.InstanceGroups {
		if m.InstanceGroups[i].Lifecycle == manifest.Errand {
			m.InstanceGroups[i].Lifecycle = manifest.Service
			flipped = true
		}
	}
	if !flipped {
		return d
	}
	d.Manifest = &m
	return d
}

// HasErrandGroups reports whether the manifest has lifecycle: errand groups.
func HasErrandGroups(d Desired) bool {
	if d.Manifest == nil {
		return false
	}
	for _, ig := range d.Manifest.InstanceGroups {
		if ig.Lifecycle == manifest.Errand {
			return true
		}
	}
	return false
}

// ErrandPlan narrows a plan computed from ErrandDesired to the errand
// group: its instances are created (or updated) and nothing else in the
// deployment is touched or deleted. A colocated errand creates nothing.
func ErrandPlan(p Plan, e Errand) Plan {
	out := Plan{Deployment: p.Deployment, Compilation: p.Compilation}
	if e.Group == "" {
		return out
	}
	for _, g := range p.Groups {
		if g.Name == e.Group {
			out.Groups = append(out.Groups, g)
		}
	}
	for _, a := range p.PendingAddresses {
		if strings.HasPrefix(a, e.Group+"/") {
			out.PendingAddresses = append(out.PendingAddresses, a)
		}
	}
	return out
}

// ErrandCleanup narrows a plan computed from the deployment's own
// Desired (where the errand group has no instances) to the deletion of
// the errand group's instances and the orphaning of their disks.
func ErrandCleanup(p Plan, e Errand) Plan {
	out := Plan{Deployment: p.Deployment, Compilation: p.Compilation}
	ids := map[string]bool{}
	for _, del := range p.Delete {
		if del.Instance.Group == e.Group && e.Group != "" {
			out.Delete = append(out.Delete, del)
			ids[del.Instance.Group+"/"+del.Instance.ID] = true
		}
	}
	for _, od := range p.OrphanDisks {
		if ids[od.Instance] {
			out.OrphanDisks = append(out.OrphanDisks, od)
		}
	}
	return out
}

// ErrandTargets are the instances (group/id) of the errand's groups that
// select, written GROUP or GROUP/ID (ID an instance id or index), picks;
// all of them when select is empty. An instance selector that matches no
// instance is an error.
func ErrandTargets(e Errand, instances []InstanceState, selectors []string) ([]InstanceState, error) {
	groups := map[string]bool{}
	for _, r := range e.Runs {
		groups[r.Group] = true
	}
	var out []InstanceState
	matched := make([]bool, len(selectors))
	for _, in := range instances {
		if !groups[in.Group] {
			continue
		}
		keep := len(selectors) == 0
		for i, s := range selectors {
			g, id, _ := strings.Cut(s, "/")
			if g == in.Group && (id == "" || id == in.ID || id == fmt.Sprint(in.Index)) {
				keep, matched[i] = true, true
			}
		}
		if keep {
			out = append(out, in)
		}
	}
	for i, ok := range matched {
		if !ok {
			return nil, fmt.Errorf("--instance %s: no instance of errand %s's groups", selectors[i], e.Name)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Group != out[j].Group {
			return out[i].Group < out[j].Group
		}
		return out[i].Index < out[j].Index
	})
	return out, nil
}

// String is the errand as `plan` golden files and `errands` show it.
func (e Errand) String() string {
	var b strings.Builder
	if e.Group != "" {
		fmt.Fprintf(&b, "errand %s: instance group %s, VMs created for the run and deleted after", e.Name, e.Group)
	} else {
		fmt.Fprintf(&b, "errand %s: colocated, runs on the deployed instances", e.Name)
	}
	for _, r := range e.Runs {
		fmt.Fprintf(&b, "\n  run %s/%s on %s", r.Job, ErrandScript, r.Group)
	}
	return b.String()
}
