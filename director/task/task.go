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
//
// # The queue
//
// Every task is recorded first as queued. A task on a deployment whose lock
// is held stays queued until the lock frees; the tasks of one deployment start
// in the order they were submitted, one at a time (BOSH's behaviour), while
// tasks on other deployments, or on none, start at once. Cancelling a queued
// task ends it as cancelled without running it.
//
// A task is either a closure ([Manager.Start]: the function lives in the
// process that accepted it) or data ([Manager.Submit]: its type and JSON
// arguments are stored in the task record, and the [Handler] registered for
// the type with [Manager.Register] runs it). Data tasks can be run by any
// director process sharing the store, and survive a restart: [Manager.Recover]
// leaves them queued and the next dispatch runs them. A queued closure task
// cannot outlive its process; Recover fails it with [NotStartedReason].
//
// Dispatching — taking queued tasks whose deployment is free and running them
// — happens in [Manager.Dispatch], called after every submit and every task
// end, and every Options.QueuePoll by [Manager.RunQueue] (a lock held by
// another process, or a lease that expired, frees without an event here).
// Options.MayDispatch gates the dispatch of data tasks: a director that is not
// its cluster's leader leaves them queued for the leader (closure tasks always
// run where they were accepted).
package task

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/compleat/compleat/director/store"
)

// RestartedReason is the error recorded on tasks found running at start-up.
const RestartedReason = "director restarted while the task was running"

// TakenOverReason is the error recorded, by a new leader, on the tasks a
// director that is gone was running (HA).
const TakenOverReason = "the director running the task stopped; another director took over"

// NotStartedReason is the error recorded on a queued closure task found at
// start-up: its function died with the process that accepted it.
const NotStartedReason = "director restarted before the task started"

// ErrCancelled is the error of a task stopped by a cancel request.
var ErrCancelled = errors.New("task cancelled")

// ErrBadInput marks a task's error as caused by what the task was asked to
// do (a manifest, a config, an argument) rather than by a failure while
// doing it; the task record says so (store.Task.BadInput) and the CLI
// exits 2 for it. The API answers 400 for it.
var ErrBadInput = errors.New("bad input")

// BadInput marks err as caused by the task's input (errors.Is(err,
// ErrBadInput)), without changing its message.
func BadInput(err error) error { return badInput{err} }

type badInput struct{ err error }

func (b badInput) Error() string        { return b.err.Error() }
func (b badInput) Unwrap() error        { return b.err }
func (b badInput) Is(target error) bool { return target == ErrBadInput }

// ErrShuttingDown is returned by Start once Shutdown has begun.
var ErrShuttingDown = errors.New("the director is shutting down: no new tasks")

// Func is the body of a task. Its result string is recorded on success.
type Func func(ctx context.Context, r *Reporter) (result string, err error)

// Handler runs a task submitted as data: args are the JSON arguments stored
// in the task record (store.Task.Args).
type Handler func(ctx context.Context, r *Reporter, args json.RawMessage) (result string, err error)

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
	// QueuePoll is how often RunQueue looks at the queue without being
	// woken. Zero means one second.
	QueuePoll time.Duration
	// MayDispatch, when set, is asked before each dispatch of data tasks;
	// false leaves them queued (an HA director that is not the leader).
	// Nil means always.
	MayDispatch func() bool
	// RecoveredGrace holds the data tasks queued before this Manager was
	// made (left by a previous process) for this long after it was made,
	// so that the agents have reconnected to a restarted director's bus
	// before a recovered deploy talks to them. Zero: no hold.
	RecoveredGrace time.Duration
	// Instance names this director process in the tasks it accepts and
	// runs (store.Task.Director): unique per process, so that a restarted
	// director is told apart from the one before it.
	Instance string
}

// Manager starts tasks and tracks the running ones.
type Manager struct {
	store    *store.Store
	log      *slog.Logger
	ttl      time.Duration
	poll     time.Duration
	may      func() bool
	born     time.Time // when the Manager was made
	grace    time.Duration
	instance string
	dispatch sync.Mutex  // one dispatch pass at a time
	empty    atomic.Bool // the last pass found no queued task
	wake     chan struct{}
	mu       sync.Mutex
	cancel   map[uint64]context.CancelFunc
	notify   map[uint64]chan struct{}
	local    map[uint64]closure // queued closure tasks of this process
	handlers map[string]Handler
	closed   bool
	wg       sync.WaitGroup
	// OnFinish, when set, is called after each task ends with its final record
	// (metrics).
	OnFinish func(store.Task)
}

