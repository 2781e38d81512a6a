package plan

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/compleat/compleat/director/manifest"
	"github.com/compleat/compleat/director/release"
	"github.com/compleat/compleat/director/template"
)

// ProvidedLink is a link a deployment provides, as the director records it
// when the deployment's deploy succeeds (Plan.Links) and hands it to the
// plans of other deployments (State.Links). Only a shared link
// (`provides: {x: {shared: true}}`) carries its properties and instances;
// an unshared one is recorded by name and type alone, so that a consumer
// in another deployment is told why it cannot have it.
type ProvidedLink struct {
	// Name is the name consumers ask for: the manifest's `as`, else the
	// name in the job's spec.
	Name       string             `json:"name"`
	Type       string             `json:"type"`
	Group      string             `json:"group"`
	Job        string             `json:"job"`
	Shared     bool               `json:"shared,omitempty"`
	Properties map[string]any     `json:"properties,omitempty"`
	Instances  []ProvidedInstance `json:"instances,omitempty"`
}

// ProvidedInstance is one instance of a shared link's providing group.
type ProvidedInstance struct {
	Group     string `json:"group"`
	ID        string `json:"id"`
	Index     int    `json:"index"`
	AZ        string `json:"az,omitempty"`
	Bootstrap bool   `json:"bootstrap,omitempty"`
	// DefaultNetwork names the instance's default network; Networks maps
	// each network name to the instance's address on it.
	DefaultNetwork string            `json:"default_network,omitempty"`
	Networks       map[string]string `json:"networks,omitempty"`
}

// Hash identifies what a consumer of the link sees: when it changes, the
// consumer's templates may render differently.
func (l ProvidedLink) Hash() string {
	b, _ := json.Marshal(l) // maps marshal with sorted keys
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:16]
}

// LinkKey is how a consumed link of another deployment is named in
// State.ConsumedLinks and Plan.Consumed: "deployment/link".
func LinkKey(deployment, name string) string { return deployment + "/" + name }

// fieldError is a link error that belongs to one field under the consumed
// link's manifest path (from, deployment, network).
type fieldError struct {
	field string
	err   error
}

func (e *fieldError) Error() string { return e.err.Error() }
func (e *fieldError) Unwrap() error { return e.err }

func atField(field, format string, args ...any) error {
	return &fieldError{field: field, err: fmt.Errorf(format, args...)}
}

// recordProvided adds a provided link to the plan's Links.
func (c *computer) recordProvided(p *provider, shared bool) {
	pl := ProvidedLink{Name: p.name, Type: p.typ, Group: p.group, Job: p.job, Shared: shared}
	if shared {
		pl.Properties = p.props
		for _, in := range p.instances {
			pi := ProvidedInstance{Group: in.Group, ID: in.ID, Index: in.Index, AZ: in.AZ, Bootstrap: in.Bootstrap, Networks: map[string]string{}}
			if n := in.DefaultNetwork(); n != nil {
				pi.DefaultNetwork = n.Name
			}
			for _, n := range in.Networks {
				if n.IP.IsValid() {
					pi.Networks[n.Name] = n.IP.String()
				}
			}
			pl.Instances = append(pl.Instances, pi)
		}
	}
	c.plan.Links = append(c.plan.Links, pl)
}

