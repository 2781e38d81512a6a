package store

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// The audit log and the resurrection switches live in buckets created on
// their first write, so that a schema version 1 file without them reads as
// "no audit event yet, resurrection on everywhere" and no schema upgrade is
// needed to add them.
var (
	bucketAudit        = []byte("audit_events")
	bucketResurrection = []byte("resurrection")
)

// Audit event results.
const (
	ResultOK      = "ok"
	ResultFailed  = "failed"
	ResultSkipped = "skipped"
	ResultInfo    = "info"
)

// AuditEvent is one entry of the append-only audit log: who did what to
// which object, and how it went. The director's health monitor, resurrector
// and cloud-check write them, and so does the deploy pipeline for deploys.
type AuditEvent struct {
	ID   uint64    `json:"id"`
	Time time.Time `json:"time"`
	// User is the token name of an operator, or the director component
	// acting on its own ("health-monitor", "resurrector", "cloud-check").
	User       string `json:"user"`
	TaskID     uint64 `json:"task_id,omitempty"`
	Deployment string `json:"deployment,omitempty"`
	// Instance is "group/id".
	Instance string `json:"instance,omitempty"`
	// Action is what happened: "deploy", "recreate", "unresponsive",
	// "recovered", "process-failing", "alert", "resurrect", "meltdown",
	// "cloud-check", "resolve", "update-resurrection", ...
	Action string `json:"action"`
	// ObjectType and Object name the thing acted on ("vm" "vm-1a2b",
	// "disk" ..., "process" "web/nginx", "deployment" "cf").
	ObjectType string `json:"object_type,omitempty"`
	Object     string `json:"object,omitempty"`
	// Result is ResultOK, ResultFailed, ResultSkipped or ResultInfo.
	Result string `json:"result,omitempty"`
	Error  string `json:"error,omitempty"`
	// Context carries details (a reason, a resolution, a figure).
	Context map[string]string `json:"context,omitempty"`
}

// AddAuditEvent appends e to the audit log, giving it the next id and, when
// unset, the current time. Events are never changed afterwards, nor removed
// but by PruneAuditEvents (the health monitor's alerts, kept for a set time).
func (t *Tx) AddAuditEvent(e AuditEvent) (AuditEvent, error) {
	if e.Action == "" {
		return e, fmt.Errorf("audit event: action missing")
	}
	id, err := t.tx.nextSequence(path(bucketAudit))
	if err != nil {
		return e, fmt.Errorf("next audit event id: %w", err)
	}
	e.ID = id
	if e.Time.IsZero() {
		e.Time = t.now()
	}
	e.Time = e.Time.UTC()
	return e, t.put(bucketAudit, itob(id), e)
}

// PruneAuditEvents removes the events of action older than before and
// returns how many. Ids grow with time, so it reads from the oldest and stops
// at the first event at or after before.
func (t *Tx) PruneAuditEvents(action string, before time.Time) (int, error) {
	var doomed [][]byte
	err := t.tx.scan(path(bucketAudit), nil, nil, false, func(k, v []byte) (bool, error) {
		var e AuditEvent
		if err := json.Unmarshal(v, &e); err != nil {
			return false, fmt.Errorf("audit event %x: %w", k, err)
		}
		if !e.Time.Before(before) {
			return false, nil
		}
		if e.Action == action {
			doomed = append(doomed, append([]byte(nil), k...))
		}
		return true, nil
	})
	if err != nil {
		return 0, err
	}
	for _, k := range doomed {
		if err := t.tx.del(path(bucketAudit), k); err != nil {
			return 0, err
		}
	}
	return len(doomed), nil
}

// AuditFilter selects audit events. Zero values select everything.
type AuditFilter struct {
	Deployment string
	Instance   string // "group/id" or "group"
	Action     string
	Since      time.Time // events at or after
	Before     uint64    // ids below (for paging back); 0: no bound
	Limit      int       // at most this many, newest first; 0: all
}

func (f AuditFilter) keep(e AuditEvent) bool {
	switch {
	case f.Deployment != "" && e.Deployment != f.Deployment:
		return false
	case f.Instance != "" && e.Instance != f.Instance && !strings.HasPrefix(e.Instance, f.Instance+"/"):
		return false
	case f.Action != "" && e.Action != f.Action:
		return false
	case !f.Since.IsZero() && e.Time.Before(f.Since):
		return false
	}
	return true
}

