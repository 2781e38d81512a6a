package manifest

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// check verifies references inside the manifest itself; it runs as part of
// parsing.
func (d *decoder) checkDeployment(dep *Deployment) {
	releases := map[string]bool{}
	for _, r := range dep.Releases {
		releases[r.Name] = true
	}
	aliases := map[string]bool{}
	for _, s := range dep.Stemcells {
		aliases[s.Alias] = true
	}
	staticOwner := map[netip.Addr]string{}
	for i, ig := range dep.InstanceGroups {
		gp := index("instance_groups", i)
		for j, job := range ig.Jobs {
			if job.Release != "" && !releases[job.Release] {
				p := join(index(join(gp, "jobs"), j), "release")
				d.errorAt(p, "release %q is not in releases", job.Release)
			}
		}
		if ig.Stemcell != "" && !aliases[ig.Stemcell] {
			d.errorAt(join(gp, "stemcell"), "stemcell %q is not in stemcells (by alias)", ig.Stemcell)
		}
		for k, nw := range ig.Networks {
			np := index(join(gp, "networks"), k)
			if len(nw.StaticIPs) > 0 && len(nw.StaticIPs) != ig.Instances {
				d.errorAt(join(np, "static_ips"), "%d static IPs for %d instances: give exactly one per instance", len(nw.StaticIPs), ig.Instances)
			}
			for x, a := range nw.StaticIPs {
				if owner, dup := staticOwner[a]; dup && owner != ig.Name {
					d.errorAt(nw.staticPath(np, x), "static IP %s is also given to instance group %q", a, owner)
				}
				staticOwner[a] = ig.Name
			}
		}
		if len(ig.Networks) > 1 {
			for _, what := range []string{"dns", "gateway"} {
				n := 0
				for _, nw := range ig.Networks {
					if slices.Contains(nw.Default, what) {
						n++
					}
				}
				if n != 1 {
					d.errorAt(join(gp, "networks"), "with several networks, exactly one must list %q in default (%d do)", what, n)
				}
			}
		}
	}
	d.checkAddonReleases("", dep.Addons, dep.Releases)
	certs := map[string]Variable{}
	for _, v := range dep.Variables {
		certs[v.Name] = v
	}
	for i, v := range dep.Variables {
		ca, ok := v.Options["ca"].(string)
		if v.Type != VarCertificate || !ok || strings.HasPrefix(ca, "/") {
			continue
		}
		p := join(join(index("variables", i), "options"), "ca")
		switch c, found := certs[ca]; {
		case !found:
			d.errorAt(p, "certificate authority %q is not in variables", ca)
		case c.Type != VarCertificate || c.Options["is_ca"] != true:
			d.errorAt(p, "variable %q is not a certificate with is_ca: true", ca)
		}
	}
}

// errorAt reports a problem at a field whose position was recorded (or at
// its closest recorded parent), for problems found after the walk.
func (d *decoder) errorAt(path, format string, args ...any) {
	p := path
	pos, ok := d.pos[p]
	for !ok && p != "" {
		p = parent(p)
		pos, ok = d.pos[p]
	}
	if !ok {
		pos = Position{File: d.file}
	}
	d.errs = append(d.errs, &Error{Position: pos, Path: path, Message: fmt.Sprintf(format, args...)})
}

