package api

// The fleet routes: stemcell rollouts and clean-up (director/fleet).
//
//	POST   /v1/stemcells/upgrade              fleet.UpgradeRequest -> task
//	DELETE /v1/stemcells/{name}/{version}     -> task (409 while in use)
//	DELETE /v1/releases/{name}[?version=V]    -> task (409 while in use)
//	POST   /v1/cleanup {all}                  -> task
//
// GET /v1/releases and /v1/stemcells add to each version who uses it
// (deployments, pending).

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/compleat/compleat/director/apiv1"
	"github.com/compleat/compleat/director/fleet"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

// Fleet is what the fleet routes run (director/fleet.Fleet).
type Fleet interface {
	UpgradeStemcell(ctx context.Context, r *task.Reporter, req fleet.UpgradeRequest) (string, error)
	DeleteRelease(ctx context.Context, r *task.Reporter, name, version string) (string, error)
	DeleteStemcell(ctx context.Context, r *task.Reporter, name, version string) (string, error)
	CleanUp(ctx context.Context, r *task.Reporter, all bool) (string, error)
}

var _ Fleet = (*fleet.Fleet)(nil)

// ReleaseView is a release version and who uses it.
type ReleaseView struct {
	store.Release
	fleet.Usage
}

// StemcellView is a stemcell version and who uses it.
type StemcellView struct {
	store.Stemcell
	fleet.Usage
}

// CleanUpRequest is apiv1.CleanUpRequest.
type CleanUpRequest = apiv1.CleanUpRequest

// artifactArgs are the arguments of delete-release and delete-stemcell.
type artifactArgs struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
}

func (s *Server) fleetRoutes(admin string) {
	s.route("POST /v1/stemcells/upgrade", admin, s.upgradeStemcell)
	s.route("DELETE /v1/stemcells/{name}/{version}", admin, s.deleteStemcell)
	s.route("DELETE /v1/releases/{name}", admin, s.deleteRelease)
	s.route("POST /v1/cleanup", admin, s.cleanUp)
}

func (s *Server) registerFleetHandlers() {
	f := s.d.Fleet
	s.d.Tasks.Register("upgrade-stemcell", handler(func(ctx context.Context, rep *task.Reporter, req fleet.UpgradeRequest) (string, error) {
		return f.UpgradeStemcell(ctx, rep, req)
	}))
	s.d.Tasks.Register("delete-release", handler(func(ctx context.Context, rep *task.Reporter, a artifactArgs) (string, error) {
		return f.DeleteRelease(ctx, rep, a.Name, a.Version)
	}))
	s.d.Tasks.Register("delete-stemcell", handler(func(ctx context.Context, rep *task.Reporter, a artifactArgs) (string, error) {
		return f.DeleteStemcell(ctx, rep, a.Name, a.Version)
	}))
	s.d.Tasks.Register("clean-up", handler(func(ctx context.Context, rep *task.Reporter, req CleanUpRequest) (string, error) {
		return f.CleanUp(ctx, rep, req.All)
	}))
}

func (s *Server) releaseViews(w http.ResponseWriter, r *http.Request) {
	view(s, w, func(tx *store.Tx) ([]ReleaseView, error) {
		rs, err := tx.Releases()
		if err != nil {
			return nil, err
		}
		ds, err := tx.Deployments()
		out := []ReleaseView{}
		for _, rel := range rs {
			out = append(out, ReleaseView{rel, fleet.ReleaseUsage(ds, rel.Name+"/"+rel.Version)})
		}
		return out, err
	})
}

func (s *Server) stemcellViews(w http.ResponseWriter, r *http.Request) {
	view(s, w, func(tx *store.Tx) ([]StemcellView, error) {
		ss, err := tx.Stemcells()
		if err != nil {
			return nil, err
		}
		ds, err := tx.Deployments()
		out := []StemcellView{}
		for _, sc := range ss {
			out = append(out, StemcellView{sc, fleet.StemcellUsage(ds, sc.Name+"/"+sc.Version)})
		}
		return out, err
	})
}

func (s *Server) upgradeStemcell(w http.ResponseWriter, r *http.Request) {
	var req fleet.UpgradeRequest
	if err := decodeBody(r, &req); err != nil {
		fail(w, err)
		return
	}
	if req.OS == "" || req.All == (len(req.Deployments) > 0) || req.MaxParallel < 0 {
		fail(w, fmt.Errorf("%w: upgrade-stemcell needs an os, and deployments or all (not both); max_parallel ≥ 0", ErrBadInput))
		return
	}
	what := req.OS
	if req.Version != "" {
		what += "/" + req.Version
	}
	desc := "upgrade stemcell " + what
	if req.DryRun {
		desc = "dry run: " + desc
	}
	s.submitTask(w, r, task.Spec{Type: "upgrade-stemcell", Description: desc}, req)
}

func (s *Server) deleteStemcell(w http.ResponseWriter, r *http.Request) {
	a := artifactArgs{Name: r.PathValue("name"), Version: r.PathValue("version")}
	nv := a.Name + "/" + a.Version
	err := s.d.Store.View(func(tx *store.Tx) error {
		if _, err := tx.Stemcell(a.Name, a.Version); err != nil {
			return err
		}
		ds, err := tx.Deployments()
		if u := fleet.StemcellUsage(ds, nv); err == nil && u.InUse() {
			return fmt.Errorf("stemcell %s is in use by %s: %w", nv, u, store.ErrConflict)
		}
		return err
	})
	if err != nil {
		fail(w, err)
		return
	}
	s.submitTask(w, r, task.Spec{Type: "delete-stemcell", Description: "delete stemcell " + nv}, a)
}

func (s *Server) deleteRelease(w http.ResponseWriter, r *http.Request) {
	a := artifactArgs{Name: r.PathValue("name"), Version: r.URL.Query().Get("version")}
	err := s.d.Store.View(func(tx *store.Tx) error {
		rs, err := tx.Releases()
		if err != nil {
			return err
		}
		ds, err := tx.Deployments()
		if err != nil {
			return err
		}
		found := false
		var used []string
		for _, rel := range rs {
			if rel.Name != a.Name || a.Version != "" && rel.Version != a.Version {
				continue
			}
			found = true
			if u := fleet.ReleaseUsage(ds, rel.Name+"/"+rel.Version); u.InUse() {
				used = append(used, rel.Version+" by "+u.String())
			}
		}
		switch {
		case !found:
			return fmt.Errorf("release %s %s: %w", a.Name, a.Version, store.ErrNotFound)
		case len(used) > 0:
			return fmt.Errorf("release %s is in use (%s): %w", a.Name, strings.Join(used, "; "), store.ErrConflict)
		}
		return nil
	})
	if err != nil {
		fail(w, err)
		return
	}
	what := a.Name
	if a.Version != "" {
		what += "/" + a.Version
	}
	s.submitTask(w, r, task.Spec{Type: "delete-release", Description: "delete release " + what}, a)
}

func (s *Server) cleanUp(w http.ResponseWriter, r *http.Request) {
	var req CleanUpRequest
	if err := decodeBody(r, &req); err != nil {
		fail(w, err)
		return
	}
	desc := "clean up"
	if req.All {
		desc += " --all"
	}
	s.submitTask(w, r, task.Spec{Type: "clean-up", Description: desc}, req)
}
