// Package client is the director's typed client of one agent over the message
// bus. Each method sends one request on the agent's subject and decodes the
// reply; long methods (apply, stop, compile_package, ...) then poll get_task
// until the task ends or ctx is done, and cancel the agent task when ctx ends
// first.
//
// Errors: an exception from the agent is a *protocol.Exception (use errors.Is
// with protocol.ErrUnknownMethod, protocol.ErrCanceled, ...); an agent that
// does not answer yields an error wrapping ErrUnresponsive.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/compleat/compleat/agent/applyspec"
	"github.com/compleat/compleat/agent/protocol"
)

// ErrUnresponsive is wrapped by errors for requests nobody answered in time.
var ErrUnresponsive = errors.New("agent unresponsive")

// Requester is the part of *nats.Conn the client uses.
type Requester interface {
	RequestWithContext(ctx context.Context, subj string, data []byte) (*nats.Msg, error)
}

var _ Requester = (*nats.Conn)(nil)

// Client talks to one agent.
type Client struct {
	conn    Requester
	agentID string
	opts    Options
}

// Options tune a Client; zero values take the defaults.
type Options struct {
	// RequestTimeout bounds each single request (default 30s).
	RequestTimeout time.Duration
	// SilenceLimit is how long the polls of a long task may go unanswered
	// (the agent gone from the bus, or not answering) before the task fails
	// as unresponsive: long enough for an agent to reconnect, short enough
	// that an agent that died mid-task does not hold its caller forever.
	// Default: RequestTimeout.
	SilenceLimit time.Duration
	// AbsentGrace is how long a request that no one is subscribed to is
	// sent again before it fails as unresponsive: an agent reconnecting
	// (after a director restart its agents need a few seconds to find the
	// bus again) is not yet there to answer. No responders means the
	// request was not delivered, so sending it again is safe. Default 0:
	// fail at once, as the health monitor's probes want.
	AbsentGrace time.Duration
	// PollInterval is the longest wait between get_task polls (default
	// 250ms); the first poll comes after 5ms and the wait doubles up to it.
	PollInterval time.Duration
	// Logger receives debug lines about tasks (default discards).
	Logger *slog.Logger
}

// New returns a client of the agent agentID over conn (a *nats.Conn
// connected as the director).
func New(conn Requester, agentID string, opts Options) *Client {
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 30 * time.Second
	}
	if opts.SilenceLimit <= 0 {
		opts.SilenceLimit = opts.RequestTimeout
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 250 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.Logger = opts.Logger.With("agent", agentID)
	return &Client{conn: conn, agentID: agentID, opts: opts}
}

// AgentID is the agent this client talks to.
func (c *Client) AgentID() string { return c.agentID }

// Ping checks that the agent answers.
func (c *Client) Ping(ctx context.Context) error {
	var pong string
	return c.call(ctx, protocol.MethodPing, nil, &pong)
}

// GetState returns the agent's job, process and VM state, with the applied
// spec.
func (c *Client) GetState(ctx context.Context) (protocol.State, error) {
	var s protocol.State
	err := c.call(ctx, protocol.MethodGetState, nil, &s)
	return s, err
}

// Prepare makes the agent fetch and verify the spec's blobs ahead of apply.
func (c *Client) Prepare(ctx context.Context, spec applyspec.Spec) error {
	return c.task(ctx, protocol.MethodPrepare, spec, nil)
}

// Apply installs the spec's jobs and packages (processes are not started:
// call Start).
func (c *Client) Apply(ctx context.Context, spec applyspec.Spec) error {
	return c.task(ctx, protocol.MethodApply, spec, nil)
}

// Start starts every job's processes and returns once they are launched
// (the director then watches get_state until they are running). Lifecycle
// scripts are separate: run_script pre-start before, post-start after, as
// BOSH's director does.
func (c *Client) Start(ctx context.Context) (protocol.StartResult, error) {
	var r protocol.StartResult
	err := c.task(ctx, protocol.MethodStart, nil, &r)
	return r, err
}

// Stop stops every process; with req.Drain set it runs pre-stop and drain
// first. post-stop runs after the processes stopped.
func (c *Client) Stop(ctx context.Context, req protocol.StopRequest) error {
	return c.task(ctx, protocol.MethodStop, req, nil)
}

