package action

import (
	"context"
	"fmt"

	"github.com/compleat/compleat/agent/lifecycle"
	"github.com/compleat/compleat/agent/protocol"
)

// stop runs pre-stop (with BOSH_*_NEXT_STATE) and drain when asked, stops
// every process, then runs post-stop.
func (a *Actions) stop(ctx context.Context, req protocol.StopRequest) (struct{}, error) {
	if req.Drain != nil {
		if _, err := a.d.Scripts.RunWithEnv(ctx, lifecycle.PreStop, nil, nextStateEnv(req.Next)); err != nil {
			return struct{}{}, fmt.Errorf("stop: %w", err)
		}
		if _, err := a.drain(ctx, *req.Drain); err != nil {
			return struct{}{}, fmt.Errorf("stop: %w", err)
		}
	}
	if err := a.setDesired(desiredStopped); err != nil {
		return struct{}{}, fmt.Errorf("stop: record desired state: %w", err)
	}
	if err := a.d.Processes.StopAll(ctx); err != nil {
		return struct{}{}, fmt.Errorf("stop: %w", err)
	}
	if _, err := a.d.Scripts.Run(ctx, lifecycle.PostStop, nil); err != nil {
		return struct{}{}, fmt.Errorf("stop: %w", err)
	}
	return struct{}{}, nil
}

func nextStateEnv(n protocol.NextState) map[string]string {
	return map[string]string{
		"BOSH_VM_NEXT_STATE":         keepOr(n.VM),
		"BOSH_INSTANCE_NEXT_STATE":   keepOr(n.Instance),
		"BOSH_DEPLOYMENT_NEXT_STATE": keepOr(n.Deployment),
	}
}

func keepOr(s string) string {
	if s == "" {
		return "keep"
	}
	return s
}
