package compile_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/compleat/compleat/director/compile"
	"github.com/compleat/compleat/director/compile/compiletest"
)

// syntheticDAG is a 24-package release shaped like a real one: a toolchain
// chain at the bottom, libraries over it, services over those, and cheap
// leaves. Costs are in milliseconds of fake compile time.
func syntheticDAG() []compile.Package {
	spec := []struct {
		name string
		ms   int
		deps []string
	}{
		{"gcc", 40, nil},
		{"make", 5, nil},
		{"cmake", 15, []string{"gcc", "make"}},
		{"zlib", 8, []string{"gcc"}},
		{"openssl", 30, []string{"gcc", "zlib"}},
		{"libyaml", 6, []string{"gcc"}},
		{"libffi", 6, []string{"gcc"}},
		{"pcre", 8, []string{"gcc"}},
		{"sqlite", 12, []string{"gcc"}},
		{"python", 45, []string{"openssl", "libffi", "sqlite", "zlib"}},
		{"ruby", 40, []string{"openssl", "libyaml", "libffi"}},
		{"golang", 20, nil},
		{"nginx", 18, []string{"openssl", "pcre"}},
		{"postgres", 35, []string{"openssl", "cmake"}},
		{"redis", 10, []string{"gcc"}},
		{"webapp", 15, []string{"golang"}},
		{"worker", 12, []string{"golang", "redis"}},
		{"migrations", 8, []string{"ruby", "postgres"}},
		{"admin", 20, []string{"python", "postgres"}},
		{"metrics", 10, []string{"golang"}},
		{"docs", 4, nil},
		{"cli", 6, []string{"golang"}},
		{"lb", 5, []string{"nginx"}},
		{"certs", 3, []string{"openssl"}},
	}
	var pkgs []compile.Package
	for _, s := range spec {
		pkgs = append(pkgs, compile.Package{
			Name: s.name, Version: "1", Fingerprint: "fp-" + s.name,
			Dependencies: s.deps, Cost: time.Duration(s.ms) * time.Millisecond,
		})
	}
	return pkgs
}

// lowerBound is the most a schedule can achieve with w workers: the longer
// of the critical path and the total work spread over every worker.
func lowerBound(pkgs []compile.Package, w int) (critical, bound time.Duration) {
	byName := map[string]compile.Package{}
	for _, p := range pkgs {
		byName[p.Name] = p
	}
	memo := map[string]time.Duration{}
	var finish func(string) time.Duration
	finish = func(n string) time.Duration {
		if d, ok := memo[n]; ok {
			return d
		}
		var start time.Duration
		for _, d := range byName[n].Dependencies {
			start = max(start, finish(d))
		}
		memo[n] = start + byName[n].Cost
		return memo[n]
	}
	var total time.Duration
	for _, p := range pkgs {
		critical = max(critical, finish(p.Name))
		total += p.Cost
	}
	return critical, max(critical, total/time.Duration(w))
}

func BenchmarkCompileDAG(b *testing.B) {
	pkgs := syntheticDAG()
	for _, workers := range []int{2, 4, 8} {
		for _, naive := range []bool{false, true} {
			name := fmt.Sprintf("workers=%d/critical-path", workers)
			opts := compile.Options{Workers: workers, ReuseVMs: true}
			if naive {
				name = fmt.Sprintf("workers=%d/naive", workers)
				opts = compile.NaiveOrder(opts)
			}
			b.Run(name, func(b *testing.B) {
				critical, bound := lowerBound(pkgs, workers)
				var wall time.Duration
				for b.Loop() {
					cloud := compiletest.NewCloud(0)
					for _, p := range pkgs {
						cloud.Durations[p.Name] = p.Cost
					}
					c := compile.New(cloud, compiletest.NewCache(), nil)
					start := time.Now()
					if _, err := c.Compile(context.Background(), []compile.Target{{Stemcell: ubuntu, Packages: pkgs}}, opts); err != nil {
						b.Fatal(err)
					}
					wall += time.Since(start)
				}
				avg := wall / time.Duration(b.N)
				b.ReportMetric(float64(avg.Milliseconds()), "wall-ms")
				b.ReportMetric(float64(critical.Milliseconds()), "critical-path-ms")
				b.ReportMetric(float64(bound.Milliseconds()), "lower-bound-ms")
				b.ReportMetric(float64(avg)/float64(bound), "wall/bound")
			})
		}
	}
}