// Drain runs the jobs' drain scripts with BOSH semantics and waits as they
// ask.
func (c *Client) Drain(ctx context.Context, req protocol.DrainRequest) (protocol.DrainResult, error) {
	var r protocol.DrainResult
	err := c.task(ctx, protocol.MethodDrain, req, &r)
	return r, err
}

// RunScript runs bin/<name> of every job that has it, in parallel.
func (c *Client) RunScript(ctx context.Context, req protocol.RunScriptRequest) (protocol.RunScriptResult, error) {
	var r protocol.RunScriptResult
	err := c.task(ctx, protocol.MethodRunScript, req, &r)
	return r, err
}

// CompilePackage compiles a package on the agent's VM and uploads the result.
func (c *Client) CompilePackage(ctx context.Context, req protocol.CompilePackageRequest) (protocol.CompilePackageResult, error) {
	var r protocol.CompilePackageResult
	err := c.task(ctx, protocol.MethodCompilePackage, req, &r)
	return r, err
}

// MountDisk mounts the attached disk at the store.
func (c *Client) MountDisk(ctx context.Context, req protocol.MountDiskRequest) error {
	return c.task(ctx, protocol.MethodMountDisk, req, nil)
}

// UnmountDisk unmounts the disk.
func (c *Client) UnmountDisk(ctx context.Context, diskCID string) error {
	return c.task(ctx, protocol.MethodUnmountDisk, protocol.UnmountDiskRequest{DiskCID: diskCID}, nil)
}

// ListDisk lists the persistent disks mounted now.
func (c *Client) ListDisk(ctx context.Context) ([]string, error) {
	var r protocol.ListDiskResult
	err := c.call(ctx, protocol.MethodListDisk, nil, &r)
	return r.Disks, err
}

// MigrateDisk copies the store onto the disk mounted last (MountDisk of a
// second disk mounts it at the migration target) and makes that disk the
// store; the old disk is unmounted.
func (c *Client) MigrateDisk(ctx context.Context) error {
	return c.task(ctx, protocol.MethodMigrateDisk, nil, nil)
}

// FetchLogs uploads a tar.gz of the VM's job logs to req.Upload.
func (c *Client) FetchLogs(ctx context.Context, req protocol.FetchLogsRequest) (protocol.FetchLogsResult, error) {
	var r protocol.FetchLogsResult
	err := c.task(ctx, protocol.MethodFetchLogs, req, &r)
	return r, err
}

// UpdateSettings changes parts of the agent's settings.
// RequestIdentity asks the agent for a certificate request of a new key
// it keeps; UpdateSettings with mbus.cert (no key) installs the signed
// certificate.
func (c *Client) RequestIdentity(ctx context.Context) (protocol.IdentityRequest, error) {
	var r protocol.IdentityRequest
	err := c.call(ctx, protocol.MethodRequestIdentity, nil, &r)
	return r, err
}

func (c *Client) UpdateSettings(ctx context.Context, req protocol.UpdateSettingsRequest) error {
	return c.call(ctx, protocol.MethodUpdateSettings, req, nil)
}

// GetTask returns an agent task's status.
func (c *Client) GetTask(ctx context.Context, agentTaskID string) (protocol.TaskStatus, error) {
	var s protocol.TaskStatus
	err := c.call(ctx, protocol.MethodGetTask, protocol.TaskRequest{AgentTaskID: agentTaskID}, &s)
	return s, err
}

// CancelTask asks the agent to cancel a task.
func (c *Client) CancelTask(ctx context.Context, agentTaskID string) error {
	return c.call(ctx, protocol.MethodCancelTask, protocol.TaskRequest{AgentTaskID: agentTaskID}, nil)
}

// Call sends any method with one argument (nil for none) and decodes the
// value into out (nil to discard). It does not wait on tasks.
func (c *Client) Call(ctx context.Context, method string, arg, out any) error {
	return c.call(ctx, method, arg, out)
}

