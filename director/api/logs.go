package api

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/compleat/compleat/agent/applyspec"
	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/director/apiv1"
	"github.com/compleat/compleat/director/blobstore"
	"github.com/compleat/compleat/director/remote"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

// Logs and ssh routes (registered by New; every one needs the admin scope,
// since job logs and commands reach into the VMs):
//
//	POST /v1/deployments/{name}/logs {instance, jobs} -> task fetching a tar.gz
//	     of the instance's sys/log into the blobstore; its result is a LogsResult
//	GET  /v1/logs/{blob}                      the archive (deleted once served whole)
//	GET  /v1/deployments/{name}/logs/follow?instance=GROUP/ID&job=J&lines=N
//	     JSON lines (LogLine) as the instance's job logs grow, until the client goes
//	POST /v1/deployments/{name}/ssh {target, command, timeout} -> SSHResult
//
// An instance is GROUP/ID where ID is the instance's id or index; GROUP alone
// names every instance of the group (ssh) or its only one (logs).

// Remote is what the logs and ssh routes serve from.
type Remote struct {
	// Agent returns a client of one agent (client.New over the director's
	// bus connection).
	Agent func(agentID string) InstanceAgent
	// Blobs receives the log archives agents upload to URLs Signer signs
	// for BlobURL.
	Blobs   blobstore.Store
	Signer  *blobstore.Signer
	BlobURL string
	// FollowInterval is the wait between two tail_logs polls (default
	// 500ms).
	FollowInterval time.Duration
}

// InstanceAgent is one agent as the logs and ssh routes use it.
type InstanceAgent = remote.Agent

// ErrandLogsStage: see remote.ErrandLogsStage.
const ErrandLogsStage = remote.ErrandLogsStage

// LogsRequest is apiv1.LogsRequest.
type LogsRequest = apiv1.LogsRequest

// LogsResult is the result of a fetch-logs task (its Result, as JSON).
type LogsResult = remote.LogsResult

// LogLine is apiv1.LogLine.
type LogLine = apiv1.LogLine

func (s *Server) remoteRoutes(admin string) {
	s.route("POST /v1/deployments/{name}/logs", admin, s.fetchLogs)
	s.route("GET /v1/deployments/{name}/logs/follow", admin, s.followLogs)
	s.route("GET /v1/logs/{blob}", admin, s.downloadLogs)
	s.route("POST /v1/deployments/{name}/ssh", admin, s.ssh)
}

