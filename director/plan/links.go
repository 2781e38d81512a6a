package plan

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/compleat/compleat/director/manifest"
	"github.com/compleat/compleat/director/release"
	"github.com/compleat/compleat/director/template"
)

// provider is a link some job of the deployment provides.
type provider struct {
	group, job string
	name, typ  string
	props      map[string]any
	instances  []*Instance
}

func (p *provider) String() string {
	return fmt.Sprintf("%s (type %s) from job %s in instance group %s", p.name, p.typ, p.job, p.group)
}

// jobProperties is the property map a manifest job's templates see: the
// job's own block, else its group's (deprecated), else the global one.
func (c *computer) jobProperties(ig *manifest.InstanceGroup, mj *manifest.Job) map[string]any {
	switch {
	case mj.Properties != nil:
		return mj.Properties
	case ig.Properties != nil:
		return ig.Properties
	default:
		return c.dep.Properties
	}
}

// propertyValue is a property's manifest value, else its spec default.
func propertyValue(props map[string]any, spec *release.JobSpec, name string) any {
	var cur any = props
	found := true
	for _, k := range strings.Split(name, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			found = false
			break
		}
		if cur, ok = m[k]; !ok {
			found = false
			break
		}
	}
	if found && cur != nil {
		return cur
	}
	if p, ok := spec.Properties[name]; ok {
		return p.Default
	}
	return nil
}

