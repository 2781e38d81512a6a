package cloudcheck_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/cpitest"
	"github.com/compleat/compleat/director/cloudcheck"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/store/storetest"
)

func TestDetectTable(t *testing.T) {
	t.Parallel()
	inst := func(id, vm, agent string, disks ...string) store.Instance {
		return store.Instance{Deployment: "d", Group: "web", ID: id, VMCID: vm, AgentID: agent, DiskCIDs: disks, State: "started"}
	}
	for _, tc := range []struct {
		name string
		o    cloudcheck.Observed
		want []string // problem ids
	}{
		{"healthy", cloudcheck.Observed{
			Instances: []store.Instance{inst("1", "vm-1", "a-1", "disk-1")},
			HasVM:     map[string]bool{"vm-1": true}, HasDisk: map[string]bool{"disk-1": true},
			Attached: map[string][]string{"vm-1": {"disk-1"}}, Responsive: map[string]bool{"a-1": true},
			Mounted: map[string][]string{"a-1": {"disk-1"}},
		}, nil},
		{"missing vm: its disk is not checked for attachment", cloudcheck.Observed{
			Instances: []store.Instance{inst("1", "vm-1", "a-1", "disk-1")},
			HasVM:     map[string]bool{"vm-1": false}, HasDisk: map[string]bool{"disk-1": true},
		}, []string{"missing_vm:vm-1"}},
		{"unresponsive agent: mounts unknown", cloudcheck.Observed{
			Instances: []store.Instance{inst("1", "vm-1", "a-1", "disk-1")},
			HasVM:     map[string]bool{"vm-1": true}, HasDisk: map[string]bool{"disk-1": true},
			Attached: map[string][]string{"vm-1": {"disk-1"}}, Responsive: map[string]bool{"a-1": false},
		}, []string{"unresponsive_agent:vm-1"}},
		{"missing disk", cloudcheck.Observed{
			Instances: []store.Instance{inst("1", "vm-1", "a-1", "disk-1")},
			HasVM:     map[string]bool{"vm-1": true}, HasDisk: map[string]bool{"disk-1": false},
			Attached: map[string][]string{"vm-1": {}}, Responsive: map[string]bool{"a-1": true},
		}, []string{"missing_disk:disk-1"}},
		{"unattached disk, also from the disk records", cloudcheck.Observed{
			Instances: []store.Instance{inst("1", "vm-1", "a-1")},
			Disks:     []store.Disk{{CID: "disk-1", Deployment: "d", InstanceID: "1"}, {CID: "disk-9", Deployment: "d", Orphaned: true}},
			HasVM:     map[string]bool{"vm-1": true}, HasDisk: map[string]bool{"disk-1": true},
			Attached: map[string][]string{"vm-1": nil}, Responsive: map[string]bool{"a-1": true},
		}, []string{"unattached_disk:disk-1"}},
		{"mount mismatch", cloudcheck.Observed{
			Instances: []store.Instance{inst("1", "vm-1", "a-1", "disk-1")},
			HasVM:     map[string]bool{"vm-1": true}, HasDisk: map[string]bool{"disk-1": true},
			Attached: map[string][]string{"vm-1": {"disk-1"}}, Responsive: map[string]bool{"a-1": true},
			Mounted: map[string][]string{"a-1": nil},
		}, []string{"mount_mismatch:disk-1"}},
		{"unknown vm of this deployment and director only", cloudcheck.Observed{
			Director: "compleat", KnownVMs: map[string]bool{"vm-1": true},
			CloudVMs: []cloudcheck.CloudVM{
				{CID: "vm-1", Metadata: map[string]string{cpi.TagDirector: "compleat", cpi.TagDeployment: "d"}},
				{CID: "vm-2", Metadata: map[string]string{cpi.TagDirector: "compleat", cpi.TagDeployment: "d"}},
				{CID: "vm-3", Metadata: map[string]string{cpi.TagDirector: "compleat", cpi.TagDeployment: "other"}},
				{CID: "vm-4", Metadata: map[string]string{cpi.TagDirector: "another", cpi.TagDeployment: "d"}},
				{CID: "vm-5"},
			},
		}, []string{"unknown_vm:vm-2"}},
		{"ignored instance", cloudcheck.Observed{
			Instances: []store.Instance{{Deployment: "d", Group: "web", ID: "1", VMCID: "vm-1", IgnoreFix: true}},
			HasVM:     map[string]bool{"vm-1": false},
		}, nil},
		{"not asked is not false", cloudcheck.Observed{
			Instances: []store.Instance{inst("1", "vm-1", "a-1", "disk-1")},
		}, nil},
	} {
		tc.o.Deployment = "d"
		var got []string
		for _, p := range cloudcheck.Detect(tc.o) {
			got = append(got, p.ID)
			if len(p.Resolutions) == 0 || p.Description == "" || p.Deployment != "d" {
				t.Errorf("%s: incomplete problem %+v", tc.name, p)
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: problems %v, want %v", tc.name, got, tc.want)
		}
	}
}

// agents is a stateful fake of the agents: each is alive or not and has a
// set of mounted disks.
type agents struct {
	mu      sync.Mutex
	alive   map[string]bool
	mounted map[string][]string
}

func (a *agents) Ping(ctx context.Context, id string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.alive[id] {
		return fmt.Errorf("agent %s: %w", id, context.DeadlineExceeded)
	}
	return nil
}

func (a *agents) ListDisk(ctx context.Context, id string) ([]string, error) {
	if err := a.Ping(ctx, id); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.mounted[id]), nil
}