// NewManager returns a Manager recording tasks in s.
func NewManager(s *store.Store, logger *slog.Logger, opts Options) *Manager {
	if opts.LockTTL == 0 {
		opts.LockTTL = time.Minute
	}
	if opts.QueuePoll == 0 {
		opts.QueuePoll = time.Second
	}
	return &Manager{store: s, log: logger, ttl: opts.LockTTL, poll: opts.QueuePoll, may: opts.MayDispatch,
		born: time.Now(), grace: opts.RecoveredGrace, instance: opts.Instance,
		wake: make(chan struct{}, 1), cancel: map[uint64]context.CancelFunc{}, notify: map[uint64]chan struct{}{},
		local: map[uint64]closure{}, handlers: map[string]Handler{}}
}

// closure is a queued task's function and the context it was started under.
type closure struct {
	ctx context.Context
	fn  Func
}

// Register makes h the handler of tasks of type typ submitted as data
// (replacing an earlier one). It is called while wiring, before RunQueue.
func (m *Manager) Register(typ string, h Handler) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.handlers[typ] = h
}

// LockName is the lock a task on a deployment holds.
func LockName(deployment string) string { return "deployment:" + deployment }

func owner(id uint64) string { return "task " + strconv.FormatUint(id, 10) }

// Recover marks every task a previous director process left running as
// failed (RestartedReason) and frees the locks it held, and fails the queued
// closure tasks (NotStartedReason); queued data tasks stay queued for the next
// dispatch. It returns how many tasks it failed.
func (m *Manager) Recover() (int, error) {
	return m.recover(func(store.Task) bool { return true }, RestartedReason)
}

// TakeOver is Recover for a director that has just become the leader of
// several (HA): it fails only the tasks of director processes that are not
// alive (TakenOverReason), and frees their locks at once rather than when
// their leases expire. Tasks of live directors (closures they accepted and
// run themselves) are theirs.
func (m *Manager) TakeOver(alive func(instance string) bool) (int, error) {
	return m.recover(func(t store.Task) bool { return !alive(t.Director) }, TakenOverReason)
}