func setPath(m map[string]any, name string, v any) {
	keys := strings.Split(name, ".")
	for _, k := range keys[:len(keys)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	m[keys[len(keys)-1]] = v
}

// render resolves every consumed link and renders every job of every
// instance.
func (c *computer) render() {
	var providers []*provider
	for gi := range c.plan.Groups {
		g := &c.plan.Groups[gi]
		igi := c.groupIndex(g.Name)
		ig := &c.dep.InstanceGroups[igi]
		insts := make([]*Instance, len(g.Instances))
		for i := range g.Instances {
			insts[i] = &g.Instances[i]
		}
		for ji := range ig.Jobs {
			mj := &ig.Jobs[ji]
			spec := c.spec(mj)
			if spec == nil {
				continue
			}
			props := c.jobProperties(ig, mj)
			add := func(name, typ string, propNames []string, shared bool) {
				lp := map[string]any{}
				for _, pn := range propNames {
					if v := propertyValue(props, spec, pn); v != nil {
						setPath(lp, pn, v)
					}
				}
				p := &provider{group: g.Name, job: mj.Name, name: name, typ: typ, props: lp, instances: insts}
				providers = append(providers, p)
				c.recordProvided(p, shared)
			}
			for _, l := range spec.Provides {
				mp := mj.Provides[l.Name]
				if mp.Blocked {
					continue
				}
				name := l.Name
				if mp.As != "" {
					name = mp.As
				}
				add(name, l.Type, l.Properties, mp.Shared)
			}
			for _, cp := range mj.CustomProviderDefinitions {
				add(cp.Name, cp.Type, cp.Properties, false)
			}
		}
	}

	seenErr := map[string]bool{}
	for gi := range c.plan.Groups {
		g := &c.plan.Groups[gi]
		igi := c.groupIndex(g.Name)
		ig := &c.dep.InstanceGroups[igi]
		for ji := range ig.Jobs {
			mj := &ig.Jobs[ji]
			jp := fmt.Sprintf("%s.jobs[%d]", groupPath(igi), ji)
			spec := c.spec(mj)
			if spec == nil {
				continue
			}
			links := map[string]func(*Instance) *template.Link{}
			ok := true
			for _, l := range spec.Consumes {
				mk, err := c.consume(g.Name, mj, l, providers)
				if err != nil {
					path := jp + ".consumes." + l.Name
					var fe *fieldError
					if errors.As(err, &fe) {
						path += "." + fe.field
					}
					c.errorf(path, "%v", err)
					ok = false
					continue
				}
				if mk != nil {
					links[l.Name] = mk
				}
			}
			if !ok {
				continue
			}
			tj := template.Job{Name: mj.Name, Properties: map[string]template.Property{}}
			for name, p := range spec.Properties {
				tj.Properties[name] = template.Property{Default: p.Default}
			}
			rj := c.d.Releases[mj.Release].Jobs[mj.Name]
			srcs := make([]string, 0, len(spec.Templates))
			for src := range spec.Templates {
				srcs = append(srcs, src)
			}
			sort.Strings(srcs)
			for _, src := range srcs {
				text, found := rj.Templates[src]
				if !found {
					c.errorf(jp+".name", "job %s: template %s is missing from the release", mj.Name, src)
					ok = false
					continue
				}
				tj.Templates = append(tj.Templates, template.Template{Source: src, Dest: spec.Templates[src], Text: string(text)})
			}
			if !ok {
				continue
			}
			tj.Monit = string(rj.Monit)
			props := c.jobProperties(ig, mj)
			rel := c.d.Releases[mj.Release]
			for ii := range g.Instances {
				in := &g.Instances[ii]
				input := template.Input{Instance: c.templateInstance(in), Properties: props, Links: map[string]*template.Link{}}
				if rel.Manifest != nil {
					input.Release = template.ReleaseRef{Name: rel.Manifest.Name, Version: rel.Manifest.Version}
				}
				for name, mk := range links {
					input.Links[name] = mk(in)
				}
				r, err := c.renderJob(tj, input)
				if err != nil {
					if msg := err.Error(); !seenErr[jp+msg] {
						seenErr[jp+msg] = true
						c.errorf(jp, "instance %s: %v", in.Name(), err)
					}
					continue
				}
				for k := range in.Jobs {
					if in.Jobs[k].Name == mj.Name {
						in.Jobs[k].Rendered = r
					}
				}
			}
		}
	}
}

// spec returns the release job spec of a manifest job (nil when missing:
// groupJobs has reported it).
func (c *computer) spec(mj *manifest.Job) *release.JobSpec {
	rel, ok := c.d.Releases[mj.Release]
	if !ok {
		return nil
	}
	rj := rel.Jobs[mj.Name]
	if rj == nil {
		return nil
	}
	return rj.Spec
}

func (c *computer) templateInstance(in *Instance) template.Instance {
	ti := template.Instance{
		Name: in.Group, ID: in.ID, Index: in.Index, AZ: in.AZ,
		Address: in.Address(), IP: in.Address(), Deployment: c.dep.Name,
		Bootstrap: in.Bootstrap, NetworkIPs: map[string]string{},
	}
	for _, n := range in.Networks {
		if n.IP.IsValid() {
			ti.NetworkIPs[n.Name] = n.IP.String()
		}
	}
	if in.Disk != nil {
		ti.PersistentDisk = in.Disk.SizeMB
	}
	return ti
}

// consume resolves one consumed link of a job in group; it returns nil
// (and no error) for an optional link left unwired. The result builds the
// link for a consuming instance.
func (c *computer) consume(group string, mj *manifest.Job, l release.Link, providers []*provider) (func(*Instance) *template.Link, error) {
	mc := mj.Consumes[l.Name]
	switch {
	case mc.Blocked:
		if !l.Optional {
			return nil, fmt.Errorf("link %q of job %s is not optional and cannot be set to nil", l.Name, mj.Name)
		}
		return nil, nil
	case mc.Manual != nil:
		link := &template.Link{Name: l.Name, Type: l.Type, Properties: mc.Manual.Properties}
		for _, mi := range mc.Manual.Instances {
			link.Instances = append(link.Instances, template.LinkInstance{Name: mi.Name, ID: mi.ID, Index: mi.Index, AZ: mi.AZ, Address: mi.Address})
		}
		if len(link.Instances) == 0 && mc.Manual.Address != "" {
			link.Instances = []template.LinkInstance{{Address: mc.Manual.Address, Bootstrap: true}}
		}
		return func(*Instance) *template.Link { return link }, nil
	case mc.Deployment != "" && mc.Deployment != c.dep.Name:
		return c.consumeOther(group, mj, l, mc)
	}
	var candidates []*provider
	for _, p := range providers {
		if mc.From != "" {
			if p.name == mc.From {
				candidates = append(candidates, p)
			}
		} else if p.typ == l.Type {
			candidates = append(candidates, p)
		}
	}
	if mc.From != "" {
		var typed []*provider
		for _, p := range candidates {
			if p.typ == l.Type {
				typed = append(typed, p)
			}
		}
		if len(candidates) > 0 && len(typed) == 0 {
			return nil, fmt.Errorf("link %q of job %s: provider %q has type %s, not %s", l.Name, mj.Name, mc.From, candidates[0].typ, l.Type)
		}
		candidates = typed
	}
	if len(candidates) > 1 {
		var same []*provider
		for _, p := range candidates {
			if p.group == group {
				same = append(same, p)
			}
		}
		if len(same) == 1 {
			candidates = same
		}
	}
	switch {
	case len(candidates) == 0 && mc.From != "":
		return nil, fmt.Errorf("link %q of job %s: no job provides a link called %q", l.Name, mj.Name, mc.From)
	case len(candidates) == 0 && l.Optional:
		return nil, nil
	case len(candidates) == 0:
		return nil, fmt.Errorf("link %q (type %s) of job %s: no job in the deployment provides it", l.Name, l.Type, mj.Name)
	case len(candidates) > 1:
		var names []string
		for _, p := range candidates {
			names = append(names, p.String())
		}
		return nil, fmt.Errorf("link %q (type %s) of job %s is ambiguous: %s; choose one with consumes.%s.from", l.Name, l.Type, mj.Name, joinStrings(names), l.Name)
	}
	p := candidates[0]
	network := mc.Network
	link := &template.Link{Name: l.Name, Type: l.Type, Properties: p.props}
	useIPs := mc.IPAddresses == nil || *mc.IPAddresses
	for _, pi := range p.instances {
		addr := pi.Address()
		if network != "" {
			addr = ""
			for _, n := range pi.Networks {
				if n.Name == network && n.IP.IsValid() {
					addr = n.IP.String()
				}
			}
		}
		if !useIPs {
			nw := network
			if n := pi.DefaultNetwork(); nw == "" && n != nil {
				nw = n.Name
			}
			addr = dnsName(pi.ID, pi.Group, nw, c.dep.Name)
		}
		link.Instances = append(link.Instances, template.LinkInstance{
			Name: pi.Group, ID: pi.ID, Index: pi.Index, AZ: pi.AZ, Address: addr, Bootstrap: pi.Bootstrap,
		})
	}
	return func(*Instance) *template.Link { return link }, nil
}
