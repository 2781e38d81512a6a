package store_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/store/etcdtest"
	"github.com/compleat/compleat/director/store/storesuite"
)

// etcdClient is a plain client of the shared test server, to look at what
// the store wrote.
func etcdClient(t *testing.T) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{etcdtest.Shared(t).Endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func etcdGet(t *testing.T, c *clientv3.Client, key string, opts ...clientv3.OpOption) *clientv3.GetResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Get(ctx, key, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// The same schema as bbolt's, as readable keys under the prefix; the
// version key is where a director looks for it; variables stay sealed.
func TestEtcdLayoutAndSealing(t *testing.T) {
	dir := storesuite.Dir(t)
	opts := storesuite.Options(etcdtest.Shared(t), dir, "state")
	s, err := store.OpenEtcd(opts, store.Options{KeyPath: filepath.Join(dir, "state.key")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	update(t, s, func(tx *store.Tx) error {
		if err := tx.PutVariable(store.Variable{Name: "db_password", Type: "password", Value: []byte(`"hunter2-secret"`)}); err != nil {
			return err
		}
		_, err := tx.AddManifest("web", "name: web", 1)
		return err
	})
	c := etcdClient(t)
	if r := etcdGet(t, c, opts.Prefix+"meta/schema_version"); len(r.Kvs) != 1 || string(r.Kvs[0].Value) != fmt.Sprint(store.SchemaVersion) {
		t.Errorf("schema version key = %v", r.Kvs)
	}
	all := etcdGet(t, c, opts.Prefix, clientv3.WithPrefix())
	var keys []string
	for _, kv := range all.Kvs {
		keys = append(keys, string(kv.Key))
		if strings.Contains(string(kv.Value), "hunter2") {
			t.Errorf("%s holds a variable's value in clear: %s", kv.Key, kv.Value)
		}
	}
	for _, want := range []string{opts.Prefix + "variables/db_password", opts.Prefix + "manifests.776562#seq", opts.Prefix + "#commit"} {
		if !strings.Contains(strings.Join(keys, "\n"), want) {
			t.Errorf("keys %q lack %q", keys, want)
		}
	}
	view(t, s, func(tx *store.Tx) error {
		v, err := tx.Variable("db_password")
		if err != nil || string(v.Value) != `"hunter2-secret"` {
			t.Errorf("variable = %s, %v", v.Value, err)
		}
		return nil
	})
}

// Reopening the prefix finds the data; without its variables key the
// store refuses to open rather than make a new one.
func TestEtcdReopenAndMissingKey(t *testing.T) {
	dir := storesuite.Dir(t)
	opts := storesuite.Options(etcdtest.Shared(t), dir, "state")
	key := filepath.Join(dir, "state.key")
	s, err := store.OpenEtcd(opts, store.Options{KeyPath: key})
	if err != nil {
		t.Fatal(err)
	}
	update(t, s, func(tx *store.Tx) error { return tx.PutRelease(store.Release{Name: "web", Version: "1"}) })
	s.Close()
	s, err = store.OpenEtcd(opts, store.Options{KeyPath: key})
	if err != nil {
		t.Fatal(err)
	}
	view(t, s, func(tx *store.Tx) error { _, err := tx.Release("web", "1"); return err })
	s.Close()
	_, err = store.OpenEtcd(opts, store.Options{KeyPath: filepath.Join(dir, "other.key")})
	if !errors.Is(err, store.ErrKeyMissing) {
		t.Fatalf("open without key: err = %v, want ErrKeyMissing", err)
	}
}

// Two directors on one prefix: concurrent read-modify-write transactions
// (sequence numbers, a read then a write) lose nothing — the losers of a
// commit run again.
func TestEtcdConcurrentWritersAreSerialized(t *testing.T) {
	dir := storesuite.Dir(t)
	opts := storesuite.Options(etcdtest.Shared(t), dir, "state")
	key := filepath.Join(dir, "state.key")
	var stores []*store.Store
	for i := 0; i < 2; i++ {
		s, err := store.OpenEtcd(opts, store.Options{KeyPath: key})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		stores = append(stores, s)
	}
	var task store.Task
	update(t, stores[0], func(tx *store.Tx) error {
		var err error
		task, err = tx.CreateTask(store.Task{Type: "deploy"})
		return err
	})
	const writers, each = 4, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(s *store.Store) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				errs <- s.Batch(func(tx *store.Tx) error {
					_, err := tx.AddEvent(store.Event{TaskID: task.ID, Stage: "s"})
					return err
				})
			}
		}(stores[w%2])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	view(t, stores[1], func(tx *store.Tx) error {
		evs, err := tx.Events(task.ID, 0)
		if err != nil {
			return err
		}
		if len(evs) != writers*each {
			t.Errorf("events = %d, want %d", len(evs), writers*each)
		}
		for i, e := range evs {
			if e.Seq != uint64(i+1) {
				t.Fatalf("event %d has seq %d: lost or doubled writes", i, e.Seq)
			}
		}
		return nil
	})
}

// A transaction sees its own writes, also in range reads, and may write
// into a bucket it deleted (the commit then deletes the old keys one by
// one: etcd refuses a key written inside a range deleted in the same
// transaction).
func TestEtcdReadYourWritesAndDeletedBucket(t *testing.T) {
	s := storesuite.Etcd().Open(t, "state", store.Options{})
	update(t, s, func(tx *store.Tx) error {
		for _, m := range []string{"v1", "v2", "v3"} {
			if _, err := tx.AddManifest("web", m, 0); err != nil {
				return err
			}
		}
		return nil
	})
	update(t, s, func(tx *store.Tx) error {
		if err := tx.DeleteDeployment("web"); err != nil {
			return err
		}
		if _, err := tx.Manifest("web", 0); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("manifest after delete in the same transaction: %v", err)
		}
		m, err := tx.AddManifest("web", "v-new", 0)
		if err != nil {
			return err
		}
		if m.ID != 1 {
			t.Errorf("manifest id after delete = %d, want 1 (sequence restarts as in bbolt)", m.ID)
		}
		got, err := tx.Manifest("web", 0)
		if err != nil || got.Content != "v-new" {
			t.Errorf("own write: %+v, %v", got, err)
		}
		return nil
	})
	view(t, s, func(tx *store.Tx) error {
		for id, want := range map[uint64]string{0: "v-new", 1: "v-new"} {
			m, err := tx.Manifest("web", id)
			if err != nil || m.Content != want {
				t.Errorf("manifest %d = %+v, %v", id, m, err)
			}
		}
		if _, err := tx.Manifest("web", 2); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("old manifest 2 survived: %v", err)
		}
		return nil
	})
	if err := s.View(func(tx *store.Tx) error { return tx.PutRelease(store.Release{Name: "x", Version: "1"}) }); err == nil {
		t.Error("write in a view succeeded")
	}
}

