// Package action answers the director's requests: one file per method, each
// with a typed argument and result from package protocol. Handle decodes a
// request, dispatches it through an explicit table (no reflection on names),
// and encodes the reply. Long methods run as tasks (package task): Handle
// answers at once with the task's id, and get_task later returns the result
// or the failure.
//
// State-changing methods (apply, start, stop, drain, run_script,
// compile_package and the disk methods) run one at a time; ping,
// get_state, get_task, cancel_task, prepare, fetch_logs, tail_logs and
// run_command never wait for them.
package action

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/compleat/compleat/agent/applyspec"
	"github.com/compleat/compleat/agent/layout"
	"github.com/compleat/compleat/agent/lifecycle"
	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/agent/settings"
	"github.com/compleat/compleat/agent/supervisor"
	"github.com/compleat/compleat/agent/task"
	"github.com/compleat/compleat/cpi"
)

// Processes is the process supervisor as the actions use it.
type Processes interface {
	Start(ctx context.Context, job string, procs []supervisor.Process) error
	StopAll(ctx context.Context) error
	Remove(ctx context.Context, job string) error
	Status() []supervisor.JobStatus
}

// Scripts runs the jobs' lifecycle scripts.
type Scripts interface {
	Run(ctx context.Context, script lifecycle.Script, jobs []string) ([]lifecycle.Result, error)
	RunWithEnv(ctx context.Context, script lifecycle.Script, jobs []string, env map[string]string) ([]lifecycle.Result, error)
	Drain(ctx context.Context, p lifecycle.DrainParams, jobs []string) ([]lifecycle.DrainResult, error)
}

// Installer installs apply specs.
type Installer interface {
	Prepare(ctx context.Context, spec applyspec.Spec) error
	Apply(ctx context.Context, spec applyspec.Spec) error
	Current() (*applyspec.Spec, error)
}

// Disks mounts persistent disks.
type Disks interface {
	MountDisk(ctx context.Context, cid string, hint cpi.DiskHint) error
	UnmountDisk(ctx context.Context, cid string) error
	List() ([]string, error)
	Migrate(ctx context.Context) error
}

// Compiler compiles packages.
type Compiler interface {
	Compile(ctx context.Context, req protocol.CompilePackageRequest) (protocol.CompilePackageResult, error)
}

// Uploader uploads files to signed URLs.
type Uploader interface {
	Upload(ctx context.Context, u protocol.Upload, path string) (sum string, size int64, err error)
}

// Vitals samples the VM's resource figures.
type Vitals interface {
	Sample() protocol.Vitals
}

// Settings holds the agent's current settings and records updates.
type Settings interface {
	Current() settings.Settings
	Update(u protocol.UpdateSettingsRequest) error
}

// Deps are what the actions act on.
type Deps struct {
	Layout    layout.Layout
	Processes Processes
	Scripts   Scripts
	Installer Installer
	Disks     Disks
	Compiler  Compiler
	Uploader  Uploader
	Vitals    Vitals
	Settings  Settings
	Logger    *slog.Logger
	// SyncTimeout bounds a method answered directly (default 30s).
	SyncTimeout time.Duration
}

// Actions dispatches requests.
type Actions struct {
	d         Deps
	identity  pendingIdentity // request_identity's key, until update_settings
	tasks     *task.Manager
	exclusive chan struct{}
	methods   map[string]method
}

// call is a decoded request ready to run.
type call func(ctx context.Context) (any, error)

type method struct {
	long, exclusive bool
	decode          func(args []json.RawMessage) (call, error)
}

// New wires the method table.
func New(d Deps) *Actions {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.SyncTimeout <= 0 {
		d.SyncTimeout = 30 * time.Second
	}
	a := &Actions{d: d, tasks: task.New(d.Logger), exclusive: make(chan struct{}, 1)}
	a.methods = map[string]method{
		protocol.MethodPing:            {decode: none(a.ping)},
		protocol.MethodGetState:        {decode: none(a.getState)},
		protocol.MethodListDisk:        {decode: none(a.listDisk)},
		protocol.MethodUpdateSettings:  {decode: one(a.updateSettings)},
		protocol.MethodRequestIdentity: {decode: none(a.requestIdentity)},
		protocol.MethodGetTask:         {decode: one(a.getTask)},
		protocol.MethodCancelTask:      {decode: one(a.cancelTask)},
		protocol.MethodTailLogs:        {decode: one(a.tailLogs)},

		protocol.MethodPrepare:    {long: true, decode: one(a.prepare)},
		protocol.MethodFetchLogs:  {long: true, decode: one(a.fetchLogs)},
		protocol.MethodRunCommand: {long: true, decode: one(a.runCommand)},

		protocol.MethodApply:          {long: true, exclusive: true, decode: one(a.apply)},
		protocol.MethodStart:          {long: true, exclusive: true, decode: none(a.start)},
		protocol.MethodStop:           {long: true, exclusive: true, decode: optional(a.stop)},
		protocol.MethodDrain:          {long: true, exclusive: true, decode: one(a.drain)},
		protocol.MethodRunScript:      {long: true, exclusive: true, decode: one(a.runScript)},
		protocol.MethodCompilePackage: {long: true, exclusive: true, decode: one(a.compilePackage)},
		protocol.MethodMountDisk:      {long: true, exclusive: true, decode: one(a.mountDisk)},
		protocol.MethodUnmountDisk:    {long: true, exclusive: true, decode: one(a.unmountDisk)},
		protocol.MethodMigrateDisk:    {long: true, exclusive: true, decode: none(a.migrateDisk)},
	}
	return a
}