func (a *agents) MountDisk(ctx context.Context, id, disk string, hint cpi.DiskHint) error {
	if err := a.Ping(ctx, id); err != nil {
		return err
	}
	if hint.Path == "" {
		return errors.New("no hint")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !slices.Contains(a.mounted[id], disk) {
		a.mounted[id] = append(a.mounted[id], disk)
	}
	return nil
}

// world is a deployment "d" of instances on a cpitest.Fake, recorded in a
// real store, with fake agents.
type world struct {
	t      *testing.T
	ctx    context.Context
	cloud  *cpitest.Fake
	st     *store.Store
	agents *agents
	stem   string
	seq    int
}

func newWorld(t *testing.T) *world {
	w := &world{t: t, ctx: context.Background(), cloud: cpitest.NewFake(), st: storetest.New(t),
		agents: &agents{alive: map[string]bool{}, mounted: map[string][]string{}}}
	var err error
	w.stem, err = w.cloud.CreateStemcell(w.ctx, cpi.CreateStemcellRequest{ImagePath: "/img", CloudProperties: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	w.must(w.st.Update(func(tx *store.Tx) error { return tx.PutDeployment(store.Deployment{Name: "d"}) }))
	return w
}

func (w *world) must(err error) {
	w.t.Helper()
	if err != nil {
		w.t.Fatal(err)
	}
}

// vm creates a VM with a live agent, attaching disk when set, and records
// it for instance id.
func (w *world) vm(id, disk string) (vmCID, agentID string) {
	w.seq++
	agentID = fmt.Sprintf("agent-%d", w.seq)
	res, err := w.cloud.CreateVM(w.ctx, cpi.CreateVMRequest{AgentID: agentID, StemcellCID: w.stem, CloudProperties: json.RawMessage(`{}`),
		Networks: map[string]cpi.Network{"default": {Type: "dynamic"}}, AgentSettings: json.RawMessage(`{}`),
		Tags: map[string]string{cpi.TagDirector: "compleat", cpi.TagDeployment: "d", cpi.TagAgentID: agentID}})
	w.must(err)
	w.must(w.cloud.SetVMMetadata(w.ctx, res.CID, map[string]string{"director": "compleat", "deployment": "d"}))
	w.agents.mu.Lock()
	w.agents.alive[agentID] = true
	w.agents.mu.Unlock()
	if disk != "" {
		_, err := w.cloud.AttachDisk(w.ctx, res.CID, disk)
		w.must(err)
		w.agents.mu.Lock()
		w.agents.mounted[agentID] = []string{disk}
		w.agents.mu.Unlock()
	}
	w.must(w.st.Update(func(tx *store.Tx) error {
		in, err := tx.Instance("d", "web", id)
		if err != nil {
			return err
		}
		in.VMCID, in.AgentID = res.CID, agentID
		if err := tx.PutInstance(in); err != nil {
			return err
		}
		return tx.PutVM(store.VM{CID: res.CID, CPI: "fake", AgentID: agentID, Deployment: "d", InstanceID: id, State: "created"})
	}))
	return res.CID, agentID
}

// instance records instance id with a persistent disk and a VM.
func (w *world) instance(id string) (vmCID, agentID, diskCID string) {
	disk, err := w.cloud.CreateDisk(w.ctx, cpi.CreateDiskRequest{SizeMB: 10, CloudProperties: json.RawMessage(`{}`)})
	w.must(err)
	w.must(w.st.Update(func(tx *store.Tx) error {
		if err := tx.PutDisk(store.Disk{CID: disk, CPI: "fake", Deployment: "d", InstanceID: id, SizeMB: 10}); err != nil {
			return err
		}
		return tx.PutInstance(store.Instance{Deployment: "d", Group: "web", ID: id, State: "started", DiskCIDs: []string{disk}})
	}))
	vm, agent := w.vm(id, disk)
	return vm, agent, disk
}

// Recreate is the deploy pipeline's recreate as the fake world does it:
// delete the old VM, create a new one with the instance's disk attached.
func (w *world) Recreate(ctx context.Context, deployment, id, reason string) (uint64, error) {
	return 0, w.recreate(ctx, deployment, id, reason)
}

func (w *world) recreate(ctx context.Context, deployment, id, reason string) error {
	var in store.Instance
	w.must(w.st.View(func(tx *store.Tx) error {
		var err error
		in, err = tx.Instance(deployment, "web", id)
		return err
	}))
	if in.VMCID != "" {
		if err := w.cloud.DeleteVM(ctx, in.VMCID); err != nil {
			return err
		}
		w.must(w.st.Update(func(tx *store.Tx) error { return tx.DeleteVM(in.VMCID) }))
	}
	disk := ""
	if len(in.DiskCIDs) > 0 {
		disk = in.DiskCIDs[0]
	}
	w.vm(id, disk)
	return nil
}

func (w *world) checker() *cloudcheck.Checker {
	return &cloudcheck.Checker{Store: w.st, Agents: w.agents, Recreator: w, PingTimeout: 100 * time.Millisecond,
		CPIs: func(ctx context.Context, name string) (cloudcheck.CPI, error) {
			if name != "fake" {
				return nil, fmt.Errorf("no cpi %q", name)
			}
			return w.cloud, nil
		}}
}

func ids(ps []cloudcheck.Problem) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.ID)
	}
	sort.Strings(out)
	return out
}

