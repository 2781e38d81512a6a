package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

// Store adapts the state file to the monitor and the resurrector: it lists
// instances, records audit events, reads resurrection switches and tells
// whether a deployment's lock is held.
type Store struct{ S *store.Store }

var (
	_ Instances = Store{}
	_ Events    = Store{}
	_ Switches  = Store{}
)

// Instances lists every deployment's instances that have a VM and an agent.
func (s Store) Instances(ctx context.Context) ([]Instance, error) {
	var out []Instance
	err := s.S.View(func(tx *store.Tx) error {
		deps, err := tx.Deployments()
		if err != nil {
			return err
		}
		vms, err := tx.VMs("")
		if err != nil {
			return err
		}
		cpiOf := make(map[string]string, len(vms))
		for _, v := range vms {
			cpiOf[v.CID] = v.CPI
		}
		for _, d := range deps {
			is, err := tx.Instances(d.Name)
			if err != nil {
				return err
			}
			for _, i := range is {
				if i.VMCID == "" || i.AgentID == "" || i.State == "detached" {
					continue
				}
				out = append(out, Instance{Deployment: i.Deployment, Group: i.Group, ID: i.ID, Index: i.Index,
					AgentID: i.AgentID, VMCID: i.VMCID, CPI: cpiOf[i.VMCID], State: i.State, Ignore: i.IgnoreFix})
			}
		}
		return nil
	})
	return out, err
}

// AddEvent appends an audit event.
func (s Store) AddEvent(ctx context.Context, e store.AuditEvent) error {
	return AddEvent(s.S, e)
}

// PruneEvents removes the audit events of action older than before.
func (s Store) PruneEvents(ctx context.Context, action string, before time.Time) (int, error) {
	var n int
	err := s.S.Update(func(tx *store.Tx) error {
		var err error
		n, err = tx.PruneAuditEvents(action, before)
		return err
	})
	return n, err
}

var _ Pruner = Store{}

// AddEvent appends e to the state file's audit log. Deploys and other
// operations record their events with it.
func AddEvent(s *store.Store, e store.AuditEvent) error {
	return s.Update(func(tx *store.Tx) error {
		_, err := tx.AddAuditEvent(e)
		return err
	})
}

// ResurrectionEnabled reads the switches.
func (s Store) ResurrectionEnabled(ctx context.Context, deployment, group string) (bool, error) {
	on := true
	err := s.S.View(func(tx *store.Tx) error {
		var err error
		on, err = tx.ResurrectionEnabled(deployment, group)
		return err
	})
	return on, err
}

// Busy reports whether the deployment's lock is held.
func (s Store) Busy(ctx context.Context, deployment string) bool {
	busy := false
	s.S.View(func(tx *store.Tx) error {
		locks, err := tx.Locks()
		for _, l := range locks {
			if l.Name == task.LockName(deployment) {
				busy = true
			}
		}
		return err
	})
	return busy
}

// BusyDeployments returns the deployments whose lock is held.
func (s Store) BusyDeployments(ctx context.Context) map[string]bool {
	busy := map[string]bool{}
	s.S.View(func(tx *store.Tx) error {
		locks, err := tx.Locks()
		for _, l := range locks {
			if d, ok := strings.CutPrefix(l.Name, task.LockName("")); ok {
				busy[d] = true
			}
		}
		return err
	})
	return busy
}

// Bus pings agents over the director's bus connection.
type Bus struct{ Conn *nats.Conn }

var _ Pinger = Bus{}

// Ping sends a ping request. An answer from the bus that nobody listens on
// the agent's subject yields ErrAgentGone.
func (b Bus) Ping(ctx context.Context, agentID string) error {
	req, err := protocol.NewRequest(protocol.MethodPing, nil)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(req)
	if err != nil {
		return err
	}
	_, err = b.Conn.RequestWithContext(ctx, protocol.Subject(agentID), raw)
	if errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("ping %s: %w", agentID, ErrAgentGone)
	}
	if err != nil {
		return fmt.Errorf("ping %s: %w", agentID, err)
	}
	return nil
}

// TaskRunner starts and follows director tasks (a *task.Manager).
type TaskRunner interface {
	Start(ctx context.Context, spec task.Spec, fn task.Func) (store.Task, error)
	Wait(ctx context.Context, id, after uint64) ([]store.Event, store.Task, error)
}

var _ TaskRunner = (*task.Manager)(nil)

// RecreateFunc recreates one instance's VM inside a task that holds the
// deployment's lock.
type RecreateFunc func(ctx context.Context, r *task.Reporter, deployment, instanceID, reason string) (string, error)

const resurrectTask = "resurrect"

// TaskRecreator runs each resurrection as a director task of type
// "resurrect" (user "resurrector") holding the deployment's lock, so that
// it never runs beside a deploy and shows in `director tasks`.
type TaskRecreator struct {
	Tasks TaskRunner
	Run   RecreateFunc
}

var _ Recreator = TaskRecreator{}

// Recreate implements Recreator: it starts the task and waits for its end.
func (t TaskRecreator) Recreate(ctx context.Context, deployment, instanceID, reason string) (uint64, error) {
	spec := task.Spec{Type: resurrectTask, Description: fmt.Sprintf("resurrect %s/%s (%s)", deployment, instanceID, reason),
		Deployment: deployment, User: UserResurrector}
	tk, err := t.Tasks.Start(ctx, spec, func(ctx context.Context, r *task.Reporter) (string, error) {
		return t.Run(ctx, r, deployment, instanceID, reason)
	})
	if err != nil {
		return 0, err
	}
	var after uint64
	for {
		evs, cur, err := t.Tasks.Wait(ctx, tk.ID, after)
		if err != nil {
			return tk.ID, fmt.Errorf("task %d: %w", tk.ID, err)
		}
		for _, e := range evs {
			after = e.Seq
		}
		if cur.Finished() {
			if cur.State != store.TaskDone {
				return tk.ID, fmt.Errorf("task %d %s: %s", cur.ID, cur.State, cur.Error)
			}
			return tk.ID, nil
		}
	}
}

// RecordTask records a finished task as an audit event
// (store.TaskAuditEvent), except resurrections, which the resurrector
// records itself with their task id.
func RecordTask(s *store.Store, t store.Task) error {
	if t.User == UserResurrector && t.Type == resurrectTask {
		return nil
	}
	return AddEvent(s, store.TaskAuditEvent(t))
}
