package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"

	"github.com/compleat/compleat/director/apiv1"
	"github.com/compleat/compleat/director/manifest"
	"github.com/compleat/compleat/director/plan"
	"github.com/compleat/compleat/director/release"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

// inputs is everything a deploy plans from.
type inputs struct {
	desired          plan.Desired
	state            plan.State
	records          []store.Instance
	releases         map[string]store.Release
	place            placement
	releaseNames     []string
	stemcellNames    []string
	cloudConfigID    uint64
	runtimeConfigIDs []uint64
	vars             *variables // Scrub takes their values out of errors
}

// inputs loads the manifest and everything it refers to, and the
// deployment's recorded state.
func (d *Deployer) inputs(ctx context.Context, r *task.Reporter, req apiv1.DeployRequest) (_ *inputs, err error) {
	in := &inputs{releases: map[string]store.Release{}}
	var cloud store.Config
	var runtimes []store.Config
	err = d.c.Store.View(func(tx *store.Tx) error {
		var err error
		cloud, err = tx.LatestConfig(store.ConfigCloud, "")
		if errors.Is(err, store.ErrNotFound) {
			return task.BadInput(errors.New("no cloud config: run `director update-cloud-config` first"))
		}
		if err != nil {
			return err
		}
		runtimes, err = tx.Configs(store.ConfigRuntime, true)
		return err
	})
	if err != nil {
		return nil, err
	}
	in.cloudConfigID = cloud.ID
	var cc *manifest.CloudConfig
	cc, err = manifest.ParseCloudConfig(fmt.Sprintf("cloud config %d", cloud.ID), []byte(cloud.Content))
	if err != nil {
		return nil, fmt.Errorf("stored cloud config: %w", err)
	}
	in.desired.CloudConfig = cc
	var rcDocs [][]byte
	for _, rc := range runtimes {
		rcDocs = append(rcDocs, []byte(rc.Content))
	}
	vars, err := newVariables(d.c.Store, req.Deployment, []byte(req.Manifest), !req.DryRun, rcDocs...)
	if err != nil {
		return nil, task.BadInput(err)
	}
	vars.given = req.Vars
	in.vars = vars
	defer func() { err = vars.Scrub(err) }()
	// BOSH generates every declared variable, referenced or not.
	if err := vars.GenerateAll(ctx); err != nil {
		return nil, err
	}
	// Runtime configs are interpolated with the deployment's variables
	// (theirs included), as BOSH does.
	for _, rc := range runtimes {
		name := fmt.Sprintf("runtime config %s (%d)", rc.Name, rc.ID)
		rdoc, err := manifest.Load(ctx, name, []byte(rc.Content), manifest.LoadOptions{Source: vars, Strict: true})
		if err != nil {
			return nil, task.BadInput(fmt.Errorf("stored runtime config: %w", err))
		}
		parsed, err := rdoc.RuntimeConfig()
		if err != nil {
			return nil, fmt.Errorf("stored runtime config: %w", err)
		}
		in.desired.RuntimeConfigs = append(in.desired.RuntimeConfigs, parsed)
		in.runtimeConfigIDs = append(in.runtimeConfigIDs, rc.ID)
	}
	file, sm := manifestSource(req)
	doc, err := manifest.Load(ctx, file, []byte(req.Manifest), manifest.LoadOptions{Source: vars, Strict: true})
	if err != nil {
		return nil, task.BadInput(manifest.Remap(err, file, sm))
	}
	dep, err := doc.Deployment()
	if err != nil {
		return nil, task.BadInput(manifest.Remap(err, file, sm))
	}
	in.desired.Manifest = dep
	in.desired.ERB = d.c.ERB
	in.desired.IDs = uuids{}
	in.desired.Recreate = req.Recreate

	if in.place, err = d.placement(cc); err != nil {
		return nil, err
	}
	in.desired.AZCPIs = map[string]string{"": in.place.def}
	maps.Copy(in.desired.AZCPIs, in.place.byAZ)
	in.desired.ResizeDiskCPIs = d.resizeDiskCPIs(ctx, in.desired.AZCPIs)
	if in.desired.VMCloudProperties, err = d.vmCloudProperties(ctx, plan.VMResourcesNeeded(in.desired)); err != nil {
		return nil, err
	}
	if err := d.resolveReleases(ctx, in, dep); err != nil {
		return nil, err
	}
	if err := d.resolveStemcells(in, dep); err != nil {
		return nil, err
	}
	in.state, in.records, err = d.state(req.Deployment)
	return in, err
}

