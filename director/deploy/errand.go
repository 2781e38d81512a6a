package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/director/apiv1"
	"github.com/compleat/compleat/director/plan"
	"github.com/compleat/compleat/director/remote"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

// ErrandTimeout bounds one run of an errand's bin/run (the agent's most
// for a command).
const ErrandTimeout = time.Duration(protocol.RunCommandMaxTimeout)

// lastManifest is the manifest the deployment last deployed successfully.
func (d *Deployer) lastManifest(deployment string) (store.Manifest, error) {
	var m store.Manifest
	err := d.c.Store.View(func(tx *store.Tx) error {
		dep, err := tx.Deployment(deployment)
		if err != nil {
			return err
		}
		if dep.ManifestID == 0 {
			return task.BadInput(fmt.Errorf("deployment %s was never deployed", deployment))
		}
		m, err = tx.Manifest(deployment, dep.ManifestID)
		return err
	})
	return m, err
}

// Errands lists the deployment's errands, from its last deployed manifest.
func (d *Deployer) Errands(ctx context.Context, deployment string) ([]apiv1.ErrandInfo, error) {
	m, err := d.lastManifest(deployment)
	if err != nil {
		return nil, err
	}
	in, err := d.inputs(ctx, nil, apiv1.DeployRequest{Deployment: deployment, Manifest: m.Content, DryRun: true})
	if err != nil {
		return nil, err
	}
	out := []apiv1.ErrandInfo{}
	for _, e := range plan.Errands(in.desired) {
		info := apiv1.ErrandInfo{Name: e.Name, Group: e.Group, Colocated: e.Group == ""}
		for _, r := range e.Runs {
			info.Runs = append(info.Runs, r.Group+"/"+r.Job)
		}
		out = append(out, info)
	}
	return out, nil
}

// RunErrand runs an errand of the deployment's last deployed manifest,
// BOSH's way. An errand group gets VMs (packages compiled as needed, jobs
// rendered with their links and properties, applied and started like any
// instance), each of its jobs' bin/run runs on each selected instance, the
// output of each run is recorded in the task (stage "Errand output"), and
// the VMs are deleted afterwards, also when the run fails or is cancelled,
// unless KeepAlive. A colocated errand runs on the deployed instances. The
// task fails when a run exits non-zero, naming the exit code.
func (d *Deployer) RunErrand(ctx context.Context, r *task.Reporter, req apiv1.ErrandRequest) (_ string, err error) {
	m, err := d.lastManifest(req.Deployment)
	if err != nil {
		return "", err
	}
	if req.WhenChanged {
		if last, ok := d.lastErrandRun(req.Deployment, req.Name); ok && last == m.ID {
			return fmt.Sprintf("Errand %s skipped: nothing changed since its last successful run (manifest %d)", req.Name, m.ID), nil
		}
	}
	if err := d.reconcile(ctx, r, req.Deployment); err != nil {
		return "", err
	}
	dreq := apiv1.DeployRequest{Deployment: req.Deployment, Manifest: m.Content}
	in, err := d.inputs(ctx, r, dreq)
	if err != nil {
		return "", err
	}
	defer func() { err = in.vars.Scrub(err) }()
	e, err := plan.FindErrand(in.desired, req.Name)
	if err != nil {
		return "", task.BadInput(err)
	}

	if e.Group != "" {
		if !req.KeepAlive {
			defer func() {
				// Clean up whatever happened, with a context the task's
				// cancellation does not end.
				cctx := context.WithoutCancel(ctx)
				if cerr := d.errandCleanup(cctx, r, dreq, e); cerr != nil {
					err = errors.Join(err, fmt.Errorf("delete errand %s's VMs: %w", e.Name, cerr))
				}
			}()
		}
		if err := d.errandVMs(ctx, r, dreq, in, e); err != nil {
			if ctx.Err() != nil {
				return "", fmt.Errorf("%w: %w", task.ErrCancelled, err)
			}
			return "", err
		}
	}

	st, _, err := d.state(req.Deployment)
	if err != nil {
		return "", err
	}
	targets, err := plan.ErrandTargets(e, st.Instances, req.Instances)
	if err != nil {
		return "", task.BadInput(err)
	}
	if len(targets) == 0 {
		return "", task.BadInput(fmt.Errorf("errand %s has no instance to run on", e.Name))
	}
	// Every selected instance runs at once, as in BOSH; one instance's
	// jobs run one after the other.
	var (
		mu       sync.Mutex
		failures []string
		hard     error
		wg       sync.WaitGroup
	)
	for _, inst := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var fails []string
			for _, run := range e.Runs {
				if run.Group != inst.Group {
					continue
				}
				code, err := d.runErrandJob(ctx, r, inst, run.Job)
				if err != nil {
					mu.Lock()
					hard = errors.Join(hard, err)
					mu.Unlock()
					return
				}
				if code != 0 {
					fails = append(fails, fmt.Sprintf("%s on %s/%s (%d) exited %d", run.Job, inst.Group, inst.ID, inst.Index, code))
				}
			}
			if req.DownloadLogs {
				if err := d.errandLogs(ctx, r, req.Deployment, inst); err != nil {
					fails = append(fails, err.Error())
				}
			}
			mu.Lock()
			failures = append(failures, fails...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if hard != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("%w: %w", task.ErrCancelled, hard)
		}
		return "", hard
	}
	sort.Strings(failures)
	if len(failures) > 0 {
		return "", fmt.Errorf("errand %s failed: %s", e.Name, strings.Join(failures, "; "))
	}
	return fmt.Sprintf("Errand %s completed: exit code 0 on %d instance(s) (manifest %d)", e.Name, len(targets), m.ID), nil
}

