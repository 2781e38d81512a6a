package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

// VMCloud is the part of the CPI contract a resurrection uses to get rid of
// the dead VM.
type VMCloud interface {
	DetachDisk(ctx context.Context, vmCID, diskCID string) error
	DeleteVM(ctx context.Context, vmCID string) error
}

// Options tune the service; zero values take the defaults.
type Options struct {
	HeartbeatInterval time.Duration // 5s
	Timeout           time.Duration // 3 × HeartbeatInterval
	Threshold         float64       // 0.5
	Window            time.Duration // 1m
	// NoResurrection runs the monitor alone.
	NoResurrection bool
}

// Deps are what the service takes from the composition root.
type Deps struct {
	Store *store.Store
	// Conn is the director's bus connection.
	Conn  *nats.Conn
	Tasks TaskRunner
	// Recreator recreates an instance through the deploy pipeline. When nil,
	// a resurrection runs as a task that deletes the dead VM (detaching its
	// persistent disks) and then calls Recreate.
	Recreator Recreator
	// Recreate brings up an instance that has no VM, with its persistent
	// disk, through the deploy pipeline (a ChangeState "recreate" of
	// "group/id"); it runs inside the resurrection task, which holds the
	// deployment's lock.
	Recreate func(ctx context.Context, r *task.Reporter, deployment, target string) error
	// CPIs returns a CPI by name (to delete dead VMs).
	CPIs func(ctx context.Context, name string) (VMCloud, error)
	// CheckVM, when set, is asked before a dead VM is deleted: an error
	// (the VM's tags name another director or agent) keeps it.
	CheckVM func(ctx context.Context, cpiName, vmCID, agentID string) error
	// Registerer receives the monitor's and the resurrector's metrics
	// (nil: none).
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Options    Options
	// Leading, when set, tells whether this director leads several (HA):
	// every director watches heartbeats (its API answers for health), but
	// only the leader resurrects and records health events. Nil: always.
	Leading func() bool
}

// Service is the running monitor and resurrector.
type Service struct {
	Monitor     *Monitor
	Resurrector *Resurrector // nil with NoResurrection
	// Recreator is what resurrections (and cloud-check's recreate_vm) use.
	Recreator Recreator

	cancel context.CancelFunc
	unsub  func()
	done   chan struct{}
	once   sync.Once
}

