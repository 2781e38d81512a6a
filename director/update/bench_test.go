package update_test

import (
	"context"
	"testing"
	"time"

	"github.com/compleat/compleat/director/update"
	"github.com/compleat/compleat/director/update/updatetest"
)

// BenchmarkRollout100 updates 100 instances in two AZs, 1 canary and
// max_in_flight 10, each instance taking perInstance in its start step. The
// lower bound is the schedule's: the number of sequential batches times the
// per-instance time.
func BenchmarkRollout100(b *testing.B) {
	const perInstance = 20 * time.Millisecond
	var wall time.Duration
	var bound time.Duration
	for b.Loop() {
		x := updatetest.New()
		x.Delay["start"] = perInstance
		g := group(x, "web", 100, upd(1, 10, true), "z1", "z2")
		bound = time.Duration(len(update.Batches(g))) * perInstance
		start := time.Now()
		if _, err := update.New(x, nil).Run(context.Background(), update.Rollout{Groups: []update.Group{g}}, update.Options{}); err != nil {
			b.Fatal(err)
		}
		wall += time.Since(start)
	}
	avg := wall / time.Duration(b.N)
	b.ReportMetric(float64(avg.Milliseconds()), "wall-ms")
	b.ReportMetric(float64(bound.Milliseconds()), "lower-bound-ms")
	b.ReportMetric(float64(avg)/float64(bound), "wall/bound")
}
