package manifest

import (
	"net/netip"

	"go.yaml.in/yaml/v3"
)

// CloudConfig describes the IaaS a director deploys onto: availability
// zones, VM sizes, disks, networks and how to compile packages.
type CloudConfig struct {
	AZs          []AZ          `json:"azs,omitempty"`
	VMTypes      []VMType      `json:"vm_types,omitempty"`
	VMExtensions []VMExtension `json:"vm_extensions,omitempty"`
	DiskTypes    []DiskType    `json:"disk_types,omitempty"`
	Networks     []Network     `json:"networks"`
	Compilation  Compilation   `json:"compilation"`

	src source
}

// AZ is an availability zone; CPI names the cpi config entry that serves it
// (empty: the director's default CPI).
type AZ struct {
	Name            string         `json:"name"`
	CPI             string         `json:"cpi,omitempty"`
	CloudProperties map[string]any `json:"cloud_properties,omitempty"`
}

// VMType is a named VM size.
type VMType struct {
	Name            string         `json:"name"`
	CloudProperties map[string]any `json:"cloud_properties,omitempty"`
}

// VMExtension is a named set of cloud properties merged into a VM's.
type VMExtension struct {
	Name            string         `json:"name"`
	CloudProperties map[string]any `json:"cloud_properties,omitempty"`
}

// DiskType is a named persistent disk size (MB) and its cloud properties.
type DiskType struct {
	Name            string         `json:"name"`
	DiskSize        int            `json:"disk_size"`
	CloudProperties map[string]any `json:"cloud_properties,omitempty"`
}

// Network types.
const (
	Manual  = "manual"
	Dynamic = "dynamic"
	VIP     = "vip"
)

// Network is a cloud config network. Manual networks have subnets with
// ranges the director assigns addresses from; dynamic networks get addresses
// from the IaaS; vip networks carry public addresses given as static IPs.
type Network struct {
	Name    string   `json:"name"`
	Type    string   `json:"type"`
	Subnets []Subnet `json:"subnets,omitempty"`
	// DNS and CloudProperties of a dynamic or vip network written without
	// subnets.
	DNS             []netip.Addr   `json:"dns,omitempty"`
	CloudProperties map[string]any `json:"cloud_properties,omitempty"`
}

// Subnet is one subnet of a network. For manual networks Range and Gateway
// are set; Reserved addresses are never assigned; Static addresses may only
// be given to instances as static_ips, every other address of Range is
// assigned dynamically.
type Subnet struct {
	Name            string         `json:"name,omitempty"`
	Range           netip.Prefix   `json:"range,omitzero"`
	Gateway         netip.Addr     `json:"gateway,omitzero"`
	DNS             []netip.Addr   `json:"dns,omitempty"`
	Reserved        []AddrRange    `json:"reserved,omitempty"`
	Static          []AddrRange    `json:"static,omitempty"`
	AZs             []string       `json:"azs,omitempty"` // `az: z1` is read as [z1]
	CloudProperties map[string]any `json:"cloud_properties,omitempty"`
}

// IsStatic reports whether a is in the subnet's static ranges.
func (s *Subnet) IsStatic(a netip.Addr) bool { return inRanges(s.Static, a) }

// IsReserved reports whether a is in the subnet's reserved ranges.
func (s *Subnet) IsReserved(a netip.Addr) bool { return inRanges(s.Reserved, a) }

// Dynamic reports whether the director may hand out a in this manual
// subnet on its own: inside Range, and not the network or broadcast address,
// the gateway, a reserved or a static address.
func (s *Subnet) Dynamic(a netip.Addr) bool {
	if !s.Range.IsValid() || !s.Range.Contains(a) || a == s.Gateway || s.IsReserved(a) || s.IsStatic(a) {
		return false
	}
	whole := prefixRange(s.Range)
	if a.Is4() && s.Range.Bits() < 31 && (a == whole.First || a == whole.Last) {
		return false
	}
	return true
}

// HasAZ reports whether the subnet serves az; a subnet naming no AZ serves
// every AZ.
func (s *Subnet) HasAZ(az string) bool {
	if len(s.AZs) == 0 {
		return true
	}
	for _, z := range s.AZs {
		if z == az {
			return true
		}
	}
	return false
}

func inRanges(rs []AddrRange, a netip.Addr) bool {
	for _, r := range rs {
		if r.Contains(a) {
			return true
		}
	}
	return false
}