// placement says which CPI makes each VM and disk, BOSH's way: the CPI
// the instance's AZ names in the cloud config (azs[].cpi), else the
// default CPI; and each stemcell's cid in each CPI (an upload creates the
// stemcell in every CPI whose formats it fits).
type placement struct {
	def       string                       // AZs that name no CPI, instances without an AZ
	byAZ      map[string]string            // AZ → CPI
	stemcells map[string]map[string]string // "os/version" → CPI → cid
}

// placement resolves the cloud config's AZs to CPIs; an AZ naming a CPI
// the director does not have is bad input.
func (d *Deployer) placement(cc *manifest.CloudConfig) (placement, error) {
	def, err := d.c.CPIs.Resolve("")
	if err != nil && len(cc.AZs) == 0 {
		return placement{}, err
	}
	pl := placement{def: def, byAZ: map[string]string{}, stemcells: map[string]map[string]string{}}
	for _, az := range cc.AZs {
		name, err := d.c.CPIs.Resolve(az.CPI)
		if err != nil {
			return placement{}, task.BadInput(fmt.Errorf("cloud config: az %s: %w", az.Name, err))
		}
		pl.byAZ[az.Name] = name
	}
	if pl.def == "" { // no default CPI: AZ-less instances go where the first AZ's do
		for _, az := range cc.AZs {
			pl.def = pl.byAZ[az.Name]
			break
		}
	}
	return pl, nil
}

// cpiFor is the CPI that makes the VMs and disks of an instance in az.
func (pl placement) cpiFor(az string) string {
	if c, ok := pl.byAZ[az]; ok {
		return c
	}
	return pl.def
}

// stemcellCID is the stemcell's cid in cpiName.
func (pl placement) stemcellCID(s plan.Stemcell, cpiName string) (string, error) {
	cid := pl.stemcells[s.String()][cpiName]
	if cid == "" {
		return "", fmt.Errorf("stemcell %s is not in cpi %s: upload it again (an upload creates it in every cpi)", s, cpiName)
	}
	return cid, nil
}

// used are the CPIs the deployment's instance groups and compilation VMs
// are placed in, sorted.
func (pl placement) used(dep *manifest.Deployment, cc *manifest.CloudConfig) []string {
	set := map[string]bool{}
	for _, g := range dep.InstanceGroups {
		if len(g.AZs) == 0 {
			set[pl.def] = true
		}
		for _, az := range g.AZs {
			set[pl.cpiFor(az)] = true
		}
	}
	if cc != nil {
		set[pl.cpiFor(cc.Compilation.AZ)] = true
	}
	delete(set, "")
	return sortedKeys(set)
}

// resolveReleases finds the uploaded releases the manifest (and runtime
// configs) name and loads their jobs.
func (d *Deployer) resolveReleases(ctx context.Context, in *inputs, dep *manifest.Deployment) error {
	wanted := append([]manifest.Release(nil), dep.Releases...)
	for _, rc := range in.desired.RuntimeConfigs {
		wanted = append(wanted, rc.Releases...)
	}
	var all []store.Release
	if err := d.c.Store.View(func(tx *store.Tx) error {
		var err error
		all, err = tx.Releases()
		return err
	}); err != nil {
		return err
	}
	in.desired.Releases = map[string]plan.Release{}
	for _, w := range wanted {
		if _, done := in.desired.Releases[w.Name]; done {
			continue
		}
		var found *store.Release
		for i := range all {
			if all[i].Name != w.Name {
				continue
			}
			if w.Version == "latest" || w.Version == "" || all[i].Version == w.Version {
				found = &all[i] // Releases lists versions in upload order: the last is the latest
			}
		}
		if found == nil {
			return task.BadInput(fmt.Errorf("release %s/%s is not uploaded: run `director upload-release`", w.Name, w.Version))
		}
		rel, err := d.planRelease(ctx, *found)
		if err != nil {
			return err
		}
		in.desired.Releases[w.Name] = rel
		in.releases[w.Name] = *found
		in.releaseNames = append(in.releaseNames, found.Name+"/"+found.Version)
	}
	return nil
}

