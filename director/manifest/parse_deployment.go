package manifest

import (
	"fmt"
	"net/netip"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/compleat/compleat/director/variables"
)

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// ParseDeployment parses a deployment manifest. filename is used in error
// positions only. Problems come back together as Errors; the returned
// Deployment is nil when there are any. Cross-references against a cloud
// config are checked separately by Validate.
func ParseDeployment(filename string, data []byte) (*Deployment, error) {
	root, err := parseYAML(filename, data)
	if err != nil {
		return nil, err
	}
	return decodeDeployment(filename, root, nil)
}

// decodeDeployment is ParseDeployment for a node tree; origins names the
// file of nodes that came from ops files (see Load) and may be nil.
func decodeDeployment(filename string, root *yaml.Node, origins map[*yaml.Node]string) (*Deployment, error) {
	d := newDecoder(filename, origins)
	dep := d.deployment(root)
	d.checkDeployment(dep)
	if err := d.errs.err(); err != nil {
		return nil, err
	}
	dep.src = source{file: filename, pos: d.pos, root: root}
	return dep, nil
}

// Position returns where the field at path was written (see Errorf).
func (dep *Deployment) Position(path string) Position { return dep.src.Position(path) }

// Errorf makes an Error located at the field path ("instance_groups[0].networks[0]"),
// for problems found after parsing, by the planner for instance.
func (dep *Deployment) Errorf(path, format string, args ...any) *Error {
	return dep.src.Errorf(path, format, args...)
}

// File is the name the manifest was parsed under.
func (dep *Deployment) File() string { return dep.src.file }

func (d *decoder) deployment(root *yaml.Node) *Deployment {
	dep := &Deployment{}
	var top *updateSpec
	var groups []*yaml.Node
	d.object(root, "", fields{
		"name":          func(v *yaml.Node, p string) { dep.Name = d.name(v, p) },
		"director_uuid": nil, // ignored, as BOSH v2 does
		"releases": func(v *yaml.Node, p string) {
			for i, c := range d.list(v, p) {
				dep.Releases = append(dep.Releases, d.release(c, index(p, i)))
			}
			d.unique(v, p, len(dep.Releases), func(i int) string { return dep.Releases[i].Name }, "release")
		},
		"stemcells": func(v *yaml.Node, p string) {
			for i, c := range d.list(v, p) {
				dep.Stemcells = append(dep.Stemcells, d.stemcell(c, index(p, i)))
			}
			d.unique(v, p, len(dep.Stemcells), func(i int) string { return dep.Stemcells[i].Alias }, "stemcell alias")
		},
		"update": func(v *yaml.Node, p string) { top = d.updateBlock(v, p) },
		"instance_groups": func(v *yaml.Node, p string) {
			groups = d.list(v, p)
		},
		"variables": func(v *yaml.Node, p string) {
			dep.Variables = d.variables(v, p)
		},
		"features":   func(v *yaml.Node, p string) { dep.Features = d.features(v, p) },
		"tags":       func(v *yaml.Node, p string) { dep.Tags = d.tags(v, p) },
		"addons":     func(v *yaml.Node, p string) { dep.Addons = d.addons(v, p, false) },
		"properties": func(v *yaml.Node, p string) { dep.Properties = d.props(v, p) },
		"jobs": func(v *yaml.Node, p string) {
			d.errorf(v, p, "BOSH v1 manifests (top-level jobs) are not supported: use instance_groups")
		},
		"networks": func(v *yaml.Node, p string) {
			d.errorf(v, p, "networks belong in the cloud config, not the deployment manifest")
		},
		"resource_pools": func(v *yaml.Node, p string) {
			d.errorf(v, p, "resource_pools (BOSH v1) are not supported: use vm_type from the cloud config")
		},
		"compilation": func(v *yaml.Node, p string) {
			d.errorf(v, p, "compilation belongs in the cloud config, not the deployment manifest")
		},
	}, "name", "releases", "stemcells", "update", "instance_groups")
	if top == nil {
		top = &updateSpec{}
	} else if _, missing := top.resolved(); len(missing) > 0 {
		for _, m := range missing {
			if top.present[m] {
				continue // written but invalid: already reported
			}
			d.errorf(resolveAt(root, "update"), join("update", m), "missing required field %q", m)
		}
	}
	seen := map[string]string{}
	for i, c := range groups {
		p := index("instance_groups", i)
		ig := d.instanceGroup(c, p, top)
		if ig.Name != "" {
			if prev, dup := seen[ig.Name]; dup {
				d.errorf(c, join(p, "name"), "instance group %q is already defined at %s", ig.Name, prev)
			} else {
				seen[ig.Name] = d.at(c).String()
			}
		}
		dep.InstanceGroups = append(dep.InstanceGroups, ig)
	}
	if len(groups) == 0 && d.pos["instance_groups"] != (Position{}) {
		// An empty list is allowed: it deletes every instance.
		dep.InstanceGroups = []InstanceGroup{}
	}
	dep.Update, _ = top.resolved()
	return dep
}

