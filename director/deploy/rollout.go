package deploy

// The rollout stage of a deploy, beyond BOSH: create-swap-delete (see
// swap.go), pause and resume, and automatic rollback.
//
// Pause: Deployer.Pause asks the rollout of a deployment under way to stop
// after the batches in flight; the deploy task then ends with an error
// wrapping update.ErrPaused, every instance either updated or untouched.
// Resume is an ordinary deploy of the deployment's newest manifest (the
// paused one): it re-plans and carries on with what still differs.
//
// Automatic rollback: when a group touched by a failed rollout has
// update.auto_rollback, the director deploys the last manifest deployed
// successfully, in the same task and under the same lock. Instances whose
// update did not finish have their recorded jobs and packages cleared
// first (what runs there is unknown), so the rollback's plan touches
// exactly the instances the failed rollout touched, and the untouched
// ones not at all. Releases the manifest names at `latest` are pinned to
// the versions the unchanged instances run (pin.go). The task's events say
// what was rolled back and why, and the task still fails, naming the
// failure and the rollback.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/compleat/compleat/director/apiv1"
	"github.com/compleat/compleat/director/plan"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
	"github.com/compleat/compleat/director/update"
)

// ErrNoRollout is returned by Pause when no rollout of the deployment is
// under way.
var ErrNoRollout = apiv1.ErrNoRollout

// rollouts are the rollouts under way, by deployment, with their pause
// flags. The zero value is ready.
type rollouts struct {
	mu      sync.Mutex
	running map[string]*atomic.Bool
}

// begin registers a rollout and returns its pause check and release.
func (rs *rollouts) begin(deployment string) (func() bool, func()) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.running == nil {
		rs.running = map[string]*atomic.Bool{}
	}
	flag := &atomic.Bool{}
	rs.running[deployment] = flag
	return flag.Load, func() {
		rs.mu.Lock()
		defer rs.mu.Unlock()
		if rs.running[deployment] == flag {
			delete(rs.running, deployment)
		}
	}
}

// Pause asks the deployment's rollout under way to stop after the batches
// in flight. It returns ErrNoRollout when none is under way (a deploy
// still compiling has not begun its rollout).
func (d *Deployer) Pause(deployment string) error {
	d.rollouts.mu.Lock()
	defer d.rollouts.mu.Unlock()
	flag, ok := d.rollouts.running[deployment]
	if !ok {
		return fmt.Errorf("pause %s: %w", deployment, ErrNoRollout)
	}
	flag.Store(true)
	return nil
}

// rollout carries out the plan's rollout with the Swapper capability and a
// pause check, retires the VMs replaced create-swap-delete, and rolls back
// a failure when the manifest asks for it (unless this is the rollback).
func (d *Deployer) rollout(ctx context.Context, r *task.Reporter, x *executor, ro update.Rollout, req apiv1.DeployRequest, p *plan.Plan, rollingBack bool, log *slog.Logger) (update.Result, error) {
	sx := newSwapping(x, r)
	pause, done := d.rollouts.begin(req.Deployment)
	res, err := update.New(sx, log).Run(ctx, ro, update.Options{Reporter: updateReporter{r}, Updated: x.recordApplied, SkipDrain: req.SkipDrain, Pause: pause})
	done()
	if rerr := sx.retire(ctx, req.SkipDrain); rerr != nil {
		err = errors.Join(err, rerr)
	}
	switch {
	case err == nil:
		return res, nil
	case errors.Is(err, update.ErrPaused):
		return res, fmt.Errorf("%w after %d instance(s) updated: `director resume -d %s` continues", err, len(res.Updated), req.Deployment)
	case ctx.Err() != nil:
		return res, err
	}
	if !autoRollback(p, res) || rollingBack {
		return res, err
	}
	return res, d.rollback(ctx, r, req.Deployment, res, err)
}

// autoRollback reports whether a group the failed rollout touched asks for
// automatic rollback.
func autoRollback(p *plan.Plan, res update.Result) bool {
	touched := map[string]bool{}
	for _, in := range res.Touched {
		touched[in.Group] = true
	}
	for _, g := range p.Groups {
		if touched[g.Name] && g.Update.AutoRollback {
			return true
		}
	}
	return false
}

