package task_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/store/storetest"
	"github.com/compleat/compleat/director/task"
)

func logger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, nil))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// follow streams a task's events until it finishes.
func follow(t *testing.T, m *task.Manager, id uint64) ([]store.Event, store.Task) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var all []store.Event
	var after uint64
	for {
		evs, tk, err := m.Wait(ctx, id, after)
		if err != nil {
			t.Fatalf("wait task %d: %v", id, err)
		}
		all = append(all, evs...)
		if len(evs) > 0 {
			after = evs[len(evs)-1].Seq
			continue
		}
		if tk.Finished() {
			return all, tk
		}
	}
}

func TestTaskRecordsStagesAndResult(t *testing.T) {
	s := storetest.New(t)
	m := task.NewManager(s, logger(t), task.Options{})
	tk, err := m.Start(context.Background(), task.Spec{Type: "test", Description: "two steps"}, func(ctx context.Context, r *task.Reporter) (string, error) {
		st := r.Stage("Updating instance", 2)
		if err := st.Run("web/0", func() error { return nil }, "canary"); err != nil {
			return "", err
		}
		st.Run("web/1", func() error { return errors.New("boom") })
		return "all good", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	evs, final := follow(t, m, tk.ID)
	if final.State != store.TaskDone || final.Result != "all good" {
		t.Errorf("task = %+v", final)
	}
	if len(evs) != 4 {
		t.Fatalf("events = %+v, want 4", evs)
	}
	if evs[0].State != "started" || evs[0].Tags[0] != "canary" || evs[0].Index != 1 || evs[0].Total != 2 {
		t.Errorf("first event = %+v", evs[0])
	}
	if evs[3].State != "failed" || evs[3].Error != "boom" || evs[3].Step != "web/1" {
		t.Errorf("last event = %+v", evs[3])
	}
}

// TestEveryEventIsWrittenBeforeTheTaskEnds: events are written behind the
// steps that report them, yet a follower reads all of them, each step's in
// the order reported, before the task's end; a direct read of the store
// after the end finds them too.
func TestEveryEventIsWrittenBeforeTheTaskEnds(t *testing.T) {
	s := storetest.New(t)
	m := task.NewManager(s, logger(t), task.Options{})
	const steps, notes = 16, 50
	tk, err := m.Start(context.Background(), task.Spec{Type: "test"}, func(ctx context.Context, r *task.Reporter) (string, error) {
		var wg sync.WaitGroup
		for i := range steps {
			wg.Go(func() {
				for j := range notes {
					r.Event(store.Event{Stage: "Notes", Step: fmt.Sprint(i), Index: j, State: "info"})
				}
			})
		}
		wg.Wait()
		// The last one right before the end: written after it unless
		// the end waits for the writer.
		r.Event(store.Event{Stage: "Notes", Step: "last", State: "info"})
		return "done", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	evs, final := follow(t, m, tk.ID)
	if final.State != store.TaskDone {
		t.Fatalf("task = %+v", final)
	}
	check := func(how string, evs []store.Event) {
		t.Helper()
		if len(evs) != steps*notes+1 || evs[len(evs)-1].Step != "last" {
			t.Fatalf("%s: %d events, want %d ending with the last one reported", how, len(evs), steps*notes+1)
		}
		next := map[string]int{}
		for k, e := range evs {
			if e.Seq != uint64(k+1) || e.Time.IsZero() {
				t.Fatalf("%s: event %d has seq %d, time %v", how, k, e.Seq, e.Time)
			}
			if e.Index != next[e.Step] {
				t.Fatalf("%s: step %s's event %d came as its %dth", how, e.Step, e.Index, next[e.Step])
			}
			next[e.Step]++
		}
	}
	check("followed", evs)
	var stored []store.Event
	s.View(func(tx *store.Tx) error {
		stored, err = tx.Events(tk.ID, 0)
		return err
	})
	check("stored", stored)
}

func TestCancelStopsAtTheNextSafePoint(t *testing.T) {
	s := storetest.New(t)
	m := task.NewManager(s, logger(t), task.Options{})
	started := make(chan struct{})
	tk, err := m.Start(context.Background(), task.Spec{Type: "test", Deployment: "web"}, func(ctx context.Context, r *task.Reporter) (string, error) {
		close(started)
		for {
			if err := task.Checkpoint(ctx); err != nil {
				return "", err
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	<-started
	if err := m.Cancel(tk.ID); err != nil {
		t.Fatal(err)
	}
	_, final := follow(t, m, tk.ID)
	if final.State != store.TaskCancelled {
		t.Errorf("state = %s, want cancelled", final.State)
	}
	if err := m.Cancel(tk.ID); err == nil {
		t.Error("cancelling a finished task succeeded")
	}
	var locks []store.Lock
	s.View(func(tx *store.Tx) error { locks, _ = tx.Locks(); return nil })
	if len(locks) != 0 {
		t.Errorf("locks left after cancel: %+v", locks)
	}
}

func TestDeploymentLockIsExclusiveAndReleased(t *testing.T) {
	s := storetest.New(t)
	m := task.NewManager(s, logger(t), task.Options{LockTTL: 90 * time.Millisecond})
	release := make(chan struct{})
	running := make(chan struct{})
	first, _ := m.Start(context.Background(), task.Spec{Type: "deploy", Deployment: "web"}, func(ctx context.Context, r *task.Reporter) (string, error) {
		close(running)
		<-release
		return "", nil
	})
	<-running
	// Outlive several lease periods: the running task keeps renewing it.
	time.Sleep(250 * time.Millisecond)
	second, _ := m.Start(context.Background(), task.Spec{Type: "deploy", Deployment: "web"}, func(ctx context.Context, r *task.Reporter) (string, error) {
		return "ran", nil
	})
	if got := taskState(t, s, second.ID); got.State != store.TaskQueued {
		t.Errorf("second task while the first holds the lock = %+v, want queued", got)
	}
	close(release)
	follow(t, m, first.ID)
	if _, f2 := follow(t, m, second.ID); f2.State != store.TaskDone || f2.Result != "ran" {
		t.Errorf("second task = %+v, want done once the first ended", f2)
	}
	var locks []store.Lock
	s.View(func(tx *store.Tx) error { locks, _ = tx.Locks(); return nil })
	if len(locks) != 0 {
		t.Errorf("locks left: %+v", locks)
	}
}

func TestRecoverMarksLeftoverTasksFailed(t *testing.T) {
	s := storetest.New(t)
	var left store.Task
	s.Update(func(tx *store.Tx) error {
		var err error
		left, err = tx.CreateTask(store.Task{Type: "deploy", Deployment: "web", State: store.TaskProcessing})
		if err != nil {
			return err
		}
		_, err = tx.AcquireLock(task.LockName("web"), "task 1", left.ID, time.Hour)
		return err
	})
	m := task.NewManager(s, logger(t), task.Options{})
	n, err := m.Recover()
	if err != nil || n != 1 {
		t.Fatalf("recover = %d, %v", n, err)
	}
	s.View(func(tx *store.Tx) error {
		got, _ := tx.Task(left.ID)
		if got.State != store.TaskError || got.Error != task.RestartedReason {
			t.Errorf("left task = %+v", got)
		}
		if ls, _ := tx.Locks(); len(ls) != 0 {
			t.Errorf("locks = %+v", ls)
		}
		return nil
	})
}

func TestShutdownCancelsRunningTasks(t *testing.T) {
	s := storetest.New(t)
	m := task.NewManager(s, logger(t), task.Options{})
	tk, _ := m.Start(context.Background(), task.Spec{Type: "test"}, func(ctx context.Context, r *task.Reporter) (string, error) {
		<-ctx.Done()
		return "", task.Checkpoint(ctx)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	s.View(func(tx *store.Tx) error {
		got, _ := tx.Task(tk.ID)
		if got.State != store.TaskCancelled {
			t.Errorf("task after shutdown = %+v", got)
		}
		return nil
	})
}

func TestNoNewTasksAfterShutdown(t *testing.T) {
	s := storetest.New(t)
	m := task.NewManager(s, logger(t), task.Options{})
	if err := m.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err := m.Start(context.Background(), task.Spec{Type: "test"}, func(ctx context.Context, r *task.Reporter) (string, error) { return "", nil })
	if !errors.Is(err, task.ErrShuttingDown) {
		t.Errorf("start after shutdown: %v", err)
	}
}

func TestBadInputIsRecorded(t *testing.T) {
	s := storetest.New(t)
	m := task.NewManager(s, logger(t), task.Options{})
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("deploy: %w: manifest.yml:3:5: unknown field", task.ErrBadInput), true},
		{errors.New("create vm: cloud said no"), false},
	} {
		tk, err := m.Start(context.Background(), task.Spec{Type: "test"}, func(context.Context, *task.Reporter) (string, error) { return "", tc.err })
		if err != nil {
			t.Fatal(err)
		}
		_, final := follow(t, m, tk.ID)
		if final.State != store.TaskError || final.BadInput != tc.want {
			t.Errorf("task failing with %q: state %s, bad input %v, want error, %v", tc.err, final.State, final.BadInput, tc.want)
		}
	}
}
