package plan

import (
	"fmt"
	"sort"

	"github.com/compleat/compleat/agent/applyspec"
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
			ui := update.Instance{Group: in.Group, ID: in.ID, Index: in.Index, AZ: in.AZ, Recreate: in.Recreate, Surge: in.Surge, PersistentDisk: in.Disk != nil}
			for _, c := range in.Changes {
				ui.Changes = append(ui.Changes, c.String())
				switch c.Reason {
				case ReasonNew, ReasonVMMissing:
					ui.New = true
				case ReasonDisk:
					ui.DiskChange = true
				}
			}
			if in.Disk != nil && in.Disk.CID == "" {
				ui.DiskChange = true // a disk to create (new instance, or replacement)
			}
			for _, n := range in.Networks {
				ui.StaticIP = ui.StaticIP || n.Static
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

// ApplySpec is the agent's apply spec for the instance: its identity,
// networks, persistent disk, and each job and package with the blob the
// agent fetches. jobBlobs holds the rendered job archives by job name (see
// template.Rendered.Archive), pkgBlobs the compiled packages by package
// name; both carry signed URLs, so the director makes them per apply.
func (i *Instance) ApplySpec(deployment string, jobBlobs, pkgBlobs map[string]applyspec.Blob) (applyspec.Spec, error) {
	s := applyspec.Spec{
		Deployment: deployment, Name: i.Group, ID: i.ID, Index: i.Index, AZ: i.AZ, Bootstrap: i.Bootstrap,
		Networks: map[string]applyspec.Network{},
	}
	for _, n := range i.Networks {
		an := applyspec.Network{Type: n.Type, Netmask: n.Netmask, Default: n.Default}
		if n.IP.IsValid() {
			an.IP = n.IP.String()
		}
		if n.Gateway.IsValid() {
			an.Gateway = n.Gateway.String()
		}
		for _, d := range n.DNS {
			an.DNS = append(an.DNS, d.String())
		}
		s.Networks[n.Name] = an
	}
	for _, j := range i.Jobs {
		b, ok := jobBlobs[j.Name]
		if !ok {
			return applyspec.Spec{}, fmt.Errorf("apply spec of %s: no blob for job %s", i.Name(), j.Name)
		}
		s.Jobs = append(s.Jobs, applyspec.Job{Name: j.Name, Version: j.Version, Blob: b})
	}
	for _, p := range i.Packages {
		b, ok := pkgBlobs[p.Name]
		if !ok {
			return applyspec.Spec{}, fmt.Errorf("apply spec of %s: no blob for package %s", i.Name(), p.Name)
		}
		s.Packages = append(s.Packages, applyspec.Package{Name: p.Name, Version: p.Version, Blob: b})
	}
	if i.Disk != nil {
		s.PersistentDisk = &applyspec.Disk{CID: i.Disk.CID, SizeMB: int64(i.Disk.SizeMB)}
	}
	return s, nil
}

// Teardown is the plan of delete-deployment: every deployed instance
// deleted and every persistent disk released (the director deletes them
// rather than orphaning, as the operator asked for the whole deployment to
// go). Its Rollout deletes the instances in parallel, draining those with a
// VM first.
func Teardown(actual State) Plan {
	p := Plan{Deployment: actual.Deployment}
	for _, st := range actual.Instances {
		p.Delete = append(p.Delete, Deletion{Instance: st, Reason: ReasonDeploymentDeleted})
		if st.Disk != nil && st.Disk.CID != "" {
			p.OrphanDisks = append(p.OrphanDisks, OrphanDisk{CID: st.Disk.CID, Instance: st.Group + "/" + st.ID, Reason: ReasonDeploymentDeleted})
		}
	}
	sort.SliceStable(p.Delete, func(i, j int) bool {
		a, b := p.Delete[i].Instance, p.Delete[j].Instance
		if a.Group != b.Group {
			return a.Group < b.Group
		}
		return a.Index < b.Index
	})
	return p
}
