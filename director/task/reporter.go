package task

import (
	"encoding/json"
	"sync"

	"github.com/compleat/compleat/director/store"
)

// Reporter records a task's events. It is safe for concurrent use by the
// steps of a stage running in parallel.
type Reporter struct {
	m  *Manager
	id uint64
}

// TaskID is the id of the task being reported.
func (r *Reporter) TaskID() uint64 { return r.id }

// Event records one event as given (TaskID and Time are filled in).
func (r *Reporter) Event(e store.Event) {
	e.TaskID = r.id
	err := r.m.store.Batch(func(tx *store.Tx) error {
		_, err := tx.AddEvent(e)
		return err
	})
	if err != nil {
		r.m.log.Error("record task event", "task", r.id, "error", err)
	}
	r.m.changed(r.id)
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