// A transaction larger than the cluster takes fails whole, naming the
// limit, and writes nothing.
func TestEtcdTransactionLimit(t *testing.T) {
	dir := storesuite.Dir(t)
	opts := storesuite.Options(etcdtest.Shared(t), dir, "state")
	opts.MaxTxnOps = 128
	s, err := store.OpenEtcd(opts, store.Options{KeyPath: filepath.Join(dir, "state.key")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.Update(func(tx *store.Tx) error {
		for i := 0; i < 200; i++ {
			if err := tx.PutInstance(store.Instance{Deployment: "web", Group: "web", ID: fmt.Sprint(i)}); err != nil {
				return err
			}
		}
		return nil
	})
	if !errors.Is(err, store.ErrTxnTooLarge) || !strings.Contains(err.Error(), "128") {
		t.Fatalf("200 writes with max_txn_ops 128: err = %v", err)
	}
	view(t, s, func(tx *store.Tx) error {
		if insts, _ := tx.Instances("web"); len(insts) != 0 {
			t.Errorf("a failed transaction wrote %d instances", len(insts))
		}
		return nil
	})
}

// An unreachable cluster fails Open with an error naming it.
func TestEtcdUnreachable(t *testing.T) {
	dir := t.TempDir()
	_, err := store.OpenEtcd(store.EtcdOptions{Endpoints: []string{"http://127.0.0.1:1"}, DialTimeout: 300 * time.Millisecond},
		store.Options{KeyPath: filepath.Join(dir, "k")})
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("open unreachable etcd: err = %v", err)
	}
}

// Range reads longer than a page (256 records on etcd) come whole and in
// order, forwards and backwards, from a starting key, and stop early; also
// with the transaction's own writes merged in.
func TestLongRanges(t *testing.T) {
	storesuite.Run(t, func(t *testing.T, b storesuite.Backend) {
		s := b.Open(t, "state", store.Options{})
		const n = 600
		update(t, s, func(tx *store.Tx) error {
			for i := 0; i < n; i++ {
				if _, err := tx.CreateTask(store.Task{Type: "t"}); err != nil {
					return err
				}
			}
			for i := 0; i < n; i++ {
				if _, err := tx.AddEvent(store.Event{TaskID: 1, Stage: "s"}); err != nil {
					return err
				}
			}
			return nil
		})
		check := func(tx *store.Tx, extra int) {
			all, err := tx.Tasks(0, nil)
			if err != nil || len(all) != n+extra {
				t.Fatalf("tasks = %d, %v; want %d", len(all), err, n+extra)
			}
			for i, task := range all {
				if want := uint64(n + extra - i); task.ID != want {
					t.Fatalf("task %d has id %d, want %d (newest first)", i, task.ID, want)
				}
			}
			newest, _ := tx.Tasks(3, nil)
			if len(newest) != 3 || newest[0].ID != uint64(n+extra) {
				t.Errorf("newest 3 = %+v", newest)
			}
			evs, err := tx.Events(1, 290)
			if err != nil || len(evs) != n-290+extra || evs[0].Seq != 291 {
				t.Fatalf("events after 290 = %d, %v", len(evs), err)
			}
			for i, e := range evs {
				if e.Seq != uint64(291+i) {
					t.Fatalf("event %d has seq %d", i, e.Seq)
				}
			}
		}
		view(t, s, func(tx *store.Tx) error { check(tx, 0); return nil })
		update(t, s, func(tx *store.Tx) error {
			if _, err := tx.CreateTask(store.Task{Type: "t"}); err != nil {
				return err
			}
			if _, err := tx.AddEvent(store.Event{TaskID: 1, Stage: "s"}); err != nil {
				return err
			}
			check(tx, 1)
			return nil
		})
	})
}
