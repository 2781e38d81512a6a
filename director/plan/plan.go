package plan

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/compleat/compleat/director/manifest"
	"github.com/compleat/compleat/director/release"
	"github.com/compleat/compleat/director/template"
)

// Desired is what the operator asks for.
type Desired struct {
	// Manifest is the parsed, interpolated deployment manifest.
	Manifest    *manifest.Deployment
	CloudConfig *manifest.CloudConfig
	// Releases are the releases the manifest names, by name, at the version
	// the director resolved ("latest" already replaced).
	Releases map[string]Release
	// Stemcells are the manifest's stemcells by alias, resolved.
	Stemcells map[string]Stemcell
	// IDs gives ids (uuids) to new instances.
	IDs IDSource
	// Recreate recreates every VM (deploy --recreate).
	Recreate bool
	// Unresponsive are the instances (by id) whose agent did not answer
	// before planning (deploy --fix): they are recreated, as BOSH's
	// deploy --fix does, instead of the deploy failing on them.
	Unresponsive map[string]bool
	// AZCPIs names the CPI that makes each AZ's VMs (the cloud config's
	// azs[].cpi, resolved; the key "" for instances without an AZ). An
	// instance whose VM was made by another CPI (InstanceState.CPI) is
	// recreated ("cpi changed"). Nil: CPIs are not compared.
	AZCPIs map[string]string
	// VMCloudProperties are the cloud properties each CPI's
	// CalculateVMCloudProperties gave for the vm_resources the deployment
	// and the compilation block ask for (VMResourcesNeeded); they take the
	// place of a vm_type's cloud properties. A vm_resources block without
	// an entry fails the plan.
	VMCloudProperties map[VMResourcesKey]map[string]any
	// ResizeDiskCPIs names the CPIs whose Info reports the ResizeDisk
	// capability: a persistent disk that only grows (same disk type) in
	// one of them is resized in place (Disk.ResizeFrom); elsewhere, or when
	// it shrinks, a new disk is made and the data moved (Disk.Replaces).
	ResizeDiskCPIs map[string]bool
	// RuntimeConfigs add their addons' jobs to the groups they match (the
	// manifest's own addons apply too). Their releases must be in Releases.
	RuntimeConfigs []*manifest.RuntimeConfig
	// ERB renders BOSH jobs' ERB templates; nil fails any ERB job with
	// template.ErrNoRuby.
	ERB *template.ERB
}

// Release is one uploaded release: its manifest (jobs and packages with
// fingerprints and dependencies) and each job's spec and templates.
type Release struct {
	Manifest *release.Manifest
	Jobs     map[string]*release.Job
}

// Stemcell is an uploaded stemcell.
type Stemcell struct {
	Name    string `json:"name,omitempty"`
	OS      string `json:"os"`
	Version string `json:"version"`
	CID     string `json:"cid,omitempty"`
}

func (s Stemcell) String() string { return s.OS + "/" + s.Version }

// IDSource hands out new instance ids. The director uses random uuids;
// tests use a sequence, so that Compute stays deterministic.
type IDSource interface {
	NewID() string
}

// SequentialIDs is an IDSource returning prefix-1, prefix-2, ...
type SequentialIDs struct {
	Prefix string
	n      int
}

// NewID returns the next id.
func (s *SequentialIDs) NewID() string {
	s.n++
	return fmt.Sprintf("%s%d", s.Prefix, s.n)
}

// State is what is deployed, as the director recorded it after the last
// deploy (see Instance.State).
type State struct {
	Deployment string          `json:"deployment"`
	Instances  []InstanceState `json:"instances"`
	// OtherIPs are addresses other deployments hold, by network name.
	OtherIPs map[string][]netip.Addr `json:"other_ips,omitempty"`
	// Links are the links every other deployment provided at its last
	// successful deploy, by deployment name; a deployment that exists but
	// provides nothing has an empty entry. Cross-deployment consumes
	// resolve against them.
	Links map[string][]ProvidedLink `json:"links,omitempty"`
	// ConsumedLinks are the links of other deployments this one consumed
	// at its last successful deploy, LinkKey → ProvidedLink.Hash.
	ConsumedLinks map[string]string `json:"consumed_links,omitempty"`
}