func TestCheckerFindsInjectedProblemsAndAutoFixes(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	vm1, _, _ := w.instance("1")        // healthy
	vm2, _, _ := w.instance("2")        // its VM vanishes
	vm3, agent3, _ := w.instance("3")   // its agent stops
	vm4, _, disk4 := w.instance("4")    // its disk is detached
	_, agent5, disk5 := w.instance("5") // its agent lost the mount
	_, _, disk6 := w.instance("6")      // its disk vanishes from the cloud

	w.cloud.LoseVM(vm2)
	w.agents.mu.Lock()
	w.agents.alive[agent3] = false
	w.agents.mounted[agent5] = nil
	w.agents.mu.Unlock()
	w.must(w.cloud.DetachDisk(w.ctx, vm4, disk4))
	vm6 := ""
	w.must(w.st.View(func(tx *store.Tx) error {
		in, err := tx.Instance("d", "web", "6")
		vm6 = in.VMCID
		return err
	}))
	w.must(w.cloud.DetachDisk(w.ctx, vm6, disk6))
	w.must(w.cloud.DeleteDisk(w.ctx, disk6))
	// A VM of this deployment that the state does not know.
	stray, err := w.cloud.CreateVM(w.ctx, cpi.CreateVMRequest{AgentID: "stray", StemcellCID: w.stem, CloudProperties: json.RawMessage(`{}`),
		Networks: map[string]cpi.Network{"default": {Type: "dynamic"}}, AgentSettings: json.RawMessage(`{}`),
		Tags: map[string]string{cpi.TagDirector: "compleat", cpi.TagDeployment: "d", cpi.TagAgentID: "stray"}})
	w.must(err)
	w.must(w.cloud.SetVMMetadata(w.ctx, stray.CID, map[string]string{"director": "compleat", "deployment": "d"}))
	// A disk of this deployment that the state does not know (its creation
	// interrupted before the cid was recorded), and one of another director.
	strayDisk, err := w.cloud.CreateDisk(w.ctx, cpi.CreateDiskRequest{SizeMB: 10, CloudProperties: json.RawMessage(`{}`),
		Tags: map[string]string{cpi.TagDirector: "compleat", cpi.TagDeployment: "d", cpi.TagInstanceID: "7"}})
	w.must(err)
	_, err = w.cloud.CreateDisk(w.ctx, cpi.CreateDiskRequest{SizeMB: 10, CloudProperties: json.RawMessage(`{}`),
		Tags: map[string]string{cpi.TagDirector: "someone-else", cpi.TagDeployment: "d"}})
	w.must(err)

	c := w.checker()
	c.Lister = cloudcheck.CPIVMs{Names: func() []string { return []string{"fake"} },
		Get: func(context.Context, string) (cpi.CPI, error) { return w.cloud, nil }, DirectorID: "compleat"}
	c.Events = storeEvents{w.st}
	problems, err := c.Scan(w.ctx, "d")
	w.must(err)
	want := []string{
		"missing_disk:" + disk6,
		"missing_vm:" + vm2,
		"mount_mismatch:" + disk5,
		"unattached_disk:" + disk4,
		"unknown_disk:" + strayDisk,
		"unknown_vm:" + stray.CID,
		"unresponsive_agent:" + vm3,
	}
	sort.Strings(want)
	if got := ids(problems); !slices.Equal(got, want) {
		t.Fatalf("problems %v\nwant     %v", got, want)
	}
	for _, p := range problems {
		if p.VMCID == vm1 {
			t.Errorf("healthy instance reported: %+v", p)
		}
	}

	// A resolution a problem does not allow is refused before anything.
	_, err = c.Resolve(w.ctx, "d", map[string]string{"missing_vm:" + vm2: cloudcheck.ReattachDisk}, false, "admin")
	if !errors.Is(err, cloudcheck.ErrBadResolution) {
		t.Fatalf("bad resolution: %v", err)
	}

	results, err := c.Resolve(w.ctx, "d", nil, true, "admin")
	w.must(err)
	for _, r := range results {
		if r.Error != "" {
			t.Errorf("%s %s: %s", r.Problem.ID, r.Resolution, r.Error)
		}
	}
	// What --auto fixes is fixed; what it ignores (a missing disk, a VM it
	// does not know) is still reported.
	after, err := c.Scan(w.ctx, "d")
	w.must(err)
	want = []string{"missing_disk:" + disk6, "unknown_disk:" + strayDisk, "unknown_vm:" + stray.CID}
	if got := ids(after); !slices.Equal(got, want) {
		t.Errorf("after --auto: %v, want %v", got, want)
	}
	// The recreated instances have new VMs with their disks attached.
	for _, id := range []string{"2", "3"} {
		var in store.Instance
		w.must(w.st.View(func(tx *store.Tx) error { var err error; in, err = tx.Instance("d", "web", id); return err }))
		vm, ok := w.cloud.VM(in.VMCID)
		if !ok || !slices.Equal(vm.Disks, in.DiskCIDs) || in.VMCID == vm2 || in.VMCID == vm3 {
			t.Errorf("instance %s after recreate: %+v, cloud vm %+v", id, in, vm)
		}
	}
	if _, ok := w.cloud.VM(vm3); ok {
		t.Error("the unresponsive VM was not deleted by its recreation")
	}

	// Explicit resolutions: delete the disk reference, delete the stray VM,
	// keep the stray disk as an orphan.
	_, err = c.Resolve(w.ctx, "d", map[string]string{"missing_disk:" + disk6: cloudcheck.DeleteDiskReference, "unknown_vm:" + stray.CID: cloudcheck.DeleteVM,
		"unknown_disk:" + strayDisk: cloudcheck.OrphanDisk}, false, "admin")
	w.must(err)
	final, err := c.Scan(w.ctx, "d")
	w.must(err)
	if len(final) != 0 {
		t.Errorf("after explicit resolutions: %v", ids(final))
	}
	if _, ok := w.cloud.VM(stray.CID); ok {
		t.Error("stray VM not deleted")
	}
	w.must(w.st.View(func(tx *store.Tx) error {
		d, err := tx.Disk(strayDisk)
		if err != nil || !d.Orphaned || d.Deployment != "d" || d.CPI != "fake" || d.InstanceID != "7" {
			t.Errorf("the stray disk as recorded: %+v, %v", d, err)
		}
		return nil
	}))
	if ok, _ := w.cloud.HasDisk(w.ctx, strayDisk); !ok {
		t.Error("orphan_disk deleted the stray disk")
	}

	var evs []store.AuditEvent
	w.must(w.st.View(func(tx *store.Tx) error {
		var err error
		evs, err = tx.AuditEvents(store.AuditFilter{Action: "cloud-check-resolve"})
		return err
	}))
	if len(evs) != 10 || evs[0].User != "admin" {
		t.Errorf("%d resolve events: %+v", len(evs), evs)
	}
}

