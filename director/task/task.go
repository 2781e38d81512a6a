// Package task runs the director's long operations as tasks: each has an id, a
// persisted event log that clients stream, a cancellable context and, when it
// acts on a deployment, the deployment's lock held as a renewed lease.
//
// A task function reports progress through a [Reporter]: stages made of steps
// that start and finish (or fail), with tags such as "canary". Cancelling a
// task (Manager.Cancel) records the request and cancels the task's context;
// the function stops at its next safe point, where it checks ctx.Err() (see
// [Checkpoint]). The lease on a deployment lock is renewed while the task runs
// and simply expires if the director dies, so a dead task never blocks the next
// one forever; at start-up [Manager.Recover] marks the tasks a previous process
// left running as failed.
package task

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/compleat/compleat/director/store"
)

// RestartedReason is the error recorded on tasks found running at start-up.
const RestartedReason = "director restarted while the task was running"

// ErrCancelled is the error of a task stopped by a cancel request.
var ErrCancelled = errors.New("task cancelled")

// ErrBadInput marks a task's error as caused by what the task was asked to
// do (a manifest, a config, an argument) rather than by a failure while
// doing it; the task record says so (store.Task.BadInput) and the CLI
// exits 2 for it. api.ErrBadInput is this error.
var ErrBadInput = errors.New("bad input")

// ErrShuttingDown is returned by Start once Shutdown has begun.
var ErrShuttingDown = errors.New("the director is shutting down: no new tasks")

// Func is the body of a task. Its result string is recorded on success.
type Func func(ctx context.Context, r *Reporter) (result string, err error)

// Spec describes a task to start.
type Spec struct {
	Type        string // e.g. "upload-release"
	Description string // e.g. "upload release web/1"
	Deployment  string // when set, the task holds the deployment's lock
	User        string
}

// Options tune a Manager.
type Options struct {
	// LockTTL is the lease of a deployment lock, renewed every third of it
	// while the task runs. Zero means one minute.
	LockTTL time.Duration
}

// Manager starts tasks and tracks the running ones.
type Manager struct {
	store  *store.Store
	log    *slog.Logger
	ttl    time.Duration
	mu     sync.Mutex
	cancel map[uint64]context.CancelFunc
	notify map[uint64]chan struct{}
	closed bool
	wg     sync.WaitGroup
	// OnFinish, when set, is called after each task ends with its final record
	// (metrics).
	OnFinish func(store.Task)
}

// NewManager returns a Manager recording tasks in s.
func NewManager(s *store.Store, logger *slog.Logger, opts Options) *Manager {
	if opts.LockTTL == 0 {
		opts.LockTTL = time.Minute
	}
	return &Manager{store: s, log: logger, ttl: opts.LockTTL,
		cancel: map[uint64]context.CancelFunc{}, notify: map[uint64]chan struct{}{}}
}

// LockName is the lock a task on a deployment holds.
func LockName(deployment string) string { return "deployment:" + deployment }

func owner(id uint64) string { return "task " + strconv.FormatUint(id, 10) }