// InstanceState is one deployed instance.
type InstanceState struct {
	Group     string `json:"group"`
	ID        string `json:"id"`
	Index     int    `json:"index"`
	AZ        string `json:"az,omitempty"`
	Bootstrap bool   `json:"bootstrap,omitempty"`
	// VMCID is empty when the instance has no VM (creation failed or it was
	// deleted by hand).
	VMCID   string `json:"vm_cid,omitempty"`
	AgentID string `json:"agent_id,omitempty"`
	// CPI is the CPI that made the VM (the director fills it from its VM
	// record); empty when not known.
	CPI      string   `json:"cpi,omitempty"`
	Stemcell Stemcell `json:"stemcell"`
	VMType   string   `json:"vm_type,omitempty"`
	// CloudHash is Instance.CloudHash as last deployed.
	CloudHash string `json:"cloud_hash,omitempty"`
	// Networks maps network name to address (invalid for dynamic networks
	// whose address is not known).
	Networks map[string]netip.Addr `json:"networks,omitempty"`
	Disk     *DiskState            `json:"disk,omitempty"`
	Jobs     []JobState            `json:"jobs,omitempty"`
	// Packages maps package name to fingerprint.
	Packages map[string]string `json:"packages,omitempty"`
	// Unfinished: a deploy began to update the instance (took it down) and
	// did not record the end; the next plan updates it again.
	Unfinished bool `json:"-"`
	// Ignore: the operator set the instance aside (director ignore): the
	// plan leaves it as it is (Instance.Ignored) and refuses to delete it.
	Ignore bool `json:"ignore,omitempty"`
}

// DiskState is an attached persistent disk.
type DiskState struct {
	CID    string `json:"cid"`
	SizeMB int    `json:"size_mb"`
	Type   string `json:"type,omitempty"`
}

// JobState is one job as deployed.
type JobState struct {
	Name         string `json:"name"`
	Release      string `json:"release"`
	Fingerprint  string `json:"fingerprint"`
	RenderedHash string `json:"rendered_hash"`
}

// Plan is the result of Compute.
type Plan struct {
	Deployment string
	Groups     []Group
	// Delete are deployed instances no longer desired, with their reasons.
	Delete []Deletion
	// OrphanDisks are persistent disks no instance keeps: of deleted
	// instances, or replaced because their size or type changed.
	OrphanDisks []OrphanDisk
	// Compilation is where compile VMs go.
	Compilation Compilation
	// PendingAddresses names the instances (group/id) whose address on a
	// dynamic network is not known until their VM exists; their rendered
	// jobs (and those consuming links to them) lack it. The director creates
	// the missing VMs, records the addresses the cloud gave, and plans again
	// before using the rendered jobs.
	PendingAddresses []string
	// Links are the links the deployment provides (shared or not), for the
	// director to record once the deploy succeeds.
	Links []ProvidedLink
	// Consumed are the links of other deployments the plan consumes,
	// LinkKey → ProvidedLink.Hash.
	Consumed map[string]string
	// ConsumedStatus says, for each key of Consumed, how the link compares
	// with what the last successful deploy consumed: "new", "changed" (its
	// provider was deployed again with other instances or properties) or
	// "unchanged".
	ConsumedStatus map[string]string
}

// Compilation is the cloud config's compilation block resolved for this
// deploy, with addresses for the compile VMs that collide with no instance.
type Compilation struct {
	Workers         int
	ReuseVMs        bool
	AZ              string
	VMType          string
	CloudProperties map[string]any // the AZ's, then the vm_type's (or the block's own)
	Env             map[string]any
	Network         string
	NetworkType     string
	// Addresses are free addresses of a manual compilation network, at most
	// Workers: run at most len(Addresses) compile VMs at once, each on its
	// own address. Empty for a dynamic network.
	Addresses []Network
}

