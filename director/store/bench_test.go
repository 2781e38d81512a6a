package store_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/store/etcdtest"
	"github.com/compleat/compleat/director/store/storetest"
)

// BenchmarkAddEvent measures recording one task event in its own write
// transaction (with fsync), as a running task does.
func BenchmarkAddEvent(b *testing.B) {
	s := storetest.New(b)
	var id uint64
	s.Update(func(tx *store.Tx) error {
		t, err := tx.CreateTask(store.Task{Type: "bench"})
		id = t.ID
		return err
	})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.Update(func(tx *store.Tx) error {
			_, err := tx.AddEvent(store.Event{TaskID: id, Stage: "Updating instance", Step: "web/0", State: "started"})
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInstances1000 measures reading a 1,000-instance deployment in one
// read transaction, as the planner's state loading does.
func BenchmarkInstances1000(b *testing.B) {
	s := storetest.New(b)
	s.Update(func(tx *store.Tx) error {
		for i := 0; i < 1000; i++ {
			if err := tx.PutInstance(store.Instance{Deployment: "big", Group: "web", ID: fmt.Sprintf("i-%04d", i), Index: i, State: "started"}); err != nil {
				return err
			}
		}
		return nil
	})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.View(func(tx *store.Tx) error {
			is, err := tx.Instances("big")
			if len(is) != 1000 {
				b.Fatalf("instances = %d", len(is))
			}
			return err
		})
	}
}

// BenchmarkAddEventParallel records events from parallel goroutines through
// Batch, as the steps of a stage running in parallel do.
func BenchmarkAddEventParallel(b *testing.B) {
	s := storetest.New(b)
	var id uint64
	s.Update(func(tx *store.Tx) error {
		t, err := tx.CreateTask(store.Task{Type: "bench"})
		id = t.ID
		return err
	})
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Batch(func(tx *store.Tx) error {
				_, err := tx.AddEvent(store.Event{TaskID: id, Stage: "Updating instance", Step: "web/0", State: "started"})
				return err
			}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAddEventBatchAlone is one goroutine recording through Batch: the
// cost a lone task pays for the shared commits.
func BenchmarkAddEventBatchAlone(b *testing.B) {
	s := storetest.New(b)
	var id uint64
	s.Update(func(tx *store.Tx) error {
		t, err := tx.CreateTask(store.Task{Type: "bench"})
		id = t.ID
		return err
	})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.Batch(func(tx *store.Tx) error {
			_, err := tx.AddEvent(store.Event{TaskID: id, Stage: "Updating instance", Step: "web/0", State: "started"})
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
}

// benchBackends runs fn on a bbolt file and on etcd (a single member in the
// process, syncing its log as a production member does), each store new.
func benchBackends(b *testing.B, fn func(b *testing.B, s *store.Store)) {
	b.Run("bbolt", func(b *testing.B) { fn(b, storetest.New(b)) })
	b.Run("etcd", func(b *testing.B) {
		srv := etcdtest.StartWith(b, etcdtest.Options{Fsync: true})
		dir := b.TempDir()
		s, err := store.OpenEtcd(store.EtcdOptions{Endpoints: []string{srv.Endpoint}, MaxTxnOps: etcdtest.MaxTxnOps},
			store.Options{KeyPath: filepath.Join(dir, "state.key")})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		fn(b, s)
	})
}

// BenchmarkNoOpDeploy1000 is the state traffic of a no-op deploy of a
// 1,000-instance deployment: one transaction that reads every instance
// record and writes each back, as the deployer records the instances it
// visited.
func BenchmarkNoOpDeploy1000(b *testing.B) {
	benchBackends(b, func(b *testing.B, s *store.Store) {
		if err := s.Update(func(tx *store.Tx) error {
			for i := 0; i < 1000; i++ {
				if err := tx.PutInstance(store.Instance{Deployment: "big", Group: "web", ID: fmt.Sprintf("i-%04d", i), Index: i, State: "started"}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := s.Update(func(tx *store.Tx) error {
				is, err := tx.Instances("big")
				if err != nil {
					return err
				}
				if len(is) != 1000 {
					return fmt.Errorf("instances = %d", len(is))
				}
				for _, in := range is {
					if err := tx.PutInstance(in); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkBackendAddEvent is BenchmarkAddEvent on both backends: one task
// event per write transaction.
func BenchmarkBackendAddEvent(b *testing.B) {
	benchBackends(b, func(b *testing.B, s *store.Store) {
		var id uint64
		s.Update(func(tx *store.Tx) error {
			t, err := tx.CreateTask(store.Task{Type: "bench"})
			id = t.ID
			return err
		})
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := s.Update(func(tx *store.Tx) error {
				_, err := tx.AddEvent(store.Event{TaskID: id, Stage: "Updating instance", Step: "web/0", State: "started"})
				return err
			}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkBackendInstances1000 is BenchmarkInstances1000 on both backends:
// a read transaction listing 1,000 instances.
func BenchmarkBackendInstances1000(b *testing.B) {
	benchBackends(b, func(b *testing.B, s *store.Store) {
		s.Update(func(tx *store.Tx) error {
			for i := 0; i < 1000; i++ {
				if err := tx.PutInstance(store.Instance{Deployment: "big", Group: "web", ID: fmt.Sprintf("i-%04d", i), Index: i, State: "started"}); err != nil {
					return err
				}
			}
			return nil
		})
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			s.View(func(tx *store.Tx) error {
				is, err := tx.Instances("big")
				if len(is) != 1000 {
					b.Fatalf("instances = %d", len(is))
				}
				return err
			})
		}
	})
}
