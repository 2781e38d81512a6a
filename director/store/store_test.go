package store_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/store/storesuite"
	"github.com/compleat/compleat/director/store/storetest"
)

func update(t *testing.T, s *store.Store, fn func(*store.Tx) error) {
	t.Helper()
	if err := s.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func view(t *testing.T, s *store.Store, fn func(*store.Tx) error) {
	t.Helper()
	if err := s.View(fn); err != nil {
		t.Fatal(err)
	}
}

func TestSecondOpenFailsWithErrLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	storetest.Open(t, path, store.Options{})
	_, err := store.Open(path, store.Options{Timeout: 100 * time.Millisecond})
	if !errors.Is(err, store.ErrLocked) {
		t.Fatalf("second open: err = %v, want ErrLocked", err)
	}
}

func TestReleasesAndFingerprintIndex(t *testing.T) {
	storesuite.Run(t, func(t *testing.T, b storesuite.Backend) {
		s := b.Open(t, "state", store.Options{})
		r := store.Release{Name: "web", Version: "1",
			Packages: []store.ReleasePackage{{Name: "nginx", Fingerprint: "fp-nginx", BlobID: "b1", SHA256: "s1"}},
			Jobs:     []store.ReleaseJob{{Name: "web", Fingerprint: "fp-web", BlobID: "b2", SHA256: "s2", Packages: []string{"nginx"}}},
		}
		update(t, s, func(tx *store.Tx) error { return tx.PutRelease(r) })
		err := s.Update(func(tx *store.Tx) error { return tx.PutRelease(r) })
		if !errors.Is(err, store.ErrExists) {
			t.Fatalf("second upload of web/1: err = %v, want ErrExists", err)
		}
		view(t, s, func(tx *store.Tx) error {
			pb, err := tx.PackageBlob("fp-nginx")
			if err != nil || pb.BlobID != "b1" {
				t.Errorf("package blob = %+v, %v", pb, err)
			}
			jb, err := tx.JobBlob("fp-web")
			if err != nil || jb.BlobID != "b2" {
				t.Errorf("job blob = %+v, %v", jb, err)
			}
			if _, err := tx.PackageBlob("nope"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("unknown fingerprint: err = %v", err)
			}
			rs, err := tx.Releases()
			if err != nil || len(rs) != 1 || rs[0].Jobs[0].Packages[0] != "nginx" || rs[0].UploadedAt.IsZero() {
				t.Errorf("releases = %+v, %v", rs, err)
			}
			_, err = tx.Release("web", "2")
			if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("missing release: err = %v", err)
			}
			return nil
		})
	})
}

func TestStemcellCIDsPerCPI(t *testing.T) {
	storesuite.Run(t, func(t *testing.T, b storesuite.Backend) {
		s := b.Open(t, "state", store.Options{})
		update(t, s, func(tx *store.Tx) error {
			return tx.PutStemcell(store.Stemcell{Name: "local", Version: "1", OS: "linux", CIDs: map[string]string{"local": "sc-1"}})
		})
		update(t, s, func(tx *store.Tx) error {
			sc, err := tx.Stemcell("local", "1")
			if err != nil {
				return err
			}
			sc.CIDs["other"] = "sc-2"
			return tx.PutStemcell(sc)
		})
		view(t, s, func(tx *store.Tx) error {
			scs, err := tx.Stemcells()
			if err != nil || len(scs) != 1 || len(scs[0].CIDs) != 2 {
				t.Errorf("stemcells = %+v, %v", scs, err)
			}
			return nil
		})
	})
}

