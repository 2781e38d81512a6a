package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/compleat/compleat/agent/client"
	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/director/store"
)

// Statuses of an instance.
const (
	StatusUnknown      = "unknown"
	StatusRunning      = protocol.StateRunning
	StatusStarting     = protocol.StateStarting
	StatusFailing      = protocol.StateFailing
	StatusStopped      = protocol.StateStopped
	StatusLate         = "late"
	StatusUnresponsive = "unresponsive"
)

// Statuses lists every status, for metrics.
var Statuses = []string{StatusUnknown, StatusRunning, StatusStarting, StatusFailing, StatusStopped, StatusLate, StatusUnresponsive}

// Who writes the monitor's and the resurrector's events.
const (
	UserMonitor     = "health-monitor"
	UserResurrector = "resurrector"
)

// Instance is an instance the monitor watches: one with a VM and an agent.
type Instance struct {
	Deployment string `json:"deployment"`
	Group      string `json:"group"`
	ID         string `json:"id"`
	Index      int    `json:"index"`
	AgentID    string `json:"agent_id"`
	VMCID      string `json:"vm_cid"`
	CPI        string `json:"cpi,omitempty"`
	// State is the desired state ("started", "stopped").
	State string `json:"state,omitempty"`
	// Ignore is set for instances cloud-check was told to ignore: the
	// resurrector leaves them alone.
	Ignore bool `json:"ignore,omitempty"`
}

// Name is "group/id".
func (i Instance) Name() string { return i.Group + "/" + i.ID }

// Instances lists the instances to watch.
type Instances interface {
	Instances(ctx context.Context) ([]Instance, error)
}

// Events records audit events.
type Events interface {
	AddEvent(ctx context.Context, e store.AuditEvent) error
}

// Pinger asks an agent whether it is there. It returns an error wrapping
// ErrAgentGone when the bus says nobody listens on the agent's subject.
type Pinger interface {
	Ping(ctx context.Context, agentID string) error
}

// ErrAgentGone: no agent is connected under that id.
var ErrAgentGone = errors.New("agent is not connected to the bus")

// Healer acts on a deployment's health after every check.
type Healer interface {
	Consider(ctx context.Context, deployment string, instances []InstanceHealth)
}

// InstanceHealth is an instance's health as the monitor sees it.
type InstanceHealth struct {
	Instance
	Status string `json:"status"`
	// Since is when the status last changed.
	Since         time.Time `json:"since"`
	LastHeartbeat time.Time `json:"last_heartbeat,omitzero"`
	// HeartbeatAge is the time since the last heartbeat (since the monitor
	// learned of the instance when none came yet), in seconds.
	HeartbeatAge float64             `json:"heartbeat_age_s"`
	JobState     string              `json:"job_state,omitempty"`
	Jobs         []protocol.JobState `json:"jobs,omitempty"`
	Vitals       *protocol.Vitals    `json:"vitals,omitempty"`
	// Reason says why an instance is unresponsive.
	Reason string `json:"reason,omitempty"`
}

// Down reports whether the instance counts as down for the meltdown guard.
func (h InstanceHealth) Down() bool {
	return h.Status == StatusUnresponsive || h.Status == StatusLate
}

// Config configures a Monitor. Instances is required.
type Config struct {
	Instances Instances
	Events    Events // nil: no audit events
	Pinger    Pinger // nil: no probing, the timeout alone decides
	Healer    Healer // nil: watch only
	Logger    *slog.Logger
	// HeartbeatInterval is the agents' heartbeat interval (default 5s).
	HeartbeatInterval time.Duration
	// Timeout is the silence after which an agent is unresponsive (default
	// 3 × HeartbeatInterval).
	Timeout time.Duration
	// CheckInterval is the period of Run's checks (default 1s, at most
	// HeartbeatInterval/2).
	CheckInterval time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Busy returns the deployments whose lock a task holds (nil: none). A
	// deploy deletes and creates VMs on purpose: while it runs, the
	// instances of its deployment are at worst late, never unresponsive.
	Busy func(ctx context.Context) map[string]bool
	// AlertRetention is how long alert events are kept when Events is a
	// Pruner (default AlertRetention; negative: forever).
	AlertRetention time.Duration
}

type beat struct {
	at time.Time
	hb protocol.Heartbeat
}

type entry struct {
	inst    Instance
	learned time.Time
	status  string
	since   time.Time
	reason  string
	// probing state
	probing     bool
	lastProbe   time.Time
	noResponder int
	gone        bool
}

// refreshEvery bounds how long the monitor keeps an instance list before
// reading the state file again (sooner when an unknown agent speaks).
const refreshEvery = 2 * time.Second