// Compilation says where packages compile: Workers throwaway VMs of VMType
// (or VMResources, or raw CloudProperties) in AZ on Network.
type Compilation struct {
	Workers             int            `json:"workers"`
	AZ                  string         `json:"az,omitempty"`
	VMType              string         `json:"vm_type,omitempty"`
	VMResources         *VMResources   `json:"vm_resources,omitempty"`
	CloudProperties     map[string]any `json:"cloud_properties,omitempty"`
	Network             string         `json:"network"`
	ReuseCompilationVMs bool           `json:"reuse_compilation_vms,omitempty"`
	Env                 map[string]any `json:"env,omitempty"`
}

// AZ returns the AZ called name.
func (cc *CloudConfig) AZ(name string) (*AZ, bool) {
	for i := range cc.AZs {
		if cc.AZs[i].Name == name {
			return &cc.AZs[i], true
		}
	}
	return nil, false
}

// VMType returns the vm type called name.
func (cc *CloudConfig) VMType(name string) (*VMType, bool) {
	for i := range cc.VMTypes {
		if cc.VMTypes[i].Name == name {
			return &cc.VMTypes[i], true
		}
	}
	return nil, false
}

// VMExtension returns the vm extension called name.
func (cc *CloudConfig) VMExtension(name string) (*VMExtension, bool) {
	for i := range cc.VMExtensions {
		if cc.VMExtensions[i].Name == name {
			return &cc.VMExtensions[i], true
		}
	}
	return nil, false
}

// DiskType returns the disk type called name.
func (cc *CloudConfig) DiskType(name string) (*DiskType, bool) {
	for i := range cc.DiskTypes {
		if cc.DiskTypes[i].Name == name {
			return &cc.DiskTypes[i], true
		}
	}
	return nil, false
}

// Network returns the network called name.
func (cc *CloudConfig) Network(name string) (*Network, bool) {
	for i := range cc.Networks {
		if cc.Networks[i].Name == name {
			return &cc.Networks[i], true
		}
	}
	return nil, false
}

// Position returns where the field at path was written.
func (cc *CloudConfig) Position(path string) Position { return cc.src.Position(path) }

// Errorf makes an Error located at the field path.
func (cc *CloudConfig) Errorf(path, format string, args ...any) *Error {
	return cc.src.Errorf(path, format, args...)
}

// File is the name the cloud config was parsed under.
func (cc *CloudConfig) File() string { return cc.src.file }

// ParseCloudConfig parses and checks a cloud config: every field, names
// unique, subnets consistent (gateway, reserved and static inside the range,
// static and reserved not overlapping), AZs and networks referenced by
// subnets and compilation defined.
func ParseCloudConfig(filename string, data []byte) (*CloudConfig, error) {
	root, err := parseYAML(filename, data)
	if err != nil {
		return nil, err
	}
	return decodeCloudConfig(filename, root, nil)
}

// decodeCloudConfig is ParseCloudConfig for a node tree (see decodeDeployment).
func decodeCloudConfig(filename string, root *yaml.Node, origins map[*yaml.Node]string) (*CloudConfig, error) {
	d := newDecoder(filename, origins)
	cc := d.cloudConfig(root)
	if err := d.errs.err(); err != nil {
		return nil, err
	}
	cc.src = source{file: filename, pos: d.pos, root: root}
	return cc, nil
}

