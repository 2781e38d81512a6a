package cpitest_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/cpitest"
)

// Broken CPIs: each breaks one rule of the contract. The suite must fail
// on every one of them, naming the rule.
type (
	// deleteMissingFails answers VMNotFound when deleting a missing VM.
	deleteMissingFails struct{ *cpitest.Fake }
	// sameIP gives every VM on a dynamic network the same address.
	sameIP struct{ *cpitest.Fake }
	// noField rejects bad cloud properties without naming the field.
	noField struct{ *cpitest.Fake }
	// lyingCapabilities claims snapshots but does not take them.
	lyingCapabilities struct{ *cpitest.Fake }
	// stringErrors loses the error codes (returns plain errors).
	stringErrors struct{ *cpitest.Fake }
	// listIgnoresFilter lists every VM whatever the director filter.
	listIgnoresFilter struct{ *cpitest.Fake }
	// listNoTags lists VMs without the tags they were created with.
	listNoTags struct{ *cpitest.Fake }
	// listLyingCapability claims list_disks but does not list.
	listLyingCapability struct{ *cpitest.Fake }
)

func (b listIgnoresFilter) ListVMs(ctx context.Context, _ cpi.ListFilter) ([]cpi.VMInfo, error) {
	return b.Fake.ListVMs(ctx, cpi.ListFilter{})
}

func (b listNoTags) ListVMs(ctx context.Context, f cpi.ListFilter) ([]cpi.VMInfo, error) {
	vms, err := b.Fake.ListVMs(ctx, f)
	for i := range vms {
		vms[i].Tags = map[string]string{cpi.TagDirector: vms[i].Tags[cpi.TagDirector]}
	}
	return vms, err
}

func (b listLyingCapability) ListDisks(context.Context, cpi.ListFilter) ([]cpi.DiskInfo, error) {
	return nil, cpi.ErrNotImplemented
}

func (b deleteMissingFails) DeleteVM(ctx context.Context, cid string) error {
	if has, _ := b.Fake.HasVM(ctx, cid); !has {
		return cpi.ErrVMNotFound
	}
	return b.Fake.DeleteVM(ctx, cid)
}

func (b sameIP) CreateVM(ctx context.Context, req cpi.CreateVMRequest) (cpi.CreateVMResult, error) {
	res, err := b.Fake.CreateVM(ctx, req)
	for k, n := range res.Networks {
		n.IP = "127.200.9.9"
		res.Networks[k] = n
	}
	return res, err
}

func (b noField) CreateVM(ctx context.Context, req cpi.CreateVMRequest) (cpi.CreateVMResult, error) {
	res, err := b.Fake.CreateVM(ctx, req)
	if err != nil {
		if e, ok := err.(*cpi.Error); ok {
			e.Field = ""
		}
	}
	return res, err
}

func (b lyingCapabilities) SnapshotDisk(ctx context.Context, cid string, md map[string]string) (string, error) {
	return "", cpi.ErrNotImplemented
}

func (b stringErrors) RebootVM(ctx context.Context, cid string) error {
	if err := b.Fake.RebootVM(ctx, cid); err != nil {
		return &cpi.Error{Code: cpi.CodeUnknown, Message: err.Error()}
	}
	return nil
}

var broken = map[string]struct {
	newCPI func() cpi.CPI
	want   string
}{
	"deleteMissingFails":  {func() cpi.CPI { return deleteMissingFails{cpitest.NewFake()} }, "deletes are idempotent"},
	"sameIP":              {func() cpi.CPI { return sameIP{cpitest.NewFake()} }, "both got ip 127.200.9.9"},
	"noField":             {func() cpi.CPI { return noField{cpitest.NewFake()} }, `names field "", want "instance_type"`},
	"lyingCapabilities":   {func() cpi.CPI { return lyingCapabilities{cpitest.NewFake()} }, "Info says snapshots"},
	"stringErrors":        {func() cpi.CPI { return stringErrors{cpitest.NewFake()} }, "want VMNotFound"},
	"listIgnoresFilter":   {func() cpi.CPI { return listIgnoresFilter{cpitest.NewFake()} }, "filter on the compleat_director tag"},
	"listNoTags":          {func() cpi.CPI { return listNoTags{cpitest.NewFake()} }, "apply every tag of the create request"},
	"listLyingCapability": {func() cpi.CPI { return listLyingCapability{cpitest.NewFake()} }, "Info says list_disks"},
}

// TestBrokenCPIHelper runs the suite against one broken CPI when the parent
// test asks for it; it is a no-op otherwise.
func TestBrokenCPIHelper(t *testing.T) {
	name := os.Getenv("CPITEST_BROKEN")
	if name == "" {
		t.Skip("run by TestSuiteCatchesBrokenCPIs")
	}
	cpitest.Run(t, func(*testing.T) cpi.CPI { return broken[name].newCPI() }, fakeConfig())
}

func TestSuiteCatchesBrokenCPIs(t *testing.T) {
	for name, b := range broken {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestBrokenCPIHelper$", "-test.v")
			cmd.Env = append(os.Environ(), "CPITEST_BROKEN="+name)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a CPI that breaks the contract:\n%s", out)
			}
			if !strings.Contains(string(out), b.want) {
				t.Errorf("the suite failed without saying %q:\n%s", b.want, out)
			}
		})
	}
}