// resolveAt finds the value node of key in mapping root, for positions of
// problems found after the walk.
func resolveAt(root *yaml.Node, key string) *yaml.Node {
	root = resolve(root)
	if root == nil || root.Kind != yaml.MappingNode {
		return root
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == key {
			return root.Content[i+1]
		}
	}
	return root
}

// unique reports names used twice in the list at n.
func (d *decoder) unique(n *yaml.Node, path string, count int, name func(int) string, what string) {
	items := resolve(n).Content
	first := map[string]int{}
	for i := 0; i < count && i < len(items); i++ {
		nm := name(i)
		if nm == "" {
			continue
		}
		if j, dup := first[nm]; dup {
			d.errorf(items[i], index(path, i), "%s %q is already defined at %s", what, nm, d.at(items[j]).String())
			continue
		}
		first[nm] = i
	}
}

func (d *decoder) release(n *yaml.Node, path string) Release {
	var r Release
	d.object(n, path, fields{
		"name":    func(v *yaml.Node, p string) { r.Name = d.name(v, p) },
		"version": func(v *yaml.Node, p string) { r.Version = d.version(v, p) },
		"url": func(v *yaml.Node, p string) {
			r.URL = d.name(v, p)
			if r.URL != "" && !strings.HasPrefix(r.URL, "https://") && !strings.HasPrefix(r.URL, "http://") && !strings.HasPrefix(r.URL, "file://") {
				d.errorf(v, p, "must be an http(s):// or file:// URL")
			}
		},
		"sha1": func(v *yaml.Node, p string) { r.SHA1 = d.name(v, p) },
		"stemcell": func(v *yaml.Node, p string) {
			var s ReleaseStemcell
			d.object(v, p, fields{
				"os":      func(v *yaml.Node, p string) { s.OS = d.name(v, p) },
				"version": func(v *yaml.Node, p string) { s.Version = d.version(v, p) },
			}, "os", "version")
			r.Stemcell = &s
		},
		"exported_from": nil,
	}, "name", "version")
	return r
}

// version reads a version as written: 1, 1.2, "1.2.3" or "latest".
func (d *decoder) version(n *yaml.Node, path string) string {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" || n.Tag == "!!bool" {
		d.errorf(n, path, "must be a version (\"1.2.3\" or \"latest\"), not %s", kindName(n))
		return ""
	}
	if strings.TrimSpace(n.Value) == "" {
		d.errorf(n, path, "must not be empty")
	}
	return n.Value
}

func (d *decoder) stemcell(n *yaml.Node, path string) Stemcell {
	var s Stemcell
	present := d.object(n, path, fields{
		"alias":   func(v *yaml.Node, p string) { s.Alias = d.name(v, p) },
		"os":      func(v *yaml.Node, p string) { s.OS = d.name(v, p) },
		"name":    func(v *yaml.Node, p string) { s.Name = d.name(v, p) },
		"version": func(v *yaml.Node, p string) { s.Version = d.version(v, p) },
	}, "alias", "version")
	if present != nil {
		switch {
		case present["os"] && present["name"]:
			d.errorf(n, path, "set either os or name, not both")
		case !present["os"] && !present["name"]:
			d.errorf(n, path, "missing os (or name): which stemcell is %q?", s.Alias)
		}
	}
	return s
}