// Close cancels running tasks and waits for them.
func (a *Actions) Close() { a.tasks.Close() }

// Handle answers one request. ctx is the agent's lifetime: long methods
// outlive the request and end with it.
func (a *Actions) Handle(ctx context.Context, data []byte) []byte {
	resp := a.handle(ctx, data)
	b, err := json.Marshal(resp)
	if err != nil {
		b, _ = json.Marshal(protocol.Response{Exception: &protocol.Exception{Code: protocol.CodeFailed, Message: "encode reply: " + err.Error()}})
	}
	return b
}

func (a *Actions) handle(ctx context.Context, data []byte) protocol.Response {
	var req protocol.Request
	if err := json.Unmarshal(data, &req); err != nil {
		return failure(&protocol.Exception{Code: protocol.CodeBadArguments, Message: "request is not JSON {\"method\", \"arguments\"}: " + err.Error()})
	}
	m, ok := a.methods[req.Method]
	if !ok {
		return failure(&protocol.Exception{Code: protocol.CodeUnknownMethod, Message: fmt.Sprintf("unknown method %q", req.Method)})
	}
	run, err := m.decode(req.Arguments)
	if err != nil {
		return failure(&protocol.Exception{Code: protocol.CodeBadArguments, Message: fmt.Sprintf("%s: %v", req.Method, err)})
	}
	log := a.d.Logger.With("method", req.Method)
	if m.long {
		st := a.tasks.Start(ctx, req.Method, func(ctx context.Context) (any, error) {
			if m.exclusive {
				select {
				case a.exclusive <- struct{}{}:
					defer func() { <-a.exclusive }()
				case <-ctx.Done():
					return nil, context.Cause(ctx)
				}
			}
			return run(ctx)
		})
		return value(protocol.TaskStatus{AgentTaskID: st.ID, State: protocol.TaskRunning})
	}
	sctx, cancel := context.WithTimeout(ctx, a.d.SyncTimeout)
	defer cancel()
	res, err := run(sctx)
	if err != nil {
		log.Warn("request failed", "err", err)
		return failure(err)
	}
	return value(res)
}

func value(v any) protocol.Response {
	b, err := json.Marshal(v)
	if err != nil {
		return failure(fmt.Errorf("encode value: %w", err))
	}
	return protocol.Response{Value: b}
}

// failure turns an error into an exception, keeping the code of a
// *protocol.Exception found in its chain.
func failure(err error) protocol.Response {
	out := &protocol.Exception{Code: protocol.CodeFailed, Message: err.Error()}
	var exc *protocol.Exception
	if errors.As(err, &exc) {
		out.Code, out.Log = exc.Code, exc.Log
	}
	var se *lifecycle.ScriptError
	if out.Log == "" && errors.As(err, &se) {
		out.Log = se.Tail
	}
	if errors.Is(err, task.ErrCanceled) {
		out.Code = protocol.CodeCanceled
	}
	return protocol.Response{Exception: out}
}

func none[R any](f func(context.Context) (R, error)) func([]json.RawMessage) (call, error) {
	return func(args []json.RawMessage) (call, error) {
		if len(args) > 0 && string(args[0]) != "null" && string(args[0]) != "{}" {
			return nil, errors.New("takes no arguments")
		}
		return func(ctx context.Context) (any, error) { return f(ctx) }, nil
	}
}

func one[A, R any](f func(context.Context, A) (R, error)) func([]json.RawMessage) (call, error) {
	return func(args []json.RawMessage) (call, error) {
		if len(args) != 1 {
			return nil, fmt.Errorf("takes one argument, got %d", len(args))
		}
		arg, err := decode[A](args[0])
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context) (any, error) { return f(ctx, arg) }, nil
	}
}

func optional[A, R any](f func(context.Context, A) (R, error)) func([]json.RawMessage) (call, error) {
	return func(args []json.RawMessage) (call, error) {
		if len(args) == 0 {
			var zero A
			return func(ctx context.Context) (any, error) { return f(ctx, zero) }, nil
		}
		return one(f)(args)
	}
}

func decode[A any](raw json.RawMessage) (A, error) {
	var a A
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		return a, fmt.Errorf("argument: %w", err)
	}
	return a, nil
}