func (c *Client) call(ctx context.Context, method string, arg, out any) error {
	req, err := protocol.NewRequest(method, arg)
	if err != nil {
		return err
	}
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode %s request: %w", method, err)
	}
	msg, err := c.request(ctx, body)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s agent %s: %w", method, c.agentID, ctx.Err())
		}
		if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("%s agent %s: %w: %w", method, c.agentID, ErrUnresponsive, err)
		}
		return fmt.Errorf("%s agent %s: %w", method, c.agentID, err)
	}
	var resp protocol.Response
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return fmt.Errorf("%s agent %s: decode reply: %w", method, c.agentID, err)
	}
	if resp.Exception != nil {
		return fmt.Errorf("%s agent %s: %w", method, c.agentID, resp.Exception)
	}
	if out != nil && len(resp.Value) > 0 {
		if err := json.Unmarshal(resp.Value, out); err != nil {
			return fmt.Errorf("%s agent %s: decode value: %w", method, c.agentID, err)
		}
	}
	return nil
}

// absentRetry is the first wait before a request no one received is sent
// again; it doubles up to a second.
const absentRetry = 50 * time.Millisecond

// request sends body to the agent, again while no one is subscribed to
// its subject and AbsentGrace has not passed.
func (c *Client) request(ctx context.Context, body []byte) (*nats.Msg, error) {
	var absentSince time.Time
	wait := absentRetry
	for {
		rctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
		msg, err := c.conn.RequestWithContext(rctx, protocol.Subject(c.agentID), body)
		cancel()
		if !errors.Is(err, nats.ErrNoResponders) || c.opts.AbsentGrace <= 0 {
			return msg, err
		}
		if absentSince.IsZero() {
			absentSince = time.Now()
		}
		if time.Since(absentSince)+wait > c.opts.AbsentGrace {
			return nil, err
		}
		c.opts.Logger.Debug("agent not on the bus; sending again", "after", wait)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// task starts a long method and polls get_task until it ends. When ctx ends
// first the agent task is cancelled (best effort) and ctx's error returned.
// firstPoll is the wait before the first get_task poll of a long task.
const firstPoll = 5 * time.Millisecond

func (c *Client) task(ctx context.Context, method string, arg, out any) error {
	var st protocol.TaskStatus
	if err := c.call(ctx, method, arg, &st); err != nil {
		return err
	}
	log := c.opts.Logger.With("method", method, "agent_task_id", st.AgentTaskID)
	abandon := func() error {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := c.CancelTask(cctx, st.AgentTaskID); err != nil {
			log.Debug("cancel agent task", "err", err)
		}
		return fmt.Errorf("%s agent %s: %w", method, c.agentID, ctx.Err())
	}
	// Most agent tasks (a missing or quick script, a drain that answers at
	// once) end within milliseconds: poll soon, then back off to
	// PollInterval, so that quick tasks do not each cost a whole interval.
	wait := min(firstPoll, c.opts.PollInterval)
	t := time.NewTimer(wait)
	defer t.Stop()
	var silentSince time.Time // zero while the agent answers
	for st.State == protocol.TaskRunning {
		select {
		case <-ctx.Done():
			return abandon()
		case <-t.C:
		}
		wait = min(2*wait, c.opts.PollInterval)
		t.Reset(wait)
		next, err := c.GetTask(ctx, st.AgentTaskID)
		if ctx.Err() != nil {
			return abandon()
		}
		if err != nil {
			if errors.Is(err, ErrUnresponsive) {
				// The agent may be reconnecting: keep polling, for a while.
				if silentSince.IsZero() {
					silentSince = time.Now()
				}
				if time.Since(silentSince) < c.opts.SilenceLimit {
					log.Debug("poll agent task", "err", err)
					continue
				}
				return fmt.Errorf("%s: task %s: no answer for %s: %w", method, st.AgentTaskID, c.opts.SilenceLimit, err)
			}
			return fmt.Errorf("%s: %w", method, err)
		}
		silentSince = time.Time{}
		st = next
	}
	if st.State != protocol.TaskDone {
		return fmt.Errorf("%s agent %s: task %s ended %s", method, c.agentID, st.AgentTaskID, st.State)
	}
	if out != nil && len(st.Result) > 0 {
		if err := json.Unmarshal(st.Result, out); err != nil {
			return fmt.Errorf("%s agent %s: decode result: %w", method, c.agentID, err)
		}
	}
	return nil
}