// errandVMs creates (or updates) the errand group's instances and nothing
// else: compile, render, create, apply, start, as a deploy does.
func (d *Deployer) errandVMs(ctx context.Context, r *task.Reporter, dreq apiv1.DeployRequest, in *inputs, e plan.Errand) error {
	full, err := plan.Compute(plan.ErrandDesired(in.desired, e), in.state)
	if err != nil {
		return task.BadInput(err)
	}
	p := plan.ErrandPlan(full, e)
	if !p.HasChanges() {
		return nil // kept alive by an earlier run, unchanged
	}
	if err := d.reserveIPs(dreq.Deployment, &p); err != nil {
		return err
	}
	pkgBlobs, err := d.compileFor(ctx, r, &p, in)
	if err != nil {
		return err
	}
	ro := p.Rollout()
	jobs, err := d.storeRendered(ctx, &p, ro, func(id string) bool {
		inst, _ := p.Instance(id)
		return len(inst.Changes) > 0
	})
	if err != nil {
		return err
	}
	defer jobs.stop()
	x := d.newExecutor(&p, dreq.Deployment, in.place, jobs, pkgBlobs, d.c.Logger.With("deployment", dreq.Deployment, "errand", e.Name))
	_, err = d.rollout(ctx, r, x, ro, dreq, &p, true, d.c.Logger.With("deployment", dreq.Deployment, "errand", e.Name))
	return err
}