func (d *decoder) instanceGroup(n *yaml.Node, path string, top *updateSpec) InstanceGroup {
	ig := InstanceGroup{Lifecycle: Service}
	var override *updateSpec
	present := d.object(n, path, fields{
		"name":      func(v *yaml.Node, p string) { ig.Name = d.name(v, p) },
		"azs":       func(v *yaml.Node, p string) { ig.AZs = d.names(v, p) },
		"instances": func(v *yaml.Node, p string) { ig.Instances = d.natural(v, p, 0) },
		"jobs": func(v *yaml.Node, p string) {
			for i, c := range d.list(v, p) {
				ig.Jobs = append(ig.Jobs, d.job(c, index(p, i)))
			}
			d.unique(v, p, len(ig.Jobs), func(i int) string { return ig.Jobs[i].Name }, "job")
		},
		"vm_type": func(v *yaml.Node, p string) { ig.VMType = d.name(v, p) },
		"vm_resources": func(v *yaml.Node, p string) {
			var r VMResources
			d.object(v, p, fields{
				"cpu":                 func(v *yaml.Node, p string) { r.CPU = d.natural(v, p, 1) },
				"ram":                 func(v *yaml.Node, p string) { r.RAM = d.natural(v, p, 1) },
				"ephemeral_disk_size": func(v *yaml.Node, p string) { r.EphemeralDiskSize = d.natural(v, p, 1) },
			}, "cpu", "ram", "ephemeral_disk_size")
			ig.VMResources = &r
		},
		"vm_extensions":        func(v *yaml.Node, p string) { ig.VMExtensions = d.names(v, p) },
		"stemcell":             func(v *yaml.Node, p string) { ig.Stemcell = d.name(v, p) },
		"persistent_disk":      func(v *yaml.Node, p string) { ig.PersistentDisk = d.natural(v, p, 0) },
		"persistent_disk_type": func(v *yaml.Node, p string) { ig.PersistentDiskType = d.name(v, p) },
		"persistent_disk_pool": func(v *yaml.Node, p string) {
			d.errorf(v, p, "persistent_disk_pool (BOSH v1) is not supported: use persistent_disk_type")
		},
		"networks": func(v *yaml.Node, p string) {
			for i, c := range d.list(v, p) {
				ig.Networks = append(ig.Networks, d.instanceNetwork(c, index(p, i)))
			}
			d.unique(v, p, len(ig.Networks), func(i int) string { return ig.Networks[i].Name }, "network")
		},
		"update": func(v *yaml.Node, p string) { override = d.updateBlock(v, p) },
		"migrated_from": func(v *yaml.Node, p string) {
			d.errorf(v, p, "migrated_from is not supported: rename or merge instance groups with a new deployment")
		},
		"lifecycle": func(v *yaml.Node, p string) {
			ig.Lifecycle = d.str(v, p)
			if ig.Lifecycle != Service && ig.Lifecycle != Errand {
				d.errorf(v, p, "must be %q or %q, not %q", Service, Errand, ig.Lifecycle)
			}
		},
		"properties": func(v *yaml.Node, p string) { ig.Properties = d.props(v, p) },
		"env":        func(v *yaml.Node, p string) { ig.Env = d.props(v, p) },
		"templates": func(v *yaml.Node, p string) {
			d.errorf(v, p, "templates (BOSH v1) is not supported: use jobs")
		},
	}, "name", "azs", "instances", "jobs", "stemcell", "networks")
	if present == nil {
		return ig
	}
	switch {
	case present["vm_type"] && present["vm_resources"]:
		d.errorf(n, join(path, "vm_resources"), "set either vm_type or vm_resources, not both")
	case !present["vm_type"] && !present["vm_resources"]:
		d.errorf(n, join(path, "vm_type"), "missing required field \"vm_type\" (or vm_resources)")
	}
	if present["persistent_disk"] && present["persistent_disk_type"] {
		d.errorf(n, join(path, "persistent_disk_type"), "set either persistent_disk or persistent_disk_type, not both")
	}
	if present["azs"] && len(ig.AZs) == 0 {
		d.errorf(n, join(path, "azs"), "must list at least one AZ")
	}
	if present["jobs"] && len(ig.Jobs) == 0 && ig.Instances > 0 {
		d.errorf(n, join(path, "jobs"), "must list at least one job")
	}
	if present["networks"] && len(ig.Networks) == 0 {
		d.errorf(n, join(path, "networks"), "must list at least one network")
	}
	u, _ := top.merge(override).resolved()
	ig.Update = u
	return ig
}

