package deploy

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/director/plan"
	"github.com/compleat/compleat/director/store"
)

func record(t *testing.T, jobFP, pkgFP string) store.Instance {
	t.Helper()
	raw, err := json.Marshal(plan.InstanceState{
		Jobs:     []plan.JobState{{Name: "web", Release: "web", Fingerprint: jobFP}},
		Packages: map[string]string{"webapp": pkgFP, "golang": "g1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return store.Instance{ID: "i", Spec: raw}
}

func uploaded(version, jobFP, pkgFP string, uploaded int) store.Release {
	return store.Release{
		Name: "web", Version: version,
		Jobs:       []store.ReleaseJob{{Name: "web", Fingerprint: jobFP}, {Name: "lb", Fingerprint: "lb1"}},
		Packages:   []store.ReleasePackage{{Name: "webapp", Fingerprint: pkgFP}, {Name: "golang", Fingerprint: "g1"}},
		UploadedAt: time.Date(2026, 1, uploaded, 0, 0, 0, 0, time.UTC),
	}
}

const latestManifest = `name: zdt
releases:
- name: web
  version: latest
- name: other
  version: "7"
instance_groups: []
`

func TestPinLatest(t *testing.T) {
	// Versions 2 and 3 share the web job; only the webapp package differs.
	rels := []store.Release{uploaded("1", "j1", "p1", 1), uploaded("2", "j2", "p2", 2), uploaded("3", "j2", "p3", 3)}
	out, pinned, unresolved, err := pinLatest(latestManifest, []store.Instance{record(t, "j2", "p2")}, rels)
	if err != nil {
		t.Fatal(err)
	}
	if len(pinned) != 1 || pinned[0] != "web 2" || len(unresolved) != 0 {
		t.Fatalf("pinned %v, unresolved %v; want web 2", pinned, unresolved)
	}
	if !strings.Contains(out, `version: "2"`) || !strings.Contains(out, `version: "7"`) || strings.Contains(out, "latest") {
		t.Errorf("manifest after pinning:\n%s", out)
	}
}

func TestPinLatestUnknown(t *testing.T) {
	rels := []store.Release{uploaded("3", "j3", "p3", 3)}
	// Nothing the instances run matches an upload, or there is no
	// instance left unchanged: the release stays at latest.
	for _, recs := range [][]store.Instance{{record(t, "j2", "p2")}, nil} {
		out, pinned, unresolved, err := pinLatest(latestManifest, recs, rels)
		if err != nil {
			t.Fatal(err)
		}
		if out != latestManifest || len(pinned) != 0 || len(unresolved) != 1 {
			t.Errorf("pinned %v, unresolved %v, manifest:\n%s", pinned, unresolved, out)
		}
	}
}

func TestPinLatestPinnedManifest(t *testing.T) {
	m := "name: zdt\nreleases:\n- name: web\n  version: \"2\"\n"
	out, pinned, _, err := pinLatest(m, []store.Instance{record(t, "j2", "p2")}, nil)
	if err != nil || out != m || len(pinned) != 0 {
		t.Errorf("a manifest without latest changed: %v %v\n%s", err, pinned, out)
	}
}