func (m *Manager) recover(gone func(store.Task) bool, runningReason string) (int, error) {
	n := 0
	err := m.store.Update(func(tx *store.Tx) error {
		left, err := tx.Tasks(0, func(t store.Task) bool { return !t.Finished() && gone(t) })
		if err != nil {
			return err
		}
		for _, t := range left {
			reason := runningReason
			if t.State == store.TaskQueued {
				if t.Args != nil {
					continue
				}
				reason = NotStartedReason
			}
			t.State, t.Error, t.FinishedAt, t.Args = store.TaskError, reason, tx.Now().UTC(), nil
			if err := tx.PutTask(t); err != nil {
				return err
			}
			if _, err := tx.AddEvent(store.Event{TaskID: t.ID, Stage: "Recovering", State: "failed", Error: reason}); err != nil {
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

// Start records a new task, queued, and runs fn in the background under a
// context derived from ctx (cancelled by Cancel or when ctx ends) as soon as
// its deployment is free. It returns the task's record as created. fn lives
// in this process only: use Submit for a task any process may run.
func (m *Manager) Start(ctx context.Context, spec Spec, fn Func) (store.Task, error) {
	return m.enqueue(spec, nil, &closure{ctx: ctx, fn: fn})
}

// Submit records a new task as data — its type and args, encoded as JSON —
// to be run by the handler registered for spec.Type (Register) in whichever
// process dispatches it. It returns the task's record as created.
func (m *Manager) Submit(spec Spec, args any) (store.Task, error) {
	raw, err := json.Marshal(args)
	if err != nil {
		return store.Task{}, fmt.Errorf("encode arguments of %s task: %w", spec.Type, err)
	}
	m.mu.Lock()
	_, ok := m.handlers[spec.Type]
	m.mu.Unlock()
	if !ok {
		return store.Task{}, fmt.Errorf("no handler for %s tasks", spec.Type)
	}
	return m.enqueue(spec, raw, nil)
}

func (m *Manager) enqueue(spec Spec, args json.RawMessage, c *closure) (store.Task, error) {
	var t store.Task
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return t, ErrShuttingDown
	}
	err := m.store.Update(func(tx *store.Tx) error {
		var err error
		t, err = tx.CreateTask(store.Task{Type: spec.Type, Description: spec.Description, Deployment: spec.Deployment,
			User: spec.User, State: store.TaskQueued, Args: args, Director: m.instance})
		return err
	})
	if err != nil {
		return t, fmt.Errorf("create task: %w", err)
	}
	m.mu.Lock()
	if c != nil {
		m.local[t.ID] = *c
	}
	m.notify[t.ID] = make(chan struct{})
	m.mu.Unlock()
	m.Dispatch()
	return t, nil
}

// Dispatch starts the queued tasks that can run now: oldest first, at most
// one per deployment and only when the deployment's lock is free, so that
// the tasks of a deployment run in the order they were submitted. Data tasks
// are dispatched only while Options.MayDispatch allows. It returns how many
// tasks it started. Dispatch is called after every submit and task end and
// by RunQueue; calling it more often is harmless.
func (m *Manager) Dispatch() int {
	m.dispatch.Lock()
	defer m.dispatch.Unlock()
	var queued []store.Task
	err := m.store.View(func(tx *store.Tx) error {
		var err error
		queued, err = tx.Tasks(0, func(t store.Task) bool { return t.State == store.TaskQueued })
		return err
	})
	if err != nil {
		m.log.Error("read task queue", "error", err)
		return 0
	}
	m.empty.Store(len(queued) == 0)
	slices.Reverse(queued) // oldest first
	data := m.may == nil || m.may()
	blocked := map[string]bool{} // deployments whose next task cannot start now
	started := 0
	for _, t := range queued {
		if t.Deployment != "" && blocked[t.Deployment] {
			continue
		}
		fn, ok := m.runnable(t, data)
		if !ok {
			if t.Deployment != "" {
				blocked[t.Deployment] = true
			}
			continue
		}
		if t.Deployment != "" {
			blocked[t.Deployment] = true
		}
		if m.launch(t, fn) {
			started++
		}
	}
	return started
}

// runnable returns what runs t here, if this process can run it.
func (m *Manager) runnable(t store.Task, data bool) (closure, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.local[t.ID]; ok {
		return c, true
	}
	h, ok := m.handlers[t.Type]
	if t.Args == nil || !data || !ok {
		return closure{}, false
	}
	if t.CreatedAt.Before(m.born) && time.Since(m.born) < m.grace {
		return closure{}, false // recovered: wait for the agents to reconnect
	}
	args := t.Args
	return closure{ctx: context.Background(), fn: func(ctx context.Context, r *Reporter) (string, error) {
		return h(ctx, r, args)
	}}, true
}

// launch takes t's deployment lock and runs it in the background; it
// reports false when t cannot start now (lock held, no longer queued).
func (m *Manager) launch(t store.Task, c closure) bool {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return false
	}
	m.wg.Add(1) // under mu, so that Shutdown's Wait never races it
	m.mu.Unlock()
	err := m.begin(&t)
	if err != nil {
		m.wg.Done()
		if !errors.Is(err, store.ErrLeaseHeld) && !errors.Is(err, errNotQueued) {
			m.log.Error("start task", "task", t.ID, "error", err)
		}
		return false
	}
	tctx, cancel := context.WithCancel(context.WithoutCancel(c.ctx))
	m.mu.Lock()
	delete(m.local, t.ID)
	m.cancel[t.ID] = cancel
	if _, ok := m.notify[t.ID]; !ok {
		m.notify[t.ID] = make(chan struct{})
	}
	m.mu.Unlock()
	go func() {
		defer m.wg.Done()
		stop := context.AfterFunc(c.ctx, cancel)
		defer stop()
		if m.instance != "" {
			// Several directors: a cancel may come through another one,
			// which can only mark the record.
			defer m.watchCancel(tctx, t.ID, cancel)()
		}
		m.run(tctx, t, c.fn)
		cancel()
		m.Dispatch() // the deployment is free: its next task may start
	}()
	return true
}

// RunQueue dispatches queued tasks every Options.QueuePoll and whenever woken
// (Wake) until ctx ends. The director runs it for its whole life; an HA
// director runs it everywhere and gates data tasks with Options.MayDispatch,
// or calls Wake when it becomes the leader to start the queue at once.
// Without MayDispatch (one director: every task is submitted through this
// Manager) a poll that follows a pass which found the queue empty is
// skipped, so an idle director reads no task records.
func (m *Manager) RunQueue(ctx context.Context) {
	tick := time.NewTicker(m.poll)
	defer tick.Stop()
	m.Dispatch()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if m.may == nil && m.empty.Load() {
				continue
			}
		case <-m.wake:
		}
		m.Dispatch()
	}
}

// Wake makes RunQueue dispatch now (e.g. on becoming the leader).
func (m *Manager) Wake() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func (m *Manager) run(ctx context.Context, t store.Task, fn Func) {
	log := m.log.With("task", t.ID, "type", t.Type)
	r := newReporter(m, t.ID)
	log.Info("task started", "description", t.Description)
	var stopRenew func()
	if t.Deployment != "" {
		stopRenew = m.renew(ctx, t, log)
	}
	result, err := fn(ctx, r)
	if stopRenew != nil {
		stopRenew()
	}
	r.flush() // every event before the task's end
	m.finish(t, result, err, log)
}

// errNotQueued: the task left the queue (cancelled, or started elsewhere).
var errNotQueued = errors.New("task is no longer queued")

// begin marks a queued task processing and takes its deployment's lock.
func (m *Manager) begin(t *store.Task) error {
	return m.store.Update(func(tx *store.Tx) error {
		cur, err := tx.Task(t.ID)
		if err != nil {
			return err
		}
		if cur.State != store.TaskQueued {
			return errNotQueued
		}
		if t.Deployment != "" {
			if _, err := tx.AcquireLock(LockName(t.Deployment), owner(t.ID), t.ID, m.ttl); err != nil {
				return err
			}
		}
		cur.State, cur.StartedAt, cur.Director = store.TaskProcessing, tx.Now().UTC(), m.instance
		*t = cur
		return tx.PutTask(cur)
	})
}

// CancelPoll is how often a director that is one of several looks for a
// cancel of its running tasks that came through another director.
const CancelPoll = 500 * time.Millisecond

// watchCancel cancels task id's context once its record says cancelling,
// until the returned func is called.
func (m *Manager) watchCancel(ctx context.Context, id uint64, cancel context.CancelFunc) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(CancelPoll)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			var state string
			m.store.View(func(tx *store.Tx) error {
				t, err := tx.Task(id)
				state = t.State
				return err
			})
			if state == store.TaskCancelling {
				cancel()
				return
			}
		}
	}()
	return func() { close(done); wg.Wait() }
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
		cur.FinishedAt, cur.Args = tx.Now().UTC(), nil
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

