package api

// Rollout control beyond BOSH: pause a deployment's rollout after the
// batches in flight, and resume it (a deploy of the newest manifest, which
// carries on with whatever still differs).

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/compleat/compleat/director/apiv1"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

// ErrNoRollout is apiv1.ErrNoRollout.
var ErrNoRollout = apiv1.ErrNoRollout

// Pauser is the deploy pipeline's pause capability, part of Deployer.
type Pauser interface {
	// Pause asks the deployment's rollout under way to stop after the
	// batches in flight; ErrNoRollout when there is none.
	Pause(deployment string) error
}

// PauseResult is the answer of POST /v1/deployments/{name}/pause.
type PauseResult struct {
	Deployment string `json:"deployment"`
	Pausing    bool   `json:"pausing"`
}

func (s *Server) rolloutRoutes(admin string) {
	s.route("POST /v1/deployments/{name}/pause", admin, s.pause)
	s.route("POST /v1/deployments/{name}/resume", admin, s.resume)
}

func (s *Server) pause(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := s.d.Deployer.Pause(name); err != nil {
		if errors.Is(err, ErrNoRollout) {
			writeError(w, http.StatusConflict, "conflict", fmt.Errorf("deployment %s has no rollout under way (a deploy still compiling has not begun it)", name))
			return
		}
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, PauseResult{Deployment: name, Pausing: true})
}

// resume deploys the deployment's newest manifest (the paused one) as a
// new task; ?skip_drain=true as deploy --skip-drain.
func (s *Server) resume(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var m store.Manifest
	err := s.d.Store.View(func(tx *store.Tx) error {
		var err error
		m, err = tx.Manifest(name, 0)
		return err
	})
	if err != nil {
		fail(w, fmt.Errorf("deployment %s has no manifest to resume: %w", name, err))
		return
	}
	req := DeployRequest{Deployment: name, Manifest: m.Content, SkipDrain: r.URL.Query().Get("skip_drain") == "true"}
	s.submitTask(w, r, task.Spec{Type: "deploy", Description: "resume deployment " + name, Deployment: name}, req)
}
