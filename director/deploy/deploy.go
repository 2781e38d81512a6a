// Package deploy is the director's deploy pipeline: it implements what the
// API's deploy routes run (api.Deployer) by carrying a manifest through plan, compile and update
// against the CPI, the agents and the store.
//
// A deploy runs as a task holding the deployment's lock:
//
//  1. Reconcile: intents left by an interrupted task (a VM or disk being
//     created or deleted, a compile VM) are finished or undone, VMs the
//     cloud no longer has are forgotten (see reconcile.go).
//  2. Inputs: the manifest (director variables resolved from the store,
//     generated on first use), the cloud and runtime configs, the releases'
//     job specs and templates, the stemcells, and plan.State built from the
//     store's instance records (and every other deployment's addresses).
//  3. plan.Compute, and the manifest diff (secrets redacted) as a task
//     event. A dry run reports the plan and stops. A plan without changes
//     says so and stops.
//  4. The plan as a task event, addresses reserved, packages compiled on
//     throwaway VMs (compile.Compiler with a Cloud over the CPI and the
//     agents), rendered jobs stored as blobs.
//  5. update.Updater with an Executor over the CPI and the agents. Every CPI
//     call that creates or deletes something is recorded in the store
//     before it is made and after it returns.
//
// docs/deploy-pipeline.md describes the whole flow.
package deploy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/compleat/compleat/director/apiv1"
	"github.com/compleat/compleat/director/blobstore"
	"github.com/compleat/compleat/director/compile"
	"github.com/compleat/compleat/director/cpimanager"
	"github.com/compleat/compleat/director/pki"
	"github.com/compleat/compleat/director/plan"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
	"github.com/compleat/compleat/director/template"
	"github.com/compleat/compleat/director/update"
)

// Config is what the pipeline is built from; every field but Logger and
// Name is required.
type Config struct {
	Store *store.Store
	CPIs  *cpimanager.Manager
	// Conn is the director's bus connection; BusURL is how agents reach the
	// bus; CA signs each agent's bus certificate and the blob server's.
	Conn   *nats.Conn
	BusURL string
	// BusURLs, with several directors, are every bus server's address as
	// agents reach them (BusURL among them): an agent moves to another
	// when its server goes. Empty: BusURL alone.
	BusURLs []string
	CA      *pki.CA
	// Blobs store rendered jobs; Signer signs the URLs agents fetch them
	// (and release and compiled packages) with; BlobURL is their base.
	Blobs   blobstore.Store
	Signer  *blobstore.Signer
	BlobURL string
	// BlobCA is the PEM agents trust for BlobURL (default: the CA's).
	BlobCA []byte
	Logger *slog.Logger
	// Name is the director's name in VM metadata (default "compleat").
	Name string
	// DirectorID is the director's uuid, the cpi.TagDirector tag of every
	// VM and disk it creates: reconcile and cloud-check find and check
	// objects by it through ListVMs. Required.
	DirectorID string
	// AgentTimeout bounds the wait for a new VM's agent (default 2m).
	AgentTimeout time.Duration
	// AgentAbsentGrace is how long a request to an agent not on the bus is
	// sent again (default 15s: after a director restart agents need a few
	// seconds to reconnect; agent/client Options.AbsentGrace).
	AgentAbsentGrace time.Duration
	// ERB renders BOSH jobs' ERB templates (default: one ruby process,
	// from PATH, started at the first ERB job and kept).
	ERB *template.ERB
}

// Deployer carries out deploys, deletions and state changes.
type Deployer struct {
	c        Config
	compiler *compile.Compiler

	mu   sync.Mutex
	jobs map[string]*jobCacheEntry // release job archives by fingerprint

	rollouts rollouts // under way, with their pause flags (rollout.go)
}

// New returns a Deployer.
func New(c Config) *Deployer {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Name == "" {
		c.Name = "compleat"
	}
	if c.DirectorID == "" {
		c.DirectorID = c.Name
	}
	if c.AgentAbsentGrace == 0 {
		c.AgentAbsentGrace = 15 * time.Second
	}
	if c.AgentTimeout == 0 {
		c.AgentTimeout = 2 * time.Minute
	}
	if c.ERB == nil {
		c.ERB = template.NewERB("")
	}
	d := &Deployer{c: c, jobs: map[string]*jobCacheEntry{}}
	d.compiler = compile.New(&compileCloud{d: d}, storeCache{d.c.Store}, c.Logger.With("component", "compile"))
	return d
}

// blobTTL is how long a signed blob URL stays valid.
const blobTTL = time.Hour

// DryRunResult starts the result of a dry run; its plan hash follows. The
// plan itself is the task's "Plan" note, as in a deploy.
const DryRunResult = "Dry run: nothing changed.\n"