// Cancel asks a task to stop: a running task is marked cancelling and its
// context is cancelled, so it stops at its next safe point; a queued task is
// cancelled at once and never runs. Cancelling a finished task is an error.
func (m *Manager) Cancel(id uint64) error {
	var final store.Task
	err := m.store.Update(func(tx *store.Tx) error {
		t, err := tx.Task(id)
		if err != nil {
			return err
		}
		if t.Finished() {
			return fmt.Errorf("task %d is already %s", id, t.State)
		}
		if t.State != store.TaskQueued {
			t.State = store.TaskCancelling
			return tx.PutTask(t)
		}
		t.State, t.Error, t.FinishedAt, t.Args = store.TaskCancelled, ErrCancelled.Error(), tx.Now().UTC(), nil
		if _, err := tx.AddEvent(store.Event{TaskID: id, Stage: "Cancelled before it started", State: "finished"}); err != nil {
			return err
		}
		final = t
		return tx.PutTask(t)
	})
	if err != nil {
		return err
	}
	m.mu.Lock()
	cancel := m.cancel[id]
	delete(m.local, id)
	m.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if final.ID != 0 {
		if m.OnFinish != nil {
			m.OnFinish(final)
		}
		m.mu.Lock()
		if ch, ok := m.notify[id]; ok {
			close(ch)
			delete(m.notify, id)
		}
		m.mu.Unlock()
		m.Dispatch() // the tasks queued behind it may start
		return nil
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
		_, here := m.cancel[id]
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
		// A task not running in this process (queued, or run by another
		// director) changes without telling ch: poll.
		var poll <-chan time.Time
		if !here {
			poll = time.After(500 * time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return nil, t, ctx.Err()
		case <-ch:
		case <-poll:
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
