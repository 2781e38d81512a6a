package store

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"time"
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
	Args json.RawMessage `json:"args,omitempty"`
	// Director is the director process that accepted the task (while
	// queued) or runs it: task.Options.Instance. With several directors
	// (HA) the leader fails the tasks of a director that is gone.
	Director   string    `json:"director,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
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
	id, err := t.tx.nextSequence(path(bucketTasks))
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
	if ok, err := t.exists(bucketTasks, itob(task.ID)); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("task %d: %w", task.ID, ErrNotFound)
	}
	return t.putTask(task)
}

// Task returns one task.
func (t *Tx) Task(id uint64) (Task, error) {
	raw, err := t.tx.get(path(bucketTasks), itob(id))
	if err != nil {
		return Task{}, fmt.Errorf("task %d: %w", id, err)
	}
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
	err := t.tx.scan(path(bucketTasks), nil, nil, true, func(k, v []byte) (bool, error) {
		task, err := t.openTask(v)
		if err != nil {
			return false, fmt.Errorf("decode task %d: %w", btoi(k), err)
		}
		if keep != nil && !keep(task) {
			return true, nil
		}
		out = append(out, task)
		return limit <= 0 || len(out) < limit, nil
	})
	return out, err
}

// AddEvent appends an event to a task's log and returns it with its sequence
// number.
func (t *Tx) AddEvent(e Event) (Event, error) {
	if ok, err := t.exists(bucketTasks, itob(e.TaskID)); err != nil {
		return e, err
	} else if !ok {
		return e, fmt.Errorf("task %d: %w", e.TaskID, ErrNotFound)
	}
	p := path(bucketTaskEvents, itob(e.TaskID))
	seq, err := t.tx.nextSequence(p)
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
	return e, t.tx.put(p, itob(seq), raw)
}

// DeleteEvents removes a task's events (its record stays).
func (t *Tx) DeleteEvents(taskID uint64) error {
	return t.tx.deleteBucket(path(bucketTaskEvents, itob(taskID)))
}

// Events returns a task's events with a sequence number greater than after.
func (t *Tx) Events(taskID, after uint64) ([]Event, error) {
	var out []Event
	err := t.tx.scan(path(bucketTaskEvents, itob(taskID)), nil, itob(after+1), false, func(k, v []byte) (bool, error) {
		var e Event
		if err := decode(v, &e); err != nil {
			return false, fmt.Errorf("decode event %d of task %d: %w", btoi(k), taskID, err)
		}
		out = append(out, e)
		return true, nil
	})
	return out, err
}
