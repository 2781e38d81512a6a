package action

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/agent/supervisor"
)

// runCommand runs `/bin/sh -c <command>` in the agent's base directory for
// an operator (director ssh): stdin empty, PATH the supervisor's plus the
// agent's own, HOME kept, its own process group killed when the timeout
// passes or the task is cancelled. Each stream keeps its first MaxOutput
// bytes. A non-zero exit is a result; only a command that cannot start fails
// the task.
func (a *Actions) runCommand(ctx context.Context, req protocol.RunCommandRequest) (protocol.RunCommandResult, error) {
	if req.Command == "" {
		return protocol.RunCommandResult{}, &protocol.Exception{Code: protocol.CodeBadArguments, Message: "run_command: command is empty"}
	}
	timeout := req.Timeout
	switch {
	case timeout < 0 || timeout > protocol.RunCommandMaxTimeout:
		return protocol.RunCommandResult{}, &protocol.Exception{Code: protocol.CodeBadArguments,
			Message: fmt.Sprintf("run_command: timeout %s: want at most %s", time.Duration(timeout), time.Duration(protocol.RunCommandMaxTimeout))}
	case timeout == 0:
		timeout = protocol.RunCommandDefaultTimeout
	}
	limit := req.MaxOutput
	if limit <= 0 || limit > protocol.RunCommandMaxOutput {
		limit = protocol.RunCommandMaxOutput
	}
	rctx, cancel := context.WithTimeout(ctx, time.Duration(timeout))
	defer cancel()

	stdout, stderr := &boundedBuffer{max: limit}, &boundedBuffer{max: limit}
	cmd := exec.CommandContext(rctx, "/bin/sh", "-c", req.Command)
	cmd.Dir = a.d.Layout.Base
	cmd.Env = commandEnv()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A background child holding the output open must not hold the answer.
	cmd.WaitDelay = 2 * time.Second

	a.d.Logger.Info("run_command", "bytes", len(req.Command), "timeout", time.Duration(timeout))
	began := time.Now()
	err := cmd.Run()
	res := protocol.RunCommandResult{Duration: protocol.Duration(time.Since(began))}
	res.Stdout, res.StdoutBytes = stdout.result()
	res.Stderr, res.StderrBytes = stderr.result()
	if err != nil && cmd.ProcessState == nil {
		return res, fmt.Errorf("run_command: %w", err)
	}
	// The whole group goes, also when the shell exited before its children.
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	switch {
	case ctx.Err() != nil:
		return res, context.Cause(ctx)
	case errors.Is(rctx.Err(), context.DeadlineExceeded):
		res.ExitCode, res.TimedOut = -1, true
	default:
		res.ExitCode = exitCode(cmd.ProcessState)
	}
	return res, nil
}

// exitCode is the shell's convention: the status, or 128+N for signal N.
func exitCode(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// commandEnv is an operator command's environment: only PATH (the
// supervisor's default, then the agent's), HOME and LANG of the agent.
func commandEnv() []string {
	path := supervisor.DefaultPath
	if p := os.Getenv("PATH"); p != "" {
		path += ":" + p
	}
	env := []string{"PATH=" + path}
	for _, k := range []string{"HOME", "LANG"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// boundedBuffer keeps the first max bytes written to it and counts the rest;
// it never fails a write, so a chatty command is never blocked or broken.
type boundedBuffer struct {
	mu    sync.Mutex
	max   int
	buf   []byte
	total int64
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total += int64(len(p))
	if room := b.max - len(b.buf); room > 0 {
		b.buf = append(b.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (b *boundedBuffer) result() ([]byte, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf, b.total
}
