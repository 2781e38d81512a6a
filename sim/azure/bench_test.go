package azure_test

import (
	"fmt"
	"testing"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/cpitest"
)

// BenchmarkCreateDeleteVM creates and deletes one VM (NIC, public IP, load
// balancer pool, VM with OS and ephemeral disks) through cpi-azure served
// over gRPC, against the simulator over HTTPS with operations that end at
// once and a 20 ms Retry-After. It reports the Resource Manager calls one
// CreateVM+DeleteVM makes (calls/op, polls included) and their split.
func BenchmarkCreateDeleteVM(b *testing.B) {
	s := newSim(b)
	c := cpitest.ServeInProcess(b, newCPI(b, s, nil))
	f := &fixture{s: s, ctx: b.Context()}
	st, err := c.CreateStemcell(f.ctx, stemcellRequest())
	if err != nil {
		b.Fatal(err)
	}
	f.stemcell = st
	before := s.Calls()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		req := f.request(fmt.Sprintf("bench-%d", i), "")
		res, err := c.CreateVM(f.ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.DeleteVM(f.ctx, res.CID); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	total := 0
	split := map[string]int{}
	for k, v := range s.Calls() {
		if d := v - before[k]; d > 0 {
			total += d
			split[k] = d
		}
	}
	b.ReportMetric(float64(total)/float64(b.N), "calls/op")
	for k, v := range split {
		b.Logf("%-50s %6.1f per create+delete", k, float64(v)/float64(b.N))
	}
}

func stemcellRequest() cpi.CreateStemcellRequest {
	return cpi.CreateStemcellRequest{CloudProperties: []byte(`{"image": {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "24.04.202601010"}}`)}
}