// Group is one instance group's plan.
type Group struct {
	Name      string
	Lifecycle string
	Update    manifest.Update
	AZs       []string
	Stemcell  Stemcell
	Instances []Instance // by index
}

// Instance is one desired instance.
type Instance struct {
	Group     string
	ID        string
	Index     int
	AZ        string
	Bootstrap bool
	// Existing is false for an instance this deploy creates.
	Existing bool
	// VMCID and AgentID are the current VM's, empty when it has none.
	VMCID   string
	AgentID string

	Stemcell        Stemcell
	VMType          string
	CloudProperties map[string]any // vm_type, vm_extensions and AZ, merged
	Env             map[string]any
	// CloudHash identifies CloudProperties and Env: when it changes the VM
	// is recreated.
	CloudHash string
	Networks  []Network
	Disk      *Disk
	Jobs      []Job
	Packages  []Package // every package the jobs need, dependencies included, by name

	Changes  []Change
	Recreate bool
	// Ignored: the instance is ignored (InstanceState.Ignore): Changes is
	// empty, so nothing touches it, and Pending holds what the deploy
	// would have changed on it; its disk and addresses stay as recorded.
	Ignored bool
	Pending []Change
	// Surge: the group has max_surge and the instance (a running VM, no
	// persistent disk, no static IP) changes, so its change is carried out
	// on a replacement VM at a new address, brought up while the old VM
	// keeps serving (as create-swap-delete does); Recreate is set too.
	Surge bool
}

// Name is "group/id".
func (i *Instance) Name() string { return i.Group + "/" + i.ID }

// Address is the instance's address on its default network.
func (i *Instance) Address() string {
	if n := i.DefaultNetwork(); n != nil && n.IP.IsValid() {
		return n.IP.String()
	}
	return ""
}

// DefaultNetwork is the network that is the default gateway (or the only
// one).
func (i *Instance) DefaultNetwork() *Network {
	for k := range i.Networks {
		if slices.Contains(i.Networks[k].Default, "gateway") {
			return &i.Networks[k]
		}
	}
	if len(i.Networks) > 0 {
		return &i.Networks[0]
	}
	return nil
}

// Network is an instance's place on one network.
type Network struct {
	Name            string
	Type            string // manual, dynamic, vip
	IP              netip.Addr
	Netmask         string
	Gateway         netip.Addr
	DNS             []netip.Addr
	Default         []string
	CloudProperties map[string]any
	// Static is true when the IP came from static_ips.
	Static bool
}

// Disk is an instance's planned persistent disk.
type Disk struct {
	SizeMB          int
	Type            string
	CloudProperties map[string]any
	// CID is the disk kept from the last deploy; empty when a disk is to be
	// created.
	CID string
	// Replaces is the disk whose data moves to a new one (size or type
	// changed); it is orphaned afterwards.
	Replaces string
	// ResizeFrom is the size (MB) of disk CID before this deploy, when it
	// is resized in place to SizeMB (see Desired.ResizeDiskCPIs); else 0.
	ResizeFrom int
}

// Job is one rendered job of an instance.
type Job struct {
	Name           string
	Release        string
	ReleaseVersion string
	Version        string
	Fingerprint    string
	Packages       []string
	Rendered       template.Rendered
}

// Package is a release package an instance needs.
type Package struct {
	Name         string
	Release      string
	Version      string
	Fingerprint  string
	SHA256       string
	Dependencies []string
}

// Change reasons.
const (
	ReasonNew               = "new"
	ReasonVMMissing         = "vm missing"
	ReasonStemcell          = "stemcell changed"
	ReasonVMType            = "vm_type changed"
	ReasonCloudConfig       = "cloud properties changed"
	ReasonCPI               = "cpi changed"
	ReasonUnfinished        = "last update unfinished"
	ReasonNetwork           = "network changed"
	ReasonJobs              = "jobs changed"
	ReasonPackages          = "packages changed"
	ReasonProperties        = "properties changed"
	ReasonLinks             = "links from other deployments changed"
	ReasonDisk              = "disk changed"
	ReasonRecreate          = "recreate requested"
	ReasonUnresponsive      = "agent unresponsive"
	ReasonDeleted           = "deleted"
	ReasonScaledDown        = "scaled down"
	ReasonGroupRemoved      = "instance group removed"
	ReasonAZRemoved         = "az removed"
	ReasonRebalanced        = "rebalanced across azs"
	ReasonStaticIPChange    = "static ip removed"
	ReasonErrand            = "instance group is now an errand"
	ReasonDeploymentDeleted = "deployment deleted"
)