func (d *decoder) cloudConfig(root *yaml.Node) *CloudConfig {
	cc := &CloudConfig{}
	var compilation *yaml.Node
	d.object(root, "", fields{
		"azs": func(v *yaml.Node, p string) {
			for i, c := range d.list(v, p) {
				var az AZ
				d.object(c, index(p, i), fields{
					"name":             func(v *yaml.Node, p string) { az.Name = d.name(v, p) },
					"cpi":              func(v *yaml.Node, p string) { az.CPI = d.name(v, p) },
					"cloud_properties": func(v *yaml.Node, p string) { az.CloudProperties = d.props(v, p) },
				}, "name")
				cc.AZs = append(cc.AZs, az)
			}
			d.unique(v, p, len(cc.AZs), func(i int) string { return cc.AZs[i].Name }, "az")
		},
		"vm_types": func(v *yaml.Node, p string) {
			for i, c := range d.list(v, p) {
				var t VMType
				d.object(c, index(p, i), fields{
					"name":             func(v *yaml.Node, p string) { t.Name = d.name(v, p) },
					"cloud_properties": func(v *yaml.Node, p string) { t.CloudProperties = d.props(v, p) },
				}, "name")
				cc.VMTypes = append(cc.VMTypes, t)
			}
			d.unique(v, p, len(cc.VMTypes), func(i int) string { return cc.VMTypes[i].Name }, "vm type")
		},
		"vm_extensions": func(v *yaml.Node, p string) {
			for i, c := range d.list(v, p) {
				var t VMExtension
				d.object(c, index(p, i), fields{
					"name":             func(v *yaml.Node, p string) { t.Name = d.name(v, p) },
					"cloud_properties": func(v *yaml.Node, p string) { t.CloudProperties = d.props(v, p) },
				}, "name")
				cc.VMExtensions = append(cc.VMExtensions, t)
			}
			d.unique(v, p, len(cc.VMExtensions), func(i int) string { return cc.VMExtensions[i].Name }, "vm extension")
		},
		"disk_types": func(v *yaml.Node, p string) {
			for i, c := range d.list(v, p) {
				var t DiskType
				d.object(c, index(p, i), fields{
					"name":             func(v *yaml.Node, p string) { t.Name = d.name(v, p) },
					"disk_size":        func(v *yaml.Node, p string) { t.DiskSize = d.natural(v, p, 1) },
					"cloud_properties": func(v *yaml.Node, p string) { t.CloudProperties = d.props(v, p) },
				}, "name", "disk_size")
				cc.DiskTypes = append(cc.DiskTypes, t)
			}
			d.unique(v, p, len(cc.DiskTypes), func(i int) string { return cc.DiskTypes[i].Name }, "disk type")
		},
		"networks": func(v *yaml.Node, p string) {
			for i, c := range d.list(v, p) {
				cc.Networks = append(cc.Networks, d.network(c, index(p, i)))
			}
			d.unique(v, p, len(cc.Networks), func(i int) string { return cc.Networks[i].Name }, "network")
		},
		"compilation": func(v *yaml.Node, p string) {
			compilation = v
			cc.Compilation = d.compilation(v, p)
		},
		"resource_pools": func(v *yaml.Node, p string) {
			d.errorf(v, p, "resource_pools (BOSH v1) are not supported: use vm_types")
		},
		"disk_pools": func(v *yaml.Node, p string) {
			d.errorf(v, p, "disk_pools (BOSH v1) are not supported: use disk_types")
		},
	}, "networks", "compilation")

	// References inside the cloud config.
	azs := map[string]bool{}
	for _, az := range cc.AZs {
		azs[az.Name] = true
	}
	for i, nw := range cc.Networks {
		for j, sn := range nw.Subnets {
			p := index(join(index("networks", i), "subnets"), j)
			for k, z := range sn.AZs {
				if !azs[z] {
					zp := index(join(p, "azs"), k)
					if _, ok := d.pos[zp]; !ok {
						zp = join(p, "az")
					}
					d.errorAt(zp, "az %q is not in azs", z)
				}
			}
		}
	}
	if compilation != nil {
		c := cc.Compilation
		if c.AZ != "" && !azs[c.AZ] {
			d.errorAt("compilation.az", "az %q is not in azs", c.AZ)
		}
		if c.AZ == "" && len(cc.AZs) > 0 {
			d.errorf(compilation, "compilation.az", "missing required field \"az\" in compilation (the cloud config defines azs)")
		}
		if c.VMType != "" {
			if _, ok := cc.VMType(c.VMType); !ok {
				d.errorAt("compilation.vm_type", "vm type %q is not in vm_types", c.VMType)
			}
		}
		if c.Network != "" {
			nw, ok := cc.Network(c.Network)
			switch {
			case !ok:
				d.errorAt("compilation.network", "network %q is not in networks", c.Network)
			case nw.Type == VIP:
				d.errorAt("compilation.network", "network %q is a vip network: compilation needs a manual or dynamic one", c.Network)
			case c.AZ != "" && len(nw.Subnets) > 0 && !anySubnetInAZ(nw, c.AZ):
				d.errorAt("compilation.network", "network %q has no subnet in az %q", c.Network, c.AZ)
			}
		}
	}
	return cc
}

func anySubnetInAZ(nw *Network, az string) bool {
	for i := range nw.Subnets {
		if nw.Subnets[i].HasAZ(az) {
			return true
		}
	}
	return false
}

