package health_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/director/health"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

const (
	interval = 200 * time.Millisecond
	timeout  = 1200 * time.Millisecond
)

func newMonitor(st *store.Store, b *bus, probe bool, healer health.Healer) *health.Monitor {
	c := health.Config{Instances: health.Store{S: st}, Events: health.Store{S: st}, Healer: healer,
		HeartbeatInterval: interval, Timeout: timeout, CheckInterval: 20 * time.Millisecond}
	if probe {
		c.Pinger = health.Bus{Conn: b.conn}
	}
	return health.NewMonitor(c)
}

func TestMonitorHeartbeatsJobStatesAndTimeout(t *testing.T) {
	t.Parallel()
	st, b := newStore(t), startBus(t)
	deployment(t, st, "web", 2)
	a0 := b.agent(t, "agent-web-0", interval)
	a1 := b.agent(t, "agent-web-1", interval)
	m := newMonitor(st, b, false, nil)
	runMonitor(t, m, b.conn)

	eventually(t, "both instances running", func() bool {
		return status(m, "web", "i0") == health.StatusRunning && status(m, "web", "i1") == health.StatusRunning
	})
	h, _ := m.Instance("web", "i0")
	if h.AgentID != "agent-web-0" || h.VMCID != "vm-web-0" || h.Group != "web" || h.LastHeartbeat.IsZero() ||
		len(h.Jobs) != 1 || h.Jobs[0].Processes[0].Name != "nginx" || h.Vitals == nil || h.Vitals.Mem.KB != 1024 {
		t.Errorf("instance health = %+v", h)
	}

	// A failing process is an event, and so is its recovery.
	a1.setJob("failing", "exit status 1")
	eventually(t, "i1 failing", func() bool { return status(m, "web", "i1") == health.StatusFailing })
	a1.setJob("running", "")
	eventually(t, "i1 running again", func() bool { return len(events(t, st, "job-recovered")) > 0 })
	if evs := events(t, st, "job-failing"); len(evs) != 1 || evs[0].Instance != "web/i1" || !strings.Contains(evs[0].Context["processes"], "web/nginx (failing: exit status 1)") {
		t.Errorf("job-failing events = %+v", evs)
	}
	if evs := events(t, st, "job-recovered"); len(evs) != 1 {
		t.Errorf("job-recovered events = %+v", evs)
	}

	// Alerts are recorded as they come.
	a1.alert("nginx failing", "failing")
	eventually(t, "the alert event", func() bool { return len(events(t, st, "alert")) == 1 })
	if e := events(t, st, "alert")[0]; e.Object != "web/nginx" || e.Context["title"] != "nginx failing" || e.User != health.UserMonitor {
		t.Errorf("alert event = %+v", e)
	}

	// A silent agent is late, then unresponsive after the timeout.
	a0.silence()
	eventually(t, "i0 unresponsive", func() bool { return len(events(t, st, "unresponsive")) > 0 })
	if status(m, "web", "i1") != health.StatusRunning {
		t.Errorf("i1 = %s", status(m, "web", "i1"))
	}
	evs := events(t, st, "unresponsive")
	if len(evs) != 1 || evs[0].Instance != "web/i0" || evs[0].Object != "vm-web-0" || !strings.Contains(evs[0].Context["reason"], "no heartbeat for") {
		t.Fatalf("unresponsive events = %+v", evs)
	}
	last, err := time.Parse(time.RFC3339Nano, evs[0].Context["last_heartbeat"])
	if err != nil || evs[0].Time.Sub(last) < timeout {
		t.Errorf("unresponsive at %s, last heartbeat %v (%v): before the timeout", evs[0].Time, last, err)
	}

	// Prometheus: instances by status and heartbeat ages.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	n, err := testutil.GatherAndCount(reg, "compleat_instances", "compleat_instance_heartbeat_age_seconds")
	if err != nil || n != len(health.Statuses)+2 {
		t.Errorf("metrics: %d series, %v", n, err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP compleat_instances Watched instances by deployment and health status.
# TYPE compleat_instances gauge
compleat_instances{deployment="web",status="failing"} 0
compleat_instances{deployment="web",status="late"} 0
compleat_instances{deployment="web",status="running"} 1
compleat_instances{deployment="web",status="starting"} 0
compleat_instances{deployment="web",status="stopped"} 0
compleat_instances{deployment="web",status="unknown"} 0
compleat_instances{deployment="web",status="unresponsive"} 1
`), "compleat_instances"); err != nil {
		t.Error(err)
	}

	// It comes back: recovered.
	a0b := b.agent(t, "agent-web-0", interval)
	eventually(t, "i0 recovered", func() bool { return len(events(t, st, "recovered")) > 0 })
	if evs := events(t, st, "recovered"); len(evs) != 1 || evs[0].Instance != "web/i0" {
		t.Errorf("recovered events = %+v", evs)
	}
	a0b.kill()
}

func TestMonitorProbeFindsDeadAgentBeforeTimeout(t *testing.T) {
	t.Parallel()
	st, b := newStore(t), startBus(t)
	deployment(t, st, "web", 1)
	a := b.agent(t, "agent-web-0", interval)
	// A long timeout: only the probe can find the dead agent in time.
	m := health.NewMonitor(health.Config{Instances: health.Store{S: st}, Events: health.Store{S: st}, Pinger: health.Bus{Conn: b.conn},
		HeartbeatInterval: interval, Timeout: time.Hour, CheckInterval: 20 * time.Millisecond})
	runMonitor(t, m, b.conn)
	eventually(t, "running", func() bool { return status(m, "web", "i0") == health.StatusRunning })
	a.kill()
	eventually(t, "unresponsive", func() bool { return status(m, "web", "i0") == health.StatusUnresponsive })
	// The event is written after the status changes: wait for it too.
	eventually(t, "an unresponsive event", func() bool { return len(events(t, st, "unresponsive")) > 0 })
	if evs := events(t, st, "unresponsive"); len(evs) != 1 || evs[0].Context["reason"] != "agent is not connected to the bus" {
		t.Errorf("unresponsive events = %+v", evs)
	}
}

func TestMonitorProbeLeavesHungButConnectedAgentToTheTimeout(t *testing.T) {
	t.Parallel()
	st, b := newStore(t), startBus(t)
	deployment(t, st, "web", 1)
	a := b.agent(t, "agent-web-0", interval)
	m := health.NewMonitor(health.Config{Instances: health.Store{S: st}, Events: health.Store{S: st}, Pinger: health.Bus{Conn: b.conn},
		HeartbeatInterval: interval, Timeout: time.Hour, CheckInterval: 20 * time.Millisecond})
	runMonitor(t, m, b.conn)
	eventually(t, "running", func() bool { return status(m, "web", "i0") == health.StatusRunning })
	a.silence() // still connected, still answering pings
	eventually(t, "late", func() bool { return status(m, "web", "i0") == health.StatusLate })
	time.Sleep(10 * interval)
	if s := status(m, "web", "i0"); s != health.StatusLate {
		t.Errorf("a connected agent that answers pings is %s before the timeout", s)
	}
}

func TestMonitorForgetsDeletedInstancesAndLearnsNewAgents(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	deployment(t, st, "web", 1)
	now := time.Now()
	m := health.NewMonitor(health.Config{Instances: health.Store{S: st}, Events: health.Store{S: st}, HeartbeatInterval: interval, Timeout: timeout,
		Now: func() time.Time { return now }})
	ctx := context.Background()
	if err := m.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if s := status(m, "web", "i0"); s != health.StatusUnknown {
		t.Errorf("before any heartbeat: %s", s)
	}
	// A new agent of no known instance makes the monitor read the state
	// again at the next check.
	st.Update(func(tx *store.Tx) error {
		in, err := tx.Instance("web", "web", "i0")
		in.AgentID = "agent-new"
		tx.PutInstance(in)
		return err
	})
	m.Heartbeat("agent-new", protocol.Heartbeat{State: protocol.State{JobState: "running"}})
	m.Check(ctx)
	if h, _ := m.Instance("web", "i0"); h.AgentID != "agent-new" || h.Status != health.StatusRunning {
		t.Errorf("after the new agent spoke: %+v", h)
	}
	// A deleted instance is forgotten within the refresh period.
	st.Update(func(tx *store.Tx) error { return tx.DeleteDeployment("web") })
	now = now.Add(3 * time.Second)
	m.Check(ctx)
	if s := status(m, "web", "i0"); s != "absent" {
		t.Errorf("deleted instance: %s", s)
	}
}

func TestMonitorHoldsBusyDeploymentsAtLate(t *testing.T) {
	t.Parallel()
	st, b := newStore(t), startBus(t)
	deployment(t, st, "web", 1)
	a := b.agent(t, "agent-web-0", interval)
	m := health.NewMonitor(health.Config{Instances: health.Store{S: st}, Events: health.Store{S: st}, Pinger: health.Bus{Conn: b.conn},
		HeartbeatInterval: interval, Timeout: timeout, CheckInterval: 20 * time.Millisecond, Busy: health.Store{S: st}.BusyDeployments})
	// A deploy holds the lock.
	if err := st.Update(func(tx *store.Tx) error {
		_, err := tx.AcquireLock(task.LockName("web"), "task 1", 1, time.Hour)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	runMonitor(t, m, b.conn)
	eventually(t, "running", func() bool { return status(m, "web", "i0") == health.StatusRunning })
	a.kill()
	eventually(t, "late", func() bool { return status(m, "web", "i0") == health.StatusLate })
	time.Sleep(2 * timeout)
	if s := status(m, "web", "i0"); s != health.StatusLate || len(events(t, st, "unresponsive")) != 0 {
		t.Fatalf("during the deploy: %s, events %+v", s, events(t, st, "unresponsive"))
	}
	st.Update(func(tx *store.Tx) error { return tx.ReleaseLock(task.LockName("web"), "task 1") })
	eventually(t, "the unresponsive event once the lock is free", func() bool { return len(events(t, st, "unresponsive")) == 1 })
}