// consumeOther resolves a link consumed from another deployment
// (`consumes: {x: {from: name, deployment: other}}`) from the links that
// deployment recorded at its last successful deploy.
func (c *computer) consumeOther(group string, mj *manifest.Job, l release.Link, mc manifest.Consume) (func(*Instance) *template.Link, error) {
	links, ok := c.actual.Links[mc.Deployment]
	if !ok {
		return nil, atField("deployment", "link %q of job %s: deployment %q does not exist or has never been deployed successfully", l.Name, mj.Name, mc.Deployment)
	}
	var cands, unshared, otherType []ProvidedLink
	for _, pl := range links {
		switch {
		case mc.From != "" && pl.Name != mc.From:
			continue
		case mc.From == "" && pl.Type != l.Type:
			continue
		case pl.Type != l.Type:
			otherType = append(otherType, pl)
		case !pl.Shared:
			unshared = append(unshared, pl)
		default:
			cands = append(cands, pl)
		}
	}
	what := fmt.Sprintf("link of type %s", l.Type)
	field := "deployment"
	if mc.From != "" {
		what, field = fmt.Sprintf("link called %q", mc.From), "from"
	}
	switch {
	case len(cands) == 0 && len(unshared) > 0:
		u := unshared[0]
		return nil, atField(field, "link %q of job %s: deployment %q provides a %s (job %s in instance group %s) but does not share it; add shared: true to that job's provides entry", l.Name, mj.Name, mc.Deployment, what, u.Job, u.Group)
	case len(cands) == 0 && len(otherType) > 0:
		return nil, atField(field, "link %q of job %s: deployment %q shares %q with type %s, not %s", l.Name, mj.Name, mc.Deployment, mc.From, otherType[0].Type, l.Type)
	case len(cands) == 0 && l.Optional && mc.From == "":
		return nil, nil
	case len(cands) == 0:
		return nil, atField(field, "link %q of job %s: deployment %q shares no %s", l.Name, mj.Name, mc.Deployment, what)
	case len(cands) > 1:
		var names []string
		for _, p := range cands {
			names = append(names, fmt.Sprintf("%s (type %s) from job %s in instance group %s", p.Name, p.Type, p.Job, p.Group))
		}
		sort.Strings(names)
		return nil, atField(field, "link %q of job %s is ambiguous in deployment %q: %s; choose one with consumes.%s.from", l.Name, mj.Name, mc.Deployment, joinStrings(names), l.Name)
	}
	pl := cands[0]
	link := &template.Link{Name: l.Name, Type: l.Type, Properties: pl.Properties}
	useIPs := mc.IPAddresses == nil || *mc.IPAddresses
	for _, pi := range pl.Instances {
		network := mc.Network
		if network == "" {
			network = pi.DefaultNetwork
		}
		addr, has := pi.Networks[network]
		if mc.Network != "" && !has {
			return nil, atField("network", "link %q of job %s: instance %s/%s of deployment %q has no address on network %q", l.Name, mj.Name, pi.Group, pi.ID, mc.Deployment, mc.Network)
		}
		if !useIPs {
			addr = dnsName(pi.ID, pi.Group, network, mc.Deployment)
		}
		link.Instances = append(link.Instances, template.LinkInstance{
			Name: pi.Group, ID: pi.ID, Index: pi.Index, AZ: pi.AZ, Address: addr, Bootstrap: pi.Bootstrap,
		})
	}
	if c.plan.Consumed == nil {
		c.plan.Consumed = map[string]string{}
	}
	key := LinkKey(mc.Deployment, pl.Name)
	c.plan.Consumed[key] = pl.Hash()
	if c.consumedBy == nil {
		c.consumedBy = map[string][]string{}
	}
	c.consumedBy[group+"/"+mj.Name] = append(c.consumedBy[group+"/"+mj.Name], key)
	return func(*Instance) *template.Link { return link }, nil
}

// dnsName is the name BOSH gives an instance on a network
// (`<id>.<group>.<network>.<deployment>.bosh`), which a link renders in
// place of the address when the consumer asks for `ip_addresses: false`.
// Compleat runs no DNS server: see docs/links.md.
func dnsName(id, group, network, deployment string) string {
	canon := func(s string) string { return strings.ToLower(strings.ReplaceAll(s, "_", "-")) }
	return fmt.Sprintf("%s.%s.%s.%s.bosh", canon(id), canon(group), canon(network), canon(deployment))
}

// consumedStatus compares the links consumed from other deployments with
// those the last successful deploy consumed.
func (c *computer) consumedStatus() {
	if len(c.plan.Consumed) == 0 {
		return
	}
	c.plan.ConsumedStatus = map[string]string{}
	for k, h := range c.plan.Consumed {
		prev, had := c.actual.ConsumedLinks[k]
		switch {
		case !had:
			c.plan.ConsumedStatus[k] = "new"
		case prev != h:
			c.plan.ConsumedStatus[k] = "changed"
		default:
			c.plan.ConsumedStatus[k] = "unchanged"
		}
	}
}

// formatLinks writes the links the deployment shares and those it consumes
// from other deployments.
func (p *Plan) formatLinks(b *strings.Builder) {
	var shared []string
	for _, l := range p.Links {
		if l.Shared {
			shared = append(shared, fmt.Sprintf("  %s (type %s) from job %s in instance group %s, %s\n", l.Name, l.Type, l.Job, l.Group, count(len(l.Instances), "instance")))
		}
	}
	if len(shared) > 0 {
		b.WriteString("\nShared links\n")
		for _, s := range shared {
			b.WriteString(s)
		}
	}
	if len(p.Consumed) == 0 {
		return
	}
	keys := make([]string, 0, len(p.Consumed))
	for k := range p.Consumed {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b.WriteString("\nLinks from other deployments\n")
	for _, k := range keys {
		status := p.ConsumedStatus[k]
		if status == "changed" {
			status = "changed since the last deploy: consumers are rendered again"
		}
		fmt.Fprintf(b, "  %s %s: %s\n", k, p.Consumed[k][:12], status)
	}
}
