package store_test

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/store/storetest"
)

var updateFixture = flag.Bool("update", false, "rewrite testdata/state-v1.db")

// The fixture is a state file written by schema version 1 with one record of
// every kind. Every later version must open it (upgrading it) and read the
// records back; rewrite it only for version 1 (`go test -run Fixture -update`).
const fixture = "testdata/state-v1.db"

func fill(t *testing.T, s *store.Store) {
	t.Helper()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	err := s.Update(func(tx *store.Tx) error {
		steps := []func() error{
			func() error {
				return tx.PutRelease(store.Release{Name: "web", Version: "1", UploadedAt: at,
					Jobs:     []store.ReleaseJob{{Name: "web", Fingerprint: "fj", BlobID: "bj", SHA256: "sj", Packages: []string{"app"}, Spec: json.RawMessage(`{"name":"web"}`)}},
					Packages: []store.ReleasePackage{{Name: "app", Fingerprint: "fp", BlobID: "bp", SHA256: "sp"}}})
			},
			func() error {
				return tx.PutStemcell(store.Stemcell{Name: "local", Version: "1", OS: "linux", CIDs: map[string]string{"local": "sc-1"}, UploadedAt: at})
			},
			func() error { _, _, err := tx.AddConfig(store.ConfigCloud, "", "azs: []\n"); return err },
			func() error { return tx.PutDeployment(store.Deployment{Name: "web", ManifestID: 1, CreatedAt: at}) },
			func() error { _, err := tx.AddManifest("web", "name: web\n", 1); return err },
			func() error {
				return tx.PutInstance(store.Instance{Deployment: "web", Group: "web", ID: "i-1", Index: 0, State: "started", VMCID: "vm-1"})
			},
			func() error { return tx.PutVM(store.VM{CID: "vm-1", CPI: "local", AgentID: "a-1", CreatedAt: at}) },
			func() error { return tx.PutDisk(store.Disk{CID: "d-1", CPI: "local", SizeMB: 1024, CreatedAt: at}) },
			func() error {
				return tx.ReserveIP(store.IPReservation{Network: "default", IP: "127.77.0.5", Deployment: "web", InstanceID: "i-1", ReservedAt: at})
			},
			func() error {
				return tx.PutCompiledPackage(store.CompiledPackage{Key: "k", Name: "app", BlobID: "bc", CreatedAt: at})
			},
			func() error {
				task, err := tx.CreateTask(store.Task{Type: "deploy", State: store.TaskDone})
				if err != nil {
					return err
				}
				_, err = tx.AddEvent(store.Event{TaskID: task.ID, Stage: "Updating instance", Step: "web/i-1", State: "finished", Time: at})
				return err
			},
			func() error {
				return tx.PutVariable(store.Variable{Name: "/web/pw", Type: "password", Value: json.RawMessage(`"fixture-secret"`), CreatedAt: at})
			},
			func() error {
				_, err := tx.AcquireLock("deployment:web", "task 1", 1, 100*365*24*time.Hour)
				return err
			},
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestFixtureOfVersion1StillOpens(t *testing.T) {
	if *updateFixture {
		os.MkdirAll("testdata", 0o755)
		os.Remove(fixture)
		os.Remove(fixture + ".key")
		s, err := store.Open(fixture, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		fill(t, s)
		s.Close()
	}
	// Work on a copy: opening upgrades the file in place.
	dir := t.TempDir()
	for _, f := range []string{fixture, fixture + ".key"} {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, filepath.Base(f)), raw, 0o600)
	}
	s := storetest.Open(t, filepath.Join(dir, "state-v1.db"), store.Options{})
	if v, _ := s.SchemaVersion(); v != store.SchemaVersion {
		t.Errorf("schema after open = %d, want %d", v, store.SchemaVersion)
	}
	view(t, s, func(tx *store.Tx) error {
		r, err := tx.Release("web", "1")
		if err != nil || r.Jobs[0].BlobID != "bj" || string(r.Jobs[0].Spec) != `{"name":"web"}` {
			t.Errorf("release = %+v, %v", r, err)
		}
		if sc, err := tx.Stemcell("local", "1"); err != nil || sc.CIDs["local"] != "sc-1" {
			t.Errorf("stemcell = %+v, %v", sc, err)
		}
		if c, err := tx.LatestConfig(store.ConfigCloud, ""); err != nil || c.Content != "azs: []\n" {
			t.Errorf("config = %+v, %v", c, err)
		}
		if m, err := tx.Manifest("web", 0); err != nil || m.Content != "name: web\n" {
			t.Errorf("manifest = %+v, %v", m, err)
		}
		if i, err := tx.Instance("web", "web", "i-1"); err != nil || i.VMCID != "vm-1" {
			t.Errorf("instance = %+v, %v", i, err)
		}
		if v, err := tx.VM("vm-1"); err != nil || v.AgentID != "a-1" {
			t.Errorf("vm = %+v, %v", v, err)
		}
		if d, err := tx.Disk("d-1"); err != nil || d.SizeMB != 1024 {
			t.Errorf("disk = %+v, %v", d, err)
		}
		if ips, err := tx.IPReservations("default"); err != nil || len(ips) != 1 {
			t.Errorf("ips = %+v, %v", ips, err)
		}
		if cp, err := tx.CompiledPackage("k"); err != nil || cp.BlobID != "bc" {
			t.Errorf("compiled = %+v, %v", cp, err)
		}
		if evs, err := tx.Events(1, 0); err != nil || len(evs) != 1 {
			t.Errorf("events = %+v, %v", evs, err)
		}
		if v, err := tx.Variable("/web/pw"); err != nil || string(v.Value) != `"fixture-secret"` {
			t.Errorf("variable = %s, %v", v.Value, err)
		}
		if ls, err := tx.Locks(); err != nil || len(ls) != 1 {
			t.Errorf("locks = %+v, %v", ls, err)
		}
		// Buckets added later without a schema change read as empty.
		if evs, err := tx.AuditEvents(store.AuditFilter{}); err != nil || len(evs) != 0 {
			t.Errorf("audit events of a version 1 file = %+v, %v", evs, err)
		}
		return nil
	})
}