// targetInstances resolves GROUP or GROUP/ID (id or index) to instances of
// deployment, ordered by group then index.
func (s *Server) targetInstances(deployment, target string) ([]store.Instance, error) {
	group, id, hasID := strings.Cut(target, "/")
	if group == "" || hasID && (id == "" || strings.Contains(id, "/")) {
		return nil, fmt.Errorf("%w: instance %q: want GROUP or GROUP/ID", ErrBadInput, target)
	}
	var out []store.Instance
	err := s.d.Store.View(func(tx *store.Tx) error {
		if _, err := tx.Deployment(deployment); err != nil {
			return err
		}
		all, err := tx.Instances(deployment)
		if err != nil {
			return err
		}
		index, byIndex := -1, false
		if n, err := strconv.Atoi(id); err == nil && n >= 0 {
			index, byIndex = n, true
		}
		for _, i := range all {
			if i.Group != group || hasID && i.ID != id && !(byIndex && i.Index == index) {
				continue
			}
			out = append(out, i)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("instance %s of deployment %s: %w", target, deployment, store.ErrNotFound)
	}
	slices.SortStableFunc(out, func(a, b store.Instance) int { return cmp.Compare(a.Index, b.Index) })
	return out, nil
}

// checkJobs refuses job names that cannot name a directory of sys/log.
func checkJobs(jobs []string) error {
	for _, j := range jobs {
		if !applyspec.ValidName(j) {
			return fmt.Errorf("%w: job %q is not a job name", ErrBadInput, j)
		}
	}
	return nil
}

// oneInstance resolves target to exactly one instance with a VM.
func (s *Server) oneInstance(deployment, target string) (store.Instance, error) {
	insts, err := s.targetInstances(deployment, target)
	if err != nil {
		return store.Instance{}, err
	}
	if len(insts) > 1 {
		return store.Instance{}, fmt.Errorf("%w: %s names %d instances: name one as GROUP/ID", ErrBadInput, target, len(insts))
	}
	if insts[0].AgentID == "" {
		return store.Instance{}, fmt.Errorf("instance %s/%s has no vm: %w", insts[0].Group, insts[0].ID, store.ErrConflict)
	}
	return insts[0], nil
}

func (s *Server) fetchLogs(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req LogsRequest
	if err := decodeBody(r, &req); err != nil {
		fail(w, err)
		return
	}
	if err := checkJobs(req.Jobs); err != nil {
		fail(w, err)
		return
	}
	inst, err := s.oneInstance(name, req.Instance)
	if err != nil {
		fail(w, err)
		return
	}
	rm := s.d.Remote
	instName := inst.Group + "/" + inst.ID
	// No deployment lock: logs can be fetched while a deploy runs (the
	// instance being debugged may be the one it waits for).
	spec := task.Spec{Type: "fetch-logs", Description: fmt.Sprintf("fetch logs of %s (deployment %s)", instName, name)}
	s.startTask(w, r, spec, func(ctx context.Context, rep *task.Reporter) (string, error) {
		var blobID string
		var got protocol.FetchLogsResult
		err := rep.Stage("Fetching logs", 1).Run(instName, func() error {
			var err error
			blobID, got, err = remote.FetchLogs(ctx, rm.Agent(inst.AgentID), rm.Blobs, rm.Signer, rm.BlobURL, req.Jobs)
			return err
		})
		if err != nil {
			return "", fmt.Errorf("fetch logs of %s: %w", instName, err)
		}
		raw, err := json.Marshal(LogsResult{BlobID: blobID, SHA256: got.SHA256, Size: got.Size,
			Deployment: name, Group: inst.Group, ID: inst.ID, Index: inst.Index})
		return string(raw), err
	})
}

// downloadLogs serves a fetched archive and deletes it once served whole.
func (s *Server) downloadLogs(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("blob")
	if !strings.HasPrefix(id, remote.LogsBlobPrefix) || !blobstore.ValidID(id) {
		fail(w, fmt.Errorf("%w: %q is not a logs archive id", ErrBadInput, id))
		return
	}
	rc, err := s.d.Remote.Blobs.Get(r.Context(), id)
	if errors.Is(err, blobstore.ErrNotFound) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Errorf("logs archive %s: not found (already downloaded?)", id))
		return
	}
	if err != nil {
		fail(w, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/gzip")
	if _, err := io.Copy(w, rc); err != nil {
		s.d.Logger.Warn("serve logs archive", "blob", id, "error", err)
		return
	}
	if err := s.d.Remote.Blobs.Delete(context.WithoutCancel(r.Context()), id); err != nil {
		s.d.Logger.Warn("delete served logs archive", "blob", id, "error", err)
	}
}

// followLogs streams the instance's job log lines as they are written:
// first the last `lines` lines of each file (default 10), then every line
// appended, polling the agent every FollowInterval.
func (s *Server) followLogs(w http.ResponseWriter, r *http.Request) {
	name, q := r.PathValue("name"), r.URL.Query()
	lines := 10
	if v := q.Get("lines"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 10000 {
			fail(w, fmt.Errorf("%w: lines %q: want 0 to 10000", ErrBadInput, v))
			return
		}
		lines = n
	}
	if err := checkJobs(q["job"]); err != nil {
		fail(w, err)
		return
	}
	inst, err := s.oneInstance(name, q.Get("instance"))
	if err != nil {
		fail(w, err)
		return
	}
	instName := inst.Group + "/" + inst.ID
	s.audit(store.AuditEvent{User: user(r), Deployment: name, Instance: instName, Action: "logs-follow",
		ObjectType: "instance", Object: instName, Result: store.ResultInfo})
	interval := s.d.Remote.FollowInterval
	if interval <= 0 {
		interval = 500 * time.Millisecond
	}
	agent := s.d.Remote.Agent(inst.AgentID)
	req := protocol.TailLogsRequest{Jobs: q["job"], Initial: true, Lines: lines}

	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	enc := json.NewEncoder(w)
	lastErr := ""
	for {
		cctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		res, err := agent.TailLogs(cctx, req)
		cancel()
		if r.Context().Err() != nil {
			return
		}
		if err != nil {
			// Said once per distinct failure; following goes on (the agent
			// may be restarting).
			if msg := err.Error(); msg != lastErr {
				lastErr = msg
				if enc.Encode(LogLine{Instance: instName, Error: msg}) != nil {
					return
				}
			}
		} else {
			lastErr = ""
			req = protocol.TailLogsRequest{Jobs: req.Jobs, Positions: res.Positions}
			for _, c := range res.Chunks {
				for _, l := range bytes.SplitAfter(c.Data, []byte("\n")) {
					if len(l) == 0 {
						continue
					}
					if enc.Encode(LogLine{Instance: instName, File: c.File, Line: strings.TrimSuffix(string(l), "\n")}) != nil {
						return
					}
				}
			}
		}
		if flusher != nil {
			flusher.Flush()
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(interval):
		}
	}
}

// audit records an event, logging (never failing the request) when it
// cannot.
func (s *Server) audit(e store.AuditEvent) {
	err := s.d.Store.Update(func(tx *store.Tx) error {
		_, err := tx.AddAuditEvent(e)
		return err
	})
	if err != nil {
		s.d.Logger.Error("record audit event", "action", e.Action, "error", err)
	}
}