// planRelease builds the planner's view of a stored release: its manifest
// and every job's spec and templates, read from the job archives in the
// blobstore (cached by fingerprint).
func (d *Deployer) planRelease(ctx context.Context, sr store.Release) (plan.Release, error) {
	m := &release.Manifest{Name: sr.Name, Version: sr.Version, CommitHash: sr.CommitHash}
	rel := plan.Release{Manifest: m, Jobs: map[string]*release.Job{}}
	for _, p := range sr.Packages {
		m.Packages = append(m.Packages, release.PackageEntry{Name: p.Name, Version: p.Fingerprint, Fingerprint: p.Fingerprint, SHA256: p.SHA256, Dependencies: p.Dependencies})
	}
	for _, j := range sr.Jobs {
		m.Jobs = append(m.Jobs, release.JobEntry{Name: j.Name, Version: j.Fingerprint, Fingerprint: j.Fingerprint, SHA256: j.SHA256, Packages: j.Packages})
		job, err := d.releaseJob(ctx, j)
		if err != nil {
			return rel, fmt.Errorf("release %s/%s job %s: %w", sr.Name, sr.Version, j.Name, err)
		}
		rel.Jobs[j.Name] = job
	}
	return rel, nil
}

type jobCacheEntry struct{ job *release.Job }

func (d *Deployer) releaseJob(ctx context.Context, j store.ReleaseJob) (*release.Job, error) {
	d.mu.Lock()
	e, ok := d.jobs[j.Fingerprint]
	d.mu.Unlock()
	if ok {
		return e.job, nil
	}
	rc, err := d.c.Blobs.Get(ctx, j.BlobID)
	if err != nil {
		return nil, fmt.Errorf("fetch job blob %s: %w", j.BlobID, err)
	}
	defer rc.Close()
	job, err := release.ReadJob(rc)
	if err != nil {
		return nil, fmt.Errorf("read job blob %s: %w", j.BlobID, err)
	}
	d.mu.Lock()
	d.jobs[j.Fingerprint] = &jobCacheEntry{job: job}
	d.mu.Unlock()
	return job, nil
}

// resolveStemcells binds each manifest stemcell alias to an uploaded
// stemcell and its cid in the deployment's CPI.
func (d *Deployer) resolveStemcells(in *inputs, dep *manifest.Deployment) error {
	var all []store.Stemcell
	if err := d.c.Store.View(func(tx *store.Tx) error {
		var err error
		all, err = tx.Stemcells()
		return err
	}); err != nil {
		return err
	}
	in.desired.Stemcells = map[string]plan.Stemcell{}
	for _, s := range dep.Stemcells {
		var found *store.Stemcell
		for i := range all {
			c := &all[i]
			if s.OS != "" && c.OS != s.OS || s.Name != "" && c.Name != s.Name {
				continue
			}
			if c.Deleting || s.Version != "latest" && c.Version != s.Version {
				continue
			}
			if found == nil || c.UploadedAt.After(found.UploadedAt) {
				found = c
			}
		}
		if found == nil {
			what := s.OS
			if what == "" {
				what = s.Name
			}
			return task.BadInput(fmt.Errorf("stemcell %s/%s (alias %s) is not uploaded: run `director upload-stemcell`", what, s.Version, s.Alias))
		}
		ps := plan.Stemcell{Name: found.Name, OS: found.OS, Version: found.Version}
		in.place.stemcells[ps.String()] = found.CIDs
		// The plan carries the default CPI's cid (or any); each VM is
		// made from its own CPI's (placement.stemcellCID).
		ps.CID = found.CIDs[in.place.def]
		for _, c := range in.place.used(dep, in.desired.CloudConfig) {
			if found.CIDs[c] == "" {
				return task.BadInput(fmt.Errorf("stemcell %s/%s is not in cpi %s: upload it again (an upload creates it in every cpi)", found.Name, found.Version, c))
			}
			if ps.CID == "" {
				ps.CID = found.CIDs[c]
			}
		}
		in.desired.Stemcells[s.Alias] = ps
		in.stemcellNames = append(in.stemcellNames, found.Name+"/"+found.Version)
	}
	return nil
}