// Change is one reason to touch an instance.
type Change struct {
	Reason string
	Detail string
}

func (c Change) String() string {
	if c.Detail == "" {
		return c.Reason
	}
	return c.Reason + " (" + c.Detail + ")"
}

// Deletion is a deployed instance the plan removes.
type Deletion struct {
	Instance InstanceState
	Reason   string
}

// OrphanDisk is a persistent disk kept for the operator but no longer
// attached to anything.
type OrphanDisk struct {
	CID      string
	Instance string // group/id it belonged to
	Reason   string
}

// HasChanges reports whether carrying the plan out would touch anything.
func (p *Plan) HasChanges() bool {
	if len(p.Delete) > 0 || len(p.OrphanDisks) > 0 {
		return true
	}
	for _, g := range p.Groups {
		for _, in := range g.Instances {
			if len(in.Changes) > 0 {
				return true
			}
		}
	}
	return false
}

// State is what the director records for the instance once it is deployed:
// the next Compute's actual state.
func (i *Instance) State() InstanceState {
	st := InstanceState{
		Group: i.Group, ID: i.ID, Index: i.Index, AZ: i.AZ, Bootstrap: i.Bootstrap,
		VMCID: i.VMCID, AgentID: i.AgentID, Stemcell: i.Stemcell, VMType: i.VMType,
		CloudHash: i.CloudHash, Networks: map[string]netip.Addr{}, Packages: map[string]string{},
	}
	for _, n := range i.Networks {
		st.Networks[n.Name] = n.IP
	}
	if i.Disk != nil {
		st.Disk = &DiskState{CID: i.Disk.CID, SizeMB: i.Disk.SizeMB, Type: i.Disk.Type}
	}
	for _, j := range i.Jobs {
		st.Jobs = append(st.Jobs, JobState{Name: j.Name, Release: j.Release, Fingerprint: j.Fingerprint, RenderedHash: j.Rendered.Hash})
	}
	for _, p := range i.Packages {
		st.Packages[p.Name] = p.Fingerprint
	}
	return st
}

// Compute computes the plan. It fails, naming the manifest field where it
// can, when the desired deployment cannot be planned: unknown releases or
// jobs, missing links, too few addresses, template errors.
func Compute(desired Desired, actual State) (Plan, error) {
	if desired.Manifest == nil {
		return Plan{}, errors.New("plan: no deployment manifest")
	}
	if err := desired.Manifest.Validate(desired.CloudConfig); err != nil {
		return Plan{}, err
	}
	if desired.IDs == nil {
		return Plan{}, errors.New("plan: no id source")
	}
	// max_surge replaces every changed instance of a surging group with a
	// VM at a new address; whether an instance changes is known only once
	// its jobs are rendered, and a new address changes what is rendered
	// (its own jobs, those consuming links to it). So the plan is computed
	// again with the surging instances known until no instance is added:
	// the set only grows, so this ends, and with no surging group it is
	// computed once. New instances keep their ids from pass to pass.
	ids := &replayIDs{src: desired.IDs}
	surge := map[string]bool{}
	for {
		ids.next = 0
		d := desired
		d.IDs = ids
		c := &computer{d: d, dep: withAddons(d), cc: d.CloudConfig, actual: actual, surge: surge}
		p, err := c.compute()
		if err != nil || !c.addSurging(&p) {
			return p, err
		}
	}
}

// replayIDs hands out the same ids in the same order on every pass of
// Compute, drawing from src only for ids not handed out before.
type replayIDs struct {
	src  IDSource
	ids  []string
	next int
}