// AuditEvents lists the events f selects, newest first.
func (t *Tx) AuditEvents(f AuditFilter) ([]AuditEvent, error) {
	var out []AuditEvent
	var from []byte
	if f.Before > 1 {
		from = itob(f.Before - 1)
	} else if f.Before == 1 {
		return nil, nil
	}
	err := t.tx.scan(path(bucketAudit), nil, from, true, func(k, v []byte) (bool, error) {
		var e AuditEvent
		if err := json.Unmarshal(v, &e); err != nil {
			return false, fmt.Errorf("decode audit event %d: %w", btoi(k), err)
		}
		if !f.Since.IsZero() && e.Time.Before(f.Since) {
			// Ids grow with time: nothing older can match.
			return false, nil
		}
		if !f.keep(e) {
			return true, nil
		}
		out = append(out, e)
		return f.Limit <= 0 || len(out) < f.Limit, nil
	})
	return out, err
}

// ResurrectionSwitch turns the resurrector off (or back on) for a
// deployment, or for one instance group of it when Group is set.
type ResurrectionSwitch struct {
	Deployment string    `json:"deployment"`
	Group      string    `json:"group,omitempty"`
	Enabled    bool      `json:"enabled"`
	User       string    `json:"user,omitempty"`
	UpdatedAt  time.Time `json:"updated_at"`
}

func switchKey(deployment, group string) []byte {
	if group == "" {
		return []byte(deployment)
	}
	return []byte(deployment + "/" + group)
}

// PutResurrectionSwitch records a switch, replacing the one for the same
// deployment and group.
func (t *Tx) PutResurrectionSwitch(s ResurrectionSwitch) error {
	if s.Deployment == "" {
		return fmt.Errorf("resurrection switch: deployment missing")
	}
	if strings.Contains(s.Deployment, "/") || strings.Contains(s.Group, "/") {
		return fmt.Errorf("resurrection switch %s/%s: names may not hold '/'", s.Deployment, s.Group)
	}
	s.UpdatedAt = t.now().UTC()
	return t.put(bucketResurrection, switchKey(s.Deployment, s.Group), s)
}

// DeleteResurrectionSwitch removes a switch (the default, on, applies again).
func (t *Tx) DeleteResurrectionSwitch(deployment, group string) error {
	return t.del(bucketResurrection, switchKey(deployment, group))
}

// ResurrectionSwitches lists the switches of a deployment ("" for all),
// the deployment's own first, then its groups'.
func (t *Tx) ResurrectionSwitches(deployment string) ([]ResurrectionSwitch, error) {
	all, err := list[ResurrectionSwitch](t, bucketResurrection, deployment)
	return filter(all, func(s ResurrectionSwitch) bool { return deployment == "" || s.Deployment == deployment }), err
}

// ResurrectionEnabled reports whether the resurrector may act on the
// instance group of deployment: a group's switch wins over the
// deployment's, which wins over the default (on).
func (t *Tx) ResurrectionEnabled(deployment, group string) (bool, error) {
	for _, key := range [][]byte{switchKey(deployment, group), switchKey(deployment, "")} {
		var s ResurrectionSwitch
		err := t.get(bucketResurrection, key, &s)
		if err == ErrNotFound {
			continue
		}
		if err != nil {
			return false, err
		}
		return s.Enabled, nil
	}
	return true, nil
}

// TaskAuditEvent is the audit event of a finished task: the task's type as
// the action, its user, deployment and outcome. The composition root
// records one for every task (deploys, uploads, lifecycle verbs,
// resurrections) when it ends.
func TaskAuditEvent(t Task) AuditEvent {
	e := AuditEvent{Time: t.FinishedAt, User: t.User, TaskID: t.ID, Deployment: t.Deployment, Action: t.Type,
		Result: ResultOK, Context: map[string]string{"description": t.Description}}
	if e.Action == "" {
		e.Action = "task"
	}
	if t.Deployment != "" {
		e.ObjectType, e.Object = "deployment", t.Deployment
	}
	switch t.State {
	case TaskDone:
	case TaskCancelled:
		e.Result = "cancelled"
	default:
		e.Result, e.Error = ResultFailed, t.Error
	}
	return e
}