func (d *decoder) job(n *yaml.Node, path string) Job {
	var j Job
	d.object(n, path, fields{
		"name":       func(v *yaml.Node, p string) { j.Name = d.name(v, p) },
		"release":    func(v *yaml.Node, p string) { j.Release = d.name(v, p) },
		"properties": func(v *yaml.Node, p string) { j.Properties = d.props(v, p) },
		"consumes": func(v *yaml.Node, p string) {
			ps, _ := d.pairs(v, p)
			j.Consumes = map[string]Consume{}
			for _, kv := range ps {
				lp := join(p, kv.key.Value)
				d.mark(kv.val, lp)
				j.Consumes[kv.key.Value] = d.consume(kv.val, lp)
			}
		},
		"provides": func(v *yaml.Node, p string) {
			ps, _ := d.pairs(v, p)
			j.Provides = map[string]Provide{}
			for _, kv := range ps {
				lp := join(p, kv.key.Value)
				d.mark(kv.val, lp)
				j.Provides[kv.key.Value] = d.provide(kv.val, lp)
			}
		},
		"custom_provider_definitions": func(v *yaml.Node, p string) {
			for i, c := range d.list(v, p) {
				var cp CustomProviderDefinition
				d.object(c, index(p, i), fields{
					"name":       func(v *yaml.Node, p string) { cp.Name = d.name(v, p) },
					"type":       func(v *yaml.Node, p string) { cp.Type = d.name(v, p) },
					"properties": func(v *yaml.Node, p string) { cp.Properties = d.strs(v, p) },
				}, "name", "type")
				j.CustomProviderDefinitions = append(j.CustomProviderDefinitions, cp)
			}
		},
	}, "name", "release")
	return j
}

// blocked reports a link written as `nil` (or null), BOSH's way of saying
// "do not wire this link".
func blocked(n *yaml.Node) bool {
	n = resolve(n)
	return isNull(n) || (n.Kind == yaml.ScalarNode && n.Value == "nil")
}

func (d *decoder) consume(n *yaml.Node, path string) Consume {
	var c Consume
	if blocked(n) {
		c.Blocked = true
		return c
	}
	var manual ManualLink
	isManual := false
	d.object(n, path, fields{
		"from":       func(v *yaml.Node, p string) { c.From = d.name(v, p) },
		"deployment": func(v *yaml.Node, p string) { c.Deployment = d.name(v, p) },
		"network":    func(v *yaml.Node, p string) { c.Network = d.name(v, p) },
		"ip_addresses": func(v *yaml.Node, p string) {
			b := d.boolean(v, p)
			c.IPAddresses = &b
		},
		"address": func(v *yaml.Node, p string) { manual.Address = d.name(v, p); isManual = true },
		"properties": func(v *yaml.Node, p string) {
			manual.Properties = d.props(v, p)
			isManual = true
		},
		"instances": func(v *yaml.Node, p string) {
			isManual = true
			for i, it := range d.list(v, p) {
				var mi ManualInstance
				d.object(it, index(p, i), fields{
					"name":    func(v *yaml.Node, p string) { mi.Name = d.name(v, p) },
					"id":      func(v *yaml.Node, p string) { mi.ID = d.name(v, p) },
					"index":   func(v *yaml.Node, p string) { mi.Index = d.natural(v, p, 0) },
					"az":      func(v *yaml.Node, p string) { mi.AZ = d.name(v, p) },
					"address": func(v *yaml.Node, p string) { mi.Address = d.name(v, p) },
				}, "address")
				manual.Instances = append(manual.Instances, mi)
			}
		},
	})
	if isManual {
		if c.From != "" || c.Deployment != "" {
			d.errorf(n, path, "a manual link (instances, properties, address) cannot also name from or deployment")
		}
		c.Manual = &manual
	}
	return c
}

