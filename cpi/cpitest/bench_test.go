package cpitest_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/cpitest"
)

// BenchmarkListVMs1000 measures ListVMs over 1,000 VMs through the plugin
// boundary: the Fake served over real gRPC in-process, so the figure is the
// contract's cost (encoding 1,000 VMs with their tags) more than a cloud's.
func BenchmarkListVMs1000(b *testing.B) {
	ctx := context.Background()
	f := cpitest.NewFake()
	c := cpitest.ServeInProcess(b, f)
	sc, err := c.CreateStemcell(ctx, cpi.CreateStemcellRequest{ImagePath: "image"})
	if err != nil {
		b.Fatal(err)
	}
	const n = 1000
	for i := range n {
		_, err := c.CreateVM(ctx, cpi.CreateVMRequest{
			AgentID: fmt.Sprintf("agent-%d", i), StemcellCID: sc,
			Networks: map[string]cpi.Network{"default": {Type: "dynamic"}},
			Tags: map[string]string{
				cpi.TagDirector: "bench", cpi.TagDeployment: "web", cpi.TagInstanceGroup: "web",
				cpi.TagInstanceID: fmt.Sprintf("id-%d", i), cpi.TagAgentID: fmt.Sprintf("agent-%d", i),
			},
		})
		if err != nil {
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
