package plan

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/compleat/compleat/director/manifest"
)

// addrPool tracks the addresses of one manual network.
type addrPool struct {
	nw     *manifest.Network
	used   map[netip.Addr]string // address → holder (instance or "another deployment")
	cursor []netip.Addr          // per subnet: where the next search starts
	// blocked holds, per subnet, its reserved and static ranges sorted and
	// merged, for allocate to jump past.
	blocked [][]manifest.AddrRange
}

// newAddrPool prepares the pool of a manual network.
func newAddrPool(nw *manifest.Network) *addrPool {
	p := &addrPool{nw: nw, used: map[netip.Addr]string{}, cursor: make([]netip.Addr, len(nw.Subnets))}
	for _, sn := range nw.Subnets {
		rs := append(slices.Clone(sn.Reserved), sn.Static...)
		slices.SortFunc(rs, func(a, b manifest.AddrRange) int { return a.First.Compare(b.First) })
		var merged []manifest.AddrRange
		for _, r := range rs {
			if n := len(merged); n > 0 && (r.First.Compare(merged[n-1].Last) <= 0 || r.First == merged[n-1].Last.Next()) {
				if merged[n-1].Last.Less(r.Last) {
					merged[n-1].Last = r.Last
				}
				continue
			}
			merged = append(merged, r)
		}
		p.blocked = append(p.blocked, merged)
	}
	return p
}

// blockedAt returns the last address of subnet i's reserved or static range
// holding a (a binary search).
func (p *addrPool) blockedAt(i int, a netip.Addr) (netip.Addr, bool) {
	rs := p.blocked[i]
	k, _ := slices.BinarySearchFunc(rs, a, func(r manifest.AddrRange, a netip.Addr) int { return r.Last.Compare(a) })
	if k < len(rs) && rs[k].Contains(a) {
		return rs[k].Last, true
	}
	return netip.Addr{}, false
}

// subnetFor returns the subnet holding a, or nil.
func (p *addrPool) subnetFor(a netip.Addr) *manifest.Subnet {
	for i := range p.nw.Subnets {
		if p.nw.Subnets[i].Range.Contains(a) {
			return &p.nw.Subnets[i]
		}
	}
	return nil
}