func TestResolveRebootAndDeleteVMReference(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	vm1, agent1, _ := w.instance("1")
	vm2, _, _ := w.instance("2")
	w.agents.mu.Lock()
	w.agents.alive[agent1] = false
	w.agents.mu.Unlock()
	w.cloud.LoseVM(vm2)
	c := w.checker()
	// The fake cloud's reboot does not revive the fake agent; make it.
	go func() {
		for w.cloud.Calls(cpitest.MethodRebootVM) == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		w.agents.mu.Lock()
		w.agents.alive[agent1] = true
		w.agents.mu.Unlock()
	}()
	res, err := c.Resolve(w.ctx, "d", map[string]string{
		"unresponsive_agent:" + vm1: cloudcheck.RebootVM,
		"missing_vm:" + vm2:         cloudcheck.DeleteVMReference,
	}, false, "")
	w.must(err)
	if len(res) != 2 || res[0].Error != "" || res[1].Error != "" {
		t.Fatalf("results %+v", res)
	}
	c.Busy = func(context.Context, string) bool { return true }
	if _, err := c.Resolve(w.ctx, "d", nil, true, ""); !errors.Is(err, cloudcheck.ErrBusy) {
		t.Errorf("busy deployment: %v", err)
	}
	if vm, _ := w.cloud.VM(vm1); vm.Reboots != 1 {
		t.Errorf("reboots = %d", vm.Reboots)
	}
	w.must(w.st.View(func(tx *store.Tx) error {
		in, err := tx.Instance("d", "web", "2")
		if in.VMCID != "" || in.AgentID != "" {
			t.Errorf("reference kept: %+v", in)
		}
		if _, err := tx.VM(vm2); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("vm record kept: %v", err)
		}
		return err
	}))
	ps, err := c.Scan(w.ctx, "d")
	w.must(err)
	if len(ps) != 0 {
		t.Errorf("left: %v", ids(ps))
	}
}