func (d *decoder) network(n *yaml.Node, path string) Network {
	var nw Network
	var subnets *yaml.Node
	present := d.object(n, path, fields{
		"name": func(v *yaml.Node, p string) { nw.Name = d.name(v, p) },
		"type": func(v *yaml.Node, p string) {
			nw.Type = d.str(v, p)
			if nw.Type != Manual && nw.Type != Dynamic && nw.Type != VIP {
				d.errorf(v, p, "must be manual, dynamic or vip, not %q", nw.Type)
			}
		},
		"subnets":          func(v *yaml.Node, p string) { subnets = v },
		"dns":              func(v *yaml.Node, p string) { nw.DNS = d.addrs(v, p) },
		"cloud_properties": func(v *yaml.Node, p string) { nw.CloudProperties = d.props(v, p) },
	}, "name")
	if present == nil {
		return nw
	}
	if !present["type"] {
		nw.Type = Manual // BOSH's default
	}
	if nw.Type == Manual {
		if present["dns"] || present["cloud_properties"] {
			d.errorf(n, path, "a manual network sets dns and cloud_properties per subnet")
		}
		if !present["subnets"] {
			d.errorf(n, join(path, "subnets"), "missing required field \"subnets\" in manual network %q", nw.Name)
		}
	}
	if subnets != nil && (nw.Type == Manual || nw.Type == Dynamic || nw.Type == VIP) {
		sp := join(path, "subnets")
		for i, c := range d.list(subnets, sp) {
			nw.Subnets = append(nw.Subnets, d.subnet(c, index(sp, i), nw.Type))
		}
		if nw.Type == Manual {
			d.subnetOverlaps(subnets, sp, nw.Subnets)
		}
	}
	return nw
}

func (d *decoder) subnet(n *yaml.Node, path, typ string) Subnet {
	var sn Subnet
	var gwNode *yaml.Node
	var reservedNodes, staticNodes []*yaml.Node
	fs := fields{
		"name":             func(v *yaml.Node, p string) { sn.Name = d.name(v, p) },
		"dns":              func(v *yaml.Node, p string) { sn.DNS = d.addrs(v, p) },
		"azs":              func(v *yaml.Node, p string) { sn.AZs = append(sn.AZs, d.names(v, p)...) },
		"az":               func(v *yaml.Node, p string) { sn.AZs = append(sn.AZs, d.name(v, p)) },
		"cloud_properties": func(v *yaml.Node, p string) { sn.CloudProperties = d.props(v, p) },
	}
	var required []string
	switch typ {
	case Manual:
		fs["range"] = func(v *yaml.Node, p string) {
			s := d.str(v, p)
			if s == "" {
				return
			}
			pr, err := netip.ParsePrefix(s)
			if err != nil {
				d.errorf(v, p, "%q is not a CIDR range (like 10.0.0.0/24)", s)
				return
			}
			if pr.Masked() != pr {
				d.errorf(v, p, "%q has host bits set: the network is %s", s, pr.Masked())
				return
			}
			sn.Range = pr
		}
		fs["gateway"] = func(v *yaml.Node, p string) {
			gwNode = v
			sn.Gateway, _ = d.addr(v, p)
		}
		fs["reserved"] = func(v *yaml.Node, p string) {
			reservedNodes = d.boundedRanges(v, p)
			sn.Reserved = d.rangesAt(reservedNodes, p)
		}
		fs["static"] = func(v *yaml.Node, p string) {
			staticNodes = d.boundedRanges(v, p)
			sn.Static = d.rangesAt(staticNodes, p)
		}
		required = []string{"range", "gateway"}
	case VIP:
		fs["static"] = func(v *yaml.Node, p string) {
			staticNodes = d.boundedRanges(v, p)
			sn.Static = d.rangesAt(staticNodes, p)
		}
	}
	present := d.object(n, path, fs, required...)
	if present == nil {
		return sn
	}
	if present["az"] && present["azs"] {
		d.errorf(n, join(path, "azs"), "set either az or azs, not both")
	}
	if typ != Manual || !sn.Range.IsValid() {
		return sn
	}
	whole := prefixRange(sn.Range)
	if sn.Gateway.IsValid() && !sn.Range.Contains(sn.Gateway) {
		d.errorf(gwNode, join(path, "gateway"), "gateway %s is outside range %s", sn.Gateway, sn.Range)
	}
	check := func(rs []AddrRange, nodes []*yaml.Node, field string) {
		k := 0
		for i, c := range nodes {
			if k >= len(rs) {
				break
			}
			r, err := ParseAddrRange(resolve(c).Value)
			if err != nil || r != rs[k] {
				continue
			}
			k++
			if !whole.Contains(r.First) || !whole.Contains(r.Last) {
				d.errorf(c, index(join(path, field), i), "%s is outside range %s", r, sn.Range)
			}
		}
	}
	check(sn.Reserved, reservedNodes, "reserved")
	check(sn.Static, staticNodes, "static")
	for i, c := range staticNodes {
		r, err := ParseAddrRange(resolve(c).Value)
		if err != nil {
			continue
		}
		for _, res := range sn.Reserved {
			if r.Overlaps(res) {
				d.errorf(c, index(join(path, "static"), i), "static %s overlaps reserved %s", r, res)
				break
			}
		}
		if sn.Gateway.IsValid() && r.Contains(sn.Gateway) {
			d.errorf(c, index(join(path, "static"), i), "static %s includes the gateway %s", r, sn.Gateway)
		}
	}
	return sn
}

