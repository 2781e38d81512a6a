package health_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/cpitest"
	"github.com/compleat/compleat/director/health"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

// TestServiceReplacesDeadVMInATask runs the service as the composition root
// does: a dead agent's VM is deleted with its disk detached, inside a
// "resurrect" task holding the deployment's lock, and the deploy pipeline's
// recreate (here a stand-in over the fake cloud) brings the instance up
// again with the same disk.
func TestServiceReplacesDeadVMInATask(t *testing.T) {
	t.Parallel()
	st, b := newStore(t), startBus(t)
	ctx := context.Background()
	cloud := cpitest.NewFake()
	stem, err := cloud.CreateStemcell(ctx, cpi.CreateStemcellRequest{ImagePath: "/img", CloudProperties: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	newVM := func(agentID, disk string) string {
		res, err := cloud.CreateVM(ctx, cpi.CreateVMRequest{AgentID: agentID, StemcellCID: stem, CloudProperties: json.RawMessage(`{}`),
			Networks: map[string]cpi.Network{"default": {Type: "dynamic"}}, AgentSettings: json.RawMessage(`{}`), DiskCIDs: []string{disk}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cloud.AttachDisk(ctx, res.CID, disk); err != nil {
			t.Fatal(err)
		}
		return res.CID
	}
	disks := map[string]string{}
	st.Update(func(tx *store.Tx) error {
		tx.PutDeployment(store.Deployment{Name: "web"})
		for i := range 2 {
			disk, err := cloud.CreateDisk(ctx, cpi.CreateDiskRequest{SizeMB: 1, CloudProperties: json.RawMessage(`{}`)})
			if err != nil {
				return err
			}
			id, agentID := fmt.Sprintf("i%d", i), fmt.Sprintf("agent-%d", i)
			disks[id] = disk
			vm := newVM(agentID, disk)
			tx.PutDisk(store.Disk{CID: disk, CPI: "fake", Deployment: "web", InstanceID: id})
			tx.PutVM(store.VM{CID: vm, CPI: "fake", AgentID: agentID, Deployment: "web", InstanceID: id})
			tx.PutInstance(store.Instance{Deployment: "web", Group: "web", ID: id, Index: i, State: "started", VMCID: vm, AgentID: agentID, DiskCIDs: []string{disk}})
		}
		return nil
	})
	a0 := b.agent(t, "agent-0", interval)
	b.agent(t, "agent-1", interval)

	tasks := task.NewManager(st, slog.New(slog.DiscardHandler), task.Options{})
	t.Cleanup(func() { tasks.Shutdown(context.Background()) })
	var targets []string
	recreate := func(ctx context.Context, r *task.Reporter, deployment, target string) error {
		targets = append(targets, target)
		var in store.Instance
		if err := st.View(func(tx *store.Tx) error {
			var err error
			in, err = tx.Instance(deployment, "web", "i0")
			locks, _ := tx.Locks()
			if len(locks) != 1 || locks[0].Name != task.LockName("web") {
				t.Errorf("locks during the recreate: %+v", locks)
			}
			return err
		}); err != nil {
			return err
		}
		if in.VMCID != "" {
			return fmt.Errorf("the dead VM is still referenced: %+v", in)
		}
		agentID := "agent-0-new"
		vm := newVM(agentID, in.DiskCIDs[0])
		b.agent(t, agentID, interval)
		return st.Update(func(tx *store.Tx) error {
			in.VMCID, in.AgentID = vm, agentID
			tx.PutVM(store.VM{CID: vm, CPI: "fake", AgentID: agentID, Deployment: "web", InstanceID: "i0"})
			return tx.PutInstance(in)
		})
	}
	var checkMu sync.Mutex
	var checked []string
	reg := prometheus.NewRegistry()
	svc, err := health.Start(ctx, health.Deps{Store: st, Conn: b.conn, Tasks: tasks, Recreate: recreate, Registerer: reg,
		CPIs: func(context.Context, string) (health.VMCloud, error) { return cloud, nil },
		CheckVM: func(_ context.Context, cpiName, cid, agentID string) error {
			checkMu.Lock()
			defer checkMu.Unlock()
			checked = append(checked, cpiName+" "+cid+" "+agentID)
			return nil
		},
		Options: health.Options{HeartbeatInterval: interval, Timeout: timeout}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	eventually(t, "running", func() bool { return status(svc.Monitor, "web", "i0") == health.StatusRunning })
	var old string
	st.View(func(tx *store.Tx) error { in, _ := tx.Instance("web", "web", "i0"); old = in.VMCID; return nil })

	a0.kill()
	eventually(t, "the resurrection event", func() bool { return len(events(t, st, "resurrect")) == 1 })
	if e := events(t, st, "resurrect")[0]; e.Result != store.ResultOK {
		t.Fatalf("resurrect event = %+v", e)
	}
	eventually(t, "the new VM running", func() bool {
		h, _ := svc.Monitor.Instance("web", "i0")
		return h.Status == health.StatusRunning && h.AgentID == "agent-0-new"
	})
	if _, ok := cloud.VM(old); ok {
		t.Error("the dead VM was not deleted")
	}
	checkMu.Lock()
	if want := "fake " + old + " agent-0"; !slices.Contains(checked, want) {
		t.Errorf("tags checked before deleting: %q, want %q", checked, want)
	}
	checkMu.Unlock()
	var in store.Instance
	st.View(func(tx *store.Tx) error { in, _ = tx.Instance("web", "web", "i0"); return nil })
	if vm, ok := cloud.VM(in.VMCID); !ok || !slices.Equal(vm.Disks, []string{disks["i0"]}) {
		t.Errorf("new vm %+v: want disk %s attached", vm, disks["i0"])
	}
	if len(targets) != 1 || targets[0] != "web/i0" {
		t.Errorf("recreates: %v", targets)
	}
	var tk []store.Task
	st.View(func(tx *store.Tx) error {
		tk, _ = tx.Tasks(0, func(t store.Task) bool { return t.Type == "resurrect" })
		return nil
	})
	if len(tk) != 1 || tk[0].State != store.TaskDone || tk[0].User != health.UserResurrector || tk[0].Deployment != "web" {
		t.Errorf("resurrect tasks = %+v", tk)
	}
	if e := events(t, st, "resurrect")[0]; len(tk) == 1 && e.TaskID != tk[0].ID {
		t.Errorf("resurrect event names task %d, want %d", e.TaskID, tk[0].ID)
	}
	if err := health.RecordTask(st, tk[0]); err != nil || len(events(t, st, "resurrect")) != 1 {
		t.Errorf("a resurrection task recorded twice: %v", err)
	}
	if n, err := testutil.GatherAndCount(reg, "compleat_resurrections_total", "compleat_instances"); err != nil || n == 0 {
		t.Errorf("metrics: %d, %v", n, err)
	}
	time.Sleep(2 * timeout)
	if len(targets) != 1 {
		t.Errorf("resurrected again: %v", targets)
	}
}