func (r *replayIDs) NewID() string {
	if r.next == len(r.ids) {
		r.ids = append(r.ids, r.src.NewID())
	}
	r.next++
	return r.ids[r.next-1]
}

// addSurging adds to c.surge the instances of p that surge (see
// Instance.Surge) but were planned in place, and reports whether it added
// any.
func (c *computer) addSurging(p *Plan) bool {
	added := false
	for gi := range p.Groups {
		g := &p.Groups[gi]
		if g.Update.MaxSurge.Of(len(g.Instances)) < 1 {
			continue
		}
		ig := &c.dep.InstanceGroups[c.groupIndex(g.Name)]
		if hasStaticIPs(ig) {
			continue
		}
		for ii := range g.Instances {
			in := &g.Instances[ii]
			prev := c.placed[in.ID].prev
			if c.surge[in.ID] || len(in.Changes) == 0 || prev == nil || prev.VMCID == "" || prev.Disk != nil || in.Disk != nil {
				continue
			}
			c.surge[in.ID] = true
			added = true
		}
	}
	return added
}

func hasStaticIPs(ig *manifest.InstanceGroup) bool {
	for _, n := range ig.Networks {
		if len(n.StaticIPs) > 0 {
			return true
		}
	}
	return false
}

// computer holds one Compute's working state.
type computer struct {
	d      Desired
	dep    *manifest.Deployment
	cc     *manifest.CloudConfig
	actual State
	plan   Plan
	errs   []error
	placed map[string]*placed // by instance id
	// surge holds the instances replaced for max_surge (by id), found by
	// an earlier pass of Compute.
	surge map[string]bool
	// consumedBy lists, by "group/job", the links of other deployments the
	// job consumes (LinkKey).
	consumedBy map[string][]string
}

func (c *computer) errorf(path, format string, args ...any) {
	c.errs = append(c.errs, c.dep.Errorf(path, format, args...))
}

func (c *computer) compute() (Plan, error) {
	c.plan.Deployment = c.dep.Name
	byGroup := map[string][]InstanceState{}
	for _, st := range c.actual.Instances {
		byGroup[st.Group] = append(byGroup[st.Group], st)
	}
	desiredGroups := map[string]bool{}

	// 1. Placement: AZ, index, id, bootstrap, static IPs.
	for gi := range c.dep.InstanceGroups {
		ig := &c.dep.InstanceGroups[gi]
		if ig.Lifecycle == manifest.Errand {
			// Errands run on demand, not as deployed instances.
			for _, st := range byGroup[ig.Name] {
				c.plan.Delete = append(c.plan.Delete, Deletion{Instance: st, Reason: ReasonErrand})
			}
			desiredGroups[ig.Name] = true
			continue
		}
		desiredGroups[ig.Name] = true
		g, deleted := c.place(gi, ig, byGroup[ig.Name])
		c.plan.Groups = append(c.plan.Groups, g)
		c.plan.Delete = append(c.plan.Delete, deleted...)
	}
	for _, st := range c.actual.Instances {
		if !desiredGroups[st.Group] {
			c.plan.Delete = append(c.plan.Delete, Deletion{Instance: st, Reason: ReasonGroupRemoved})
		}
	}
	for _, d := range c.plan.Delete {
		if !d.Instance.Ignore {
			continue
		}
		what := fmt.Sprintf("instance %s/%s is ignored but this deploy would delete it (%s): unignore it first", d.Instance.Group, d.Instance.ID, d.Reason)
		if gi := c.groupIndex(d.Instance.Group); gi >= 0 {
			c.errorf(groupPath(gi)+".instances", "%s", what)
		} else {
			c.errs = append(c.errs, errors.New(what))
		}
	}
	if len(c.errs) > 0 {
		return Plan{}, errors.Join(c.errs...)
	}

	// 2. VM settings, disks, jobs and packages.
	for gi := range c.plan.Groups {
		c.resolveGroup(&c.plan.Groups[gi])
	}
	if len(c.errs) > 0 {
		return Plan{}, errors.Join(c.errs...)
	}

	// 3. Addresses on manual networks.
	c.assignIPs()
	if len(c.errs) > 0 {
		return Plan{}, errors.Join(c.errs...)
	}

	for _, g := range c.plan.Groups {
		for _, in := range g.Instances {
			for _, n := range in.Networks {
				if n.Type == manifest.Dynamic && !n.IP.IsValid() {
					c.plan.PendingAddresses = append(c.plan.PendingAddresses, in.Name())
					break
				}
			}
		}
	}

	// 4. Links and rendering.
	c.render()
	c.checkDependsOn()
	if len(c.errs) > 0 {
		return Plan{}, errors.Join(c.errs...)
	}

	c.consumedStatus()

	// 5. Change sets and disks to orphan.
	for gi := range c.plan.Groups {
		for ii := range c.plan.Groups[gi].Instances {
			c.changes(&c.plan.Groups[gi].Instances[ii])
		}
	}
	sort.SliceStable(c.plan.Delete, func(i, j int) bool {
		a, b := c.plan.Delete[i].Instance, c.plan.Delete[j].Instance
		if a.Group != b.Group {
			return a.Group < b.Group
		}
		return a.Index < b.Index
	})
	for _, d := range c.plan.Delete {
		if d.Instance.Disk != nil && d.Instance.Disk.CID != "" {
			c.plan.OrphanDisks = append(c.plan.OrphanDisks, OrphanDisk{CID: d.Instance.Disk.CID, Instance: d.Instance.Group + "/" + d.Instance.ID, Reason: "instance deleted: " + d.Reason})
		}
	}
	return c.plan, nil
}

