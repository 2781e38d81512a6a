package action

import (
	"context"
	"fmt"
	"time"

	"github.com/compleat/compleat/agent/lifecycle"
	"github.com/compleat/compleat/agent/protocol"
)

// runScript runs one lifecycle script of every job that has it, in
// parallel; pre-stop gets BOSH_*_NEXT_STATE from req.Next. The result lists each job's exit code; the task fails when any
// script failed.
func (a *Actions) runScript(ctx context.Context, req protocol.RunScriptRequest) (protocol.RunScriptResult, error) {
	script := lifecycle.Script(req.Name)
	known := false
	for _, s := range lifecycle.Scripts {
		if s == script && s != lifecycle.Drain {
			known = true
		}
	}
	if !known {
		return protocol.RunScriptResult{}, &protocol.Exception{Code: protocol.CodeBadArguments, Message: fmt.Sprintf("run_script %q: want pre-start, post-start, pre-stop, post-stop or post-deploy (drain has its own method)", req.Name)}
	}
	if req.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.Timeout))
		defer cancel()
	}
	var env map[string]string
	if script == lifecycle.PreStop {
		env = nextStateEnv(req.Next)
	}
	results, err := a.d.Scripts.RunWithEnv(ctx, script, nil, env)
	out := protocol.RunScriptResult{Jobs: map[string]protocol.ScriptResult{}}
	for _, r := range results {
		if r.Skipped {
			continue
		}
		sr := protocol.ScriptResult{ExitCode: r.ExitCode}
		if r.Err != nil {
			sr.Error = r.Err.Error()
		}
		out.Jobs[r.Job] = sr
	}
	if err != nil {
		return out, fmt.Errorf("run_script %s: %w", req.Name, err)
	}
	return out, nil
}
