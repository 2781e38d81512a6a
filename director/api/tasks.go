package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

// The tasks bound to a deployment are submitted as data (task.Manager.Submit):
// their type and request, stored in the task record, are all a director
// needs to run them, so they wait in the queue while the deployment is busy,
// survive a restart, and can be run by any director sharing the store. Each
// type's handler decodes the request and calls the Deployer.

// deleteArgs are the arguments of a delete-deployment task.
type deleteArgs struct {
	Deployment string `json:"deployment"`
	Force      bool   `json:"force,omitempty"`
}

// registerTaskHandlers registers, on the task manager, a handler for every
// task type the API submits as data.
func (s *Server) registerTaskHandlers() {
	d := s.d.Deployer
	s.d.Tasks.Register("deploy", handler(func(ctx context.Context, rep *task.Reporter, req DeployRequest) (string, error) {
		return d.Deploy(ctx, rep, req)
	}))
	s.d.Tasks.Register("delete-deployment", handler(func(ctx context.Context, rep *task.Reporter, a deleteArgs) (string, error) {
		return d.Delete(ctx, rep, a.Deployment, a.Force)
	}))
	for _, action := range []string{"recreate", "restart", "stop", "start"} {
		s.d.Tasks.Register(action, handler(func(ctx context.Context, rep *task.Reporter, req StateRequest) (string, error) {
			req.Action = action
			return d.ChangeState(ctx, rep, req)
		}))
	}
	s.d.Tasks.Register(ErrandTaskType, handler(func(ctx context.Context, rep *task.Reporter, req ErrandRequest) (string, error) {
		return d.RunErrand(ctx, rep, req)
	}))
	s.d.Tasks.Register("rotate-agent-certs", handler(func(ctx context.Context, rep *task.Reporter, req RotateRequest) (string, error) {
		return d.RotateAgentCerts(ctx, rep, req.Deployment)
	}))
	s.d.Tasks.Register("regenerate-variable", handler(func(ctx context.Context, rep *task.Reporter, req RegenerateRequest) (string, error) {
		return d.RegenerateVariable(ctx, rep, req.Deployment, req.Name)
	}))
}

// handler adapts a function of typed arguments to a task.Handler.
func handler[A any](fn func(ctx context.Context, rep *task.Reporter, args A) (string, error)) task.Handler {
	return func(ctx context.Context, rep *task.Reporter, raw json.RawMessage) (string, error) {
		var args A
		if err := json.Unmarshal(raw, &args); err != nil {
			return "", fmt.Errorf("decode task arguments: %w", err)
		}
		return fn(ctx, rep, args)
	}
}

// submitTask records a task as data (queued until its deployment is free)
// and answers 202 with its record.
func (s *Server) submitTask(w http.ResponseWriter, r *http.Request, spec task.Spec, args any) {
	spec.User = user(r)
	t, err := s.d.Tasks.Submit(spec, args)
	if errors.Is(err, task.ErrShuttingDown) {
		writeError(w, http.StatusServiceUnavailable, "shutting_down", err)
		return
	}
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, public(t))
}

// public is a task record as the API shows it: without its arguments, which
// may carry secrets (deploy -v values).
func public(t store.Task) store.Task {
	t.Args = nil
	return t
}

func publicList(ts []store.Task, err error) ([]store.Task, error) {
	for i := range ts {
		ts[i].Args = nil
	}
	return ts, err
}
