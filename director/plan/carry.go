package plan

import (
	"sort"

	"github.com/compleat/compleat/director/compile"
	"github.com/compleat/compleat/director/update"
)

// CompileTargets lists the packages to compile, per stemcell, for the
// plan's instances. BlobID is left empty: the director fills it from its
// release records.
func (p *Plan) CompileTargets() []compile.Target {
	type key struct{ os, version, cid string }
	byStemcell := map[key]map[string]Package{}
	var order []key
	for _, g := range p.Groups {
		k := key{g.Stemcell.OS, g.Stemcell.Version, g.Stemcell.CID}
		if _, ok := byStemcell[k]; !ok {
			byStemcell[k] = map[string]Package{}
			order = append(order, k)
		}
		for _, in := range g.Instances {
			for _, pk := range in.Packages {
				byStemcell[k][pk.Name] = pk
			}
		}
	}
	var out []compile.Target
	for _, k := range order {
		t := compile.Target{Stemcell: compile.Stemcell{OS: k.os, Version: k.version, CID: k.cid}}
		for _, pk := range byStemcell[k] {
			t.Packages = append(t.Packages, compile.Package{
				Name: pk.Name, Version: pk.Version, Fingerprint: pk.Fingerprint,
				Dependencies: pk.Dependencies, SHA256: pk.SHA256,
			})
		}
		if len(t.Packages) == 0 {
			continue
		}
		sort.Slice(t.Packages, func(i, j int) bool { return t.Packages[i].Name < t.Packages[j].Name })
		out = append(out, t)
	}
	return out
}

// Rollout is the plan as the updater runs it: every group with its
// instances (unchanged ones included, so percentages and AZ order hold)
// and the instances to delete. The executor finds the planned details of an
// instance it is given with Plan.Instance(id), and those of an instance to
// delete in Plan.Delete.
func (p *Plan) Rollout() update.Rollout {
	ro := update.Rollout{Deployment: p.Deployment}
	for _, g := range p.Groups {
		ug := update.Group{Name: g.Name, Update: g.Update, Size: len(g.Instances), AZs: g.AZs}
		for _, in := range g.Instances {
			ui := update.Instance{Group: in.Group, ID: in.ID, Index: in.Index, AZ: in.AZ, Recreate: in.Recreate}
			for _, c := range in.Changes {
				ui.Changes = append(ui.Changes, c.String())
				if c.Reason == ReasonNew || c.Reason == ReasonVMMissing {
					ui.New = true
				}
			}
			ug.Instances = append(ug.Instances, ui)
		}
		ro.Groups = append(ro.Groups, ug)
	}
	for _, d := range p.Delete {
		ro.Delete = append(ro.Delete, update.Instance{
			Group: d.Instance.Group, ID: d.Instance.ID, Index: d.Instance.Index, AZ: d.Instance.AZ,
			Changes: []string{d.Reason},
			New:     d.Instance.VMCID == "", // no VM: nothing to drain or stop
		})
	}
	return ro
}

// Instance returns the planned instance with the given id.
func (p *Plan) Instance(id string) (*Instance, bool) {
	for gi := range p.Groups {
		for ii := range p.Groups[gi].Instances {
			if p.Groups[gi].Instances[ii].ID == id {
				return &p.Groups[gi].Instances[ii], true
			}
		}
	}
	return nil, false
}