// Deploy plans the manifest against what is deployed and carries the plan
// out.
func (d *Deployer) Deploy(ctx context.Context, r *task.Reporter, req apiv1.DeployRequest) (string, error) {
	return d.deploy(ctx, r, req, false)
}

// deploy is Deploy; rollingBack marks the deploy of an auto_rollback, which
// never rolls back in turn.
func (d *Deployer) deploy(ctx context.Context, r *task.Reporter, req apiv1.DeployRequest, rollingBack bool) (_ string, err error) {
	log := d.c.Logger.With("deployment", req.Deployment, "task", r.TaskID())
	if !req.DryRun {
		if err := d.reconcile(ctx, r, req.Deployment); err != nil {
			return "", err
		}
	}
	in, err := d.inputs(ctx, r, req)
	if err != nil {
		return "", err
	}
	defer func() { err = in.vars.Scrub(err) }() // no variable's value in the task error
	if in.desired.Manifest.Name != req.Deployment {
		return "", task.BadInput(fmt.Errorf("the manifest deploys %q, not %q", in.desired.Manifest.Name, req.Deployment))
	}
	if req.Fix {
		in.desired.Unresponsive = d.unresponsive(ctx, r, in.records)
	}
	p, err := plan.Compute(in.desired, in.state)
	if err != nil {
		return "", task.BadInput(err)
	}
	if !req.FreshDiskOnCPIMove {
		if err := d.disksStay(&p, in.place); err != nil {
			return "", task.BadInput(err)
		}
	}
	if plan.HasErrandGroups(in.desired) {
		// Errand groups get no VM, but their links, properties and
		// templates are checked now, not at their first run.
		if _, err := plan.Compute(plan.WithErrands(in.desired), in.state); err != nil {
			return "", task.BadInput(fmt.Errorf("errands: %w", err))
		}
	}
	var buf bytes.Buffer
	if err := p.Format(&buf); err != nil {
		return "", err
	}
	diff := d.manifestDiff(req.Deployment, req.Manifest)
	d.note(r, "Manifest diff", diff)
	hash, err := planHash(req, in)
	if err != nil {
		return "", err
	}
	if req.DryRun {
		// The plan is a note, as in a deploy, which `director deploy`
		// shows before asking; the result says nothing changed.
		d.note(r, "Plan", buf.String())
		raw, _ := json.Marshal(map[string]string{"text": hash, "plan_hash": hash})
		r.Event(store.Event{Stage: "Plan hash", State: "info", Data: raw})
		return DryRunResult + "Plan hash: " + hash + "\n", nil
	}
	if req.PlanHash != "" && req.PlanHash != hash {
		return "", fmt.Errorf("%w: the plan changed since the dry run that was reviewed (plan hash %s, now %s): review it again with deploy --dry-run", ErrPlanChanged, req.PlanHash, hash)
	}
	if !p.HasChanges() {
		if err := d.recordDeployment(req, in, false); err != nil {
			return "", err
		}
		if err := d.recordLinks(r, req.Deployment, &p); err != nil {
			return "", err
		}
		return "No changes: nothing to do.", nil
	}
	d.note(r, "Plan", buf.String())
	if err := d.recordDeployment(req, in, true); err != nil {
		return "", err
	}
	if err := d.reserveIPs(req.Deployment, &p); err != nil {
		return "", err
	}
	if err := task.Checkpoint(ctx); err != nil {
		return "", err
	}

	// Compile.
	pkgBlobs, err := d.compileFor(ctx, r, &p, in)
	if err != nil {
		return "", err
	}
	// Rendered jobs: the first batch's now, the rest behind it.
	ro := p.Rollout()
	jobs, err := d.storeRendered(ctx, &p, ro, func(id string) bool {
		in, _ := p.Instance(id)
		return len(in.Changes) > 0 // only changed instances are applied
	})
	if err != nil {
		return "", err
	}
	defer jobs.stop()
	if err := task.Checkpoint(ctx); err != nil {
		return "", err
	}

	// Update.
	x := d.newExecutor(&p, req.Deployment, in.place, jobs, pkgBlobs, log)
	x.freshDisk = req.FreshDiskOnCPIMove
	// An agent found silent is not asked to drain or stop its VM.
	maps.Copy(x.unresponsive, in.desired.Unresponsive)
	detached := map[string]bool{}
	for _, rec := range in.records {
		switch rec.State {
		case plan.StateStopped:
			x.steps[rec.ID] = plan.DeploySteps(true)
		case plan.StateDetached:
			detached[rec.ID] = true
		}
	}
	// A detached instance (stop --hard) keeps no VM: the deploy leaves it
	// alone, and start brings it up with the deployment's manifest.
	for gi := range ro.Groups {
		for ii := range ro.Groups[gi].Instances {
			if ui := &ro.Groups[gi].Instances[ii]; detached[ui.ID] {
				ui.Changes, ui.New, ui.Recreate, ui.DiskChange = nil, false, false, false
			}
		}
	}
	res, err := d.rollout(ctx, r, x, ro, req, &p, rollingBack, log) // swap, pause, rollback: rollout.go
	if err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("%w: %w", task.ErrCancelled, err)
		}
		return "", err
	}
	for _, od := range p.OrphanDisks {
		if err := d.c.Store.Update(func(tx *store.Tx) error { return tx.OrphanDisk(od.CID) }); err != nil && !errors.Is(err, store.ErrNotFound) {
			return "", err
		}
	}
	if err := d.finishDeployment(req.Deployment, &p); err != nil {
		return "", err
	}
	if err := d.recordLinks(r, req.Deployment, &p); err != nil {
		return "", err
	}
	return fmt.Sprintf("Deployed %s: %d updated, %d deleted, %d unchanged.", req.Deployment, len(res.Updated), len(res.Deleted), res.Skipped), nil
}