// errandCleanup deletes the errand group's instances (VMs, addresses,
// records); their persistent disks are orphaned.
func (d *Deployer) errandCleanup(ctx context.Context, r *task.Reporter, dreq apiv1.DeployRequest, e plan.Errand) error {
	in, err := d.inputs(ctx, r, dreq)
	if err != nil {
		return err
	}
	full, err := plan.Compute(in.desired, in.state)
	if err != nil {
		return err
	}
	p := plan.ErrandCleanup(full, e)
	if !p.HasChanges() {
		return nil
	}
	x := d.newExecutor(&p, dreq.Deployment, in.place, nil, nil, d.c.Logger.With("deployment", dreq.Deployment, "errand", e.Name))
	if _, err := d.rollout(ctx, r, x, p.Rollout(), dreq, &p, true, d.c.Logger.With("deployment", dreq.Deployment, "errand", e.Name)); err != nil {
		return err
	}
	for _, od := range p.OrphanDisks {
		if err := d.c.Store.Update(func(tx *store.Tx) error { return tx.OrphanDisk(od.CID) }); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	return nil
}

// runErrandJob runs one job's bin/run on one instance through its agent
// and records its output; the exit code is the result.
func (d *Deployer) runErrandJob(ctx context.Context, r *task.Reporter, inst plan.InstanceState, job string) (int, error) {
	if inst.AgentID == "" {
		return 0, fmt.Errorf("errand %s: instance %s/%s has no VM", job, inst.Group, inst.ID)
	}
	step := fmt.Sprintf("%s on %s/%s (%d)", job, inst.Group, inst.ID, inst.Index)
	var res protocol.RunCommandResult
	err := r.Stage("Running errand", 1).Run(step, func() error {
		var err error
		// The agent runs commands in its base directory (/var/vcap).
		res, err = d.agent(inst.AgentID).RunCommand(ctx, protocol.RunCommandRequest{
			Command: path.Join("jobs", job, plan.ErrandScript),
			Timeout: protocol.Duration(ErrandTimeout),
		})
		return err
	})
	if err != nil {
		return 0, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s exit code %d\n", step, res.ExitCode)
	if len(res.Stdout) > 0 {
		fmt.Fprintf(&b, "--- stdout\n%s", withNewline(string(res.Stdout)))
	}
	if len(res.Stderr) > 0 {
		fmt.Fprintf(&b, "--- stderr\n%s", withNewline(string(res.Stderr)))
	}
	if res.StdoutBytes > int64(len(res.Stdout)) || res.StderrBytes > int64(len(res.Stderr)) {
		fmt.Fprintf(&b, "(output cut at %d bytes per stream: %d and %d written)\n", protocol.RunCommandMaxOutput, res.StdoutBytes, res.StderrBytes)
	}
	d.note(r, "Errand output", b.String())
	return res.ExitCode, nil
}

var errandResult = regexp.MustCompile(`\(manifest (\d+)\)$`)

// lastErrandRun is the manifest id of the errand's last successful run.
func (d *Deployer) lastErrandRun(deployment, name string) (uint64, bool) {
	var found uint64
	ok := false
	d.c.Store.View(func(tx *store.Tx) error {
		ts, err := tx.Tasks(0, func(t store.Task) bool {
			return t.Type == apiv1.ErrandTaskType && t.Deployment == deployment && t.Description == apiv1.ErrandTaskDescription(name) && t.State == store.TaskDone
		})
		for _, t := range ts {
			if m := errandResult.FindStringSubmatch(t.Result); m != nil {
				if id, err := strconv.ParseUint(m[1], 10, 64); err == nil {
					found, ok = id, true
					break // newest first
				}
			}
		}
		return err
	})
	return found, ok
}

// errandLogs fetches an errand instance's logs into the blobstore and
// records where they are (stage remote.ErrandLogsStage).
func (d *Deployer) errandLogs(ctx context.Context, r *task.Reporter, deployment string, inst plan.InstanceState) error {
	name := fmt.Sprintf("%s/%s", inst.Group, inst.ID)
	var blobID string
	var got protocol.FetchLogsResult
	err := r.Stage("Fetching logs", 1).Run(name, func() error {
		var err error
		blobID, got, err = remote.FetchLogs(ctx, d.agent(inst.AgentID), d.c.Blobs, d.c.Signer, d.c.BlobURL, nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("logs of %s: %w", name, err)
	}
	raw, _ := json.Marshal(map[string]any{
		"text": fmt.Sprintf("logs of %s (%d bytes) ready for download", name, got.Size),
		"logs": remote.LogsResult{BlobID: blobID, SHA256: got.SHA256, Size: got.Size, Deployment: deployment, Group: inst.Group, ID: inst.ID, Index: inst.Index},
	})
	r.Event(store.Event{Stage: remote.ErrandLogsStage, State: "info", Data: raw})
	return nil
}
