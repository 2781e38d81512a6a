package deploy_test

import (
	"context"
	"strings"
	"testing"

	"github.com/compleat/compleat/director/api"
	"github.com/compleat/compleat/director/cpimanager"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

// twoCPIs gives the rig a second CPI, "west", beside "fake" (both the same
// fake cloud: the director tells them apart by name, as it records them),
// the stemcell in both, and a cloud config whose z1 is served by z1CPI.
func (r *rig) twoCPIs(z1CPI string) {
	r.tb.Helper()
	r.cpis.SetConfig(cpimanager.Config{CPIs: []cpimanager.Plugin{{Name: "fake", Type: "fake", Default: true}, {Name: "west", Type: "fake"}}})
	cc := strings.Replace(benchCloudConfig, "- name: z1\n", "- name: z1\n  cpi: "+z1CPI+"\n", 1)
	if err := r.store.Update(func(tx *store.Tx) error {
		sc, err := tx.Stemcell("bench-stemcell", "1")
		if err != nil {
			return err
		}
		sc.CIDs["west"] = sc.CIDs["fake"]
		if err := tx.PutStemcell(sc); err != nil {
			return err
		}
		_, _, err = tx.AddConfig(store.ConfigCloud, "", cc)
		return err
	}); err != nil {
		r.tb.Fatal(err)
	}
}

// deployErr deploys and returns the task's error ("" when it succeeded).
func (r *rig) deployErr(req api.DeployRequest) string {
	r.tb.Helper()
	started, err := r.tasks.Start(context.Background(), task.Spec{Type: "deploy", Deployment: "big"}, func(ctx context.Context, rep *task.Reporter) (string, error) {
		return r.d.Deploy(ctx, rep, req)
	})
	if err != nil {
		r.tb.Fatal(err)
	}
	var tk store.Task
	for !tk.Finished() {
		if _, tk, err = r.tasks.Wait(context.Background(), started.ID, 0); err != nil {
			r.tb.Fatal(err)
		}
	}
	return tk.Error
}

// When the cloud config gives an AZ to another CPI, its instances are
// recreated there ("cpi changed"); one with a persistent disk is refused
// before anything is touched (a disk never crosses CPIs) unless the operator asks for a fresh disk:
// then the new VM in the new CPI gets a new, empty disk and the old one is
// kept as an orphaned disk in the old CPI.
func TestAZMovedToAnotherCPI(t *testing.T) {
	r := newRig(t)
	r.twoCPIs("fake")
	m := strings.Replace(benchManifest(2, "v1", 0), "  vm_type: small\n", "  vm_type: small\n  persistent_disk: 1024\n", 1)
	if e := r.deployErr(api.DeployRequest{Deployment: "big", Manifest: m}); e != "" {
		t.Fatalf("first deploy: %s", e)
	}
	type placed struct{ vm, vmCPI, disk, diskCPI string }
	where := func() map[string]placed {
		out := map[string]placed{}
		r.store.View(func(tx *store.Tx) error {
			ins, _ := tx.Instances("big")
			for _, in := range ins {
				p := placed{vm: in.VMCID}
				if vm, err := tx.VM(in.VMCID); err == nil {
					p.vmCPI = vm.CPI
				}
				if len(in.DiskCIDs) > 0 {
					p.disk = in.DiskCIDs[0]
					if dk, err := tx.Disk(p.disk); err == nil {
						p.diskCPI = dk.CPI
					}
				}
				out[in.AZ] = p
			}
			return nil
		})
		return out
	}
	before := where()
	if before["z1"].vmCPI != "fake" || before["z1"].diskCPI != "fake" || before["z1"].disk == "" {
		t.Fatalf("z1 before: %+v", before["z1"])
	}

	r.twoCPIs("west")
	e := r.deployErr(api.DeployRequest{Deployment: "big", Manifest: m})
	if !strings.Contains(e, "is in cpi fake, but az z1 is served by cpi west") || !strings.Contains(e, "--fresh-disk-on-cpi-move") {
		t.Fatalf("deploy moving z1 to west: %q, want a refusal naming the flag", e)
	}
	if got := where()["z1"]; got != before["z1"] {
		t.Errorf("after the refusal z1 is %+v, want it untouched: %+v", got, before["z1"])
	}
	if _, ok := r.cloud.VM(before["z1"].vm); !ok {
		t.Errorf("the refused deploy deleted z1's vm %s", before["z1"].vm)
	}

	if e := r.deployErr(api.DeployRequest{Deployment: "big", Manifest: m, FreshDiskOnCPIMove: true}); e != "" {
		t.Fatalf("deploy --fresh-disk-on-cpi-move: %s", e)
	}
	after := where()
	if z1 := after["z1"]; z1.vmCPI != "west" || z1.diskCPI != "west" || z1.disk == "" || z1.disk == before["z1"].disk {
		t.Errorf("z1 after the move: %+v (before %+v)", z1, before["z1"])
	}
	if after["z2"] != before["z2"] {
		t.Errorf("z2 was touched: %+v → %+v", before["z2"], after["z2"])
	}
	r.store.View(func(tx *store.Tx) error {
		dk, err := tx.Disk(before["z1"].disk)
		if err != nil || !dk.Orphaned || dk.CPI != "fake" {
			t.Errorf("the old disk: %+v, %v; want it orphaned in cpi fake", dk, err)
		}
		return nil
	})
	if ok, _ := r.cloud.HasDisk(context.Background(), before["z1"].disk); !ok {
		t.Error("the old disk was deleted from the cloud")
	}
	if res, _ := r.deploy(m, false); res != "No changes: nothing to do." {
		t.Errorf("deploy after the move: %q", res)
	}
}
