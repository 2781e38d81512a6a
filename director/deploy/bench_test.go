package deploy_test

// Benchmarks of the whole deploy pipeline (the real Deployer, store,
// blobstore, task manager and mTLS bus) against the fake cloud and the
// fake agents of fleet_test.go. The agents answer at once, so the figures
// are the director's own work: planning, rendering, recording, CPI and bus
// round trips. BOSH's figure for comparison: a no-op deploy of 175
// instances takes about 130 s (about 740 ms per instance).
//
//	go test -run '^$' -bench '1000$|Update100' -benchtime 3x ./director/deploy/
//	go test -run '^$' -bench '10000$' -benchtime 1x ./director/deploy/  # about 100 s

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/director/manifest"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/update"
	"github.com/compleat/compleat/test/peakrss"
)

const benchInstances = 1000

func reportPerInstance(b *testing.B, total time.Duration, n int) {
	b.ReportMetric(total.Seconds()/float64(b.N), "s/deploy")
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N)/float64(n), "ms/instance")
}

// BenchmarkPlan1000 is a dry run of a first deploy of 1,000 instances: the
// manifest loaded, the release's jobs read, addresses assigned on a manual
// network, every instance's templates rendered, the plan formatted and the
// manifest diff recorded.
func BenchmarkPlan1000(b *testing.B) { benchPlan(b, benchInstances) }

// BenchmarkPlan10000 is BenchmarkPlan1000 with 10,000 instances.
func BenchmarkPlan10000(b *testing.B) { benchPlan(b, 10*benchInstances) }

func benchPlan(b *testing.B, n int) {
	reset := peakrss.Reset()
	r := newRig(b)
	m := benchManifest(n, "v1", 0)
	var total time.Duration
	for b.Loop() {
		start := time.Now()
		res, _ := r.deploy(m, true)
		total += time.Since(start)
		if !strings.Contains(res, fmt.Sprintf("%d to create", n)) {
			b.Fatalf("dry run result: %.300s", res)
		}
	}
	reportPerInstance(b, total, n)
	peakrss.Report(b, reset)
}

// BenchmarkFirstDeploy1000 deploys 1,000 new instances: 1,000 VMs created
// (bus certificate, intent and result recorded, metadata, agent ping),
// rendered jobs stored, then the rollout with 1 canary and max_in_flight 10
// (apply, pre-start, start, get_state, post-start) and post-deploy on all.
// Each iteration starts from an empty director (set up outside the timing).
func BenchmarkFirstDeploy1000(b *testing.B) { benchFirstDeploy(b, benchInstances) }

// BenchmarkFirstDeploy10000 is BenchmarkFirstDeploy1000 with 10,000
// instances (about a minute on two cores).
func BenchmarkFirstDeploy10000(b *testing.B) { benchFirstDeploy(b, 10*benchInstances) }

func benchFirstDeploy(b *testing.B, n int) {
	reset := peakrss.Reset()
	m := benchManifest(n, "v1", 0)
	var total time.Duration
	for b.Loop() {
		b.StopTimer()
		r := newRig(b)
		b.StartTimer()
		start := time.Now()
		res, _ := r.deploy(m, false)
		total += time.Since(start)
		if !strings.Contains(res, fmt.Sprintf("%d updated", n)) || len(r.cloud.VMs()) != n {
			b.Fatalf("first deploy: %q, %d VMs", res, len(r.cloud.VMs()))
		}
	}
	reportPerInstance(b, total, n)
	peakrss.Report(b, reset)
}

// BenchmarkNoopRedeploy1000 deploys, again, the manifest 1,000 instances
// already run: recorded state checked (every VM asked of the cloud with
// HasVM), inputs loaded, the plan computed and found empty. BOSH: ~130 s
// for 175 instances.
func BenchmarkNoopRedeploy1000(b *testing.B) { benchNoop(b, benchInstances) }

// BenchmarkNoopRedeploy10000 is BenchmarkNoopRedeploy1000 with 10,000
// instances.
func BenchmarkNoopRedeploy10000(b *testing.B) { benchNoop(b, 10*benchInstances) }

func benchNoop(b *testing.B, n int) {
	r := newRig(b)
	m := benchManifest(n, "v1", 0)
	r.deploy(m, false)
	reset := peakrss.Reset() // the peak of the no-op deploys, not of the first
	var total time.Duration
	for b.Loop() {
		start := time.Now()
		res, evs := r.deploy(m, false)
		total += time.Since(start)
		if res != "No changes: nothing to do." || stageEvents(evs, "Updating instance", "started") != 0 {
			b.Fatalf("no-op deploy: %q", res)
		}
	}
	reportPerInstance(b, total, n)
	peakrss.Report(b, reset)
}

// BenchmarkUpdate100 changes a property of 100 running instances (two AZs,
// 1 canary, max_in_flight 10, watch times from 100 ms) through the whole
// pipeline and compares the wall time with the schedule's lower bound: the
// number of sequential batches times the minimum watch time, before which
// no instance of a batch can be declared running. wall-s is the whole
// deploy (plan, rendered jobs, post-deploy included); rollout-s is the
// "Updating instance" stage alone. (director/update's BenchmarkRollout100
// measures the same schedule with a fake executor.)
func BenchmarkUpdate100(b *testing.B) {
	const n = 100
	const minWatch = 100 * time.Millisecond
	r := newRig(b)
	r.deploy(benchManifest(n, "v0", minWatch), false)
	bound := time.Duration(len(update.Batches(r.group(n)))) * minWatch
	var total, rollout time.Duration
	version := 0
	for b.Loop() {
		version++
		start := time.Now()
		res, evs := r.deploy(benchManifest(n, fmt.Sprintf("v%d", version), minWatch), false)
		total += time.Since(start)
		if stageEvents(evs, "Updating instance", "finished") != n {
			b.Fatalf("update: %q", res)
		}
		rollout += stageSpan(evs, "Updating instance")
	}
	avg := total / time.Duration(b.N)
	b.ReportMetric(avg.Seconds(), "wall-s")
	b.ReportMetric((rollout / time.Duration(b.N)).Seconds(), "rollout-s")
	b.ReportMetric(bound.Seconds(), "lower-bound-s")
	b.ReportMetric(float64(avg)/float64(bound), "wall/bound")
	b.ReportMetric(float64(rollout)/float64(b.N)/float64(bound), "rollout/bound")
}

// stageSpan is the time from a stage's first event to its last.
func stageSpan(evs []store.Event, stage string) time.Duration {
	var first, last time.Time
	for _, e := range evs {
		if e.Stage != stage {
			continue
		}
		if first.IsZero() {
			first = e.Time
		}
		last = e.Time
	}
	return last.Sub(first)
}

// group is the deployment's app group as the updater batches it when every
// instance changes.
func (r *rig) group(n int) update.Group {
	g := update.Group{
		Name:   "app",
		Update: manifest.Update{Canaries: manifest.Amount{N: 1}, MaxInFlight: manifest.Amount{N: 10}, Serial: true},
		AZs:    []string{"z1", "z2"},
	}
	r.store.View(func(tx *store.Tx) error {
		insts, err := tx.Instances("big")
		for _, in := range insts {
			g.Instances = append(g.Instances, update.Instance{Group: in.Group, ID: in.ID, Index: in.Index, AZ: in.AZ, Changes: []string{"properties changed"}})
		}
		return err
	})
	if len(g.Instances) != n {
		r.tb.Fatalf("%d instances recorded, want %d", len(g.Instances), n)
	}
	return g
}
