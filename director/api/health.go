package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/compleat/compleat/director/cloudcheck"
	"github.com/compleat/compleat/director/health"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

// Health routes (registered by New):
//
//	GET  /v1/deployments/{name}/health        instances' health (instances --ps)
//	GET  /v1/deployments/{name}/problems      cloud-check scan (problems as JSON)
//	POST /v1/deployments/{name}/problems      {resolutions, auto} -> task resolving them
//	GET  /v1/deployments/{name}/resurrection  resurrection switches
//	PUT  /v1/deployments/{name}/resurrection  {group, enabled}
//	GET  /v1/events?deployment=D&instance=I&action=A&since=T&before=ID&limit=N
//
// since is an RFC 3339 time; events come newest first (limit default 200).

// Health is what the health routes serve from.
type Health struct {
	// Monitor answers instances' health.
	Monitor HealthMonitor
	// CloudCheck scans and resolves.
	CloudCheck CloudChecker
}

// HealthMonitor is the health monitor as the API sees it.
type HealthMonitor interface {
	Deployment(name string) []health.InstanceHealth
}

// CloudChecker is cloud-check as the API sees it.
type CloudChecker interface {
	Scan(ctx context.Context, deployment string) ([]cloudcheck.Problem, error)
	Report(ctx context.Context, deployment, user string, problems []cloudcheck.Problem)
	Resolve(ctx context.Context, deployment string, resolutions map[string]string, auto bool, user string) ([]cloudcheck.Result, error)
}

var (
	_ HealthMonitor = (*health.Monitor)(nil)
	_ CloudChecker  = (*cloudcheck.Checker)(nil)
)

// ResolveRequest is POST /v1/deployments/{name}/problems: a resolution per
// problem id, or auto for every problem's default.
type ResolveRequest struct {
	Resolutions map[string]string `json:"resolutions,omitempty"`
	Auto        bool              `json:"auto,omitempty"`
}

// ResurrectionRequest is PUT /v1/deployments/{name}/resurrection.
type ResurrectionRequest struct {
	Group   string `json:"group,omitempty"`
	Enabled bool   `json:"enabled"`
}

func (s *Server) healthRoutes(read, admin string) {
	s.route("GET /v1/deployments/{name}/health", read, s.instanceHealth)
	s.route("GET /v1/deployments/{name}/problems", admin, s.problems)
	s.route("POST /v1/deployments/{name}/problems", admin, s.resolveProblems)
	s.route("GET /v1/deployments/{name}/resurrection", read, s.resurrection)
	s.route("PUT /v1/deployments/{name}/resurrection", admin, s.updateResurrection)
	s.route("GET /v1/events", read, s.auditEvents)
}

func (s *Server) deploymentExists(w http.ResponseWriter, name string) bool {
	if err := s.d.Store.View(func(tx *store.Tx) error { _, err := tx.Deployment(name); return err }); err != nil {
		fail(w, err)
		return false
	}
	return true
}

func (s *Server) instanceHealth(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !s.deploymentExists(w, name) {
		return
	}
	hs := s.d.Health.Monitor.Deployment(name)
	if hs == nil {
		hs = []health.InstanceHealth{}
	}
	writeJSON(w, http.StatusOK, hs)
}

func (s *Server) problems(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !s.deploymentExists(w, name) {
		return
	}
	ps, err := s.d.Health.CloudCheck.Scan(r.Context(), name)
	if err != nil {
		fail(w, err)
		return
	}
	s.d.Health.CloudCheck.Report(r.Context(), name, user(r), ps)
	if ps == nil {
		ps = []cloudcheck.Problem{}
	}
	writeJSON(w, http.StatusOK, ps)
}

func (s *Server) resolveProblems(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !s.deploymentExists(w, name) {
		return
	}
	var req ResolveRequest
	if err := decodeBody(r, &req); err != nil {
		fail(w, err)
		return
	}
	who := user(r)
	s.startTask(w, r, task.Spec{Type: "cloud-check", Description: "resolve problems of " + name},
		func(ctx context.Context, rep *task.Reporter) (string, error) {
			res, err := s.d.Health.CloudCheck.Resolve(ctx, name, req.Resolutions, req.Auto, who)
			if errors.Is(err, cloudcheck.ErrBadResolution) {
				return "", task.BadInput(err)
			}
			if err != nil {
				return "", err
			}
			failed := 0
			for i, x := range res {
				ev := store.Event{Stage: "Applying problem resolutions", Step: fmt.Sprintf("%s: %s", x.Problem.Description, x.Resolution),
					Index: i + 1, Total: len(res), State: "finished"}
				if x.Error != "" {
					ev.State, ev.Error = "failed", x.Error
					failed++
				}
				rep.Event(ev)
			}
			if failed > 0 {
				return "", fmt.Errorf("%d of %d resolutions failed", failed, len(res))
			}
			return fmt.Sprintf("%d problems resolved.", len(res)), nil
		})
}

func (s *Server) resurrection(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	view(s, w, func(tx *store.Tx) ([]store.ResurrectionSwitch, error) {
		if _, err := tx.Deployment(name); err != nil {
			return nil, err
		}
		return nonNil(tx.ResurrectionSwitches(name))
	})
}

func (s *Server) updateResurrection(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req ResurrectionRequest
	if err := decodeBody(r, &req); err != nil {
		fail(w, err)
		return
	}
	sw := store.ResurrectionSwitch{Deployment: name, Group: req.Group, Enabled: req.Enabled, User: user(r)}
	state := "off"
	if req.Enabled {
		state = "on"
	}
	target := name
	if req.Group != "" {
		target += "/" + req.Group
	}
	err := s.d.Store.Update(func(tx *store.Tx) error {
		if _, err := tx.Deployment(name); err != nil {
			return err
		}
		if err := tx.PutResurrectionSwitch(sw); err != nil {
			return task.BadInput(err)
		}
		_, err := tx.AddAuditEvent(store.AuditEvent{User: user(r), Deployment: name, Action: "update-resurrection",
			ObjectType: "deployment", Object: target, Result: store.ResultOK, Context: map[string]string{"resurrection": state}})
		return err
	})
	if err != nil {
		fail(w, err)
		return
	}
	view(s, w, func(tx *store.Tx) ([]store.ResurrectionSwitch, error) { return nonNil(tx.ResurrectionSwitches(name)) })
}

func (s *Server) auditEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.AuditFilter{Deployment: q.Get("deployment"), Instance: q.Get("instance"), Action: q.Get("action"), Limit: 200}
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			fail(w, fmt.Errorf("%w: since %q is not an RFC 3339 time", ErrBadInput, v))
			return
		}
		f.Since = t
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			fail(w, fmt.Errorf("%w: limit %q", ErrBadInput, v))
			return
		}
		f.Limit = n
	}
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			fail(w, fmt.Errorf("%w: before %q", ErrBadInput, v))
			return
		}
		f.Before = n
	}
	view(s, w, func(tx *store.Tx) ([]store.AuditEvent, error) { return nonNil(tx.AuditEvents(f)) })
}
