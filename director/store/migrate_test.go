package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/compleat/compleat/director/store/etcdtest"
)

// fillAll writes records of every kind, sealed ones and nested buckets
// among them, and leaves sequences past their records (a deleted task's
// events).
func fillAll(t *testing.T, s *Store) {
	t.Helper()
	err := s.Update(func(tx *Tx) error {
		steps := []func() error{
			func() error { return tx.PutRelease(Release{Name: "web", Version: "1"}) },
			func() error { _, _, err := tx.AddConfig(ConfigCPI, "", "secret_access_key: cpi-secret"); return err },
			func() error {
				return tx.PutDeployment(Deployment{Name: "web", Links: json.RawMessage(`{"pw":"link-secret"}`)})
			},
			func() error { _, err := tx.AddManifest("web", "name: web", 1); return err },
			func() error { _, err := tx.AddManifest("web", "name: web # 2", 2); return err },
			func() error { return tx.PutInstance(Instance{Deployment: "web", Group: "web", ID: "i-1"}) },
			func() error {
				return tx.PutVariable(Variable{Name: "/web/pw", Type: "password", Value: json.RawMessage(`"var-secret"`)})
			},
			func() error {
				_, err := tx.AddAuditEvent(AuditEvent{Action: "deploy", Deployment: "web"})
				return err
			},
			func() error { return tx.PutResurrectionSwitch(ResurrectionSwitch{Deployment: "web"}) },
			func() error {
				for i := 0; i < 3; i++ {
					task, err := tx.CreateTask(Task{Type: "deploy", Args: json.RawMessage(`{"a":1}`)})
					if err != nil {
						return err
					}
					for j := 0; j < 3; j++ {
						if _, err := tx.AddEvent(Event{TaskID: task.ID, Stage: "s"}); err != nil {
							return err
						}
					}
				}
				return tx.DeleteEvents(2)
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

func etcdStore(t *testing.T, prefix, key string, maxOps int) *Store {
	t.Helper()
	s, err := OpenEtcd(EtcdOptions{Endpoints: []string{etcdtest.Shared(t).Endpoint}, Prefix: prefix, MaxTxnOps: maxOps}, Options{KeyPath: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// bbolt → etcd → bbolt keeps every record and sequence byte for byte; a
// target with records is refused unless forced.
func TestCopyRoundTrip(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "state.db.key")
	src, err := Open(filepath.Join(dir, "state.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	fillAll(t, src)
	// Small transactions: the copy into etcd spans several.
	mid := etcdStore(t, fmt.Sprintf("/copy-%d/", time.Now().UnixNano()), key, 8)
	res, err := Copy(mid, src, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Records < 15 || res.Sequences < 5 {
		t.Errorf("copied %+v, want every record and sequence", res)
	}
	back, err := Open(filepath.Join(dir, "back.db"), Options{KeyPath: key})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if _, err := Copy(back, mid, false); err != nil {
		t.Fatal(err)
	}
	want, err := records(src)
	if err != nil {
		t.Fatal(err)
	}
	have, err := records(back)
	if err != nil {
		t.Fatal(err)
	}
	if err := sameRecords(want, have); err != nil {
		t.Fatalf("after bbolt → etcd → bbolt: %v", err)
	}
	if len(want) != res.Records+res.Sequences {
		t.Errorf("records %d, copy reported %+v", len(want), res)
	}
	// Typed reads agree, sealed values unsealed with the same key.
	if err := back.View(func(tx *Tx) error {
		v, err := tx.Variable("/web/pw")
		if err != nil || string(v.Value) != `"var-secret"` {
			return fmt.Errorf("variable = %s, %v", v.Value, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := back.Update(func(tx *Tx) error {
		task, err := tx.CreateTask(Task{Type: "x"})
		if err == nil && task.ID != 4 {
			err = fmt.Errorf("next task id after copy = %d, want 4 (the sequence copied)", task.ID)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}

	// The target now holds records: refused, then forced.
	if _, err := Copy(mid, back, false); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("copy onto a full target: err = %v, want ErrNotEmpty", err)
	}
	if _, err := Copy(mid, back, true); err != nil {
		t.Fatal(err)
	}
	if err := mid.View(func(tx *Tx) error {
		tasks, err := tx.Tasks(0, nil)
		if err == nil && len(tasks) != 4 {
			err = fmt.Errorf("tasks after forced copy = %d, want 4", len(tasks))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// Stores opened with different keys cannot be copied between: the target
// could not unseal what it received.
func TestCopyNeedsTheSameKey(t *testing.T) {
	dir := t.TempDir()
	a, err := Open(filepath.Join(dir, "a.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(filepath.Join(dir, "b.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := Copy(b, a, false); err == nil {
		t.Fatal("copy between stores with different keys succeeded")
	}
}