// Start builds the monitor and the resurrector, subscribes to heartbeats
// and alerts, and checks until ctx ends or Close is called.
func Start(ctx context.Context, d Deps) (*Service, error) {
	if d.Store == nil || d.Conn == nil {
		return nil, errors.New("health: store and bus connection are required")
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	st := Store{S: d.Store}
	s := &Service{done: make(chan struct{}), Recreator: d.Recreator}
	if s.Recreator == nil && d.Tasks != nil && d.Recreate != nil && d.CPIs != nil {
		s.Recreator = TaskRecreator{Tasks: d.Tasks, Run: replaceVM(d)}
	}
	var healer Healer
	if !d.Options.NoResurrection && s.Recreator != nil {
		s.Resurrector = NewResurrector(ResurrectorConfig{Recreator: s.Recreator, Switches: st, Events: st, Busy: st.Busy, Active: d.Leading,
			Logger: d.Logger.With("component", "resurrector"), Threshold: d.Options.Threshold, Window: d.Options.Window})
		healer = s.Resurrector
	} else if !d.Options.NoResurrection {
		d.Logger.Warn("no way to recreate VMs: the resurrector is off")
	}
	var events Events = st
	if d.Leading != nil {
		events = leaderEvents{events: st, leading: d.Leading}
	}
	s.Monitor = NewMonitor(Config{Instances: st, Events: events, Pinger: Bus{Conn: d.Conn}, Healer: healer, Busy: st.BusyDeployments,
		Logger: d.Logger.With("component", "health"), HeartbeatInterval: d.Options.HeartbeatInterval, Timeout: d.Options.Timeout})
	if d.Registerer != nil {
		if err := d.Registerer.Register(s.Monitor); err != nil {
			return nil, fmt.Errorf("health metrics: %w", err)
		}
		if s.Resurrector != nil {
			if err := d.Registerer.Register(s.Resurrector); err != nil {
				return nil, fmt.Errorf("resurrector metrics: %w", err)
			}
		}
	}
	unsub, err := s.Monitor.Subscribe(d.Conn)
	if err != nil {
		return nil, err
	}
	s.unsub = unsub
	rctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	go func() {
		defer close(s.done)
		s.Monitor.Run(rctx)
	}()
	d.Logger.Info("health monitor started", "heartbeat_interval", s.Monitor.c.HeartbeatInterval, "timeout", s.Monitor.c.Timeout,
		"resurrection", s.Resurrector != nil)
	return s, nil
}

// Close stops the checks and waits for recreations in flight.
func (s *Service) Close() {
	s.once.Do(func() {
		s.cancel()
		<-s.done
		s.unsub()
		if s.Resurrector != nil {
			s.Resurrector.Wait()
		}
	})
}

// replaceVM is a resurrection as a task body: the dead VM is deleted (its
// persistent disks detached first) and forgotten, then the deploy pipeline
// brings the instance up on a new VM with its disks.
func replaceVM(d Deps) RecreateFunc {
	return func(ctx context.Context, r *task.Reporter, deployment, instanceID, reason string) (string, error) {
		var in store.Instance
		var vm store.VM
		err := d.Store.View(func(tx *store.Tx) error {
			is, err := tx.Instances(deployment)
			if err != nil {
				return err
			}
			for _, i := range is {
				if i.ID == instanceID {
					in = i
				}
			}
			if in.ID == "" {
				return fmt.Errorf("instance %s of %s: %w", instanceID, deployment, store.ErrNotFound)
			}
			if in.VMCID != "" {
				vm, err = tx.VM(in.VMCID)
				if errors.Is(err, store.ErrNotFound) {
					err = nil
				}
			}
			return err
		})
		if err != nil {
			return "", err
		}
		if in.State != "started" {
			return "", fmt.Errorf("instance %s/%s is %s: a resurrection brings up started instances only", in.Group, in.ID, in.State)
		}
		name := in.Group + "/" + in.ID
		if in.VMCID != "" {
			step := "Deleting unresponsive VM " + in.VMCID + " of " + name
			r.Event(store.Event{Stage: "Resurrecting", Step: step, State: "started"})
			if err := deleteDeadVM(ctx, d, in, vm); err != nil {
				r.Event(store.Event{Stage: "Resurrecting", Step: step, State: "failed", Error: err.Error()})
				return "", err
			}
			r.Event(store.Event{Stage: "Resurrecting", Step: step, State: "finished"})
		}
		if err := d.Recreate(ctx, r, deployment, name); err != nil {
			return "", fmt.Errorf("recreate %s: %w", name, err)
		}
		return fmt.Sprintf("Resurrected %s (%s).", name, reason), nil
	}
}

// deleteDeadVM detaches the instance's disks from its VM, deletes the VM
// and clears the references, recording the intent first.
func deleteDeadVM(ctx context.Context, d Deps, in store.Instance, vm store.VM) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	cpiName := vm.CPI
	c, err := d.CPIs(ctx, cpiName)
	if err != nil {
		return fmt.Errorf("cpi %q: %w", cpiName, err)
	}
	if d.CheckVM != nil {
		if err := d.CheckVM(ctx, cpiName, in.VMCID, in.AgentID); err != nil {
			return fmt.Errorf("delete vm %s: %w", in.VMCID, err)
		}
	}
	if vm.CID != "" {
		vm.State = "deleting"
		if err := d.Store.Update(func(tx *store.Tx) error { return tx.PutVM(vm) }); err != nil {
			return err
		}
	}
	for _, disk := range in.DiskCIDs {
		if err := c.DetachDisk(ctx, in.VMCID, disk); err != nil && !errors.Is(err, cpi.ErrVMNotFound) && !errors.Is(err, cpi.ErrDiskNotFound) {
			return fmt.Errorf("detach disk %s from vm %s: %w", disk, in.VMCID, err)
		}
	}
	if err := c.DeleteVM(ctx, in.VMCID); err != nil && !errors.Is(err, cpi.ErrVMNotFound) {
		return fmt.Errorf("delete vm %s: %w", in.VMCID, err)
	}
	return d.Store.Update(func(tx *store.Tx) error {
		cur, err := tx.Instance(in.Deployment, in.Group, in.ID)
		if err != nil {
			return err
		}
		if cur.VMCID == in.VMCID {
			cur.VMCID, cur.AgentID = "", ""
			if err := tx.PutInstance(cur); err != nil {
				return err
			}
		}
		if err := tx.DeleteVM(in.VMCID); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return nil
	})
}

// leaderEvents records health events only while this director leads, so
// that several directors watching the same agents record each event once.
type leaderEvents struct {
	events  Events
	leading func() bool
}

func (l leaderEvents) AddEvent(ctx context.Context, e store.AuditEvent) error {
	if !l.leading() {
		return nil
	}
	return l.events.AddEvent(ctx, e)
}
