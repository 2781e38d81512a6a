package app

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/compleat/compleat/agent/client"
	"github.com/compleat/compleat/director/api"
)

// agentStates asks agents for their state over the director's bus
// connection (instances --ps).
type agentStates struct{ conn *nats.Conn }

var _ api.Agents = agentStates{}

func (a agentStates) State(ctx context.Context, agentID string) (json.RawMessage, error) {
	st, err := client.New(a.conn, agentID, client.Options{RequestTimeout: 5 * time.Second}).GetState(ctx)
	if err != nil {
		return nil, err
	}
	st.Spec = nil // large and not for listings
	return json.Marshal(st)
}