// Recover marks every task a previous director process left unfinished as
// failed and frees the locks it held. It returns how many it marked.
func (m *Manager) Recover() (int, error) {
	n := 0
	err := m.store.Update(func(tx *store.Tx) error {
		left, err := tx.Tasks(0, func(t store.Task) bool { return !t.Finished() })
		if err != nil {
			return err
		}
		for _, t := range left {
			t.State, t.Error, t.FinishedAt = store.TaskError, RestartedReason, tx.Now()
			if err := tx.PutTask(t); err != nil {
				return err
			}
			if _, err := tx.AddEvent(store.Event{TaskID: t.ID, Stage: "Recovering", State: "failed", Error: RestartedReason}); err != nil {
				return err
			}
			if t.Deployment != "" {
				if err := tx.ReleaseLock(LockName(t.Deployment), owner(t.ID)); err != nil {
					return err
				}
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("recover tasks: %w", err)
	}
	return n, nil
}

// Start records a new task and runs fn in the background under a context
// derived from ctx (cancelled by Cancel or when ctx ends). It returns the
// task's record as created.
func (m *Manager) Start(ctx context.Context, spec Spec, fn Func) (store.Task, error) {
	var t store.Task
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return t, ErrShuttingDown
	}
	m.wg.Add(1) // under mu, so that Shutdown's Wait never races it
	m.mu.Unlock()
	err := m.store.Update(func(tx *store.Tx) error {
		var err error
		t, err = tx.CreateTask(store.Task{Type: spec.Type, Description: spec.Description, Deployment: spec.Deployment, User: spec.User})
		return err
	})
	if err != nil {
		m.wg.Done()
		return t, fmt.Errorf("create task: %w", err)
	}
	tctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.mu.Lock()
	m.cancel[t.ID] = cancel
	m.notify[t.ID] = make(chan struct{})
	m.mu.Unlock()
	go func() {
		defer m.wg.Done()
		stop := context.AfterFunc(ctx, cancel)
		defer stop()
		m.run(tctx, t, fn)
		cancel()
	}()
	return t, nil
}

func (m *Manager) run(ctx context.Context, t store.Task, fn Func) {
	log := m.log.With("task", t.ID, "type", t.Type)
	r := &Reporter{m: m, id: t.ID}
	var result string
	err := m.begin(&t)
	if err == nil {
		log.Info("task started", "description", t.Description)
		var stopRenew func()
		if t.Deployment != "" {
			stopRenew = m.renew(ctx, t, log)
		}
		result, err = fn(ctx, r)
		if stopRenew != nil {
			stopRenew()
		}
	}
	m.finish(t, result, err, log)
}

// begin marks the task processing and takes its deployment's lock.
func (m *Manager) begin(t *store.Task) error {
	return m.store.Update(func(tx *store.Tx) error {
		cur, err := tx.Task(t.ID)
		if err != nil {
			return err
		}
		if cur.State == store.TaskCancelling {
			return ErrCancelled
		}
		if t.Deployment != "" {
			if _, err := tx.AcquireLock(LockName(t.Deployment), owner(t.ID), t.ID, m.ttl); err != nil {
				return fmt.Errorf("deployment %s is busy: %w", t.Deployment, err)
			}
		}
		cur.State, cur.StartedAt = store.TaskProcessing, tx.Now().UTC()
		*t = cur
		return tx.PutTask(cur)
	})
}

// renew keeps the deployment lease alive until the returned func is called.
func (m *Manager) renew(ctx context.Context, t store.Task, log *slog.Logger) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(m.ttl / 3)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				err := m.store.Update(func(tx *store.Tx) error {
					_, err := tx.AcquireLock(LockName(t.Deployment), owner(t.ID), t.ID, m.ttl)
					return err
				})
				if err != nil {
					log.Error("renew deployment lock", "deployment", t.Deployment, "error", err)
				}
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func (m *Manager) finish(t store.Task, result string, err error, log *slog.Logger) {
	var final store.Task
	uerr := m.store.Update(func(tx *store.Tx) error {
		cur, terr := tx.Task(t.ID)
		if terr != nil {
			return terr
		}
		cancelled := cur.State == store.TaskCancelling || errors.Is(err, ErrCancelled)
		switch {
		case err == nil:
			cur.State, cur.Result = store.TaskDone, result
		case cancelled:
			cur.State, cur.Error = store.TaskCancelled, ErrCancelled.Error()
		default:
			cur.State, cur.Error = store.TaskError, err.Error()
			cur.BadInput = errors.Is(err, ErrBadInput)
		}
		cur.FinishedAt = tx.Now().UTC()
		if cur.Deployment != "" {
			if lerr := tx.ReleaseLock(LockName(cur.Deployment), owner(cur.ID)); lerr != nil {
				return lerr
			}
		}
		final = cur
		return tx.PutTask(cur)
	})
	if uerr != nil {
		log.Error("record task end", "error", uerr)
	}
	if err != nil {
		log.Warn("task failed", "state", final.State, "error", err)
	} else {
		log.Info("task done")
	}
	if m.OnFinish != nil && uerr == nil {
		m.OnFinish(final)
	}
	m.mu.Lock()
	delete(m.cancel, t.ID)
	if ch, ok := m.notify[t.ID]; ok {
		close(ch)
		delete(m.notify, t.ID)
	}
	m.mu.Unlock()
}

// Cancel asks a task to stop: it is marked cancelling and its context is
// cancelled, so it stops at its next safe point. Cancelling a finished task is
// an error.
func (m *Manager) Cancel(id uint64) error {
	err := m.store.Update(func(tx *store.Tx) error {
		t, err := tx.Task(id)
		if err != nil {
			return err
		}
		if t.Finished() {
			return fmt.Errorf("task %d is already %s", id, t.State)
		}
		t.State = store.TaskCancelling
		return tx.PutTask(t)
	})
	if err != nil {
		return err
	}
	m.mu.Lock()
	cancel := m.cancel[id]
	m.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	m.changed(id)
	return nil
}

// Wait blocks until task id has events after seq, has finished, or ctx ends. It
// returns the events after seq and the task's record.
func (m *Manager) Wait(ctx context.Context, id, after uint64) ([]store.Event, store.Task, error) {
	for {
		m.mu.Lock()
		ch := m.notify[id]
		m.mu.Unlock()
		var evs []store.Event
		var t store.Task
		err := m.store.View(func(tx *store.Tx) error {
			var err error
			if t, err = tx.Task(id); err != nil {
				return err
			}
			evs, err = tx.Events(id, after)
			return err
		})
		if err != nil || len(evs) > 0 || t.Finished() {
			return evs, t, err
		}
		if ch == nil { // not running in this process: poll
			ch = make(chan struct{})
			time.AfterFunc(500*time.Millisecond, func() { close(ch) })
		}
		select {
		case <-ctx.Done():
			return nil, t, ctx.Err()
		case <-ch:
		}
	}
}

// changed wakes the waiters of task id.
func (m *Manager) changed(id uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ch, ok := m.notify[id]; ok {
		close(ch)
		m.notify[id] = make(chan struct{})
	}
}

// Shutdown refuses new tasks (ErrShuttingDown), cancels every running task
// and waits for them to end or ctx to expire.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	m.closed = true
	for _, c := range m.cancel {
		c()
	}
	m.mu.Unlock()
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Checkpoint is a safe point: it returns ErrCancelled (wrapped) once the task
// has been asked to stop.
func Checkpoint(ctx context.Context) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %w", ErrCancelled, context.Cause(ctx))
	}
	return nil
}
