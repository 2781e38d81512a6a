package deploy

import (
	"fmt"
	"strings"
	"testing"
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
// a few hundred places: B/op is the memory the diff needs.
func BenchmarkManifestDiff20k(b *testing.B) {
	prev := bigManifest(20000, "v1")
	next := strings.ReplaceAll(bigManifest(20000, "v1"), "instances: 2\n  jobs:\n  - name: web\n    release: web\n    properties:\n      port: 8007", "instances: 3\n  jobs:\n  - name: web\n    release: web\n    properties:\n      port: 8007")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if redactedDiff(prev, next) == "" {
			b.Fatal("no diff")
		}
	}
}
