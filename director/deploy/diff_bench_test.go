package deploy

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/compleat/compleat/test/peakrss"
)

// bigManifest is a manifest of about lines lines: instance groups with
// properties, so that redaction and the line diff both have work to do.
func bigManifest(lines int, version string) string {
	var sb strings.Builder
	sb.WriteString("name: big\ninstance_groups:\n")
	for g := 0; sb.Len() == 0 || strings.Count(sb.String(), "\n") < lines; g++ {
		fmt.Fprintf(&sb, "- name: group-%d\n  instances: 2\n  jobs:\n  - name: web\n    release: web\n    properties:\n      port: %d\n      version: %s\n", g, 8000+g%100, version)
		if g%50 == 0 {
			version += "x"
		}
	}
	return sb.String()
}

// BenchmarkManifestDiff20k diffs two 20,000-line manifests that differ in
// a few hundred places: B/op is the memory the diff allocates, peak-rss-MB
// the process's peak resident set while diffing (the two manifests held).
// redact-B/op and linediff-B/op split B/op between the redaction (the
// manifests parsed and encoded again as YAML) and the line diff alone.
func BenchmarkManifestDiff20k(b *testing.B) {
	reset := peakrss.Reset()
	prev := bigManifest(20000, "v1")
	next := strings.ReplaceAll(bigManifest(20000, "v1"), "instances: 2\n  jobs:\n  - name: web\n    release: web\n    properties:\n      port: 8007", "instances: 3\n  jobs:\n  - name: web\n    release: web\n    properties:\n      port: 8007")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if redactedDiff(prev, next) == "" {
			b.Fatal("no diff")
		}
	}
	b.StopTimer()
	peakrss.Report(b, reset)
	a := redact(prev, func(string, string) string { return redacted })
	c := redact(next, func(string, string) string { return redacted })
	b.ReportMetric(allocBytes(func() {
		redact(prev, func(string, string) string { return redacted })
		redact(next, func(string, string) string { return redacted })
	}), "redact-B/op")
	b.ReportMetric(allocBytes(func() { lineDiff(a, c) }), "linediff-B/op")
}

// allocBytes is the number of bytes f allocates.
func allocBytes(f func()) float64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return float64(after.TotalAlloc - before.TotalAlloc)
}
