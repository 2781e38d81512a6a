// Package task runs the agent's long actions in the background. Each task
// has an id the director polls (get_task) and can cancel (cancel_task);
// cancelling ends the task's context, and the action returns as soon as what
// it is doing notices (a running script is killed, a download aborted).
//
// Finished tasks are remembered for a while (Manager.Keep) so that a
// director that reconnects after an outage still learns the outcome.
package task

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// States.
const (
	Running  = "running"
	Done     = "done"
	Failed   = "failed"
	Canceled = "canceled"
)

// ErrCanceled is the error of a task cancelled by CancelTask.
var ErrCanceled = errors.New("task canceled")

// Status is a snapshot of a task.
type Status struct {
	ID     string
	Method string
	State  string
	Result any
	Err    error
	Start  time.Time
	End    time.Time
}

// Func is a task's body.
type Func func(ctx context.Context) (any, error)

type task struct {
	status   Status
	cancel   context.CancelCauseFunc
	done     chan struct{}
	canceled bool
}

// Manager runs and remembers tasks. The zero value is not usable; use New.
type Manager struct {
	logger *slog.Logger
	// Keep is how long finished tasks are remembered (default one hour).
	Keep time.Duration

	mu    sync.Mutex
	tasks map[string]*task
	wg    sync.WaitGroup
}

// New returns a Manager.
func New(logger *slog.Logger) *Manager {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{logger: logger, Keep: time.Hour, tasks: map[string]*task{}}
}

// Start runs fn in the background under a context derived from parent
// (which should be the agent's lifetime, not a request's) and returns its
// status.
func (m *Manager) Start(parent context.Context, method string, fn Func) Status {
	ctx, cancel := context.WithCancelCause(parent)
	t := &task{
		status: Status{ID: newID(), Method: method, State: Running, Start: time.Now()},
		cancel: cancel,
		done:   make(chan struct{}),
	}
	started := t.status
	m.mu.Lock()
	m.gcLocked()
	m.tasks[t.status.ID] = t
	m.mu.Unlock()
	log := m.logger.With("agent_task_id", t.status.ID, "method", method)
	log.Info("task started")
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(t.done)
		res, err := run(ctx, fn)
		cancel(nil)
		m.mu.Lock()
		defer m.mu.Unlock()
		t.status.End = time.Now()
		switch {
		case t.canceled:
			t.status.State, t.status.Err = Canceled, ErrCanceled
		case err != nil:
			t.status.State, t.status.Err = Failed, err
		default:
			t.status.State, t.status.Result = Done, res
		}
		log.Info("task ended", "state", t.status.State, "duration", t.status.End.Sub(t.status.Start).Round(time.Millisecond), "err", err)
	}()
	return started
}

// run calls fn, turning a panic into an error so one bad action cannot take
// the agent down.
func run(ctx context.Context, fn Func) (res any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = errors.New("internal error in action: " + stringify(r))
		}
	}()
	return fn(ctx)
}

func stringify(v any) string {
	if e, ok := v.(error); ok {
		return e.Error()
	}
	if s, ok := v.(string); ok {
		return s
	}
	return "panic"
}

// Get returns the task's status.
func (m *Manager) Get(id string) (Status, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tasks[id]
	if !ok {
		return Status{}, false
	}
	return t.status, true
}

// Cancel cancels a running task; false when there is no such task. Cancelling
// a finished task does nothing.
func (m *Manager) Cancel(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tasks[id]
	if !ok {
		return false
	}
	if t.status.State == Running {
		t.canceled = true
		t.cancel(ErrCanceled)
	}
	return true
}

// Wait waits until the task ends or ctx is done, and returns its status.
func (m *Manager) Wait(ctx context.Context, id string) (Status, error) {
	m.mu.Lock()
	t, ok := m.tasks[id]
	m.mu.Unlock()
	if !ok {
		return Status{}, errors.New("no task " + id)
	}
	select {
	case <-t.done:
	case <-ctx.Done():
		return Status{}, ctx.Err()
	}
	s, _ := m.Get(id)
	return s, nil
}

// Close cancels every running task and waits for all to return.
func (m *Manager) Close() {
	m.mu.Lock()
	for _, t := range m.tasks {
		if t.status.State == Running {
			t.cancel(errors.New("agent shutting down"))
		}
	}
	m.mu.Unlock()
	m.wg.Wait()
}

func (m *Manager) gcLocked() {
	for id, t := range m.tasks {
		if t.status.State != Running && time.Since(t.status.End) > m.Keep {
			delete(m.tasks, id)
		}
	}
}

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
