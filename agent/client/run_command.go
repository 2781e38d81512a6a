package client

import (
	"context"

	"github.com/compleat/compleat/agent/protocol"
)

// RunCommand runs `/bin/sh -c req.Command` on the agent's VM and returns how
// it ended; a command that exits non-zero is a result, not an error.
func (c *Client) RunCommand(ctx context.Context, req protocol.RunCommandRequest) (protocol.RunCommandResult, error) {
	var r protocol.RunCommandResult
	err := c.task(ctx, protocol.MethodRunCommand, req, &r)
	return r, err
}

// TailLogs returns what was appended to the VM's job logs since
// req.Positions (or, with req.Initial, their last req.Lines lines).
func (c *Client) TailLogs(ctx context.Context, req protocol.TailLogsRequest) (protocol.TailLogsResult, error) {
	var r protocol.TailLogsResult
	err := c.call(ctx, protocol.MethodTailLogs, req, &r)
	return r, err
}
