package task_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/store/storetest"
	"github.com/compleat/compleat/director/task"
)

func taskState(t *testing.T, s *store.Store, id uint64) store.Task {
	t.Helper()
	var tk store.Task
	if err := s.View(func(tx *store.Tx) error {
		var err error
		tk, err = tx.Task(id)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return tk
}

// journal records the order in which task bodies run.
type journal struct {
	mu  sync.Mutex
	ran []string
}

func (j *journal) add(s string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.ran = append(j.ran, s)
}

func (j *journal) list() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.ran)
}

// blocker starts a closure task on deployment dep that holds its lock until
// the returned func is called.
func blocker(t *testing.T, m *task.Manager, dep string) (store.Task, func()) {
	t.Helper()
	release, running := make(chan struct{}), make(chan struct{})
	tk, err := m.Start(context.Background(), task.Spec{Type: "hold", Deployment: dep}, func(ctx context.Context, r *task.Reporter) (string, error) {
		close(running)
		<-release
		return "held", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	<-running
	return tk, func() { close(release) }
}

type deployArgs struct {
	Name string `json:"name"`
}

func TestQueuedTasksOfADeploymentRunInSubmissionOrder(t *testing.T) {
	s := storetest.New(t)
	m := task.NewManager(s, logger(t), task.Options{})
	var j journal
	m.Register("deploy", func(ctx context.Context, r *task.Reporter, args json.RawMessage) (string, error) {
		var a deployArgs
		if err := json.Unmarshal(args, &a); err != nil {
			return "", err
		}
		j.add(a.Name)
		return "deployed " + a.Name, nil
	})
	first, release := blocker(t, m, "web")
	var queued []store.Task
	for i := range 4 {
		var tk store.Task
		var err error
		if i == 2 { // closures and data share one queue
			tk, err = m.Start(context.Background(), task.Spec{Type: "restart", Deployment: "web"}, func(context.Context, *task.Reporter) (string, error) {
				j.add("closure")
				return "", nil
			})
		} else {
			tk, err = m.Submit(task.Spec{Type: "deploy", Deployment: "web"}, deployArgs{Name: fmt.Sprint("v", i)})
		}
		if err != nil {
			t.Fatal(err)
		}
		queued = append(queued, tk)
	}
	// Another deployment is not held up by web's queue.
	other, err := m.Submit(task.Spec{Type: "deploy", Deployment: "db"}, deployArgs{Name: "db"})
	if err != nil {
		t.Fatal(err)
	}
	if _, f := follow(t, m, other.ID); f.State != store.TaskDone {
		t.Errorf("task on another deployment = %+v", f)
	}
	for _, tk := range queued {
		got := taskState(t, s, tk.ID)
		if got.State != store.TaskQueued || !got.StartedAt.IsZero() {
			t.Errorf("task %d while web is held = %s, want queued", tk.ID, got.State)
		}
		if tk.Type == "deploy" && string(got.Args) == "" {
			t.Errorf("task %d has no stored arguments", tk.ID)
		}
	}
	release()
	follow(t, m, first.ID)
	var prev store.Task
	for _, tk := range queued {
		_, f := follow(t, m, tk.ID)
		if f.State != store.TaskDone {
			t.Errorf("task %d = %+v", tk.ID, f)
		}
		if f.Args != nil {
			t.Errorf("task %d kept its arguments after it ended", tk.ID)
		}
		if prev.ID != 0 && f.StartedAt.Before(prev.FinishedAt) {
			t.Errorf("task %d started at %s before task %d ended at %s", f.ID, f.StartedAt, prev.ID, prev.FinishedAt)
		}
		prev = f
	}
	if got, want := j.list(), []string{"db", "v0", "v1", "closure", "v3"}; !slices.Equal(got, want) {
		t.Errorf("ran %v, want %v", got, want)
	}
}

func TestCancelledQueuedTaskNeverRuns(t *testing.T) {
	s := storetest.New(t)
	m := task.NewManager(s, logger(t), task.Options{})
	var j journal
	m.Register("deploy", func(ctx context.Context, r *task.Reporter, args json.RawMessage) (string, error) {
		var a deployArgs
		json.Unmarshal(args, &a)
		j.add(a.Name)
		return "", nil
	})
	var ended []store.Task
	m.OnFinish = func(t store.Task) { ended = append(ended, t) }
	first, release := blocker(t, m, "web")
	doomed, _ := m.Submit(task.Spec{Type: "deploy", Deployment: "web"}, deployArgs{Name: "doomed"})
	kept, _ := m.Submit(task.Spec{Type: "deploy", Deployment: "web"}, deployArgs{Name: "kept"})
	if err := m.Cancel(doomed.ID); err != nil {
		t.Fatal(err)
	}
	evs, f := follow(t, m, doomed.ID)
	if f.State != store.TaskCancelled || !f.StartedAt.IsZero() || f.Args != nil {
		t.Errorf("cancelled queued task = %+v", f)
	}
	if len(evs) != 1 || evs[0].Stage != "Cancelled before it started" {
		t.Errorf("events of the cancelled task = %+v", evs)
	}
	if len(ended) != 1 || ended[0].ID != doomed.ID {
		t.Errorf("OnFinish saw %+v, want the cancelled task", ended)
	}
	if err := m.Cancel(doomed.ID); err == nil || !strings.Contains(err.Error(), "already cancelled") {
		t.Errorf("second cancel: %v", err)
	}
	release()
	follow(t, m, first.ID)
	if _, f := follow(t, m, kept.ID); f.State != store.TaskDone {
		t.Errorf("task queued behind the cancelled one = %+v", f)
	}
	if got := j.list(); !slices.Equal(got, []string{"kept"}) {
		t.Errorf("ran %v, want only kept", got)
	}
}

func TestRecoverKeepsQueuedDataAndFailsQueuedClosures(t *testing.T) {
	s := storetest.New(t)
	var data, fn, running store.Task
	s.Update(func(tx *store.Tx) error {
		running, _ = tx.CreateTask(store.Task{Type: "deploy", Deployment: "web", State: store.TaskProcessing, Args: json.RawMessage(`{"name":"half"}`)})
		tx.AcquireLock(task.LockName("web"), fmt.Sprint("task ", running.ID), running.ID, time.Hour)
		data, _ = tx.CreateTask(store.Task{Type: "deploy", Deployment: "web", State: store.TaskQueued, Args: json.RawMessage(`{"name":"next"}`)})
		fn, _ = tx.CreateTask(store.Task{Type: "restart", Deployment: "web", State: store.TaskQueued})
		return nil
	})
	m := task.NewManager(s, logger(t), task.Options{})
	var j journal
	m.Register("deploy", func(ctx context.Context, r *task.Reporter, args json.RawMessage) (string, error) {
		var a deployArgs
		json.Unmarshal(args, &a)
		j.add(a.Name)
		return "", nil
	})
	n, err := m.Recover()
	if err != nil || n != 2 {
		t.Fatalf("recover = %d, %v; want 2 tasks failed", n, err)
	}
	if got := taskState(t, s, running.ID); got.State != store.TaskError || got.Error != task.RestartedReason || got.Args != nil {
		t.Errorf("running task after restart = %+v", got)
	}
	if got := taskState(t, s, fn.ID); got.State != store.TaskError || got.Error != task.NotStartedReason {
		t.Errorf("queued closure task after restart = %+v", got)
	}
	if got := taskState(t, s, data.ID); got.State != store.TaskQueued {
		t.Errorf("queued data task after restart = %+v", got)
	}
	if n := m.Dispatch(); n != 1 {
		t.Errorf("dispatch started %d tasks, want 1", n)
	}
	if _, f := follow(t, m, data.ID); f.State != store.TaskDone {
		t.Errorf("re-dispatched task = %+v", f)
	}
	if got := j.list(); !slices.Equal(got, []string{"next"}) {
		t.Errorf("ran %v", got)
	}
}

func TestRecoveredTasksWaitTheGrace(t *testing.T) {
	s := storetest.New(t)
	var left store.Task
	s.Update(func(tx *store.Tx) error {
		left, _ = tx.CreateTask(store.Task{Type: "deploy", Deployment: "web", State: store.TaskQueued, Args: json.RawMessage(`{"name":"left"}`)})
		return nil
	})
	time.Sleep(10 * time.Millisecond) // the task predates the manager
	m := task.NewManager(s, logger(t), task.Options{RecoveredGrace: 300 * time.Millisecond, QueuePoll: 20 * time.Millisecond})
	m.Register("deploy", func(context.Context, *task.Reporter, json.RawMessage) (string, error) { return "ran", nil })
	if _, err := m.Recover(); err != nil {
		t.Fatal(err)
	}
	fresh, _ := m.Submit(task.Spec{Type: "deploy", Deployment: "db"}, deployArgs{Name: "fresh"})
	if _, f := follow(t, m, fresh.ID); f.State != store.TaskDone {
		t.Errorf("a task submitted to this process = %+v", f)
	}
	if n := m.Dispatch(); n != 0 {
		t.Errorf("dispatch within the grace started %d tasks", n)
	}
	if got := taskState(t, s, left.ID); got.State != store.TaskQueued {
		t.Errorf("recovered task within the grace = %s, want queued", got.State)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.RunQueue(ctx)
	if _, f := follow(t, m, left.ID); f.State != store.TaskDone {
		t.Errorf("recovered task after the grace = %+v", f)
	}
}

func TestMayDispatchHoldsDataTasksForTheLeader(t *testing.T) {
	s := storetest.New(t)
	var mu sync.Mutex
	leader := false
	m := task.NewManager(s, logger(t), task.Options{QueuePoll: time.Hour, MayDispatch: func() bool {
		mu.Lock()
		defer mu.Unlock()
		return leader
	}})
	m.Register("deploy", func(context.Context, *task.Reporter, json.RawMessage) (string, error) { return "ran", nil })
	tk, err := m.Submit(task.Spec{Type: "deploy", Deployment: "web"}, deployArgs{Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	// A closure task on another deployment runs where it was accepted.
	local, _ := m.Start(context.Background(), task.Spec{Type: "upload-release"}, func(context.Context, *task.Reporter) (string, error) { return "", nil })
	if _, f := follow(t, m, local.ID); f.State != store.TaskDone {
		t.Errorf("closure task on a follower = %+v", f)
	}
	if got := taskState(t, s, tk.ID); got.State != store.TaskQueued {
		t.Errorf("data task on a follower = %s, want queued", got.State)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.RunQueue(ctx)
	mu.Lock()
	leader = true
	mu.Unlock()
	m.Wake()
	if _, f := follow(t, m, tk.ID); f.State != store.TaskDone || f.Result != "ran" {
		t.Errorf("data task once leader = %+v", f)
	}
}

func TestSubmitNeedsAHandler(t *testing.T) {
	m := task.NewManager(storetest.New(t), logger(t), task.Options{})
	if _, err := m.Submit(task.Spec{Type: "nope"}, nil); err == nil || !strings.Contains(err.Error(), "no handler for nope") {
		t.Errorf("submit without handler: %v", err)
	}
}

// TestTakeOverFailsOnlyTheTasksOfGoneDirectors: a new leader fails what a
// dead director was running (and frees its lock at once, long before the
// lease would expire) and the closures it had queued; a live director's
// tasks are left to it.
func TestTakeOverFailsOnlyTheTasksOfGoneDirectors(t *testing.T) {
	s := storetest.New(t)
	var deadRunning, deadQueued, deadData, liveRunning store.Task
	s.Update(func(tx *store.Tx) error {
		deadRunning, _ = tx.CreateTask(store.Task{Type: "deploy", Deployment: "web", State: store.TaskProcessing, Director: "d1@a", Args: json.RawMessage(`{"name":"half"}`)})
		tx.AcquireLock(task.LockName("web"), fmt.Sprint("task ", deadRunning.ID), deadRunning.ID, time.Hour)
		deadQueued, _ = tx.CreateTask(store.Task{Type: "fetch-logs", Deployment: "db", State: store.TaskQueued, Director: "d1@a"})
		deadData, _ = tx.CreateTask(store.Task{Type: "deploy", Deployment: "web", State: store.TaskQueued, Director: "d1@a", Args: json.RawMessage(`{"name":"next"}`)})
		liveRunning, _ = tx.CreateTask(store.Task{Type: "upload-release", State: store.TaskProcessing, Director: "d2@b"})
		return nil
	})
	m := task.NewManager(s, logger(t), task.Options{Instance: "d3@c"})
	m.Register("deploy", func(context.Context, *task.Reporter, json.RawMessage) (string, error) { return "ran", nil })
	n, err := m.TakeOver(func(instance string) bool { return instance == "d2@b" || instance == "d3@c" })
	if err != nil || n != 2 {
		t.Fatalf("take over = %d, %v; want 2 tasks failed", n, err)
	}
	if got := taskState(t, s, deadRunning.ID); got.State != store.TaskError || got.Error != task.TakenOverReason {
		t.Errorf("the gone director's running task = %+v", got)
	}
	if got := taskState(t, s, deadQueued.ID); got.State != store.TaskError || got.Error != task.NotStartedReason {
		t.Errorf("the gone director's queued closure = %+v", got)
	}
	if got := taskState(t, s, liveRunning.ID); got.State != store.TaskProcessing {
		t.Errorf("a live director's task = %+v", got)
	}
	// The lock is free now: the queued deploy runs here, recorded as ours.
	if n := m.Dispatch(); n != 1 {
		t.Fatalf("dispatch started %d tasks, want 1", n)
	}
	if _, f := follow(t, m, deadData.ID); f.State != store.TaskDone || f.Director != "d3@c" {
		t.Errorf("the queued deploy after the take-over = %+v", f)
	}
}

// TestCancelThroughAnotherDirector: with several directors, a cancel taken
// by one reaches the task another runs.
func TestCancelThroughAnotherDirector(t *testing.T) {
	s := storetest.New(t)
	leader := task.NewManager(s, logger(t), task.Options{Instance: "a@1"})
	follower := task.NewManager(s, logger(t), task.Options{Instance: "b@2", MayDispatch: func() bool { return false }})
	running := make(chan struct{})
	leader.Register("deploy", func(ctx context.Context, r *task.Reporter, _ json.RawMessage) (string, error) {
		close(running)
		<-ctx.Done()
		return "", task.Checkpoint(ctx)
	})
	follower.Register("deploy", func(context.Context, *task.Reporter, json.RawMessage) (string, error) {
		t.Error("the follower ran the task")
		return "", nil
	})
	tk, err := follower.Submit(task.Spec{Type: "deploy", Deployment: "web"}, deployArgs{Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	leader.Dispatch()
	select {
	case <-running:
	case <-time.After(10 * time.Second):
		t.Fatal("the leader did not start the task")
	}
	if err := follower.Cancel(tk.ID); err != nil {
		t.Fatal(err)
	}
	if _, f := follow(t, follower, tk.ID); f.State != store.TaskCancelled {
		t.Errorf("task after a cancel through the follower = %+v", f)
	}
}