// note records a block of text (the manifest diff, the plan) as one task
// event whose data is {"text": ...}; an empty text records nothing.
func (d *Deployer) note(r *task.Reporter, stage, text string) {
	if strings.TrimSpace(text) == "" {
		return
	}
	raw, _ := json.Marshal(map[string]string{"text": text})
	r.Event(store.Event{Stage: stage, State: "info", Data: raw})
}

// recordDeployment stores the manifest as submitted (director variables
// unresolved: no secret) and the deployment record, before anything is
// touched, so that a deployment being created is listed and locked.
func (d *Deployer) recordDeployment(req apiv1.DeployRequest, in *inputs, changed bool) error {
	return d.c.Store.Update(func(tx *store.Tx) error {
		dep, err := tx.Deployment(req.Deployment)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		dep.Name = req.Deployment
		if changed {
			// Recorded as deployed when the deploy succeeds
			// (finishDeployment); until then they are in use.
			dep.PendingReleases, dep.PendingStemcells = in.releaseNames, in.stemcellNames
		} else {
			dep.Releases, dep.Stemcells = in.releaseNames, in.stemcellNames
			dep.PendingReleases, dep.PendingStemcells = nil, nil
		}
		dep.CloudConfigID, dep.RuntimeConfigIDs = in.cloudConfigID, in.runtimeConfigIDs
		last, merr := tx.Manifest(req.Deployment, 0)
		if merr != nil || last.Content != req.Manifest {
			m, err := tx.AddManifest(req.Deployment, req.Manifest, 0)
			if err != nil {
				return err
			}
			last = m
		}
		if !changed {
			dep.ManifestID = last.ID
		}
		return tx.PutDeployment(dep)
	})
}

// finishDeployment marks the newest manifest as the last one deployed
// successfully and releases the addresses the deployment no longer uses
// (an instance that moved to another address).
func (d *Deployer) finishDeployment(name string, p *plan.Plan) error {
	inUse := map[string]bool{}
	for _, g := range p.Groups {
		for _, in := range g.Instances {
			for _, n := range in.Networks {
				if n.IP.IsValid() {
					inUse[in.ID+"/"+n.Name+"/"+n.IP.String()] = true
				}
			}
		}
	}
	return d.c.Store.Update(func(tx *store.Tx) error {
		rs, err := tx.IPReservations("")
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Deployment == name && !inUse[r.InstanceID+"/"+r.Network+"/"+r.IP] {
				if err := tx.ReleaseIP(r.Network, r.IP); err != nil {
					return err
				}
			}
		}
		dep, err := tx.Deployment(name)
		if err != nil {
			return err
		}
		m, err := tx.Manifest(name, 0)
		if err != nil {
			return err
		}
		dep.ManifestID = m.ID
		if dep.PendingReleases != nil || dep.PendingStemcells != nil {
			dep.Releases, dep.Stemcells = dep.PendingReleases, dep.PendingStemcells
			dep.PendingReleases, dep.PendingStemcells = nil, nil
		}
		return tx.PutDeployment(dep)
	})
}

// reserveIPs reserves the planned addresses of every instance on manual
// networks; a conflict with another deployment fails the deploy before
// anything is created.
func (d *Deployer) reserveIPs(deployment string, p *plan.Plan) error {
	return d.c.Store.Update(func(tx *store.Tx) error {
		for _, g := range p.Groups {
			for _, in := range g.Instances {
				for _, n := range in.Networks {
					if n.Type != "manual" || !n.IP.IsValid() {
						continue
					}
					if err := tx.ReserveIP(store.IPReservation{Network: n.Name, IP: n.IP.String(), Deployment: deployment, InstanceID: in.ID, Static: n.Static}); err != nil {
						return fmt.Errorf("reserve %s for %s: %w", n.IP, in.Name(), err)
					}
				}
			}
		}
		return nil
	})
}