// withAddons returns the manifest with the jobs of every matching addon
// (runtime configs first, then the manifest's own) appended to each service
// instance group. An addon's properties are the properties of its jobs that
// have none of their own.
func withAddons(d Desired) *manifest.Deployment {
	var addons []manifest.Addon
	for _, rc := range d.RuntimeConfigs {
		if rc != nil {
			addons = append(addons, rc.Addons...)
		}
	}
	addons = append(addons, d.Manifest.Addons...)
	if len(addons) == 0 {
		return d.Manifest
	}
	dep := *d.Manifest
	dep.InstanceGroups = slices.Clone(d.Manifest.InstanceGroups)
	for gi := range dep.InstanceGroups {
		ig := &dep.InstanceGroups[gi]
		target := manifest.Target{Deployment: dep.Name, Group: &d.Manifest.InstanceGroups[gi], StemcellOS: d.Stemcells[ig.Stemcell].OS}
		jobs := slices.Clone(ig.Jobs)
		for _, a := range addons {
			if !a.AppliesTo(target) {
				continue
			}
			for _, j := range a.Jobs {
				if slices.ContainsFunc(jobs, func(x manifest.Job) bool { return x.Name == j.Name }) {
					continue // the group already runs it
				}
				if j.Properties == nil {
					j.Properties = a.Properties
				}
				jobs = append(jobs, j)
			}
		}
		ig.Jobs = jobs
	}
	return &dep
}

// groupIndex is the manifest index of the instance group called name.
func (c *computer) groupIndex(name string) int {
	for i := range c.dep.InstanceGroups {
		if c.dep.InstanceGroups[i].Name == name {
			return i
		}
	}
	return -1
}

// groupPath is the manifest path of instance group gi.
func groupPath(gi int) string { return fmt.Sprintf("instance_groups[%d]", gi) }

// hashJSON hashes a value's JSON encoding (map keys sorted).
func hashJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(fmt.Sprint(v))
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// mergeMaps merges src over dst, recursively for nested maps.
func mergeMaps(dst, src map[string]any) map[string]any {
	if dst == nil {
		dst = map[string]any{}
	}
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				dst[k] = mergeMaps(copyMap(dm), sm)
				continue
			}
		}
		dst[k] = v
	}
	return dst
}

func copyMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func joinStrings(ss []string) string { return strings.Join(ss, ", ") }
