package deploy

import (
	"context"
	"fmt"
	"strings"

	"github.com/compleat/compleat/director/apiv1"
	"github.com/compleat/compleat/director/plan"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
	"github.com/compleat/compleat/director/update"
)

// Delete deletes a deployment: every instance drained, stopped and deleted
// (in parallel), its disks deleted, its addresses released and its records
// removed. With force, agent and CPI errors are logged and passed over.
func (d *Deployer) Delete(ctx context.Context, r *task.Reporter, name string, force bool) (string, error) {
	log := d.c.Logger.With("deployment", name, "task", r.TaskID())
	if err := d.c.Store.View(func(tx *store.Tx) error { _, err := tx.Deployment(name); return err }); err != nil {
		return "", err
	}
	if err := d.reconcile(ctx, r, name); err != nil {
		if !force {
			return "", err
		}
		log.Warn("reconcile failed; going on with --force", "error", err)
	}
	st, _, err := d.state(name)
	if err != nil {
		return "", err
	}
	cpiName, err := d.deploymentCPI(name)
	if err != nil {
		return "", err
	}
	p := plan.Teardown(st)
	x := d.newExecutor(&p, name, placement{def: cpiName}, nil, nil, log)
	x.force = force
	res, err := update.New(x, log).Run(ctx, p.Rollout(), update.Options{Reporter: updateReporter{r}, NoPostDeploy: true})
	if err != nil {
		return "", err
	}
	// Disks: those of the instances, and any other disk of the deployment.
	var disks []store.Disk
	if err := d.c.Store.View(func(tx *store.Tx) error {
		for _, orphaned := range []bool{false, true} {
			ds, err := tx.Disks(orphaned)
			if err != nil {
				return err
			}
			for _, dk := range ds {
				if dk.Deployment == name {
					disks = append(disks, dk)
				}
			}
		}
		return nil
	}); err != nil {
		return "", err
	}
	if len(disks) > 0 {
		stage := r.Stage("Deleting disks", len(disks))
		for _, dk := range disks {
			err := stage.Run(dk.CID, func() error {
				if !strings.HasPrefix(dk.CID, "intent-") {
					owner := dk.CPI // each disk in the CPI it was made in
					if owner == "" {
						owner = cpiName
					}
					if err := d.deleteTaggedDisk(ctx, owner, dk.CID); err != nil {
						return err
					}
				}
				return d.c.Store.Update(func(tx *store.Tx) error { return tx.DeleteDisk(dk.CID) })
			})
			if err != nil && !force {
				return "", err
			}
		}
	}
	var consumers map[string][]string
	err = d.c.Store.Update(func(tx *store.Tx) error {
		rs, err := tx.IPReservations("")
		if err != nil {
			return err
		}
		for _, rv := range rs {
			if rv.Deployment == name {
				if err := tx.ReleaseIP(rv.Network, rv.IP); err != nil {
					return err
				}
			}
		}
		if force {
			vms, err := tx.VMs(name)
			if err != nil {
				return err
			}
			for _, vm := range vms {
				if err := tx.DeleteVM(vm.CID); err != nil {
					return err
				}
			}
		}
		// Its shared links are gone: their consumers are told.
		if consumers, err = markConsumers(tx, name, nil); err != nil {
			return err
		}
		return tx.DeleteDeployment(name)
	})
	if err != nil {
		return "", err
	}
	d.noteConsumers(r, consumers)
	msg := fmt.Sprintf("Deleted deployment %s: %d instances, %d disks.", name, len(res.Deleted), len(disks))
	if len(x.warning) > 0 {
		msg += "\nIgnored with --force:\n  " + strings.Join(x.warning, "\n  ")
	}
	return msg, nil
}

// deploymentCPI is the CPI the deployment's VMs live in.
func (d *Deployer) deploymentCPI(name string) (string, error) {
	var cpiName string
	d.c.Store.View(func(tx *store.Tx) error {
		vms, err := tx.VMs(name)
		if err == nil && len(vms) > 0 {
			cpiName = vms[0].CPI
		}
		return nil
	})
	if cpiName != "" {
		return cpiName, nil
	}
	return d.c.CPIs.Resolve("")
}

// ChangeState recreates, restarts, stops or starts the instances of a
// deployment, a group or one instance, with the deployment's canary and
// batch rules.
func (d *Deployer) ChangeState(ctx context.Context, r *task.Reporter, req apiv1.StateRequest) (string, error) {
	log := d.c.Logger.With("deployment", req.Deployment, "task", r.TaskID(), "action", req.Action)
	var content string
	err := d.c.Store.View(func(tx *store.Tx) error {
		dep, err := tx.Deployment(req.Deployment)
		if err != nil {
			return err
		}
		m, err := tx.Manifest(req.Deployment, dep.ManifestID)
		if err != nil {
			return err
		}
		content = m.Content
		return nil
	})
	if err != nil {
		return "", err
	}
	if err := d.reconcile(ctx, r, req.Deployment); err != nil {
		return "", err
	}
	dreq := apiv1.DeployRequest{Deployment: req.Deployment, Manifest: content}
	in, err := d.inputs(ctx, r, dreq)
	if err != nil {
		return "", err
	}
	p, err := plan.Compute(in.desired, in.state)
	if err != nil {
		return "", err
	}
	verb := plan.Verb(req.Action)
	if req.Action == "stop" && req.Hard {
		verb = plan.VerbStopHard
	}
	states := map[string]string{}
	for _, rec := range in.records {
		states[rec.ID] = rec.State
	}
	lp, err := plan.Lifecycle(&p, verb, req.Target, states)
	if err != nil {
		return "", task.BadInput(err)
	}
	var x *executor
	if verb == plan.VerbStop || verb == plan.VerbStopHard {
		x = d.newExecutor(&p, req.Deployment, in.place, nil, nil, log)
	} else {
		pkgs, err := d.compileFor(ctx, r, &p, in)
		if err != nil {
			return "", err
		}
		jobs, err := d.storeRendered(ctx, &p, lp.Rollout, func(id string) bool { _, ok := lp.Steps[id]; return ok })
		if err != nil {
			return "", err
		}
		defer jobs.stop()
		x = d.newExecutor(&p, req.Deployment, in.place, jobs, pkgs, log)
	}
	x.steps = lp.Steps
	ro := lp.Rollout
	// BOSH runs post-deploy on deploys only.
	res, err := update.New(x, log).Run(ctx, ro, update.Options{Reporter: updateReporter{r}, Updated: x.recordApplied, SkipDrain: req.SkipDrain, NoPostDeploy: true})
	if err != nil {
		return "", err
	}
	result := fmt.Sprintf("%s: %d instances.", strings.ToUpper(req.Action[:1])+req.Action[1:], len(res.Updated))
	if len(lp.Ignored) > 0 {
		result += " Ignored, left alone: " + strings.Join(lp.Ignored, ", ") + "."
	}
	return result, nil
}