func (d *decoder) rangesAt(nodes []*yaml.Node, path string) []AddrRange {
	var out []AddrRange
	for i, c := range nodes {
		if r, ok := d.addrRange(c, index(path, i)); ok {
			out = append(out, r)
		}
	}
	return out
}

// subnetOverlaps reports manual subnets of one network whose ranges overlap.
func (d *decoder) subnetOverlaps(n *yaml.Node, path string, sns []Subnet) {
	items := resolve(n).Content
	for i := range sns {
		for j := 0; j < i; j++ {
			a, b := sns[i].Range, sns[j].Range
			if a.IsValid() && b.IsValid() && a.Overlaps(b) && i < len(items) {
				d.errorf(items[i], join(index(path, i), "range"), "range %s overlaps subnet %d's range %s", a, j, b)
			}
		}
	}
}

func (d *decoder) compilation(n *yaml.Node, path string) Compilation {
	var c Compilation
	present := d.object(n, path, fields{
		"workers":          func(v *yaml.Node, p string) { c.Workers = d.natural(v, p, 1) },
		"az":               func(v *yaml.Node, p string) { c.AZ = d.name(v, p) },
		"vm_type":          func(v *yaml.Node, p string) { c.VMType = d.name(v, p) },
		"cloud_properties": func(v *yaml.Node, p string) { c.CloudProperties = d.props(v, p) },
		"vm_resources": func(v *yaml.Node, p string) {
			var r VMResources
			d.object(v, p, fields{
				"cpu":                 func(v *yaml.Node, p string) { r.CPU = d.natural(v, p, 1) },
				"ram":                 func(v *yaml.Node, p string) { r.RAM = d.natural(v, p, 1) },
				"ephemeral_disk_size": func(v *yaml.Node, p string) { r.EphemeralDiskSize = d.natural(v, p, 1) },
			}, "cpu", "ram", "ephemeral_disk_size")
			c.VMResources = &r
		},
		"network":               func(v *yaml.Node, p string) { c.Network = d.name(v, p) },
		"reuse_compilation_vms": func(v *yaml.Node, p string) { c.ReuseCompilationVMs = d.boolean(v, p) },
		"env":                   func(v *yaml.Node, p string) { c.Env = d.props(v, p) },
		"orphan_workers":        nil,
	}, "workers", "network")
	if present == nil {
		return c
	}
	set := 0
	for _, k := range []string{"vm_type", "vm_resources", "cloud_properties"} {
		if present[k] {
			set++
		}
	}
	if set > 1 {
		d.errorf(n, path, "set only one of vm_type, vm_resources or cloud_properties")
	}
	return c
}

// MaxSubnetRanges bounds the entries of one subnet's reserved or static list
// (each a range of any size): the checks between the two lists are pairwise.
const MaxSubnetRanges = 1000

// boundedRanges lists the entries of a reserved or static list, refusing
// more than MaxSubnetRanges.
func (d *decoder) boundedRanges(v *yaml.Node, path string) []*yaml.Node {
	nodes := d.list(v, path)
	if len(nodes) > MaxSubnetRanges {
		d.errorf(v, path, "%d entries, the limit is %d (write ranges: \"10.0.0.2 - 10.0.0.9\" or a CIDR)", len(nodes), MaxSubnetRanges)
		return nodes[:MaxSubnetRanges]
	}
	return nodes
}
