package api

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/compleat/compleat/director/store"
)

// IgnoreRequest is PUT /v1/deployments/{name}/instances/{group}/{id}/ignore.
type IgnoreRequest struct {
	Ignore bool `json:"ignore"`
}

// ignoreInstance sets or clears an instance's ignore mark
// (store.Instance.IgnoreFix): an ignored instance is left alone by deploys,
// by the lifecycle verbs unless they name it, by cloud-check and by the
// resurrector. {id} is the instance's id or index. The change is recorded
// at once (as BOSH's ignore, it is not a task) with an audit event
// "ignore" or "unignore"; a task already running keeps the plan it made.
func (s *Server) ignoreInstance(w http.ResponseWriter, r *http.Request) {
	name, group, id := r.PathValue("name"), r.PathValue("group"), r.PathValue("id")
	var req IgnoreRequest
	if err := decodeBody(r, &req); err != nil {
		fail(w, err)
		return
	}
	action := "unignore"
	if req.Ignore {
		action = "ignore"
	}
	var out store.Instance
	err := s.d.Store.Update(func(tx *store.Tx) error {
		if _, err := tx.Deployment(name); err != nil {
			return err
		}
		insts, err := tx.Instances(name)
		if err != nil {
			return err
		}
		found := false
		for _, in := range insts {
			if in.Group == group && (in.ID == id || strconv.Itoa(in.Index) == id) {
				out, found = in, true
				break
			}
		}
		if !found {
			return fmt.Errorf("instance %s/%s of deployment %s: %w", group, id, name, store.ErrNotFound)
		}
		out.IgnoreFix = req.Ignore
		if err := tx.PutInstance(out); err != nil {
			return err
		}
		_, err = tx.AddAuditEvent(store.AuditEvent{User: user(r), Deployment: name, Instance: out.Group + "/" + out.ID,
			Action: action, ObjectType: "instance", Object: out.Group + "/" + out.ID, Result: store.ResultOK})
		return err
	})
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}