// Monitor tracks instances' health. It is safe for concurrent use.
type Monitor struct {
	c   Config
	log *slog.Logger

	mu      sync.Mutex
	entries map[string]*entry // by agent id
	beats   map[string]beat   // by agent id, also agents of no instance
	beatsN  uint64
	// insts is the instance list as last read (at listed); stranger is set
	// when an agent of no known instance sends a heartbeat.
	insts    []Instance
	listed   time.Time
	stranger bool
	alertsN  uint64
	// alertBuckets rate-limit each agent's alerts; dropped counts those over
	// the rate; pruned is when old alert events were last removed.
	alertBuckets map[string]*bucket
	dropped      uint64
	pruned       time.Time
	wg           sync.WaitGroup
}

// NewMonitor returns a monitor; call Subscribe and Run to start it.
func NewMonitor(c Config) *Monitor {
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 5 * time.Second
	}
	if c.Timeout <= 0 {
		c.Timeout = 3 * c.HeartbeatInterval
	}
	if c.CheckInterval <= 0 {
		c.CheckInterval = min(500*time.Millisecond, c.HeartbeatInterval/2)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.AlertRetention == 0 {
		c.AlertRetention = AlertRetention
	}
	return &Monitor{c: c, log: c.Logger, entries: map[string]*entry{}, beats: map[string]beat{}, alertBuckets: map[string]*bucket{}}
}

// Timeout is the silence after which an agent is unresponsive.
func (m *Monitor) Timeout() time.Duration { return m.c.Timeout }

// Subscribe subscribes to every agent's heartbeats and alerts on conn (the
// director's bus connection) and returns a function that unsubscribes.
func (m *Monitor) Subscribe(conn *nats.Conn) (func(), error) {
	hs, err := client.Heartbeats(conn, m.Heartbeat)
	if err != nil {
		return nil, fmt.Errorf("subscribe to heartbeats: %w", err)
	}
	as, err := client.Alerts(conn, func(agentID string, a protocol.Alert) { m.Alert(context.Background(), agentID, a) })
	if err != nil {
		hs.Unsubscribe()
		return nil, fmt.Errorf("subscribe to alerts: %w", err)
	}
	// Heartbeats of a thousand agents must not be dropped as a slow
	// consumer's.
	hs.SetPendingLimits(1<<20, 256<<20)
	return func() { hs.Unsubscribe(); as.Unsubscribe() }, nil
}

// Heartbeat records a heartbeat of agentID. It is cheap: checks happen in
// Check.
func (m *Monitor) Heartbeat(agentID string, hb protocol.Heartbeat) {
	now := m.c.Now()
	m.mu.Lock()
	m.beats[agentID] = beat{at: now, hb: hb}
	m.beatsN++
	if e := m.entries[agentID]; e != nil {
		e.gone, e.noResponder = false, 0
	} else {
		m.stranger = true // a new VM's agent, perhaps: list the instances again
	}
	m.mu.Unlock()
}

// Alert records an alert of agentID as an audit event: at most AlertBurst
// at once and one per AlertEvery after that per agent, its fields cut to
// AlertFieldMax (summary AlertSummaryMax).
func (m *Monitor) Alert(ctx context.Context, agentID string, a protocol.Alert) {
	m.mu.Lock()
	m.alertsN++
	e := m.entries[agentID]
	var inst Instance
	if e != nil {
		inst = e.inst
	}
	allowed := e != nil && m.allowAlert(agentID, m.c.Now())
	if e != nil && !allowed {
		m.dropped++
	}
	m.mu.Unlock()
	if e == nil {
		m.log.Debug("alert from an agent of no instance", "agent", agentID, "title", cut(a.Title, AlertFieldMax))
		return
	}
	if !allowed {
		m.log.Debug("alert over the agent's rate dropped", "agent", agentID)
		return
	}
	a.Title, a.Summary, a.State = cut(a.Title, AlertFieldMax), cut(a.Summary, AlertSummaryMax), cut(a.State, AlertFieldMax)
	a.Job, a.Process = cut(a.Job, AlertFieldMax), cut(a.Process, AlertFieldMax)
	ev := store.AuditEvent{Time: m.c.Now(), User: UserMonitor, Deployment: inst.Deployment, Instance: inst.Name(), Action: "alert",
		Result: store.ResultInfo, Context: map[string]string{"title": a.Title, "severity": fmt.Sprint(a.Severity), "agent": agentID}}
	if a.Summary != "" {
		ev.Context["summary"] = a.Summary
	}
	if a.Job != "" || a.Process != "" {
		ev.ObjectType, ev.Object = "process", strings.Trim(a.Job+"/"+a.Process, "/")
	}
	if a.State != "" {
		ev.Context["state"] = a.State
	}
	m.event(ctx, ev)
}