func (d *decoder) provide(n *yaml.Node, path string) Provide {
	var pr Provide
	if blocked(n) {
		pr.Blocked = true
		return pr
	}
	d.object(n, path, fields{
		"as":     func(v *yaml.Node, p string) { pr.As = d.name(v, p) },
		"shared": func(v *yaml.Node, p string) { pr.Shared = d.boolean(v, p) },
		"aliases": func(v *yaml.Node, p string) {
			for i, c := range d.list(v, p) {
				var a LinkAlias
				d.object(c, index(p, i), fields{
					"domain":               func(v *yaml.Node, p string) { a.Domain = d.name(v, p) },
					"health_filter":        func(v *yaml.Node, p string) { a.HealthFilter = d.name(v, p) },
					"initial_health_check": nil,
					"placeholder_type":     nil,
				}, "domain")
				pr.Aliases = append(pr.Aliases, a)
			}
		},
	})
	return pr
}

func (d *decoder) instanceNetwork(n *yaml.Node, path string) InstanceNetwork {
	var nw InstanceNetwork
	d.object(n, path, fields{
		"name": func(v *yaml.Node, p string) { nw.Name = d.name(v, p) },
		"static_ips": func(v *yaml.Node, p string) {
			seen := map[netip.Addr]bool{}
			for i, c := range d.list(v, p) {
				ip := index(p, i)
				r, ok := d.addrRange(c, ip)
				if !ok {
					continue
				}
				if r.size() > 65536 {
					d.errorf(c, ip, "range %s holds more than 65536 addresses", r)
					continue
				}
				for a := r.First; ; a = a.Next() {
					if seen[a] {
						d.errorf(c, ip, "static IP %s is listed twice", a)
					}
					seen[a] = true
					nw.StaticIPs = append(nw.StaticIPs, a)
					nw.staticItem = append(nw.staticItem, i)
					if a == r.Last {
						break
					}
				}
			}
		},
		"default": func(v *yaml.Node, p string) {
			nw.Default = d.names(v, p)
			for i, c := range resolve(v).Content {
				if s := resolve(c).Value; s != "dns" && s != "gateway" && s != "addressable" && resolve(c).Kind == yaml.ScalarNode {
					d.errorf(c, index(p, i), "must be dns, gateway or addressable, not %q", s)
				}
			}
		},
	}, "name")
	return nw
}

func (d *decoder) variables(n *yaml.Node, path string) []Variable {
	var out []Variable
	for i, c := range d.list(n, path) {
		p := index(path, i)
		var v Variable
		var options *yaml.Node
		d.object(c, p, fields{
			"name": func(x *yaml.Node, p string) { v.Name = d.name(x, p) },
			"type": func(x *yaml.Node, p string) {
				v.Type = d.name(x, p)
				switch v.Type {
				case VarPassword, VarCertificate, VarSSH, VarRSA, "":
				default:
					d.errorf(x, p, "unknown variable type %q: use password, certificate, ssh or rsa", v.Type)
				}
			},
			"options": func(x *yaml.Node, p string) { v.Options = d.props(x, p); options = x },
			"update_mode": func(x *yaml.Node, p string) {
				v.UpdateMode = d.str(x, p)
				if v.UpdateMode != "converge" && v.UpdateMode != "no-overwrite" {
					d.errorf(x, p, "must be converge or no-overwrite, not %q", v.UpdateMode)
				}
				if v.UpdateMode == "no-overwrite" {
					v.UpdateMode = ""
				}
			},
			"consumes": nil,
		}, "name", "type")
		if options != nil && v.Options != nil {
			before := len(d.errs)
			d.variableOptions(options, join(p, "options"), v.Type)
			if len(d.errs) == before {
				d.checkVariable(v, options, join(p, "options"))
			}
		} else if v.Type == VarCertificate {
			d.checkVariable(v, c, p)
		}
		out = append(out, v)
	}
	d.unique(n, path, len(out), func(i int) string { return out[i].Name }, "variable")
	return out
}

