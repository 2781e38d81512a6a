package store

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	berrors "go.etcd.io/bbolt/errors"
)

// Task states.
const (
	TaskQueued     = "queued"
	TaskProcessing = "processing"
	TaskCancelling = "cancelling"
	TaskDone       = "done"
	TaskError      = "error"
	TaskCancelled  = "cancelled"
)

// Task is one long operation and its outcome. Its event log is kept beside it
// (Tx.AddEvent, Tx.Events).
type Task struct {
	ID          uint64 `json:"id"`
	Type        string `json:"type"` // e.g. "upload-release", "deploy"
	Description string `json:"description"`
	Deployment  string `json:"deployment,omitempty"`
	User        string `json:"user,omitempty"`
	State       string `json:"state"`
	Result      string `json:"result,omitempty"`
	Error       string `json:"error,omitempty"`
	// BadInput: the task failed on what it was asked to do (an invalid
	// manifest or config), not while doing it.
	BadInput bool `json:"bad_input,omitempty"`
	// Args, on a task submitted as data (task.Manager.Submit), are the JSON
	// arguments its type's handler runs with, so that any director process
	// can run a queued task; they are dropped when the task ends. They may
	// hold secrets (deploy -v values) and are sealed at rest like variables.
	Args       json.RawMessage `json:"args,omitempty"`
	CreatedAt  time.Time       `json:"created_at"`
	StartedAt  time.Time       `json:"started_at,omitzero"`
	FinishedAt time.Time       `json:"finished_at,omitzero"`
}

// Finished reports whether the task has reached a final state.
func (t Task) Finished() bool {
	return t.State == TaskDone || t.State == TaskError || t.State == TaskCancelled
}

// Event is one entry of a task's event log: a step of a stage changing state.
type Event struct {
	TaskID uint64    `json:"task_id"`
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Stage  string    `json:"stage"`
	Step   string    `json:"step,omitempty"`
	Index  int       `json:"index,omitempty"` // 1-based position within the stage
	Total  int       `json:"total,omitempty"`
	State  string    `json:"state"` // "started", "finished", "failed"
	Tags   []string  `json:"tags,omitempty"`
	Error  string    `json:"error,omitempty"`
	// Data carries structured detail (e.g. a progress figure).
	Data json.RawMessage `json:"data,omitempty"`
}

// storedTask is a Task as stored: its Args sealed.
type storedTask struct {
	Task
	ArgsNonce  []byte `json:"args_nonce,omitempty"`
	SealedArgs []byte `json:"sealed_args,omitempty"`
}

func (t *Tx) putTask(task Task) error {
	st := storedTask{Task: task}
	if task.Args != nil {
		g, err := t.aead()
		if err != nil {
			return err
		}
		st.ArgsNonce = make([]byte, g.NonceSize())
		if _, err := rand.Read(st.ArgsNonce); err != nil {
			return fmt.Errorf("task nonce: %w", err)
		}
		st.SealedArgs = g.Seal(nil, st.ArgsNonce, task.Args, itob(task.ID))
		st.Args = nil
	}
	return t.put(bucketTasks, itob(task.ID), st)
}

func (t *Tx) openTask(raw []byte) (Task, error) {
	var st storedTask
	if err := decode(raw, &st); err != nil {
		return Task{}, err
	}
	if st.SealedArgs == nil {
		return st.Task, nil
	}
	g, err := t.aead()
	if err != nil {
		return Task{}, err
	}
	args, err := g.Open(nil, st.ArgsNonce, st.SealedArgs, itob(st.ID))
	if err != nil {
		return Task{}, fmt.Errorf("unseal arguments: wrong key for this state file?: %w", err)
	}
	st.Task.Args = args
	return st.Task, nil
}

// CreateTask stores a new task, giving it the next id, and returns it.
func (t *Tx) CreateTask(task Task) (Task, error) {
	b := t.tx.Bucket(bucketTasks)
	id, err := b.NextSequence()
	if err != nil {
		return task, fmt.Errorf("next task id: %w", err)
	}
	task.ID = id
	if task.State == "" {
		task.State = TaskQueued
	}
	task.CreatedAt = t.now().UTC()
	return task, t.putTask(task)
}

// PutTask replaces a task's record.
func (t *Tx) PutTask(task Task) error {
	if t.tx.Bucket(bucketTasks).Get(itob(task.ID)) == nil {
		return fmt.Errorf("task %d: %w", task.ID, ErrNotFound)
	}
	return t.putTask(task)
}

// Task returns one task.
func (t *Tx) Task(id uint64) (Task, error) {
	raw := t.tx.Bucket(bucketTasks).Get(itob(id))
	if raw == nil {
		return Task{}, fmt.Errorf("task %d: %w", id, ErrNotFound)
	}
	task, err := t.openTask(raw)
	if err != nil {
		return task, fmt.Errorf("task %d: %w", id, err)
	}
	return task, nil
}

// Tasks lists tasks newest first, at most limit of them (0: all), keeping those
// for which keep returns true (nil: all).
func (t *Tx) Tasks(limit int, keep func(Task) bool) ([]Task, error) {
	var out []Task
	c := t.tx.Bucket(bucketTasks).Cursor()
	for k, v := c.Last(); k != nil; k, v = c.Prev() {
		task, err := t.openTask(v)
		if err != nil {
			return nil, fmt.Errorf("decode task %d: %w", btoi(k), err)
		}
		if keep != nil && !keep(task) {
			continue
		}
		out = append(out, task)
		if limit > 0 && len(out) == limit {
			break
		}
	}
	return out, nil
}

// AddEvent appends an event to a task's log and returns it with its sequence
// number.
func (t *Tx) AddEvent(e Event) (Event, error) {
	if t.tx.Bucket(bucketTasks).Get(itob(e.TaskID)) == nil {
		return e, fmt.Errorf("task %d: %w", e.TaskID, ErrNotFound)
	}
	b, err := t.tx.Bucket(bucketTaskEvents).CreateBucketIfNotExists(itob(e.TaskID))
	if err != nil {
		return e, fmt.Errorf("events of task %d: %w", e.TaskID, err)
	}
	seq, err := b.NextSequence()
	if err != nil {
		return e, fmt.Errorf("next event of task %d: %w", e.TaskID, err)
	}
	e.Seq = seq
	if e.Time.IsZero() {
		e.Time = t.now().UTC()
	}
	raw, err := json.Marshal(e)
	if err != nil {
		return e, fmt.Errorf("encode event: %w", err)
	}
	return e, b.Put(itob(seq), raw)
}

// DeleteEvents removes a task's events (its record stays).
func (t *Tx) DeleteEvents(taskID uint64) error {
	err := t.tx.Bucket(bucketTaskEvents).DeleteBucket(itob(taskID))
	if errors.Is(err, berrors.ErrBucketNotFound) {
		return nil
	}
	return err
}

// Events returns a task's events with a sequence number greater than after.
func (t *Tx) Events(taskID, after uint64) ([]Event, error) {
	b := t.tx.Bucket(bucketTaskEvents).Bucket(itob(taskID))
	if b == nil {
		return nil, nil
	}
	var out []Event
	c := b.Cursor()
	for k, v := c.Seek(itob(after + 1)); k != nil; k, v = c.Next() {
		var e Event
		if err := decode(v, &e); err != nil {
			return nil, fmt.Errorf("decode event %d of task %d: %w", btoi(k), taskID, err)
		}
		out = append(out, e)
	}
	return out, nil
}
