package task

import (
	"encoding/json"
	"sync"

	"github.com/compleat/compleat/director/store"
)

// Reporter records a task's events. It is safe for concurrent use by the
// steps of a stage running in parallel.
//
// An event is queued and written by a writer of the reporter's own, so a
// step never waits for its progress to be durable: what must be durable
// before a step goes on (an instance's records) is written by the step
// itself. The writer commits what queued meanwhile in one transaction, in
// order; the task's end waits for the queue (flush), so a follower reads
// every event before the task's final state. A director that dies loses
// at most the events not yet written.
type Reporter struct {
	m  *Manager
	id uint64

	mu      sync.Mutex
	queue   []store.Event
	writing bool       // a writer goroutine runs
	written *sync.Cond // on mu: the queue emptied and no writer runs
}

func newReporter(m *Manager, id uint64) *Reporter {
	r := &Reporter{m: m, id: id}
	r.written = sync.NewCond(&r.mu)
	return r
}

// TaskID is the id of the task being reported.
func (r *Reporter) TaskID() uint64 { return r.id }

// Event records one event as given (TaskID, and Time when zero, are
// filled in: the time it was reported, not written).
func (r *Reporter) Event(e store.Event) {
	e.TaskID = r.id
	if e.Time.IsZero() {
		e.Time = r.m.store.Now().UTC()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queue = append(r.queue, e)
	if !r.writing {
		r.writing = true
		go r.write()
	}
}

// write commits the queue until it is empty.
func (r *Reporter) write() {
	for {
		r.mu.Lock()
		evs := r.queue
		r.queue = nil
		if len(evs) == 0 {
			r.writing = false
			r.written.Broadcast()
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		err := r.m.store.Batch(func(tx *store.Tx) error {
			for _, e := range evs {
				if _, err := tx.AddEvent(e); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			r.m.log.Error("record task events", "task", r.id, "events", len(evs), "error", err)
		}
		r.m.changed(r.id)
	}
}

// flush returns once every event reported so far is written.
func (r *Reporter) flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.writing || len(r.queue) > 0 {
		r.written.Wait()
	}
}

// Stage begins a stage of total steps (0 when unknown).
func (r *Reporter) Stage(name string, total int) *Stage {
	return &Stage{r: r, name: name, total: total}
}

// Stage is a named group of steps, e.g. "Updating instance".
type Stage struct {
	r     *Reporter
	name  string
	total int
	mu    sync.Mutex
	next  int
}

// Step starts the next step of the stage, e.g. "web/2" with tag "canary".
func (s *Stage) Step(name string, tags ...string) *Step {
	s.mu.Lock()
	s.next++
	idx := s.next
	s.mu.Unlock()
	st := &Step{s: s, name: name, index: idx, tags: tags}
	s.r.Event(store.Event{Stage: s.name, Step: name, Index: idx, Total: s.total, State: "started", Tags: tags})
	return st
}

// Run runs fn as one step and records how it ended.
func (s *Stage) Run(name string, fn func() error, tags ...string) error {
	st := s.Step(name, tags...)
	err := fn()
	st.Done(err)
	return err
}

// Step is one started step.
type Step struct {
	s     *Stage
	name  string
	index int
	tags  []string
}

// Done records the step finished, or failed with err.
func (st *Step) Done(err error) {
	e := store.Event{Stage: st.s.name, Step: st.name, Index: st.index, Total: st.s.total, State: "finished", Tags: st.tags}
	if err != nil {
		e.State, e.Error = "failed", err.Error()
	}
	st.s.r.Event(e)
}

// Progress records a progress figure for a step (e.g. bytes uploaded).
func (st *Step) Progress(data any) {
	raw, err := json.Marshal(data)
	if err != nil {
		return
	}
	st.s.r.Event(store.Event{Stage: st.s.name, Step: st.name, Index: st.index, Total: st.s.total, State: "in_progress", Tags: st.tags, Data: raw})
}
