package client

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/compleat/compleat/agent/protocol"
)

// WaitReady pings the agent every interval until it answers or ctx ends (a
// new VM's agent needs a moment to read its settings and connect).
func (c *Client) WaitReady(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = time.Second
	}
	for {
		pctx, cancel := context.WithTimeout(ctx, interval)
		err := c.Ping(pctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for agent %s: %w (last error: %v)", c.agentID, ctx.Err(), err)
		case <-time.After(interval / 4):
		}
	}
}

// WaitRunning polls get_state every interval until the agent's job state is
// running, and returns that state; when ctx ends first (the watch time) the
// error lists the processes that are not running, and the last state seen
// is returned with it.
func (c *Client) WaitRunning(ctx context.Context, interval time.Duration) (protocol.State, error) {
	if interval <= 0 {
		interval = 500 * time.Millisecond
	}
	var last protocol.State
	var lastErr error
	seen := false // whether any state was read: the last poll may be cut short by ctx
	for {
		st, err := c.GetState(ctx)
		if err == nil {
			last, lastErr, seen = st, nil, true
			if st.JobState == protocol.StateRunning {
				return st, nil
			}
		} else if ctx.Err() == nil || !seen {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return last, fmt.Errorf("wait for agent %s to run its jobs: %w (last error: %v)", c.agentID, ctx.Err(), lastErr)
			}
			return last, fmt.Errorf("wait for agent %s to run its jobs: %w: %s", c.agentID, ctx.Err(), notRunning(last))
		case <-time.After(interval):
		}
	}
}

// notRunning describes what of st is not running.
func notRunning(st protocol.State) string {
	if parts := st.NotRunning(); len(parts) > 0 {
		return strings.Join(parts, "; ")
	}
	return "job state " + st.JobState
}

// Heartbeats subscribes to every agent's heartbeats on conn and calls fn
// with the sender's agent id, taken from the subject (which the bus only
// lets that agent publish on), and the decoded heartbeat. Undecodable
// heartbeats are skipped.
func Heartbeats(conn *nats.Conn, fn func(agentID string, hb protocol.Heartbeat)) (*nats.Subscription, error) {
	return conn.Subscribe(protocol.HeartbeatSubject("*"), func(m *nats.Msg) {
		var hb protocol.Heartbeat
		if json.Unmarshal(m.Data, &hb) != nil {
			return
		}
		fn(strings.TrimPrefix(m.Subject, protocol.HeartbeatSubject("")), hb)
	})
}

// Alerts subscribes to every agent's alerts, like Heartbeats.
func Alerts(conn *nats.Conn, fn func(agentID string, a protocol.Alert)) (*nats.Subscription, error) {
	return conn.Subscribe(protocol.AlertSubject("*"), func(m *nats.Msg) {
		var a protocol.Alert
		if json.Unmarshal(m.Data, &a) != nil {
			return
		}
		fn(strings.TrimPrefix(m.Subject, protocol.AlertSubject("")), a)
	})
}
