package health

import (
	"github.com/prometheus/client_golang/prometheus"
)

var (
	instHeartbeatAgeDesc = prometheus.NewDesc("compleat_instance_heartbeat_age_seconds",
		"Seconds since the instance's agent last sent a heartbeat.", []string{"deployment", "instance"}, nil)
	instancesDesc = prometheus.NewDesc("compleat_instances",
		"Watched instances by deployment and health status.", []string{"deployment", "status"}, nil)
	heartbeatsDesc = prometheus.NewDesc("compleat_health_heartbeats_received_total",
		"Heartbeats the health monitor received.", nil, nil)
	alertsDesc = prometheus.NewDesc("compleat_health_alerts_received_total",
		"Alerts the health monitor received.", nil, nil)
	resurrectionsDesc = prometheus.NewDesc("compleat_resurrections_total",
		"Resurrections by outcome (ok, failed) and meltdowns begun (meltdown).", []string{"outcome"}, nil)
)

var _ prometheus.Collector = (*Monitor)(nil)

// Describe implements prometheus.Collector.
func (m *Monitor) Describe(ch chan<- *prometheus.Desc) {
	ch <- instHeartbeatAgeDesc
	ch <- instancesDesc
	ch <- heartbeatsDesc
	ch <- alertsDesc
}

// Collect implements prometheus.Collector: heartbeat age per instance,
// instances per status, and the heartbeat and alert counters.
func (m *Monitor) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	snap := m.snapshotLocked(m.c.Now())
	beats, alerts := m.beatsN, m.alertsN
	m.mu.Unlock()
	for d, hs := range snap {
		counts := map[string]int{}
		for _, h := range hs {
			counts[h.Status]++
			ch <- prometheus.MustNewConstMetric(instHeartbeatAgeDesc, prometheus.GaugeValue, h.HeartbeatAge, d, h.Name())
		}
		for _, s := range Statuses {
			ch <- prometheus.MustNewConstMetric(instancesDesc, prometheus.GaugeValue, float64(counts[s]), d, s)
		}
	}
	ch <- prometheus.MustNewConstMetric(heartbeatsDesc, prometheus.CounterValue, float64(beats))
	ch <- prometheus.MustNewConstMetric(alertsDesc, prometheus.CounterValue, float64(alerts))
}

var _ prometheus.Collector = (*Resurrector)(nil)

// Describe implements prometheus.Collector.
func (r *Resurrector) Describe(ch chan<- *prometheus.Desc) { ch <- resurrectionsDesc }

// Collect implements prometheus.Collector.
func (r *Resurrector) Collect(ch chan<- prometheus.Metric) {
	c := r.Counts()
	for _, o := range []string{"ok", "failed", "meltdown"} {
		ch <- prometheus.MustNewConstMetric(resurrectionsDesc, prometheus.CounterValue, float64(c[o]), o)
	}
}