// CPIVMs lists, through ListVMs, every CPI's VMs tagged with this
// director, naming each VM's CPI; a CPI that cannot list is skipped.
func TestCPIVMsListsEveryCPIsTaggedVMs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clouds := map[string]*cpitest.Fake{"east": cpitest.NewFake(), "west": cpitest.NewFake(), "old": cpitest.NewFake()}
	clouds["old"].SetCapabilities(cpi.Capabilities{DynamicNetworks: true})
	made := map[string]string{}
	for _, name := range []string{"east", "west", "old"} {
		f := clouds[name]
		sc, err := f.CreateStemcell(ctx, cpi.CreateStemcellRequest{ImagePath: "/img", CloudProperties: json.RawMessage(`{}`)})
		if err != nil {
			t.Fatal(err)
		}
		for _, director := range []string{"me", "someone-else"} {
			res, err := f.CreateVM(ctx, cpi.CreateVMRequest{AgentID: name + "-" + director, StemcellCID: sc, CloudProperties: json.RawMessage(`{}`),
				Networks: map[string]cpi.Network{"default": {Type: "dynamic"}}, AgentSettings: json.RawMessage(`{}`),
				Tags: map[string]string{cpi.TagDirector: director, cpi.TagDeployment: "d"}})
			if err != nil {
				t.Fatal(err)
			}
			made[name+"-"+director] = res.CID
		}
	}
	l := cloudcheck.CPIVMs{Names: func() []string { return []string{"east", "old", "west"} },
		Get: func(_ context.Context, name string) (cpi.CPI, error) { return clouds[name], nil }, DirectorID: "me"}
	vms, err := l.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(vms) != 2 || vms[0].CPI != "east" || vms[0].CID != made["east-me"] || vms[1].CPI != "west" || vms[1].CID != made["west-me"] ||
		vms[0].Metadata[cpi.TagDeployment] != "d" {
		t.Errorf("listed %+v", vms)
	}
}

type storeEvents struct{ s *store.Store }

func (e storeEvents) AddEvent(ctx context.Context, ev store.AuditEvent) error {
	return e.s.Update(func(tx *store.Tx) error { _, err := tx.AddAuditEvent(ev); return err })
}
