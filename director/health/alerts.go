package health

import (
	"context"
	"time"
	"unicode/utf8"
)

// Limits on agents' alerts (docs/reliability.md): an agent cannot fill the
// state file or crowd out other agents' alerts.
const (
	// AlertBurst alerts of one agent are recorded at once; then one per
	// AlertEvery. Alerts over the rate are counted (Stats.AlertsDropped)
	// and dropped.
	AlertBurst = 10
	AlertEvery = 6 * time.Second
	// AlertFieldMax bounds the title, job, process and state of an alert;
	// AlertSummaryMax its summary. Longer values are cut.
	AlertFieldMax   = 256
	AlertSummaryMax = 1024
	// AlertRetention is how long alert events are kept (default of
	// Config.AlertRetention); older ones are removed hourly.
	AlertRetention = 7 * 24 * time.Hour
	pruneEvery     = time.Hour
)

// Pruner removes audit events of one action older than a time. health.Store
// is one; Config.Events may implement it.
type Pruner interface {
	PruneEvents(ctx context.Context, action string, before time.Time) (int, error)
}

// bucket is a token bucket of one agent's alerts.
type bucket struct {
	tokens float64
	at     time.Time
}

// allowAlert takes a token of agentID's bucket; m.mu is held.
func (m *Monitor) allowAlert(agentID string, now time.Time) bool {
	b := m.alertBuckets[agentID]
	if b == nil {
		b = &bucket{tokens: AlertBurst, at: now}
		m.alertBuckets[agentID] = b
	}
	b.tokens = min(AlertBurst, b.tokens+float64(now.Sub(b.at))/float64(AlertEvery))
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// pruneAlerts removes alert events older than the retention, at most once
// per pruneEvery.
func (m *Monitor) pruneAlerts(ctx context.Context, now time.Time) {
	p, ok := m.c.Events.(Pruner)
	if !ok || m.c.AlertRetention < 0 {
		return
	}
	m.mu.Lock()
	due := now.Sub(m.pruned) >= pruneEvery
	if due {
		m.pruned = now
	}
	m.mu.Unlock()
	if !due {
		return
	}
	n, err := p.PruneEvents(ctx, "alert", now.Add(-m.c.AlertRetention))
	if err != nil {
		m.log.Warn("remove old alert events", "error", err)
	} else if n > 0 {
		m.log.Info("removed old alert events", "events", n, "retention", m.c.AlertRetention)
	}
}

// cut shortens s to at most max bytes (on a rune boundary), marking the cut.
func cut(s string, max int) string {
	if len(s) <= max {
		return s
	}
	const mark = "…(cut)"
	s = s[:max-len(mark)]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + mark
}