// Validate checks the manifest against a cloud config: every AZ, vm_type,
// vm_extension, persistent_disk_type and network an instance group names
// exists; every static IP lies in a static range of a subnet of its network
// in one of the group's AZs; every AZ of a group has a subnet on each of its
// manual networks. All problems come back together as Errors.
func (dep *Deployment) Validate(cc *CloudConfig) error {
	var errs Errors
	at := func(path, format string, args ...any) {
		errs = append(errs, dep.Errorf(path, format, args...))
	}
	if cc == nil {
		return Errors{{Position: Position{File: dep.File()}, Message: "no cloud config: run update-cloud-config first"}}
	}
	for i, ig := range dep.InstanceGroups {
		gp := index("instance_groups", i)
		for j, az := range ig.AZs {
			if _, ok := cc.AZ(az); !ok {
				at(index(join(gp, "azs"), j), "az %q is not in the cloud config's azs", az)
			}
		}
		if ig.VMType != "" {
			if _, ok := cc.VMType(ig.VMType); !ok {
				at(join(gp, "vm_type"), "vm type %q is not in the cloud config's vm_types", ig.VMType)
			}
		}
		for j, ext := range ig.VMExtensions {
			if _, ok := cc.VMExtension(ext); !ok {
				at(index(join(gp, "vm_extensions"), j), "vm extension %q is not in the cloud config's vm_extensions", ext)
			}
		}
		if ig.PersistentDiskType != "" {
			if _, ok := cc.DiskType(ig.PersistentDiskType); !ok {
				at(join(gp, "persistent_disk_type"), "disk type %q is not in the cloud config's disk_types", ig.PersistentDiskType)
			}
		}
		for k, in := range ig.Networks {
			np := index(join(gp, "networks"), k)
			nw, ok := cc.Network(in.Name)
			if !ok {
				at(join(np, "name"), "network %q is not in the cloud config's networks", in.Name)
				continue
			}
			switch nw.Type {
			case Dynamic:
				if len(in.StaticIPs) > 0 {
					at(join(np, "static_ips"), "network %q is dynamic: it cannot have static IPs", in.Name)
				}
				for _, az := range ig.AZs {
					if _, known := cc.AZ(az); known && len(nw.Subnets) > 0 && !anySubnetInAZ(nw, az) {
						at(join(np, "name"), "network %q has no subnet in az %q", in.Name, az)
					}
				}
			case VIP:
				if len(nw.Subnets) == 0 {
					if len(in.StaticIPs) == 0 && ig.Instances > 0 {
						at(join(np, "name"), "vip network %q needs static_ips (one public address per instance)", in.Name)
					}
					continue
				}
				for x, a := range in.StaticIPs {
					if !slices.ContainsFunc(nw.Subnets, func(s Subnet) bool { return s.IsStatic(a) }) {
						at(in.staticPath(np, x), "static IP %s is not in a static range of vip network %q", a, in.Name)
					}
				}
			case Manual:
				for _, az := range ig.AZs {
					if _, known := cc.AZ(az); known && !anySubnetInAZ(nw, az) {
						at(join(np, "name"), "network %q has no subnet in az %q", in.Name, az)
					}
				}
				for x, a := range in.StaticIPs {
					if msg := staticProblem(nw, a, ig.AZs); msg != "" {
						at(in.staticPath(np, x), "%s", msg)
					}
				}
			}
		}
	}
	return errs.err()
}

// staticProblem explains why a is not a usable static IP of network nw for a
// group in azs, or returns "".
func staticProblem(nw *Network, a netip.Addr, azs []string) string {
	for i := range nw.Subnets {
		sn := &nw.Subnets[i]
		if !sn.Range.Contains(a) {
			continue
		}
		if !sn.IsStatic(a) {
			return sprintf("static IP %s is not in a static range of network %q (subnet %s)", a, nw.Name, sn.Range)
		}
		if len(azs) > 0 && !slices.ContainsFunc(azs, sn.HasAZ) {
			return sprintf("static IP %s is in subnet %s of network %q, which serves none of the group's azs", a, sn.Range, nw.Name)
		}
		return ""
	}
	return sprintf("static IP %s is not in any subnet of network %q", a, nw.Name)
}

// staticPath is the field path of the item the x-th static IP was written in.
func (nw *InstanceNetwork) staticPath(networkPath string, x int) string {
	p := join(networkPath, "static_ips")
	if x < len(nw.staticItem) {
		return index(p, nw.staticItem[x])
	}
	return p
}