func (m *Monitor) event(ctx context.Context, e store.AuditEvent) {
	if m.c.Events == nil {
		return
	}
	if err := m.c.Events.AddEvent(ctx, e); err != nil {
		m.log.Error("record audit event", "action", e.Action, "instance", e.Instance, "error", err)
	}
}

// Run checks every CheckInterval until ctx ends, then waits for probes in
// flight.
func (m *Monitor) Run(ctx context.Context) error {
	t := time.NewTicker(m.c.CheckInterval)
	defer t.Stop()
	defer m.wg.Wait()
	for {
		if err := m.Check(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("health check", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Check refreshes the instance list, updates every status, records the
// changes as events, probes late agents and hands each deployment to the
// healer.
func (m *Monitor) Check(ctx context.Context) error {
	var busy map[string]bool
	if m.c.Busy != nil {
		busy = m.c.Busy(ctx)
	}
	now := m.c.Now()
	m.pruneAlerts(ctx, now)
	m.mu.Lock()
	refresh := m.stranger || m.insts == nil || now.Sub(m.listed) >= refreshEvery
	insts := m.insts
	m.mu.Unlock()
	if refresh {
		var err error
		if insts, err = m.c.Instances.Instances(ctx); err != nil {
			return fmt.Errorf("list instances: %w", err)
		}
		if insts == nil {
			insts = []Instance{}
		}
	}
	var events []store.AuditEvent
	var probes []string

	m.mu.Lock()
	if refresh {
		m.insts, m.listed, m.stranger = insts, now, false
	}
	seen := make(map[string]bool, len(insts))
	for _, in := range insts {
		if in.AgentID == "" || in.VMCID == "" {
			continue
		}
		seen[in.AgentID] = true
		e := m.entries[in.AgentID]
		if e == nil {
			e = &entry{learned: now, status: StatusUnknown, since: now}
			m.entries[in.AgentID] = e
		}
		e.inst = in
	}
	for id := range m.entries {
		if !seen[id] {
			delete(m.entries, id)
		}
	}
	for id := range m.alertBuckets {
		if !seen[id] {
			delete(m.alertBuckets, id)
		}
	}
	for id, b := range m.beats {
		if !seen[id] && now.Sub(b.at) > 2*m.c.Timeout {
			delete(m.beats, id)
		}
	}
	for id, e := range m.entries {
		b, ok := m.beats[id]
		status, reason := m.status(now, e, b, ok)
		if status == StatusUnresponsive && busy[e.inst.Deployment] {
			status, reason = StatusLate, ""
		}
		if m.c.Pinger != nil && status != StatusUnresponsive && m.overdue(now, e, b, ok) && !e.probing && now.Sub(e.lastProbe) >= m.c.HeartbeatInterval/10 {
			e.probing, e.lastProbe = true, now
			probes = append(probes, id)
		}
		if status == e.status {
			continue
		}
		events = append(events, transition(e, status, reason, b, ok)...)
		e.status, e.since, e.reason = status, now, reason
	}
	byDeployment := m.snapshotLocked(now)
	m.mu.Unlock()

	for _, ev := range events {
		m.event(ctx, ev)
	}
	for _, id := range probes {
		m.probe(ctx, id)
	}
	if m.c.Healer != nil {
		for _, d := range slices.Sorted(maps.Keys(byDeployment)) {
			m.c.Healer.Consider(ctx, d, byDeployment[d])
		}
	}
	return nil
}

// overdue reports whether the agent's next heartbeat is late by more than
// a fifth of the interval: time to probe it.
func (m *Monitor) overdue(now time.Time, e *entry, b beat, ok bool) bool {
	ref := e.learned
	if ok && b.at.After(ref) {
		ref = b.at
	}
	return now.Sub(ref) > m.c.HeartbeatInterval+m.c.HeartbeatInterval/5
}

// status computes an entry's status at now.
func (m *Monitor) status(now time.Time, e *entry, b beat, ok bool) (string, string) {
	ref := e.learned
	if ok && b.at.After(ref) {
		ref = b.at
	}
	age := now.Sub(ref)
	switch {
	case e.gone:
		return StatusUnresponsive, "agent is not connected to the bus"
	case age > m.c.Timeout:
		if ok {
			return StatusUnresponsive, fmt.Sprintf("no heartbeat for %s", age.Round(time.Second))
		}
		return StatusUnresponsive, fmt.Sprintf("no heartbeat since the monitor started watching %s ago", age.Round(time.Second))
	case age > m.c.HeartbeatInterval*3/2:
		return StatusLate, ""
	case !ok || b.hb.JobState == "":
		return StatusUnknown, ""
	}
	return b.hb.JobState, ""
}

// transition returns the events of e moving to status.
func transition(e *entry, status, reason string, b beat, ok bool) []store.AuditEvent {
	in := e.inst
	base := store.AuditEvent{User: UserMonitor, Deployment: in.Deployment, Instance: in.Name(), ObjectType: "vm", Object: in.VMCID}
	var out []store.AuditEvent
	switch {
	case status == StatusUnresponsive:
		ev := base
		ev.Action, ev.Result = "unresponsive", store.ResultInfo
		ev.Context = map[string]string{"agent": in.AgentID, "reason": reason}
		if ok {
			ev.Context["last_heartbeat"] = b.at.UTC().Format(time.RFC3339Nano)
		}
		out = append(out, ev)
	case e.status == StatusUnresponsive:
		ev := base
		ev.Action, ev.Result = "recovered", store.ResultInfo
		ev.Context = map[string]string{"agent": in.AgentID, "status": status}
		out = append(out, ev)
	}
	if status == StatusFailing && ok {
		ev := base
		ev.Action, ev.Result = "job-failing", store.ResultInfo
		ev.Context = map[string]string{"processes": failing(b.hb.Jobs)}
		out = append(out, ev)
	} else if e.status == StatusFailing && status == StatusRunning {
		ev := base
		ev.Action, ev.Result = "job-recovered", store.ResultInfo
		out = append(out, ev)
	}
	return out
}

// failing names the processes not running: "web/nginx (failing: exit 1)".
func failing(jobs []protocol.JobState) string {
	var parts []string
	for _, j := range jobs {
		for _, p := range j.Processes {
			if p.State == protocol.StateRunning {
				continue
			}
			s := j.Name + "/" + p.Name + " (" + p.State
			if p.Error != "" {
				s += ": " + p.Error
			}
			parts = append(parts, s+")")
		}
	}
	return strings.Join(parts, "; ")
}

// probe pings agentID in the background; two "nobody listens" answers in a
// row mark it gone.
func (m *Monitor) probe(ctx context.Context, agentID string) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		pctx, cancel := context.WithTimeout(ctx, min(time.Second, m.c.HeartbeatInterval))
		err := m.c.Pinger.Ping(pctx, agentID)
		cancel()
		m.mu.Lock()
		defer m.mu.Unlock()
		e := m.entries[agentID]
		if e == nil {
			return
		}
		e.probing = false
		switch {
		case errors.Is(err, ErrAgentGone):
			e.noResponder++
			if e.noResponder >= 2 {
				e.gone = true
			}
		case err == nil:
			e.noResponder = 0
		}
	}()
}

// snapshotLocked returns every instance's health by deployment.
func (m *Monitor) snapshotLocked(now time.Time) map[string][]InstanceHealth {
	out := map[string][]InstanceHealth{}
	for id, e := range m.entries {
		b, ok := m.beats[id]
		h := InstanceHealth{Instance: e.inst, Status: e.status, Since: e.since, Reason: e.reason}
		ref := e.learned
		if ok {
			ref = b.at
			if e.learned.After(ref) {
				ref = e.learned
			}
			h.LastHeartbeat = b.at
			h.JobState = b.hb.JobState
			h.Jobs = b.hb.Jobs
			v := b.hb.Vitals
			h.Vitals = &v
		}
		h.HeartbeatAge = now.Sub(ref).Seconds()
		out[e.inst.Deployment] = append(out[e.inst.Deployment], h)
	}
	for _, hs := range out {
		sort.Slice(hs, func(i, j int) bool {
			if hs[i].Group != hs[j].Group {
				return hs[i].Group < hs[j].Group
			}
			if hs[i].Index != hs[j].Index {
				return hs[i].Index < hs[j].Index
			}
			return hs[i].ID < hs[j].ID
		})
	}
	return out
}

// Deployment returns the health of a deployment's instances, by group and
// index (none when the monitor knows no instance of it).
func (m *Monitor) Deployment(name string) []InstanceHealth {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.snapshotLocked(m.c.Now())[name]
}

// Instance returns one instance's health.
func (m *Monitor) Instance(deployment, id string) (InstanceHealth, bool) {
	for _, h := range m.Deployment(deployment) {
		if h.ID == id {
			return h, true
		}
	}
	return InstanceHealth{}, false
}

// Stats are counters since the monitor started.
type Stats struct {
	Heartbeats uint64
	Alerts     uint64
	// AlertsDropped counts alerts over an agent's rate.
	AlertsDropped uint64
	Agents        int // agents heard from recently, instance or not
	Instances     int
}

// Stats returns the monitor's counters.
func (m *Monitor) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Stats{Heartbeats: m.beatsN, Alerts: m.alertsN, AlertsDropped: m.dropped, Agents: len(m.beats), Instances: len(m.entries)}
}