// releaseIPs frees every address held by an instance.
func releaseIPs(tx *store.Tx, deployment, instanceID string) error {
	rs, err := tx.IPReservations("")
	if err != nil {
		return err
	}
	for _, r := range rs {
		if r.Deployment == deployment && r.InstanceID == instanceID {
			if err := tx.ReleaseIP(r.Network, r.IP); err != nil {
				return err
			}
		}
	}
	return nil
}

// newID returns a random uuid (version 4).
func newID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

type uuids struct{}

func (uuids) NewID() string { return newID() }

// updateReporter turns the updater's events into task events.
type updateReporter struct{ r *task.Reporter }

func (u updateReporter) Report(e update.Event) {
	step, tags := e.Task, []string(nil)
	if s, ok := strings.CutSuffix(step, " (canary)"); ok {
		step, tags = s, []string{"canary"}
	}
	ev := store.Event{Stage: e.Stage, Step: step, Index: e.Index, Total: e.Total, State: e.State, Tags: tags}
	if e.Err != nil {
		ev.Error = e.Err.Error()
	}
	if e.Note != "" {
		ev.Data, _ = json.Marshal(map[string]string{"text": e.Note})
	}
	u.r.Event(ev)
}

// compileReporter turns compile events into task events.
type compileReporter struct{ r *task.Reporter }

func (c compileReporter) Report(e compile.Event) {
	ev := store.Event{Stage: e.Stage, Step: e.Task, Index: e.Index, Total: e.Total, State: e.State}
	if e.Err != nil {
		ev.Error = e.Err.Error()
	}
	c.r.Event(ev)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// fixPing is how long deploy --fix waits for an agent's answer.
const fixPing = 5 * time.Second

// unresponsive pings the agent of every instance that has a VM, in
// parallel, and returns the ids of those that did not answer (deploy
// --fix): the plan recreates them.
func (d *Deployer) unresponsive(ctx context.Context, r *task.Reporter, recs []store.Instance) map[string]bool {
	var mu sync.Mutex
	silent := map[string]bool{}
	var wg sync.WaitGroup
	for _, rec := range recs {
		if rec.VMCID == "" || rec.AgentID == "" || rec.State == plan.StateDetached {
			continue
		}
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, fixPing)
			defer cancel()
			if err := d.agent(rec.AgentID).Ping(pctx); err != nil {
				d.c.Logger.Warn("deploy --fix: agent does not answer; its VM is recreated", "instance", rec.Group+"/"+rec.ID, "agent", rec.AgentID, "error", err)
				mu.Lock()
				silent[rec.ID] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(silent) > 0 {
		var names []string
		for _, rec := range recs {
			if silent[rec.ID] {
				names = append(names, rec.Group+"/"+rec.ID)
			}
		}
		slices.Sort(names)
		d.note(r, "Unresponsive agents", strings.Join(names, "\n")+"\n")
	}
	return silent
}

// ErrPlanChanged is the error of a deploy whose plan hash is not the one
// the operator reviewed.
var ErrPlanChanged = errors.New("plan changed")

// planHash is the hash of everything a deploy's plan is computed from: the
// manifest and the values given for it, the configs, releases and
// stemcells it resolved to, the deployment's state as the plan sees it
// (instances, VMs, disks, addresses, the links of other deployments), and
// the deploy's options. Two
// dry runs with nothing changed in between have the same hash (a plan's
// text does not: new instances get new ids each time); a deploy given a
// reviewed plan's hash refuses when it differs.
func planHash(req apiv1.DeployRequest, in *inputs) (string, error) {
	h := sha256.New()
	enc := json.NewEncoder(h)
	vars := make([]string, 0, len(req.Vars))
	for name, v := range req.Vars {
		raw, _ := json.Marshal(v)
		sum := sha256.Sum256(raw)
		vars = append(vars, name+"="+hex.EncodeToString(sum[:]))
	}
	slices.Sort(vars)
	unresponsive := slices.Sorted(maps.Keys(in.desired.Unresponsive))
	for _, v := range []any{
		"compleat plan 1", req.Deployment, req.Manifest, vars, req.Recreate, req.SkipDrain, req.Fix, req.FreshDiskOnCPIMove,
		in.cloudConfigID, in.runtimeConfigIDs, in.releaseNames, in.stemcellNames, in.state, unresponsive,
	} {
		if err := enc.Encode(v); err != nil {
			return "", fmt.Errorf("plan hash: %w", err)
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}
