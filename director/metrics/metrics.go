// Package metrics holds the director's Prometheus metrics: tasks, CPI calls,
// agents' heartbeats, tasks running and bus clients. The API serves its
// Registry at /metrics.
package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/compleat/compleat/director/store"
)

// Metrics are the director's Prometheus metrics, served at /metrics. The
// health monitor reports heartbeats through AgentHeartbeat; the CPI manager
// reports calls through ObserveCPI; the task manager reports finished tasks
// through TaskFinished.
type Metrics struct {
	Registry *prometheus.Registry
	tasks    *prometheus.CounterVec
	cpiCalls *prometheus.HistogramVec
	mu       sync.Mutex
	lastBeat map[string]time.Time
	now      func() time.Time
}

// New registers the director's metrics. running reports the number of
// unfinished tasks and busClients the message bus's connected clients (either
// may be nil).
func New(running func() float64, busClients func() float64) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "compleat_tasks_finished_total", Help: "Tasks finished, by type and final state.",
		}, []string{"type", "state"}),
		cpiCalls: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "compleat_cpi_call_duration_seconds", Help: "CPI call latency by CPI, method and outcome.",
			Buckets: prometheus.ExponentialBuckets(0.005, 3, 10),
		}, []string{"cpi", "method", "outcome"}),
		lastBeat: map[string]time.Time{},
		now:      time.Now,
	}
	m.Registry.MustRegister(m.tasks, m.cpiCalls, collectors.NewGoCollector(), (*beats)(m))
	if running != nil {
		m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "compleat_tasks_running", Help: "Tasks not yet finished.",
		}, running))
	}
	if busClients != nil {
		m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "compleat_mbus_clients", Help: "Clients connected to the message bus.",
		}, busClients))
	}
	return m
}

// TaskFinished counts a finished task.
func (m *Metrics) TaskFinished(t store.Task) { m.tasks.WithLabelValues(t.Type, t.State).Inc() }

// ObserveCPI records one CPI call.
func (m *Metrics) ObserveCPI(cpiName, method string, took time.Duration, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.cpiCalls.WithLabelValues(cpiName, method, outcome).Observe(took.Seconds())
}

// AgentHeartbeat records that an agent's heartbeat arrived at t.
func (m *Metrics) AgentHeartbeat(agentID string, t time.Time) {
	m.mu.Lock()
	m.lastBeat[agentID] = t
	m.mu.Unlock()
}

// agentForgetAfter is how long an agent that stopped sending heartbeats
// stays in the agent metrics (a deleted VM's agent, a compile VM's).
const agentForgetAfter = 10 * time.Minute

// AgentGone forgets an agent (its VM was deleted).
func (m *Metrics) AgentGone(agentID string) {
	m.mu.Lock()
	delete(m.lastBeat, agentID)
	m.mu.Unlock()
}

// beats exports agents seen and each agent's heartbeat age at scrape time.
type beats Metrics

var (
	agentsSeenDesc = prometheus.NewDesc("compleat_agents_seen", "Agents that sent a heartbeat in the last 10 minutes.", nil, nil)
	beatAgeDesc    = prometheus.NewDesc("compleat_agent_heartbeat_age_seconds", "Seconds since the agent's last heartbeat.", []string{"agent"}, nil)
)

func (b *beats) Describe(ch chan<- *prometheus.Desc) { ch <- agentsSeenDesc; ch <- beatAgeDesc }

func (b *beats) Collect(ch chan<- prometheus.Metric) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	for id, t := range b.lastBeat {
		if now.Sub(t) > agentForgetAfter {
			delete(b.lastBeat, id)
		}
	}
	ch <- prometheus.MustNewConstMetric(agentsSeenDesc, prometheus.GaugeValue, float64(len(b.lastBeat)))
	for id, t := range b.lastBeat {
		ch <- prometheus.MustNewConstMetric(beatAgeDesc, prometheus.GaugeValue, now.Sub(t).Seconds(), id)
	}
}
