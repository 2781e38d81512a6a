package health_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/director/health"
	"github.com/compleat/compleat/director/store"
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }
func bigAlert(title string) protocol.Alert {
	return protocol.Alert{ID: "1", Severity: 2, Title: title + strings.Repeat("t", 1<<20), Summary: strings.Repeat("s", 1<<20),
		Job: "web", Process: "nginx", State: "failing"}
}

// One agent flooding alerts of 1 MiB each records a bounded number of
// bounded events, another agent's alerts still land, and alert events
// older than the retention are removed while other events stay.
func TestAlertsAreRateLimitedCappedAndRetained(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	deployment(t, st, "web", 2)
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := health.NewMonitor(health.Config{Instances: health.Store{S: st}, Events: health.Store{S: st}, Now: clk.Now})
	ctx := context.Background()
	if err := m.Check(ctx); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		m.Alert(ctx, "agent-web-0", bigAlert("flood"))
	}
	m.Alert(ctx, "agent-web-1", bigAlert("other"))
	evs := events(t, st, "alert")
	var flood, other int
	for _, e := range evs {
		if len(e.Context["summary"]) > health.AlertSummaryMax || len(e.Context["title"]) > health.AlertFieldMax {
			t.Fatalf("alert event of %d/%d bytes", len(e.Context["title"]), len(e.Context["summary"]))
		}
		switch e.Instance {
		case "web/i0":
			flood++
		case "web/i1":
			other++
		}
	}
	if flood != health.AlertBurst || other != 1 {
		t.Errorf("recorded %d alerts of the flooding agent (want %d) and %d of the other (want 1)", flood, health.AlertBurst, other)
	}
	if s := m.Stats(); s.AlertsDropped != 100-health.AlertBurst {
		t.Errorf("dropped = %d, want %d", s.AlertsDropped, 100-health.AlertBurst)
	}
	// The rate refills.
	clk.add(health.AlertEvery)
	m.Alert(ctx, "agent-web-0", bigAlert("later"))
	m.Alert(ctx, "agent-web-0", bigAlert("too soon"))
	if n := len(events(t, st, "alert")); n != health.AlertBurst+2 {
		t.Errorf("after %s: %d alert events, want %d", health.AlertEvery, n, health.AlertBurst+2)
	}

	// Past the retention the alerts go, other events stay.
	if err := health.AddEvent(st, store.AuditEvent{User: "admin", Action: "deploy", Deployment: "web", Time: clk.Now()}); err != nil {
		t.Fatal(err)
	}
	clk.add(health.AlertRetention + time.Hour)
	if err := m.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(events(t, st, "alert")); n != 0 {
		t.Errorf("%d alert events after the retention", n)
	}
	if n := len(events(t, st, "deploy")); n != 1 {
		t.Errorf("%d deploy events, want 1 (only alerts expire)", n)
	}
}
