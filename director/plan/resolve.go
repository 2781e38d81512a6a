package plan

import (
	"fmt"
	"sort"

	"github.com/compleat/compleat/director/manifest"
)

// resolveGroup fills a group's VM settings, disks, jobs and packages.
func (c *computer) resolveGroup(g *Group) {
	gi := c.groupIndex(g.Name)
	ig := &c.dep.InstanceGroups[gi]
	gp := groupPath(gi)

	var vmProps map[string]any
	if vt, ok := c.cc.VMType(ig.VMType); ok {
		vmProps = vt.CloudProperties
	}
	var disk *Disk
	switch {
	case ig.PersistentDiskType != "":
		dt, ok := c.cc.DiskType(ig.PersistentDiskType)
		if ok {
			disk = &Disk{SizeMB: dt.DiskSize, Type: dt.Name, CloudProperties: dt.CloudProperties}
		}
	case ig.PersistentDisk > 0:
		disk = &Disk{SizeMB: ig.PersistentDisk}
	}

	jobs, pkgs := c.groupJobs(ig, gp)
	for ii := range g.Instances {
		in := &g.Instances[ii]
		props := map[string]any{}
		if az, ok := c.cc.AZ(in.AZ); ok {
			props = mergeMaps(props, az.CloudProperties)
		}
		if ig.VMResources != nil {
			// In place of a vm_type's: what the CPI of the instance's AZ
			// calculated for the resources.
			calculated, ok := c.vmResourcesProps(in.AZ, *ig.VMResources)
			if !ok {
				c.errorf(gp+".vm_resources", "no cloud properties were calculated for vm_resources (cpu %d, ram %d, ephemeral_disk_size %d) in cpi %q", ig.VMResources.CPU, ig.VMResources.RAM, ig.VMResources.EphemeralDiskSize, c.d.AZCPIs[in.AZ])
				return
			}
			vmProps = calculated
		}
		props = mergeMaps(props, vmProps)
		for _, name := range ig.VMExtensions {
			if ext, ok := c.cc.VMExtension(name); ok {
				props = mergeMaps(props, ext.CloudProperties)
			}
		}
		in.VMType = ig.VMType
		in.CloudProperties = props
		in.Env = ig.Env
		in.CloudHash = hashJSON(map[string]any{"cloud_properties": props, "env": ig.Env})
		if disk != nil {
			d := *disk
			in.Disk = &d
		}
		in.Jobs = append([]Job(nil), jobs...)
		in.Packages = pkgs
	}
}

// groupJobs resolves a group's jobs against the releases and collects the
// packages they need, dependencies included.
func (c *computer) groupJobs(ig *manifest.InstanceGroup, gp string) ([]Job, []Package) {
	var jobs []Job
	pkgs := map[string]Package{}
	for ji, mj := range ig.Jobs {
		jp := fmt.Sprintf("%s.jobs[%d]", gp, ji)
		rel, ok := c.d.Releases[mj.Release]
		if !ok || rel.Manifest == nil {
			c.errorf(jp+".release", "release %q is not uploaded", mj.Release)
			continue
		}
		entry, ok := rel.Manifest.Job(mj.Name)
		if !ok {
			c.errorf(jp+".name", "release %s/%s has no job %q", rel.Manifest.Name, rel.Manifest.Version, mj.Name)
			continue
		}
		rj := rel.Jobs[mj.Name]
		if rj == nil || rj.Spec == nil {
			c.errorf(jp+".name", "job %q of release %s/%s has no spec", mj.Name, rel.Manifest.Name, rel.Manifest.Version)
			continue
		}
		names := rj.Spec.Packages
		if len(names) == 0 {
			names = entry.Packages
		}
		job := Job{
			Name: mj.Name, Release: rel.Manifest.Name, ReleaseVersion: rel.Manifest.Version,
			Version: entry.Version, Fingerprint: entry.Fingerprint, Packages: append([]string(nil), names...),
		}
		// Transitive package closure.
		var visit func(name string, via string) bool
		visit = func(name, via string) bool {
			if p, seen := pkgs[name]; seen {
				if p.Release != rel.Manifest.Name {
					pe, _ := rel.Manifest.Package(name)
					if pe.Fingerprint != p.Fingerprint {
						c.errorf(jp, "package %q comes from both release %s and release %s with different contents", name, p.Release, rel.Manifest.Name)
						return false
					}
				}
				return true
			}
			pe, ok := rel.Manifest.Package(name)
			if !ok {
				c.errorf(jp+".name", "release %s/%s has no package %q (needed by %s)", rel.Manifest.Name, rel.Manifest.Version, name, via)
				return false
			}
			pkgs[name] = Package{
				Name: name, Release: rel.Manifest.Name, Version: pe.Version, Fingerprint: pe.Fingerprint,
				SHA256: pe.SHA256, Dependencies: append([]string(nil), pe.Dependencies...),
			}
			for _, d := range pe.Dependencies {
				if !visit(d, name) {
					return false
				}
			}
			return true
		}
		for _, n := range names {
			visit(n, "job "+mj.Name)
		}
		jobs = append(jobs, job)
	}
	out := make([]Package, 0, len(pkgs))
	for _, p := range pkgs {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return jobs, out
}
