package main

import (
	"testing"
	"time"

	dmanifest "github.com/compleat/compleat/director/manifest"
)

func at(s float64) time.Time {
	return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(s * float64(time.Second)))
}

func ev(t float64, stage, step, state string) event {
	return event{Time: at(t), Stage: stage, Step: step, State: state}
}

func TestLowerBound(t *testing.T) {
	evs := []event{
		ev(0, "Compiling packages", "webapp", "started"),
		ev(2, "Compiling packages", "webapp", "finished"),
		ev(1, "Compiling packages", "lb", "started"),
		ev(2.5, "Compiling packages", "lb", "finished"),
		ev(3, "Creating missing vms", "web/a", "started"),
		ev(3, "Creating missing vms", "web/b", "started"),
		ev(3.4, "Creating missing vms", "web/a", "finished"),
		ev(3.6, "Creating missing vms", "web/b", "finished"),
		// web: canary a, then b and c together (max_in_flight 2), then d.
		ev(4, updateStage, "web/a", "started"),
		ev(9, updateStage, "web/a", "finished"),
		ev(9, updateStage, "web/b", "started"),
		ev(9, updateStage, "web/c", "started"),
		ev(14.5, updateStage, "web/b", "finished"),
		ev(15, updateStage, "web/c", "finished"),
		ev(15, updateStage, "web/d", "started"),
		ev(20, updateStage, "web/d", "finished"),
		ev(20, updateStage, "lb/x", "started"),
		ev(23, updateStage, "lb/x", "finished"),
		ev(23, "Running post-deploy", "web/a", "started"),
		ev(23.2, "Running post-deploy", "web/a", "finished"),
	}
	b := lowerBound(evs)
	if b.batches != 4 {
		t.Errorf("batches = %d, want 4 (3 of web, 1 of lb)", b.batches)
	}
	if b.perGroup["web"] != 5*time.Second || b.perGroup["lb"] != 3*time.Second {
		t.Errorf("fastest per group = %v", b.perGroup)
	}
	if b.compile != 2500*time.Millisecond {
		t.Errorf("compile = %v, want its span 2.5s", b.compile)
	}
	if want := 600*time.Millisecond + 200*time.Millisecond; b.parallel != want {
		t.Errorf("parallel stages = %v, want the longest step of each, %v", b.parallel, want)
	}
	if want := 3*5*time.Second + 3*time.Second + 800*time.Millisecond + 2500*time.Millisecond; b.total != want {
		t.Errorf("total = %v, want %v", b.total, want)
	}
}

func TestBatchesOfFailedCanary(t *testing.T) {
	// A canary failing after its watch time, then (rollback) the same
	// instance updated again in 5 s.
	cost, n, fastest := batchesOf([]span{
		{stage: updateStage, step: "web/a", start: at(0), end: at(13), failed: true},
		{stage: updateStage, step: "web/a", start: at(15), end: at(20)},
	})
	if n != 2 || fastest != 5*time.Second || cost != 18*time.Second {
		t.Errorf("got %d batches, fastest %v, cost %v; want 2, 5s, 18s", n, fastest, cost)
	}
}

func TestSummarise(t *testing.T) {
	ss := []sample{
		{latency: time.Millisecond, status: 200, version: "v2"},
		{latency: 2 * time.Millisecond, status: 200, version: "v1"},
		{latency: 3 * time.Millisecond, status: 503},
		{latency: 4 * time.Millisecond, err: "dial tcp: connection refused"},
	}
	st := summarise(ss, set("v2"))
	if st.requests != 4 || st.failures != 3 {
		t.Errorf("requests=%d failures=%d, want 4 and 3 (wrong version, 503, connection error)", st.requests, st.failures)
	}
	if st.p50 != 2*time.Millisecond || st.p99 != 4*time.Millisecond {
		t.Errorf("p50=%v p99=%v", st.p50, st.p99)
	}
	if st := summarise(ss[:2], nil); st.failures != 0 {
		t.Errorf("without a version to check, %d failures", st.failures)
	}
}

// The manifests the harness writes are valid deployment manifests.
func TestManifestParses(t *testing.T) {
	for _, o := range []manifestOpts{
		{prefix: "127.200.", release: "1", version: "v1", stemcell: "1", webInstances: 4},
		{name: "rb", prefix: "127.200.", release: "3", version: "v3", stemcell: "2", webInstances: 2, lbs: -1,
			vmStrategy: "create-swap-delete", autoRollback: true, canaryWatch: "1000-3000", maxInFlight: 2},
	} {
		d, err := dmanifest.ParseDeployment("zdt.yml", []byte(manifest(o)))
		if err != nil {
			t.Fatalf("%v\n%s", err, manifest(o))
		}
		if len(d.InstanceGroups) == 0 || d.InstanceGroups[0].Instances != o.webInstances {
			t.Errorf("instance groups: %+v", d.InstanceGroups)
		}
	}
}
