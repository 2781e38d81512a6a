package deploy_test

import (
	"context"
	"strings"
	"testing"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/cpitest"
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

// Without ListVMs the director cannot check a VM's tags, so an agent's word
// is never enough to delete a VM: an interrupted creation's agent that
// names another instance's VM, or a VM this director never made, gets
// neither deleted, and the deploy converges (the intent is dropped).
func TestReconcileNeverDeletesAVMAnAgentNames(t *testing.T) {
	r := newRig(t)
	r.cloud.SetCapabilities(cpi.Capabilities{DiskHints: true, DynamicNetworks: true})
	m := benchManifest(2, "v1", 0)
	r.deploy(m, false)
	victim := r.cloud.VMs()[0]
	stranger, err := r.cloud.CreateVM(context.Background(), cpi.CreateVMRequest{AgentID: "agent-stranger", StemcellCID: r.stemcellCID(),
		CloudProperties: []byte(`{}`), Networks: map[string]cpi.Network{"default": {Type: "dynamic"}}})
	if err != nil {
		t.Fatal(err)
	}
	r.fleet.boot("agent-liar", victim.CID)
	r.interrupted("agent-liar")
	r.fleet.boot("agent-liar2", stranger.CID)
	r.interrupted("agent-liar2")
	if res, _ := r.deploy(m, false); res != "No changes: nothing to do." {
		t.Fatalf("deploy after the interruptions: %q", res)
	}
	left := map[string]bool{}
	for _, vm := range r.cloud.VMs() {
		left[vm.CID] = true
	}
	for _, cid := range []string{victim.CID, stranger.CID} {
		if !left[cid] {
			t.Errorf("vm %s, named by an agent, was deleted", cid)
		}
	}
	r.store.View(func(tx *store.Tx) error {
		for _, id := range []string{"intent-agent-liar", "intent-agent-liar2"} {
			if _, err := tx.VM(id); err == nil {
				t.Errorf("%s is still recorded", id)
			}
		}
		return nil
	})
}

// Before it deletes a VM the director checks its creation tags: a VM its
// records hold but that the cloud lists with another director's tag (or for
// another agent) is refused, and stays.
func TestDeleteRefusesAVMTaggedForSomeoneElse(t *testing.T) {
	r := newRig(t)
	m := benchManifest(1, "v1", 0)
	r.deploy(m, false)
	for _, tc := range []struct{ name, director, agent string }{
		{"another director", "other-director", "agent-x"},
		{"another agent", "compleat", "agent-y"},
	} {
		foreign, err := r.cloud.CreateVM(context.Background(), cpi.CreateVMRequest{AgentID: tc.agent, StemcellCID: r.stemcellCID(),
			CloudProperties: []byte(`{}`), Networks: map[string]cpi.Network{"default": {Type: "dynamic"}},
			Tags: map[string]string{cpi.TagDirector: tc.director, cpi.TagAgentID: tc.agent}})
		if err != nil {
			t.Fatal(err)
		}
		// A record pointing at it, held by no instance: reconcile deletes
		// such VMs, unless their tags say they are not this one's.
		if err := r.store.Update(func(tx *store.Tx) error {
			return tx.PutVM(store.VM{CID: foreign.CID, CPI: "fake", AgentID: "agent-recorded", Deployment: "big", InstanceID: "gone", State: "created"})
		}); err != nil {
			t.Fatal(err)
		}
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
		if tk.State != store.TaskError || !strings.Contains(tk.Error, "delete vm "+foreign.CID) || !strings.Contains(tk.Error, "not made by this director") {
			t.Errorf("%s: deploy %s %q, want a refusal to delete %s", tc.name, tk.State, tk.Error, foreign.CID)
		}
		found := false
		for _, vm := range r.cloud.VMs() {
			found = found || vm.CID == foreign.CID
		}
		if !found {
			t.Errorf("%s: vm %s was deleted", tc.name, foreign.CID)
		}
		r.store.Update(func(tx *store.Tx) error { return tx.DeleteVM(foreign.CID) })
	}
}

// A disk creation interrupted before its cid was recorded: the next deploy
// finds the disk through ListDisks by its tags (deployment and instance)
// and keeps it as an orphaned disk; the intent goes, nothing is deleted.
func TestReconcileFindsAnInterruptedDiskByItsTags(t *testing.T) {
	r := newRig(t)
	m := benchManifest(1, "v1", 0)
	r.deploy(m, false)
	made, err := r.cloud.CreateDisk(context.Background(), cpi.CreateDiskRequest{SizeMB: 1024, CloudProperties: []byte(`{}`),
		Tags: map[string]string{cpi.TagDirector: "compleat", cpi.TagDeployment: "big", cpi.TagInstanceID: "lost"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.store.Update(func(tx *store.Tx) error {
		return tx.PutDisk(store.Disk{CID: "intent-disk-1", CPI: "fake", Deployment: "big", InstanceID: "lost", SizeMB: 1024, State: "creating"})
	}); err != nil {
		t.Fatal(err)
	}
	if res, _ := r.deploy(m, false); res != "No changes: nothing to do." {
		t.Fatalf("deploy after the interruption: %q", res)
	}
	r.store.View(func(tx *store.Tx) error {
		if _, err := tx.Disk("intent-disk-1"); err == nil {
			t.Error("the intent is still recorded")
		}
		dk, err := tx.Disk(made)
		if err != nil || !dk.Orphaned || dk.InstanceID != "lost" || dk.CPI != "fake" {
			t.Errorf("the disk the interrupted creation made: %+v, %v; want it orphaned", dk, err)
		}
		return nil
	})
	if ok, _ := r.cloud.HasDisk(context.Background(), made); !ok {
		t.Error("the disk was deleted")
	}
}

// An instance a deploy took down but never recorded as updated (the
// director died after its drain) is updated again by the next deploy of
// the same manifest, which otherwise would find nothing to change and
// leave it drained.
func TestUnfinishedUpdateIsFinishedByTheNextDeploy(t *testing.T) {
	r := newRig(t)
	m := benchManifest(2, "v1", 0)
	r.deploy(m, false)
	var victim store.Instance
	if err := r.store.Update(func(tx *store.Tx) error {
		is, err := tx.Instances("big")
		if err != nil || len(is) != 2 {
			t.Fatalf("instances %v %v", is, err)
		}
		victim = is[0]
		victim.Unfinished = true
		return tx.PutInstance(victim)
	}); err != nil {
		t.Fatal(err)
	}
	res, _ := r.deploy(m, false)
	if !strings.Contains(res, "1 updated") {
		t.Fatalf("deploy after an unfinished update: %q, want the instance updated again", res)
	}
	r.store.View(func(tx *store.Tx) error {
		in, err := tx.Instance("big", victim.Group, victim.ID)
		if err != nil || in.Unfinished {
			t.Errorf("after the update: %+v %v", in, err)
		}
		return nil
	})
	if res, _ := r.deploy(m, false); res != "No changes: nothing to do." {
		t.Errorf("the deploy after: %q", res)
	}
}

// A deploy checks its instances' VMs with one ListVMs per CPI, and asks
// HasVM only of the VMs the list leaves out: a VM gone from the cloud is
// forgotten and made again, while a VM the list misses but the cloud has
// (a list that lags) keeps its instance.
func TestReconcileListsVMsOnceAndConfirmsTheMissing(t *testing.T) {
	r := newRig(t)
	m := benchManifest(4, "v1", 0)
	r.deploy(m, false)
	vms := r.cloud.VMs()
	if len(vms) != 4 {
		t.Fatalf("%d vms after the first deploy, want 4", len(vms))
	}
	gone, lagging := vms[0].CID, vms[1].CID
	if err := r.cloud.DeleteVM(context.Background(), gone); err != nil {
		t.Fatal(err)
	}
	r.unlisted.hide(lagging)
	lists, asks := r.cloud.Calls(cpitest.MethodListVMs), r.cloud.Calls(cpitest.MethodHasVM)

	res, evs := r.deploy(m, false)
	if n := r.cloud.Calls(cpitest.MethodListVMs) - lists; n != 1 {
		t.Errorf("%d ListVMs calls, want 1", n)
	}
	if n := r.cloud.Calls(cpitest.MethodHasVM) - asks; n != 2 {
		t.Errorf("%d HasVM calls, want 2 (the gone vm and the unlisted one)", n)
	}
	if n := stageEvents(evs, "Creating missing vms", "finished"); n != 1 {
		t.Errorf("%d vms created, want 1 for the gone one (result %q)", n, res)
	}
	have := map[string]bool{}
	for _, vm := range r.cloud.VMs() {
		have[vm.CID] = true
	}
	if len(have) != 4 || have[gone] || !have[lagging] {
		t.Errorf("vms after the deploy %v: want 4, without %s, with %s", have, gone, lagging)
	}
}
