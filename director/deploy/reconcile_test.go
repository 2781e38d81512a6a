package deploy_test

import (
	"context"
	"strings"
	"testing"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/director/api"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

// interrupted records what a director killed during CreateVM leaves: the
// intent (state "creating", cid unknown) of a VM for agentID.
func (r *rig) interrupted(agentID string) {
	r.tb.Helper()
	if err := r.store.Update(func(tx *store.Tx) error {
		return tx.PutVM(store.VM{CID: "intent-" + agentID, CPI: "fake", AgentID: agentID, Deployment: "big", InstanceID: "lost", State: "creating"})
	}); err != nil {
		r.tb.Fatal(err)
	}
}

func (r *rig) stemcellCID() string {
	r.tb.Helper()
	sc := r.cloud.Stemcells()
	if len(sc) == 0 {
		r.tb.Fatal("no stemcell in the cloud")
	}
	return sc[0].CID
}

// A VM whose creation was interrupted before its agent ever came up is
// found through ListVMs by the agent id it was tagged with, and deleted by
// the next deploy: nothing leaks, and nobody waits for an agent that will
// never answer.
func TestReconcileFindsAnInterruptedVMByItsTags(t *testing.T) {
	r := newRig(t)
	m := benchManifest(2, "v1", 0)
	r.deploy(m, false)
	for _, vm := range r.cloud.VMs() {
		if vm.Tags[cpi.TagDirector] == "" || vm.Tags[cpi.TagAgentID] != vm.AgentID || vm.Tags[cpi.TagDeployment] != "big" || vm.Tags[cpi.TagInstanceGroup] != "app" {
			t.Errorf("vm %s created with tags %v", vm.CID, vm.Tags)
		}
	}
	tags := map[string]string{cpi.TagDirector: "compleat", cpi.TagAgentID: "agent-lost", cpi.TagDeployment: "big"}
	leaked, err := r.cloud.CreateVM(context.Background(), cpi.CreateVMRequest{AgentID: "agent-lost", StemcellCID: r.stemcellCID(),
		CloudProperties: []byte(`{}`), Networks: map[string]cpi.Network{"default": {Type: "dynamic"}}, Tags: tags})
	if err != nil {
		t.Fatal(err)
	}
	r.interrupted("agent-lost")
	if res, _ := r.deploy(m, false); res != "No changes: nothing to do." {
		t.Fatalf("deploy after the interruption: %q", res)
	}
	for _, vm := range r.cloud.VMs() {
		if vm.CID == leaked.CID {
			t.Errorf("the interrupted creation's vm %s is still in the cloud", vm.CID)
		}
	}
	if n := len(r.cloud.VMs()); n != 2 {
		t.Errorf("%d VMs in the cloud, want 2", n)
	}
	r.store.View(func(tx *store.Tx) error {
		if _, err := tx.VM("intent-agent-lost"); err == nil {
			t.Error("the intent is still recorded")
		}
		return nil
	})
}

// Without ListVMs the director asks the interrupted creation's agent which
// VM it runs on; an agent that names another instance's VM does not get it
// deleted.
func TestReconcileRefusesAVMAnAgentNamesFalsely(t *testing.T) {
	r := newRig(t)
	caps := cpi.Capabilities{DiskHints: true, DynamicNetworks: true}
	r.cloud.SetCapabilities(caps)
	m := benchManifest(2, "v1", 0)
	r.deploy(m, false)
	victim := r.cloud.VMs()[0]
	r.fleet.boot("agent-liar", victim.CID)
	r.interrupted("agent-liar")
	started, err := r.tasks.Start(context.Background(), task.Spec{Type: "deploy", Deployment: "big"}, func(ctx context.Context, rep *task.Reporter) (string, error) {
		return r.d.Deploy(ctx, rep, api.DeployRequest{Deployment: "big", Manifest: m})
	})
	if err != nil {
		t.Fatal(err)
	}
	var tk store.Task
	for !tk.Finished() {
		if _, tk, err = r.tasks.Wait(t.Context(), started.ID, 0); err != nil {
			t.Fatal(err)
		}
	}
	if tk.State != store.TaskError || !strings.Contains(tk.Error, "names vm "+victim.CID) || !strings.Contains(tk.Error, "not deleting it") {
		t.Errorf("deploy: %s %q, want a refusal to delete %s", tk.State, tk.Error, victim.CID)
	}
	found := false
	for _, vm := range r.cloud.VMs() {
		found = found || vm.CID == victim.CID
	}
	if !found {
		t.Errorf("vm %s, named by an agent it does not belong to, was deleted", victim.CID)
	}
}