// dynamicOK reports whether a may be handed out dynamically to an instance
// in az.
func dynamicOK(sn *manifest.Subnet, a netip.Addr, az string) bool {
	if sn == nil || !sn.Range.Contains(a) || (az != "" && !sn.HasAZ(az)) {
		return false
	}
	first := sn.Range.Masked().Addr()
	if a == first || a == sn.Gateway || sn.IsReserved(a) || sn.IsStatic(a) {
		return false
	}
	if a.Is4() && a == lastAddr(sn.Range) {
		return false // broadcast
	}
	return true
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// allocate returns the first free dynamic address for an instance in az.
// It jumps past reserved and static ranges whole, so its steps are bounded
// by the number of ranges and of addresses in use, never by the size of the
// subnet (an IPv6 /64 holds 2^64).
func (p *addrPool) allocate(az, holder string) (netip.Addr, bool) {
	for i := range p.nw.Subnets {
		sn := &p.nw.Subnets[i]
		if az != "" && !sn.HasAZ(az) {
			continue
		}
		a := p.cursor[i]
		if !a.IsValid() {
			a = sn.Range.Masked().Addr()
		}
		for ; a.IsValid() && sn.Range.Contains(a); a = a.Next() {
			if last, ok := p.blockedAt(i, a); ok {
				a = last // the loop steps past the whole range
				continue
			}
			if _, taken := p.used[a]; taken || !dynamicOK(sn, a, az) {
				continue
			}
			p.used[a] = holder
			p.cursor[i] = a.Next()
			return a, true
		}
		p.cursor[i] = a
	}
	return netip.Addr{}, false
}

// assignIPs gives every instance its networks and addresses.
func (c *computer) assignIPs() {
	pools := map[string]*addrPool{}
	pool := func(name string) *addrPool {
		if p, ok := pools[name]; ok {
			return p
		}
		nw, _ := c.cc.Network(name)
		if nw == nil || nw.Type != manifest.Manual {
			return nil
		}
		p := newAddrPool(nw)
		for _, a := range c.actual.OtherIPs[name] {
			p.used[a] = "another deployment"
		}
		pools[name] = p
		return p
	}
	// Addresses of instances being deleted stay theirs until they go.
	for _, d := range c.plan.Delete {
		for name, a := range d.Instance.Networks {
			if p := pool(name); p != nil && a.IsValid() {
				p.used[a] = d.Instance.Group + "/" + d.Instance.ID
			}
		}
	}
	// So do the addresses deployed instances hold now, until this deploy
	// has moved them: an address an instance leaves is not handed to
	// another in the same deploy.
	for gi := range c.plan.Groups {
		for ii := range c.plan.Groups[gi].Instances {
			in := &c.plan.Groups[gi].Instances[ii]
			if prev := c.placed[in.ID].prev; prev != nil {
				for name, a := range prev.Networks {
					if p := pool(name); p != nil && a.IsValid() {
						if _, taken := p.used[a]; !taken {
							p.used[a] = in.Name()
						}
					}
				}
			}
		}
	}
	// Static IPs of every group are spoken for.
	for _, ig := range c.dep.InstanceGroups {
		for _, n := range ig.Networks {
			if p := pool(n.Name); p != nil {
				for _, a := range n.StaticIPs {
					p.used[a] = ig.Name + " static"
				}
			}
		}
	}
	type want struct {
		in  *Instance
		net int // index into its group's networks
	}
	var toAllocate []want
	// First pass: networks, static IPs and addresses kept from the last
	// deploy.
	for gi := range c.plan.Groups {
		g := &c.plan.Groups[gi]
		if len(g.Instances) == 0 {
			continue
		}
		igi := c.groupIndex(g.Name)
		ig := &c.dep.InstanceGroups[igi]
		gp := groupPath(igi)
		for k, inet := range ig.Networks {
			nw, _ := c.cc.Network(inet.Name)
			// A secondary network with static IPs: kept addresses first,
			// then the rest in order.
			var freeStatic []netip.Addr
			if len(inet.StaticIPs) > 0 {
				if len(inet.StaticIPs) != len(g.Instances) {
					c.errorf(fmt.Sprintf("%s.networks[%d].static_ips", gp, k), "%d static IPs for %d instances: give exactly one per instance", len(inet.StaticIPs), len(g.Instances))
					continue
				}
				claimed := map[netip.Addr]bool{}
				for ii := range g.Instances {
					pl := c.placed[g.Instances[ii].ID]
					if a, ok := pl.static[inet.Name]; ok {
						claimed[a] = true
					} else if pl.prev != nil && slices.Contains(inet.StaticIPs, pl.prev.Networks[inet.Name]) && !claimed[pl.prev.Networks[inet.Name]] {
						if pl.static == nil {
							pl.static = map[string]netip.Addr{}
						}
						pl.static[inet.Name] = pl.prev.Networks[inet.Name]
						claimed[pl.prev.Networks[inet.Name]] = true
					}
				}
				for _, a := range inet.StaticIPs {
					if !claimed[a] {
						freeStatic = append(freeStatic, a)
					}
				}
			}
			for ii := range g.Instances {
				in := &g.Instances[ii]
				pl := c.placed[in.ID]
				n := Network{Name: inet.Name, Default: inet.Default}
				if nw != nil {
					n.Type = nw.Type
					n.CloudProperties = nw.CloudProperties
					n.DNS = nw.DNS
				}
				if len(inet.StaticIPs) > 0 {
					a, ok := pl.static[inet.Name]
					if !ok {
						a, freeStatic = freeStatic[0], freeStatic[1:]
					}
					n.IP, n.Static = a, true
				} else if p := pool(inet.Name); p != nil && pl.prev != nil {
					a := pl.prev.Networks[inet.Name]
					// Kept unless someone else holds it now or it is no
					// longer a dynamic address of the instance's AZ. A VM
					// replaced create-swap-delete keeps its address until
					// it goes: the replacement gets a new one.
					holder, taken := p.used[a]
					mine := a.IsValid() && (!taken || holder == in.Name())
					switch {
					case mine && c.swapsVM(g, in, ig):
						p.used[a] = in.Name() + " (replaced vm)"
					case mine && dynamicOK(p.subnetFor(a), a, in.AZ):
						n.IP = a
						p.used[a] = in.Name()
					}
				} else if nw != nil && nw.Type == manifest.Dynamic && pl.prev != nil {
					n.IP = pl.prev.Networks[inet.Name] // as the cloud reported it
				}
				in.Networks = append(in.Networks, n)
				if nw != nil && nw.Type == manifest.Manual && !n.IP.IsValid() {
					toAllocate = append(toAllocate, want{in: in, net: len(in.Networks) - 1})
				}
			}
		}
	}
	// Second pass: new dynamic addresses, group by group, index by index.
	for _, w := range toAllocate {
		n := &w.in.Networks[w.net]
		a, ok := pool(n.Name).allocate(w.in.AZ, w.in.Name())
		if !ok {
			pl := c.placed[w.in.ID]
			c.errorf(groupPath(pl.gi)+".networks", "network %q has no free address left for %s in az %q", n.Name, w.in.Name(), w.in.AZ)
			continue
		}
		n.IP = a
	}
	// Addresses for compile VMs, after every instance has its own.
	c.compilationAddresses(pool)

	// Subnet details of every manual address.
	for gi := range c.plan.Groups {
		for ii := range c.plan.Groups[gi].Instances {
			in := &c.plan.Groups[gi].Instances[ii]
			for k := range in.Networks {
				n := &in.Networks[k]
				p := pool(n.Name)
				if p == nil || !n.IP.IsValid() {
					continue
				}
				sn := p.subnetFor(n.IP)
				if sn == nil {
					continue
				}
				n.Gateway = sn.Gateway
				n.Netmask = netmask(sn.Range)
				if len(sn.DNS) > 0 {
					n.DNS = sn.DNS
				}
				n.CloudProperties = sn.CloudProperties
			}
		}
	}
}

func netmask(p netip.Prefix) string {
	if p.Addr().Is4() {
		m := net.CIDRMask(p.Bits(), 32)
		return net.IP(m).String()
	}
	return fmt.Sprintf("/%d", p.Bits())
}

// compilationAddresses plans the compile VMs' networks: up to
// compilation.workers free addresses of the compilation network in the
// compilation AZ (none for a dynamic network).
func (c *computer) compilationAddresses(pool func(string) *addrPool) {
	comp := c.cc.Compilation
	cp := Compilation{
		Workers: comp.Workers, AZ: comp.AZ, VMType: comp.VMType, ReuseVMs: comp.ReuseCompilationVMs,
		CloudProperties: comp.CloudProperties, Env: comp.Env, Network: comp.Network,
	}
	if vt, ok := c.cc.VMType(comp.VMType); ok && cp.CloudProperties == nil {
		cp.CloudProperties = vt.CloudProperties
	}
	if r := comp.VMResources; r != nil {
		calculated, ok := c.vmResourcesProps(comp.AZ, *r)
		if !ok {
			c.errs = append(c.errs, c.cc.Errorf("compilation.vm_resources", "no cloud properties were calculated for vm_resources (cpu %d, ram %d, ephemeral_disk_size %d) in cpi %q", r.CPU, r.RAM, r.EphemeralDiskSize, c.d.AZCPIs[comp.AZ]))
			return
		}
		cp.CloudProperties = calculated
	}
	if az, ok := c.cc.AZ(comp.AZ); ok {
		cp.CloudProperties = mergeMaps(copyMap(az.CloudProperties), cp.CloudProperties)
	}
	nw, _ := c.cc.Network(comp.Network)
	if nw != nil {
		cp.NetworkType = nw.Type
	}
	if p := pool(comp.Network); p != nil {
		for i := 0; i < comp.Workers; i++ {
			a, ok := p.allocate(comp.AZ, fmt.Sprintf("compilation %d", i))
			if !ok {
				break
			}
			n := Network{Name: comp.Network, Type: nw.Type, IP: a, CloudProperties: nw.CloudProperties, DNS: nw.DNS}
			if sn := p.subnetFor(a); sn != nil {
				n.Gateway, n.Netmask, n.CloudProperties = sn.Gateway, netmask(sn.Range), sn.CloudProperties
				if len(sn.DNS) > 0 {
					n.DNS = sn.DNS
				}
			}
			n.Default = []string{"dns", "gateway"}
			cp.Addresses = append(cp.Addresses, n)
		}
	}
	c.plan.Compilation = cp
}

// swapsVM reports whether the instance's VM will be replaced
// create-swap-delete: it surges (max_surge, see Instance.Surge), or its
// group asks for create-swap-delete, it has a VM, no static IP, and its
// stemcell, vm_type or cloud properties change (or --recreate).
func (c *computer) swapsVM(g *Group, in *Instance, ig *manifest.InstanceGroup) bool {
	if c.surge[in.ID] {
		return true
	}
	prev := c.placed[in.ID].prev
	if g.Update.VMStrategy != manifest.CreateSwapDelete || prev == nil || prev.VMCID == "" || hasStaticIPs(ig) {
		return false
	}
	return c.d.Recreate ||
		prev.Stemcell.OS != in.Stemcell.OS || prev.Stemcell.Version != in.Stemcell.Version ||
		prev.VMType != in.VMType || (prev.CloudHash != "" && prev.CloudHash != in.CloudHash)
}
