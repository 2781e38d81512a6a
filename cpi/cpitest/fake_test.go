package cpitest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/cpitest"
)

func fakeConfig() cpitest.Config {
	return cpitest.Config{
		Stemcell:                 cpi.CreateStemcellRequest{ImagePath: "/stemcells/image"},
		VMCloudProperties:        json.RawMessage(`{"instance_type": "small"}`),
		DiskCloudProperties:      json.RawMessage(`{"type": "ssd"}`),
		InvalidVMCloudProperties: json.RawMessage(`{"instance_type": 42}`),
		InvalidField:             "instance_type",
		ManualNetworks:           cpitest.ManualNetworks("127.77.0.10"),
		VIPNetworks: func(i int) map[string]cpi.Network {
			return map[string]cpi.Network{"public": {Type: "vip", IP: fmt.Sprintf("127.78.0.%d", 10+i)}}
		},
	}
}

// strict is the Fake as the conformance suite wants a plugin.
func strict() *cpitest.Fake {
	f := cpitest.NewFake()
	f.RefuseUnknownCloudProperties()
	return f
}

func TestFakeConformsDynamic(t *testing.T) {
	t.Parallel()
	cpitest.Run(t, func(t *testing.T) cpi.CPI { return strict() }, fakeConfig())
}

func TestFakeConformsManual(t *testing.T) {
	t.Parallel()
	cfg := fakeConfig()
	cfg.Networks = cpitest.ManualNetworks("127.77.0.250")
	cpitest.Run(t, func(t *testing.T) cpi.CPI { return strict() }, cfg)
}

func TestFakeConformsWithoutOptionalCapabilities(t *testing.T) {
	t.Parallel()
	cfg := fakeConfig()
	cfg.Networks = cpitest.ManualNetworks("127.77.0.10")
	cpitest.Run(t, func(t *testing.T) cpi.CPI {
		f := strict()
		f.SetCapabilities(cpi.Capabilities{})
		return f
	}, cfg)
}

func TestFakeFailNext(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := cpitest.NewFake()
	sc, err := f.CreateStemcell(ctx, cpi.CreateStemcellRequest{ImagePath: "/img"})
	if err != nil {
		t.Fatal(err)
	}
	boom := cpi.Retryable(cpi.CodeVMCreationFailed, errors.New("capacity"))
	f.FailNext(cpitest.MethodCreateVM, boom)
	req := cpi.CreateVMRequest{AgentID: "a", StemcellCID: sc, Networks: map[string]cpi.Network{"n": {Type: "dynamic"}}}
	if _, err := f.CreateVM(ctx, req); !errors.Is(err, cpi.ErrVMCreationFailed) || !cpi.IsRetryable(err) {
		t.Fatalf("CreateVM after FailNext = %v, want the injected error", err)
	}
	if got := f.VMs(); len(got) != 0 {
		t.Fatalf("a failed CreateVM left VMs %+v", got)
	}
	res, err := f.CreateVM(ctx, req)
	if err != nil {
		t.Fatalf("second CreateVM: %v", err)
	}
	vm, ok := f.VM(res.CID)
	if !ok || vm.AgentID != "a" || vm.Networks["n"].IP == "" {
		t.Fatalf("VM(%s) = %+v, %v", res.CID, vm, ok)
	}
	var settings struct {
		VM       map[string]string      `json:"vm"`
		Networks map[string]cpi.Network `json:"networks"`
	}
	if err := json.Unmarshal(vm.AgentSettings, &settings); err != nil {
		t.Fatal(err)
	}
	if settings.VM["cid"] != res.CID || settings.Networks["n"].IP != vm.Networks["n"].IP {
		t.Errorf("delivered settings %s lack the vm cid or the configured networks", vm.AgentSettings)
	}
	if f.Calls(cpitest.MethodCreateVM) != 2 {
		t.Errorf("Calls(CreateVM) = %d, want 2", f.Calls(cpitest.MethodCreateVM))
	}
}

func TestFakeManualIPInUse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := cpitest.NewFake()
	sc, _ := f.CreateStemcell(ctx, cpi.CreateStemcellRequest{ImagePath: "/img"})
	nets := map[string]cpi.Network{"n": {Type: "manual", IP: "127.77.0.5"}}
	if _, err := f.CreateVM(ctx, cpi.CreateVMRequest{StemcellCID: sc, Networks: nets}); err != nil {
		t.Fatal(err)
	}
	_, err := f.CreateVM(ctx, cpi.CreateVMRequest{StemcellCID: sc, Networks: nets})
	if !errors.Is(err, cpi.ErrVMCreationFailed) {
		t.Fatalf("CreateVM on an ip in use = %v, want VMCreationFailed", err)
	}
}

func TestFakeLoseVMDetachesDisks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := cpitest.NewFake()
	sc, _ := f.CreateStemcell(ctx, cpi.CreateStemcellRequest{ImagePath: "/img"})
	vm, err := f.CreateVM(ctx, cpi.CreateVMRequest{StemcellCID: sc})
	if err != nil {
		t.Fatal(err)
	}
	d, err := f.CreateDisk(ctx, cpi.CreateDiskRequest{SizeMB: 10})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.AttachDisk(ctx, vm.CID, d); err != nil {
		t.Fatal(err)
	}
	if !f.LoseVM(vm.CID) {
		t.Fatal("LoseVM reported no VM")
	}
	if has, _ := f.HasVM(ctx, vm.CID); has {
		t.Error("HasVM after LoseVM = true")
	}
	if disks := f.Disks(); len(disks) != 1 || disks[0].AttachedTo != "" {
		t.Errorf("disks after LoseVM = %+v, want one detached disk", disks)
	}
}

func TestFakeHonoursCancelledContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := cpitest.NewFake().HasVM(ctx, "x"); !errors.Is(err, context.Canceled) {
		t.Fatalf("HasVM on a cancelled context = %v", err)
	}
}

func TestFakePersist(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.json")
	a := cpitest.NewFake()
	if err := a.Persist(path); err != nil {
		t.Fatal(err)
	}
	sc, _ := a.CreateStemcell(ctx, cpi.CreateStemcellRequest{ImagePath: "/img"})
	vm, err := a.CreateVM(ctx, cpi.CreateVMRequest{StemcellCID: sc, Networks: map[string]cpi.Network{"n": {Type: "dynamic"}}})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := a.CreateDisk(ctx, cpi.CreateDiskRequest{SizeMB: 1})
	if _, err := a.AttachDisk(ctx, vm.CID, d); err != nil {
		t.Fatal(err)
	}

	b := cpitest.NewFake()
	if err := b.Persist(path); err != nil {
		t.Fatal(err)
	}
	got, ok := b.VM(vm.CID)
	if !ok || got.Networks["n"].IP != vm.Networks["n"].IP || len(got.Disks) != 1 || got.Disks[0] != d {
		t.Fatalf("reloaded VM = %+v, %v", got, ok)
	}
	// New objects get new ids and addresses.
	vm2, err := b.CreateVM(ctx, cpi.CreateVMRequest{StemcellCID: sc, Networks: map[string]cpi.Network{"n": {Type: "dynamic"}}})
	if err != nil || vm2.CID == vm.CID || vm2.Networks["n"].IP == vm.Networks["n"].IP {
		t.Fatalf("CreateVM after reload = %+v, %v", vm2, err)
	}

	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cpitest.NewFake().Persist(path); err == nil {
		t.Error("Persist of a corrupt state file succeeded")
	}
}