func TestConfigsAreVersioned(t *testing.T) {
	storesuite.Run(t, func(t *testing.T, b storesuite.Backend) {
		s := b.Open(t, "state", store.Options{})
		var first, second store.Config
		update(t, s, func(tx *store.Tx) error {
			var changed bool
			var err error
			first, changed, err = tx.AddConfig(store.ConfigCloud, "", "azs: []")
			if !changed {
				t.Error("first config not reported as a change")
			}
			return err
		})
		update(t, s, func(tx *store.Tx) error {
			same, changed, err := tx.AddConfig(store.ConfigCloud, "default", "azs: []")
			if err != nil {
				return err
			}
			if changed || same.ID != first.ID {
				t.Errorf("same content: changed=%v id=%d, want unchanged %d", changed, same.ID, first.ID)
			}
			if _, _, err := tx.AddConfig(store.ConfigRuntime, "", "addons: []"); err != nil {
				return err
			}
			second, _, err = tx.AddConfig(store.ConfigCloud, "", "azs: [{name: z1}]")
			return err
		})
		view(t, s, func(tx *store.Tx) error {
			latest, err := tx.LatestConfig(store.ConfigCloud, "")
			if err != nil || latest.ID != second.ID || latest.Content != "azs: [{name: z1}]" {
				t.Errorf("latest cloud = %+v, %v", latest, err)
			}
			all, _ := tx.Configs(store.ConfigCloud, false)
			if len(all) != 2 {
				t.Errorf("cloud versions = %d, want 2", len(all))
			}
			latestAll, _ := tx.Configs("", true)
			if len(latestAll) != 2 {
				t.Errorf("latest of each = %+v, want cloud and runtime", latestAll)
			}
			if _, err := tx.LatestConfig(store.ConfigCPI, ""); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("no cpi config: err = %v", err)
			}
			return nil
		})
	})
}

func TestDeploymentInstancesVMsDisks(t *testing.T) {
	storesuite.Run(t, func(t *testing.T, b storesuite.Backend) {
		s := b.Open(t, "state", store.Options{})
		update(t, s, func(tx *store.Tx) error {
			if err := tx.PutDeployment(store.Deployment{Name: "web"}); err != nil {
				return err
			}
			if err := tx.PutDeployment(store.Deployment{Name: "web-2"}); err != nil {
				return err
			}
			for _, m := range []string{"name: web", "name: web # v2"} {
				if _, err := tx.AddManifest("web", m, 1); err != nil {
					return err
				}
			}
			for _, i := range []store.Instance{
				{Deployment: "web", Group: "web", ID: "a", Index: 0},
				{Deployment: "web", Group: "lb", ID: "b", Index: 0},
				{Deployment: "web-2", Group: "web", ID: "c", Index: 0},
			} {
				if err := tx.PutInstance(i); err != nil {
					return err
				}
			}
			if err := tx.PutVM(store.VM{CID: "vm-1", CPI: "local", Deployment: "web", InstanceID: "a"}); err != nil {
				return err
			}
			if err := tx.PutDisk(store.Disk{CID: "d-1", CPI: "local", Deployment: "web", InstanceID: "a", SizeMB: 1024}); err != nil {
				return err
			}
			return tx.PutCompiledPackage(store.CompiledPackage{Key: "k1", Name: "nginx", BlobID: "b9"})
		})
		view(t, s, func(tx *store.Tx) error {
			m, err := tx.Manifest("web", 0)
			if err != nil || m.ID != 2 || m.Content != "name: web # v2" {
				t.Errorf("newest manifest = %+v, %v", m, err)
			}
			insts, _ := tx.Instances("web")
			if len(insts) != 2 {
				t.Errorf("instances of web = %+v, want 2 (not web-2's)", insts)
			}
			vms, _ := tx.VMs("web")
			if len(vms) != 1 {
				t.Errorf("vms = %+v", vms)
			}
			cp, err := tx.CompiledPackage("k1")
			if err != nil || cp.BlobID != "b9" {
				t.Errorf("compiled = %+v, %v", cp, err)
			}
			return nil
		})
		update(t, s, func(tx *store.Tx) error { return tx.OrphanDisk("d-1") })
		update(t, s, func(tx *store.Tx) error { return tx.DeleteDeployment("web") })
		view(t, s, func(tx *store.Tx) error {
			orphans, _ := tx.Disks(true)
			if len(orphans) != 1 || orphans[0].InstanceID != "" || orphans[0].OrphanedAt.IsZero() {
				t.Errorf("orphaned disks = %+v", orphans)
			}
			if insts, _ := tx.Instances("web"); len(insts) != 0 {
				t.Errorf("instances after delete = %+v", insts)
			}
			if insts, _ := tx.Instances("web-2"); len(insts) != 1 {
				t.Errorf("web-2 instances touched: %+v", insts)
			}
			if _, err := tx.Manifest("web", 0); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("manifest after delete: %v", err)
			}
			return nil
		})
	})
}

