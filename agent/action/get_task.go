package action

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/agent/task"
)

// getTask reports a task: running, or done with its result; a failed or
// cancelled task answers its error as an exception.
func (a *Actions) getTask(_ context.Context, req protocol.TaskRequest) (protocol.TaskStatus, error) {
	st, ok := a.tasks.Get(req.AgentTaskID)
	if !ok {
		return protocol.TaskStatus{}, &protocol.Exception{Code: protocol.CodeTaskNotFound, Message: fmt.Sprintf("no task %q", req.AgentTaskID)}
	}
	out := protocol.TaskStatus{AgentTaskID: st.ID, State: st.State}
	switch st.State {
	case task.Running:
		return out, nil
	case task.Done:
		b, err := json.Marshal(st.Result)
		if err != nil {
			return out, fmt.Errorf("encode result of %s: %w", st.Method, err)
		}
		out.Result = b
		return out, nil
	case task.Canceled:
		return out, &protocol.Exception{Code: protocol.CodeCanceled, Message: fmt.Sprintf("%s task %s was cancelled", st.Method, st.ID)}
	default:
		return out, st.Err
	}
}
