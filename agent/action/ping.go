package action

import "context"

// ping answers "pong": the agent is up and reads its subject.
func (a *Actions) ping(context.Context) (string, error) { return "pong", nil }