func TestIPReservationsDoNotCollide(t *testing.T) {
	storesuite.Run(t, func(t *testing.T, b storesuite.Backend) {
		s := b.Open(t, "state", store.Options{})
		r := store.IPReservation{Network: "default", IP: "127.77.0.5", Deployment: "web", InstanceID: "a"}
		update(t, s, func(tx *store.Tx) error { return tx.ReserveIP(r) })
		update(t, s, func(tx *store.Tx) error { return tx.ReserveIP(r) }) // same owner: no-op
		other := r
		other.Deployment, other.InstanceID = "db", "z"
		if err := s.Update(func(tx *store.Tx) error { return tx.ReserveIP(other) }); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("reserve taken ip: err = %v, want ErrConflict", err)
		}
		update(t, s, func(tx *store.Tx) error { return tx.ReleaseIP("default", "127.77.0.5") })
		update(t, s, func(tx *store.Tx) error { return tx.ReserveIP(other) })
		view(t, s, func(tx *store.Tx) error {
			rs, _ := tx.IPReservations("default")
			if len(rs) != 1 || rs[0].Deployment != "db" {
				t.Errorf("reservations = %+v", rs)
			}
			return nil
		})
	})
}

func TestTasksAndEvents(t *testing.T) {
	storesuite.Run(t, func(t *testing.T, b storesuite.Backend) {
		s := b.Open(t, "state", store.Options{})
		var ids []uint64
		update(t, s, func(tx *store.Tx) error {
			for i := 0; i < 3; i++ {
				task, err := tx.CreateTask(store.Task{Type: "deploy", Deployment: "web"})
				if err != nil {
					return err
				}
				ids = append(ids, task.ID)
			}
			for i := 0; i < 4; i++ {
				if _, err := tx.AddEvent(store.Event{TaskID: ids[1], Stage: "Updating instance", Step: "web/0", State: "started"}); err != nil {
					return err
				}
			}
			return nil
		})
		if ids[0] != 1 || ids[2] != 3 {
			t.Fatalf("task ids = %v, want 1..3", ids)
		}
		if err := s.Update(func(tx *store.Tx) error {
			_, err := tx.AddEvent(store.Event{TaskID: 99, Stage: "x"})
			return err
		}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("event for missing task: err = %v", err)
		}
		view(t, s, func(tx *store.Tx) error {
			evs, _ := tx.Events(ids[1], 2)
			if len(evs) != 2 || evs[0].Seq != 3 || evs[1].Seq != 4 {
				t.Errorf("events after 2 = %+v", evs)
			}
			recent, _ := tx.Tasks(2, nil)
			if len(recent) != 2 || recent[0].ID != 3 {
				t.Errorf("recent = %+v", recent)
			}
			return nil
		})
	})
}

func TestLocksAreLeases(t *testing.T) {
	storesuite.Run(t, func(t *testing.T, b storesuite.Backend) {
		now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
		var mu sync.Mutex
		clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
		s := b.Open(t, "state", store.Options{Now: clock})

		acquire := func(owner string) error {
			return s.Update(func(tx *store.Tx) error {
				_, err := tx.AcquireLock("deployment:web", owner, 1, time.Minute)
				return err
			})
		}
		if err := acquire("task 1"); err != nil {
			t.Fatal(err)
		}
		if err := acquire("task 2"); !errors.Is(err, store.ErrLeaseHeld) {
			t.Fatalf("held lock: err = %v, want ErrLeaseHeld", err)
		}
		advance(50 * time.Second)
		if err := acquire("task 1"); err != nil { // renew
			t.Fatal(err)
		}
		advance(50 * time.Second)
		if err := acquire("task 2"); !errors.Is(err, store.ErrLeaseHeld) {
			t.Fatalf("renewed lock taken: %v", err)
		}
		advance(11 * time.Second) // task 1 died and stopped renewing
		if err := acquire("task 2"); err != nil {
			t.Fatalf("expired lease not free: %v", err)
		}
		view(t, s, func(tx *store.Tx) error {
			ls, _ := tx.Locks()
			if len(ls) != 1 || ls[0].Owner != "task 2" {
				t.Errorf("locks = %+v", ls)
			}
			return nil
		})
		update(t, s, func(tx *store.Tx) error { return tx.ReleaseLock("deployment:web", "task 1") }) // not ours: no-op
		update(t, s, func(tx *store.Tx) error { return tx.ReleaseLock("deployment:web", "task 2") })
		if err := acquire("task 3"); err != nil {
			t.Fatal(err)
		}
	})
}

