package local

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/compleat/compleat/cpi"
)

// BenchmarkCreateDeleteVM measures a VM's whole life: directory, address,
// agent process (in its own mount namespace as root), then stopping the
// process tree and removing the files.
func BenchmarkCreateDeleteVM(b *testing.B) {
	ctx := context.Background()
	c := newTestCPI(b)
	sc := createStemcell(b, c)
	for b.Loop() {
		res, err := c.CreateVM(ctx, vmRequest(sc, "", nil))
		if err != nil {
			b.Fatal(err)
		}
		if err := c.DeleteVM(ctx, res.CID); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHasVM measures the cheapest call, in-process (no gRPC).
func BenchmarkHasVM(b *testing.B) {
	ctx := context.Background()
	c := newTestCPI(b)
	sc := createStemcell(b, c)
	res, err := c.CreateVM(ctx, vmRequest(sc, "", nil))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if ok, err := c.HasVM(ctx, res.CID); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
}

// BenchmarkAttachDetachDisk measures an attachment round trip, which
// rewrites the disk record and the agent's settings under the lock.
func BenchmarkAttachDetachDisk(b *testing.B) {
	ctx := context.Background()
	c := newTestCPI(b)
	sc := createStemcell(b, c)
	res, err := c.CreateVM(ctx, vmRequest(sc, "", nil))
	if err != nil {
		b.Fatal(err)
	}
	disk, err := c.CreateDisk(ctx, diskRequest())
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := c.AttachDisk(ctx, res.CID, disk); err != nil {
			b.Fatal(err)
		}
		if err := c.DetachDisk(ctx, res.CID, disk); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkListVMs1000 measures ListVMs over 1,000 VMs of one director, as
// their records lie in the data dir (written directly: booting 1,000 agents
// would measure the machine, not the listing).
func BenchmarkListVMs1000(b *testing.B) {
	ctx := context.Background()
	c := newTestCPI(b)
	const n = 1000
	for i := range n {
		cid := newCID(kindVM)
		rec := vmRecord{CID: cid, AgentID: fmt.Sprintf("agent-%d", i), Tags: map[string]string{
			cpi.TagDirector: "bench", cpi.TagDeployment: "web", cpi.TagInstanceGroup: "web",
			cpi.TagInstanceID: fmt.Sprintf("id-%d", i), cpi.TagAgentID: fmt.Sprintf("agent-%d", i),
		}}
		if err := os.MkdirAll(c.vmDir(cid), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := writeJSON(filepath.Join(c.vmDir(cid), vmRecordFile), rec, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		vms, err := c.ListVMs(ctx, cpi.ListFilter{DirectorID: "bench"})
		if err != nil || len(vms) != n {
			b.Fatalf("ListVMs: %d vms, %v; want %d", len(vms), err, n)
		}
	}
}
