package deploy_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/compleat/compleat/director/api"
	"github.com/compleat/compleat/director/deploy"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

// TestPipelineOnFakeCloudAndAgents takes a small deployment through a dry
// run, a first deploy, a no-op deploy and a restart on the fake cloud and
// agents.
func TestPipelineOnFakeCloudAndAgents(t *testing.T) {
	r := newRig(t)
	m := benchManifest(3, "v1", 0)

	res, evs := r.deploy(m, true)
	if !strings.HasPrefix(res, deploy.DryRunResult) || !strings.Contains(note(evs, "Plan"), "3 to create") {
		t.Errorf("dry run result:\n%s\nplan:\n%s", res, note(evs, "Plan"))
	}
	diff := note(evs, "Manifest diff")
	if !strings.Contains(diff, "+ name: big") || !strings.Contains(diff, "version: <redacted>") {
		t.Errorf("a dry run records the manifest diff, redacted:\n%s", diff)
	}
	if n := len(r.cloud.VMs()); n != 0 {
		t.Errorf("a dry run made %d VMs", n)
	}

	res, evs = r.deploy(m, false)
	if n := len(r.cloud.VMs()); n != 3 || !strings.Contains(res, "3 updated") {
		t.Fatalf("first deploy: %d VMs, result %q", n, res)
	}
	if n := stageEvents(evs, "Running post-deploy", "finished"); n != 3 || r.fleet.scripts("post-deploy") != 3 {
		t.Errorf("first deploy: post-deploy finished on %d, ran %d times, want 3", n, r.fleet.scripts("post-deploy"))
	}

	res, evs = r.deploy(m, false)
	if res != "No changes: nothing to do." || stageEvents(evs, "Updating instance", "started") != 0 {
		t.Errorf("no-op deploy: %q", res)
	}

	_, evs = r.run("restart", "big", func(ctx context.Context, rep *task.Reporter) (string, error) {
		return r.d.ChangeState(ctx, rep, api.StateRequest{Deployment: "big", Action: "restart"})
	})
	if n := stageEvents(evs, "Updating instance", "finished"); n != 3 {
		t.Errorf("restart updated %d instances, want 3", n)
	}
	for _, e := range evs {
		if e.Stage == "Running post-deploy" {
			t.Errorf("restart shows %s %s %s: post-deploy belongs to deploys", e.Stage, e.Step, e.State)
		}
	}
	if n := r.fleet.scripts("post-deploy"); n != 3 {
		t.Errorf("post-deploy ran %d times in all, want the first deploy's 3", n)
	}
	if n := r.fleet.scripts("post-start"); n != 6 {
		t.Errorf("post-start ran %d times, want 3 (deploy) + 3 (restart)", n)
	}
}

// note is the text of the last note of a stage among evs.
func note(evs []store.Event, stage string) string {
	var text string
	for _, e := range evs {
		if e.Stage == stage && e.State == "info" {
			var d struct{ Text string }
			json.Unmarshal(e.Data, &d)
			text = d.Text
		}
	}
	return text
}

// TestRenderedJobsStoredBeforeAnInstanceIsTouched: an instance is taken
// down only once its rendered jobs are stored. A blobstore that refuses
// the canary's fails the deploy before the rollout; one that refuses the
// others' (stored behind the rollout) fails it after the canary, with no
// other instance touched: no pre-stop ran, none is marked unfinished. The
// deploy run again converges.
func TestRenderedJobsStoredBeforeAnInstanceIsTouched(t *testing.T) {
	r := newRig(t)
	r.deploy(benchManifest(4, "v1", 0), false)
	preStops := r.fleet.scripts("pre-stop")
	noneUnfinished := func() {
		t.Helper()
		r.store.View(func(tx *store.Tx) error {
			insts, err := tx.Instances("big")
			for _, in := range insts {
				if in.Unfinished {
					t.Errorf("instance %s marked unfinished", in.ID)
				}
			}
			return err
		})
	}

	r.blobs.refuse.Store(true)
	msg := r.deployErr(api.DeployRequest{Deployment: "big", Manifest: benchManifest(4, "v2", 0)})
	if !strings.Contains(msg, "store rendered job") || !strings.Contains(msg, "no space left on device") {
		t.Errorf("deploy error %q, want the rendered jobs refused", msg)
	}
	if n := r.fleet.scripts("pre-stop"); n != preStops {
		t.Errorf("pre-stop ran %d times on the failed deploy, want none", n-preStops)
	}
	noneUnfinished()

	// The canary's jobs are stored before the rollout, the others' while
	// it is watched: refused, they fail the next instance's update before
	// it is taken down. The canary alone is updated.
	r.blobs.allow.Store(1)
	msg = r.deployErr(api.DeployRequest{Deployment: "big", Manifest: benchManifest(4, "v2", 0)})
	if !strings.Contains(msg, "store rendered job") || strings.Contains(msg, "(canary)") {
		t.Errorf("deploy error %q, want an instance after the canary refused its rendered jobs", msg)
	}
	if n := r.fleet.scripts("pre-stop"); n != preStops+1 {
		t.Errorf("pre-stop ran %d times, want once (the canary)", n-preStops)
	}
	noneUnfinished()

	r.blobs.refuse.Store(false)
	if res, _ := r.deploy(benchManifest(4, "v2", 0), false); !strings.Contains(res, "3 updated") {
		t.Errorf("the deploy again once the blobstore takes blobs: %q, want the 3 left updated", res)
	}
}