func TestVariablesAreSealedAtRest(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	secret := `"s3cr3t-Pa55w0rd-value"`
	func() {
		s, err := store.Open(path, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		update(t, s, func(tx *store.Tx) error {
			return tx.PutVariable(store.Variable{Name: "/web/admin_password", Type: "password", Value: json.RawMessage(secret)})
		})
		view(t, s, func(tx *store.Tx) error {
			v, err := tx.Variable("/web/admin_password")
			if err != nil || string(v.Value) != secret {
				t.Errorf("variable = %s, %v", v.Value, err)
			}
			names, _ := tx.VariableNames()
			if len(names) != 1 || names[0].Value != nil {
				t.Errorf("names = %+v", names)
			}
			return nil
		})
	}()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("s3cr3t")) {
		t.Fatal("the secret is in the state file in clear")
	}
	// The same file with another key cannot unseal it.
	if err := os.WriteFile(filepath.Join(dir, "other.key"), bytes.Repeat([]byte{7}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	s := storetest.Open(t, path, store.Options{KeyPath: filepath.Join(dir, "other.key")})
	if err := s.View(func(tx *store.Tx) error { _, err := tx.Variable("/web/admin_password"); return err }); err == nil {
		t.Fatal("unsealed with the wrong key")
	}
}

func TestBackupIsAConsistentCopy(t *testing.T) {
	s := storetest.New(t)
	update(t, s, func(tx *store.Tx) error {
		return tx.PutRelease(store.Release{Name: "web", Version: "1"})
	})
	backup := filepath.Join(t.TempDir(), "backup.db")
	f, err := os.Create(backup)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Backup(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	copy := storetest.Open(t, backup, store.Options{KeyPath: s.Path() + ".key"})
	view(t, copy, func(tx *store.Tx) error {
		_, err := tx.Release("web", "1")
		return err
	})
}

// The etcd backend has no backup of its own: the error says to use etcdctl.
func TestEtcdBackupPointsAtEtcdctl(t *testing.T) {
	s := storesuite.Etcd().Open(t, "state", store.Options{})
	_, err := s.Backup(io.Discard)
	if err == nil || !strings.Contains(err.Error(), "etcdctl snapshot save") {
		t.Fatalf("backup on etcd: err = %v, want advice to use etcdctl", err)
	}
}

// A state file that holds data is never given a new variables key: with the
// key gone, Open fails naming it (a new key would leave every variable
// unreadable). A new file still gets one.
func TestMissingVariablesKeyIsNotRegenerated(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	update(t, s, func(tx *store.Tx) error {
		return tx.PutVariable(store.Variable{Name: "/web/pw", Type: "password", Value: json.RawMessage(`"x"`)})
	})
	s.Close()
	if err := os.Remove(path + ".key"); err != nil {
		t.Fatal(err)
	}
	_, err = store.Open(path, store.Options{})
	if !errors.Is(err, store.ErrKeyMissing) || !strings.Contains(err.Error(), "state.db.key") {
		t.Fatalf("open without its key: %v", err)
	}
	if _, err := os.Stat(path + ".key"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a new key was written: %v", err)
	}
}

func TestTaskArgumentsAreSealedAtRest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	args := json.RawMessage(`{"vars":{"admin_password":"s3cr3t-task-arg"}}`)
	func() {
		s, err := store.Open(path, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		var id uint64
		update(t, s, func(tx *store.Tx) error {
			tk, err := tx.CreateTask(store.Task{Type: "deploy", Deployment: "web", Args: args})
			id = tk.ID
			return err
		})
		view(t, s, func(tx *store.Tx) error {
			tk, err := tx.Task(id)
			if err != nil || string(tk.Args) != string(args) || tk.State != store.TaskQueued {
				t.Errorf("task = %+v, %v", tk, err)
			}
			all, err := tx.Tasks(0, nil)
			if err != nil || len(all) != 1 || string(all[0].Args) != string(args) {
				t.Errorf("tasks = %+v, %v", all, err)
			}
			return nil
		})
	}()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("s3cr3t-task-arg")) {
		t.Fatal("a task argument is in the state file in clear")
	}
}

func TestMain(m *testing.M) { os.Exit(storesuite.Main(m)) }
