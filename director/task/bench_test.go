package task_test

import (
	"fmt"
	"log/slog"
	"testing"

	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/store/storetest"
	"github.com/compleat/compleat/director/task"
)

// BenchmarkDispatchPass measures one dispatch pass over a store holding n
// finished tasks and one deployment's queue blocked behind its lock: the
// cost RunQueue pays every QueuePoll when nothing can start.
func BenchmarkDispatchPass(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n, "-finished"), func(b *testing.B) {
			s := storetest.New(b)
			err := s.Update(func(tx *store.Tx) error {
				for range n {
					if _, err := tx.CreateTask(store.Task{Type: "deploy", Deployment: "web", State: store.TaskDone, Result: "Deployed web: 2 updated, 0 deleted, 1 unchanged."}); err != nil {
						return err
					}
				}
				run, err := tx.CreateTask(store.Task{Type: "deploy", Deployment: "web", State: store.TaskProcessing})
				if err != nil {
					return err
				}
				if _, err := tx.AcquireLock(task.LockName("web"), fmt.Sprint("task ", run.ID), run.ID, 1<<40); err != nil {
					return err
				}
				for range 3 {
					if _, err := tx.CreateTask(store.Task{Type: "deploy", Deployment: "web", State: store.TaskQueued, Args: []byte(`{"manifest":"name: web"}`)}); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			m := task.NewManager(s, slog.New(slog.DiscardHandler), task.Options{})
			m.Register("deploy", nil)
			b.ResetTimer()
			for b.Loop() {
				if m.Dispatch() != 0 {
					b.Fatal("a task started behind a held lock")
				}
			}
		})
	}
}
