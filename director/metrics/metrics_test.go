package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestAgentMetricsForgetSilentAgents(t *testing.T) {
	t.Parallel()
	m := New(nil, nil)
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	m.now = func() time.Time { return now }
	m.AgentHeartbeat("old", now.Add(-11*time.Minute))
	m.AgentHeartbeat("fresh", now.Add(-3*time.Second))
	want := `
# HELP compleat_agents_seen Agents that sent a heartbeat in the last 10 minutes.
# TYPE compleat_agents_seen gauge
compleat_agents_seen 1
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), "compleat_agents_seen"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount((*beats)(m), "compleat_agent_heartbeat_age_seconds"); n != 1 {
		t.Errorf("heartbeat ages = %d, want only the fresh agent's", n)
	}
}