// state builds plan.State from the store: the deployment's instance records
// (their recorded plan.InstanceState with the VM and disk the store knows)
// and every address other deployments hold.
func (d *Deployer) state(deployment string) (plan.State, []store.Instance, error) {
	st := plan.State{Deployment: deployment, OtherIPs: map[string][]netip.Addr{}}
	var recs []store.Instance
	err := d.c.Store.View(func(tx *store.Tx) error {
		var err error
		if recs, err = tx.Instances(deployment); err != nil {
			return err
		}
		for _, rec := range recs {
			is, err := instanceState(rec)
			if err != nil {
				return err
			}
			if vm, err := tx.VM(rec.VMCID); err == nil && rec.VMCID != "" {
				is.CPI = vm.CPI
			}
			is.Unfinished, is.Ignore = rec.Unfinished, rec.IgnoreFix
			st.Instances = append(st.Instances, is)
		}
		rs, err := tx.IPReservations("")
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Deployment == deployment {
				continue
			}
			if a, err := netip.ParseAddr(r.IP); err == nil {
				st.OtherIPs[r.Network] = append(st.OtherIPs[r.Network], a)
			}
		}
		deps, err := tx.Deployments()
		if err != nil {
			return err
		}
		st.Links = map[string][]plan.ProvidedLink{}
		for _, o := range deps {
			if o.Name == deployment {
				st.ConsumedLinks = o.ConsumedLinks
				continue
			}
			if o.ManifestID != 0 { // deployed successfully at least once
				var links []plan.ProvidedLink
				if len(o.Links) > 0 {
					if err := json.Unmarshal(o.Links, &links); err != nil {
						return fmt.Errorf("links of deployment %s: %w", o.Name, err)
					}
				}
				st.Links[o.Name] = links
			}
			others, err := tx.Instances(o.Name)
			if err != nil {
				return err
			}
			for _, rec := range others {
				is, err := instanceState(rec)
				if err != nil {
					continue
				}
				for n, a := range is.Networks {
					if a.IsValid() {
						st.OtherIPs[n] = append(st.OtherIPs[n], a)
					}
				}
			}
		}
		return nil
	})
	return st, recs, err
}

// instanceState is the plan's view of an instance record: the recorded
// state document, with the VM and disk as the record says now (they change
// before the document when a VM is replaced).
func instanceState(rec store.Instance) (plan.InstanceState, error) {
	var is plan.InstanceState
	if len(rec.Spec) > 0 {
		if err := json.Unmarshal(rec.Spec, &is); err != nil {
			return is, fmt.Errorf("instance %s/%s: recorded state: %w", rec.Group, rec.ID, err)
		}
	}
	is.Group, is.ID, is.Index, is.AZ, is.Bootstrap = rec.Group, rec.ID, rec.Index, rec.AZ, rec.Bootstrap
	is.VMCID, is.AgentID = rec.VMCID, rec.AgentID
	if len(rec.DiskCIDs) > 0 {
		if is.Disk == nil {
			is.Disk = &plan.DiskState{}
		}
		is.Disk.CID = rec.DiskCIDs[0]
	} else {
		is.Disk = nil
	}
	return is, nil
}

// resizeDiskCPIs names the CPIs among cpis (AZ → CPI) whose Info reports
// the ResizeDisk capability. A CPI whose Info cannot be had counts as one
// that cannot resize: its disks are replaced and the data moved, which
// every CPI can do.
func (d *Deployer) resizeDiskCPIs(ctx context.Context, cpis map[string]string) map[string]bool {
	out := map[string]bool{}
	for _, name := range cpis {
		if _, seen := out[name]; seen || name == "" {
			continue
		}
		info, err := d.c.CPIs.Info(ctx, name)
		if err != nil {
			d.c.Logger.Warn("cpi info: disks in it are replaced rather than resized", "cpi", name, "error", err)
		}
		out[name] = err == nil && info.Capabilities.ResizeDisk
	}
	return out
}

// manifestSource is the name errors give the deploy's manifest (the file
// the operator gave, else "manifest.yml") and the source map of its nodes
// to the files they were written in (nil when the client sent none).
func manifestSource(req apiv1.DeployRequest) (string, *manifest.SourceMap) {
	file := "manifest.yml"
	if req.ManifestFile != "" && len(req.ManifestFile) <= 4096 {
		file = req.ManifestFile
	}
	var sm manifest.SourceMap
	if len(req.SourceMap) == 0 || json.Unmarshal(req.SourceMap, &sm) != nil {
		return file, nil
	}
	return file, &sm
}