// variableOptions checks the options each generator understands. The type
// may be unknown yet (fields are visited in file order), in which case only
// the shapes are checked.
// checkVariable refuses options the generator would refuse (a key length
// it does not make, a certificate nobody signs...), at the option's line.
func (d *decoder) checkVariable(v Variable, n *yaml.Node, path string) {
	err := variables.Check(variables.Spec{Name: v.Name, Type: v.Type, Options: v.Options})
	if err == nil {
		return
	}
	msg := err.Error()
	at, p := n, path
	if field, rest, ok := strings.Cut(strings.TrimPrefix(msg, "options."), ":"); ok && strings.HasPrefix(msg, "options.") {
		if ps, _ := d.pairs(n, path); ps != nil {
			for _, kv := range ps {
				if kv.key.Value == field {
					at, p, msg = kv.val, join(path, field), strings.TrimSpace(rest)
				}
			}
		}
	} else {
		msg = strings.TrimSpace(strings.TrimPrefix(msg, "options:"))
	}
	d.errorf(at, p, "%s", msg)
}

func (d *decoder) variableOptions(n *yaml.Node, path, typ string) {
	str := func(v *yaml.Node, p string) { d.name(v, p) }
	list := func(v *yaml.Node, p string) { d.strs(v, p) }
	flag := func(v *yaml.Node, p string) { d.boolean(v, p) }
	count := func(v *yaml.Node, p string) { d.natural(v, p, 1) }
	all := fields{
		"length": count, "include_special": flag, "exclude_upper": flag, "exclude_lower": flag,
		"exclude_number": flag, "exclude_special": flag,
		"ca": str, "common_name": str, "alternative_names": list, "is_ca": flag,
		"extended_key_usage": func(v *yaml.Node, p string) {
			for i, s := range d.strs(v, p) {
				switch s {
				case "server_auth", "client_auth", "code_signing", "email_protection", "timestamping":
				default:
					d.errorf(resolve(v).Content[i], index(p, i), "unknown extended key usage %q", s)
				}
			}
		},
		"key_usage": list, "duration": count, "key_length": count, "organization": str,
		"organization_unit": str, "country": str, "state": str, "locality": str,
		"self_sign": flag,
	}
	var allowed []string
	switch typ {
	case VarPassword:
		allowed = []string{"length", "include_special", "exclude_upper", "exclude_lower", "exclude_number", "exclude_special"}
	case VarCertificate:
		allowed = []string{"ca", "common_name", "alternative_names", "is_ca", "extended_key_usage", "key_usage", "duration", "key_length", "organization", "organization_unit", "country", "state", "locality", "self_sign"}
	case VarSSH, VarRSA:
		allowed = []string{"key_length"}
	}
	fs := all
	if allowed != nil {
		fs = fields{}
		for k := range all {
			fs[k] = func(v *yaml.Node, p string) {
				d.errorf(v, p, "%s variables do not take %q (they take %s)", typ, k, strings.Join(allowed, ", "))
			}
		}
		for _, k := range allowed {
			fs[k] = all[k]
		}
	}
	d.object(n, path, fs)
}

func (d *decoder) features(n *yaml.Node, path string) Features {
	var f Features
	flag := func(dst **bool) func(*yaml.Node, string) {
		return func(v *yaml.Node, p string) { b := d.boolean(v, p); *dst = &b }
	}
	d.object(n, path, fields{
		"use_dns_addresses":       flag(&f.UseDNSAddresses),
		"use_short_dns_addresses": flag(&f.UseShortDNSAddresses),
		"use_link_dns_names":      flag(&f.UseLinkDNSNames),
		"randomize_az_placement":  flag(&f.RandomizeAZPlacement),
		"converge_variables":      flag(&f.ConvergeVariables),
		"use_tmpfs_config":        flag(&f.UseTmpfsConfig),
	})
	return f
}

func (d *decoder) tags(n *yaml.Node, path string) map[string]string {
	ps, _ := d.pairs(n, path)
	out := make(map[string]string, len(ps))
	for _, kv := range ps {
		p := join(path, kv.key.Value)
		d.mark(kv.val, p)
		v := resolve(kv.val)
		if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
			d.errorf(v, p, "must be a string, not %s", kindName(v))
			continue
		}
		out[kv.key.Value] = v.Value
	}
	return out
}
