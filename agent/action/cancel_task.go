package action

import (
	"context"
	"fmt"

	"github.com/compleat/compleat/agent/protocol"
)

// cancelTask cancels a running task; cancelling a finished one is a no-op.
func (a *Actions) cancelTask(_ context.Context, req protocol.TaskRequest) (string, error) {
	if !a.tasks.Cancel(req.AgentTaskID) {
		return "", &protocol.Exception{Code: protocol.CodeTaskNotFound, Message: fmt.Sprintf("no task %q", req.AgentTaskID)}
	}
	return "canceled", nil
}