// rollback deploys the deployment's last successful manifest after the
// failure. It returns the error the task ends with: the failure, and what
// the rollback did.
func (d *Deployer) rollback(ctx context.Context, r *task.Reporter, deployment string, res update.Result, failure error) error {
	var last store.Manifest
	var records []store.Instance
	var releases []store.Release
	updated := map[string]bool{}
	for _, in := range res.Updated {
		updated[in.ID] = true
	}
	err := d.c.Store.View(func(tx *store.Tx) error {
		dep, err := tx.Deployment(deployment)
		if err != nil {
			return err
		}
		if dep.ManifestID == 0 {
			return errors.New("the deployment was never deployed successfully")
		}
		if last, err = tx.Manifest(deployment, dep.ManifestID); err != nil {
			return err
		}
		all, err := tx.Instances(deployment)
		if err != nil {
			return err
		}
		for _, rec := range all {
			if !updated[rec.ID] {
				records = append(records, rec)
			}
		}
		releases, err = tx.Releases()
		return err
	})
	if err != nil {
		d.note(r, "Rolling back", fmt.Sprintf("auto_rollback: nothing to roll back to: %v", err))
		return fmt.Errorf("%w\nauto_rollback: nothing to roll back to: %v", failure, err)
	}
	unfinished := map[string]update.Instance{}
	for _, in := range res.Touched {
		unfinished[in.ID] = in
	}
	for _, in := range res.Updated {
		delete(unfinished, in.ID)
	}
	var names []string
	for _, in := range res.Touched {
		names = append(names, in.Name())
	}
	why := strings.TrimSpace(failure.Error())
	d.note(r, "Rolling back", fmt.Sprintf("auto_rollback: the rollout failed:\n%s\nRedeploying manifest %d (the last deployed successfully) for the %d instance(s) touched: %s",
		why, last.ID, len(names), strings.Join(names, ", ")))
	content, pinned, unresolved, err := pinLatest(last.Content, records, releases)
	if err != nil {
		return fmt.Errorf("%w\nauto_rollback: %v", failure, err)
	}
	if len(pinned) > 0 {
		d.note(r, "Rolling back", "auto_rollback: releases at latest pinned to what the unchanged instances run: "+strings.Join(pinned, ", "))
	}
	if len(unresolved) > 0 {
		d.note(r, "Rolling back", "auto_rollback: no uploaded version matches what the instances run for "+strings.Join(unresolved, ", ")+": left at latest")
	}
	if err := d.forgetApplied(deployment, unfinished); err != nil {
		return fmt.Errorf("%w\nauto_rollback: %v", failure, err)
	}
	result, err := d.deploy(ctx, r, apiv1.DeployRequest{Deployment: deployment, Manifest: content}, true)
	if err != nil {
		d.note(r, "Rolling back", "auto_rollback failed: "+err.Error())
		return fmt.Errorf("%w\nauto_rollback to manifest %d failed: %v", failure, last.ID, err)
	}
	d.note(r, "Rolling back", fmt.Sprintf("auto_rollback: manifest %d restored: %s", last.ID, result))
	return fmt.Errorf("%w\nrolled back to manifest %d (%s): %s", failure, last.ID, strings.Join(names, ", "), result)
}

// forgetApplied clears the recorded jobs and packages of instances whose
// update did not finish: what their agents run is unknown, so the next
// plan updates them.
func (d *Deployer) forgetApplied(deployment string, insts map[string]update.Instance) error {
	return d.c.Store.Update(func(tx *store.Tx) error {
		for _, in := range insts {
			rec, err := tx.Instance(deployment, in.Group, in.ID)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			var st plan.InstanceState
			if err := json.Unmarshal(rec.Spec, &st); err != nil {
				return fmt.Errorf("instance %s: recorded state: %w", in.Name(), err)
			}
			st.Jobs, st.Packages = nil, nil
			raw, err := json.Marshal(st)
			if err != nil {
				return err
			}
			rec.Spec = raw
			if err := tx.PutInstance(rec); err != nil {
				return err
			}
		}
		return nil
	})
}
