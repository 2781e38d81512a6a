// Package api is the director's HTTPS JSON API: every CLI command is a thin
// client of it. Paths are versioned (/v1/...); every route but /blobs/ needs a
// bearer token (401 without one or with an unknown one, 403 when the token
// lacks the route's scope: "read" for GETs, "admin" for changes). Tokens are
// compared by sha256 in constant time and never logged.
//
// Routes:
//
//	GET  /v1/info                          director name, version, user, cpis
//	GET  /v1/releases                      POST /v1/releases (tarball body) -> task
//	GET  /v1/stemcells                     POST /v1/stemcells (tarball body) -> task
//	     (each version with who uses it; deletions, rollouts, clean-up: fleet.go)
//	GET  /v1/configs?type=T[&all=true]     POST /v1/configs {type,name,content}
//	     (a cpi config's properties, its credentials, only to admin; redact.go)
//	GET  /v1/deployments                   POST /v1/deployments (deploy) -> task
//	GET  /v1/deployments/{name}            DELETE /v1/deployments/{name}[?force=true] -> task
//	GET  /v1/deployments/{name}/instances[?ps=true]  GET /v1/deployments/{name}/vms[?vitals=true]
//	POST /v1/deployments/{name}/state {action, target} -> task  (recreate, restart, stop, start)
//	GET  /v1/tasks?limit=N&state=S&deployment=D
//	GET  /v1/tasks/{id}                    POST /v1/tasks/{id}/cancel
//	GET  /v1/tasks/{id}/events?after=SEQ&follow=true   (JSON lines, chunked)
//	GET  /v1/locks                         GET /v1/backup (admin; the state file)
//	POST /v1/agents/rotate-certs {deployment} -> task (agents' new bus identities)
//	GET  /v1/variables?deployment=D[&reveal=true]   (values only with reveal, admin)
//	POST /v1/variables/regenerate {deployment, name} -> task
//	GET  /v1/deployments/{name}/errands    POST /v1/deployments/{name}/errands/{errand}/runs {keep_alive, when_changed, instances} -> task
//	GET  /v1/disks[?orphaned=true]         DELETE /v1/disks/{cid} (orphaned only) -> task
//	POST /v1/deployments/{name}/logs|ssh   GET /v1/logs/{blob}, .../logs/follow (admin; logs.go)
//	GET  /metrics                          Prometheus
//	GET  /blobs/...                        signed URLs (no bearer token)
//
// Errors are {"error": "...", "code": "..."} with a status: 400 for bad input
// (the CLI exits 2), 404, 409 for conflicts.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/compleat/compleat/director/apiv1"
	"github.com/compleat/compleat/director/config"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

// Version is the director's version reported by /v1/info.
const Version = "0.1.0"

// ErrBadInput marks an error caused by the request's content (status 400);
// task.BadInput wraps an error as one keeping its message. It is
// task.ErrBadInput, so that a task failing on bad input says so.
var ErrBadInput = task.ErrBadInput

// Importer turns uploaded tarballs into releases and stemcells, inside a
// task; the result is the task's result line.
type Importer interface {
	ImportRelease(ctx context.Context, r *task.Reporter, tarball string) (result string, err error)
	ImportStemcell(ctx context.Context, r *task.Reporter, tarball string) (result string, err error)
}

// Configs validates a config before it is stored and applies it after (the cpi
// config restarts plugins). Validate's errors are the user's (status 400).
type Configs interface {
	Validate(typ, file string, content []byte) error
	Applied(c store.Config) error
}

// Deployer is where the deploy pipeline plugs in: the composition root
// (director/app) supplies the one built from the plan, compile and update
// packages. Each task method runs as the body of a task that holds the
// deployment's lock.
type Deployer interface {
	Deploy(ctx context.Context, r *task.Reporter, req DeployRequest) (result string, err error)
	Delete(ctx context.Context, r *task.Reporter, deployment string, force bool) (result string, err error)
	ChangeState(ctx context.Context, r *task.Reporter, req StateRequest) (result string, err error)
	ErrandRunner
	VariableRegenerator
	Pauser
	// RotateAgentCerts gives the agents of a deployment (every
	// deployment's when empty) new bus identities.
	RotateAgentCerts(ctx context.Context, r *task.Reporter, deployment string) (result string, err error)
}

// RotateRequest is apiv1.RotateRequest.
type RotateRequest = apiv1.RotateRequest

// ErrandRunner runs errands (POST /v1/deployments/{name}/errands/{errand}/runs,
// GET .../errands).
type ErrandRunner interface {
	Errands(ctx context.Context, deployment string) ([]ErrandInfo, error)
	RunErrand(ctx context.Context, r *task.Reporter, req ErrandRequest) (result string, err error)
}

// ErrandRequest is apiv1.ErrandRequest.
type ErrandRequest = apiv1.ErrandRequest

// ErrandInfo is apiv1.ErrandInfo.
type ErrandInfo = apiv1.ErrandInfo

// ErrandTaskType is apiv1.ErrandTaskType.
const ErrandTaskType = apiv1.ErrandTaskType

// ErrandTaskDescription is apiv1.ErrandTaskDescription.
var ErrandTaskDescription = apiv1.ErrandTaskDescription

// VariableRegenerator makes a new value for a declared variable
// (POST /v1/variables/regenerate).
type VariableRegenerator interface {
	RegenerateVariable(ctx context.Context, r *task.Reporter, deployment, name string) (result string, err error)
}

// RegenerateRequest is apiv1.RegenerateRequest.
type RegenerateRequest = apiv1.RegenerateRequest

// DeployRequest is apiv1.DeployRequest.
type DeployRequest = apiv1.DeployRequest

// StateRequest is apiv1.StateRequest.
type StateRequest = apiv1.StateRequest

// Agents asks an agent for its state (instances --ps).
type Agents interface {
	State(ctx context.Context, agentID string) (json.RawMessage, error)
}

// DiskDeleter deletes a disk in its CPI (delete-disk).
type DiskDeleter interface {
	DeleteDisk(ctx context.Context, cpiName, cid string) error
}

// Deps are what the API serves from. Every field is required but
// MaxUpload and Cluster: New refuses to build an API that would lack a part.
type Deps struct {
	Store    *store.Store
	Tasks    *task.Manager
	Auth     *Auth
	Logger   *slog.Logger
	Metrics  prometheus.Gatherer // served at /metrics
	Blobs    http.Handler        // the signed blob handler, mounted at /blobs/
	Importer Importer
	Configs  Configs
	Deployer Deployer
	Fleet    Fleet           // stemcell rollouts, deletions, clean-up (fleet.go)
	Agents   Agents          // instances?ps=true, vms?vitals=true
	Disks    DiskDeleter     // DELETE /v1/disks/{cid}
	CPIs     func() []string // configured CPI names, for /v1/info
	Health   Health          // health monitor and cloud-check (health.go)
	Remote   Remote          // logs and ssh (logs.go, ssh.go)
	// Cluster, with several directors (HA), names this director's
	// instance and the leader's; nil for a director on its own.
	Cluster func() (self, leader string)
	// UploadDir holds uploaded tarballs until their task ends.
	UploadDir string
	// MaxUpload bounds an upload body; zero means 20 GiB.
	MaxUpload int64
}

// missing names the required parts d lacks.
func (d Deps) missing() []string {
	var out []string
	for _, p := range []struct {
		name string
		nil  bool
	}{
		{"Store", d.Store == nil}, {"Tasks", d.Tasks == nil}, {"Auth", d.Auth == nil}, {"Logger", d.Logger == nil},
		{"Metrics", d.Metrics == nil}, {"Blobs", d.Blobs == nil}, {"Importer", d.Importer == nil},
		{"Configs", d.Configs == nil}, {"Deployer", d.Deployer == nil}, {"Fleet", d.Fleet == nil}, {"Agents", d.Agents == nil},
		{"Disks", d.Disks == nil}, {"CPIs", d.CPIs == nil}, {"Health.Monitor", d.Health.Monitor == nil},
		{"Health.CloudCheck", d.Health.CloudCheck == nil}, {"Remote.Agent", d.Remote.Agent == nil},
		{"Remote.Blobs", d.Remote.Blobs == nil}, {"Remote.Signer", d.Remote.Signer == nil},
		{"UploadDir", d.UploadDir == ""},
	} {
		if p.nil {
			out = append(out, p.name)
		}
	}
	return out
}

// Time limits of the API's http.Server (the composition root sets them;
// docs/reliability.md lists them). ReadHeaderTimeout also bounds the TLS
// handshake; IdleTimeout closes a kept-alive connection no request uses.
const (
	ReadHeaderTimeout = 10 * time.Second
	IdleTimeout       = 60 * time.Second
)

// Server is the API's http.Handler.
type Server struct {
	d   Deps
	mux *http.ServeMux
}

// New builds the API; it fails when d lacks a part.
func New(d Deps) (*Server, error) {
	if m := d.missing(); len(m) > 0 {
		return nil, fmt.Errorf("api: missing %s", strings.Join(m, ", "))
	}
	if d.MaxUpload == 0 {
		d.MaxUpload = 20 << 30
	}
	s := &Server{d: d, mux: http.NewServeMux()}
	s.registerTaskHandlers()
	s.registerFleetHandlers()
	read, admin := config.ScopeRead, config.ScopeAdmin
	s.route("GET /v1/info", read, s.info)
	s.route("GET /v1/releases", read, s.releaseViews)
	s.route("POST /v1/releases", admin, s.uploadRelease)
	s.route("GET /v1/stemcells", read, s.stemcellViews)
	s.route("POST /v1/stemcells", admin, s.uploadStemcell)
	s.route("GET /v1/configs", read, s.configs)
	s.route("POST /v1/configs", admin, s.updateConfig)
	s.route("GET /v1/deployments", read, s.deployments)
	s.route("POST /v1/deployments", admin, s.deploy)
	s.route("GET /v1/deployments/{name}", read, s.deployment)
	s.route("DELETE /v1/deployments/{name}", admin, s.deleteDeployment)
	s.route("GET /v1/deployments/{name}/instances", read, s.instances)
	s.route("GET /v1/deployments/{name}/vms", read, s.vms)
	s.route("POST /v1/deployments/{name}/state", admin, s.changeState)
	s.route("PUT /v1/deployments/{name}/instances/{group}/{id}/ignore", admin, s.ignoreInstance)
	s.route("GET /v1/tasks", read, s.tasks)
	s.route("GET /v1/tasks/{id}", read, s.task)
	s.route("POST /v1/tasks/{id}/cancel", admin, s.cancelTask)
	s.route("GET /v1/tasks/{id}/events", read, s.events)
	s.route("GET /v1/locks", read, s.locks)
	s.route("GET /v1/variables", read, s.variables)
	s.route("POST /v1/variables/regenerate", admin, s.regenerateVariable)
	s.route("GET /v1/deployments/{name}/errands", read, s.errands)
	s.route("POST /v1/deployments/{name}/errands/{errand}/runs", admin, s.runErrand)
	s.route("GET /v1/disks", read, s.disks)
	s.route("DELETE /v1/disks/{cid}", admin, s.deleteDisk)
	s.route("GET /v1/backup", admin, s.backup)
	s.route("POST /v1/agents/rotate-certs", admin, s.rotateAgentCerts)
	s.route("GET /metrics", read, s.metrics)
	s.healthRoutes(read, admin)
	s.rolloutRoutes(admin) // rollout.go
	s.fleetRoutes(admin)   // fleet.go
	s.remoteRoutes(admin)  // logs.go, ssh.go
	s.route("/v1/", read, func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Errorf("no route %s %s", r.Method, r.URL.Path))
	})
	s.mux.Handle("/blobs/", d.Blobs)
	return s, nil
}

type ctxKey struct{}

// user is the name of the token that made the request.
func user(r *http.Request) string {
	if t, ok := r.Context().Value(ctxKey{}).(Token); ok {
		return t.Name
	}
	return ""
}

func (s *Server) route(pattern, scope string, h http.HandlerFunc) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		tok, ok := s.d.Auth.identify(r)
		if !ok {
			// A client without a valid token gets no kept-alive connection.
			w.Header().Set("Connection", "close")
			w.Header().Set("WWW-Authenticate", `Bearer realm="compleat"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", errors.New("missing or unknown token"))
			return
		}
		if !tok.has(scope) {
			writeError(w, http.StatusForbidden, "forbidden", fmt.Errorf("token %q lacks the %s scope", tok.Name, scope))
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, tok)))
	})
}

// ServeHTTP logs every request (method, path, status, token name; never the
// token) and dispatches it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	s.mux.ServeHTTP(sw, r)
	s.d.Logger.Info("api request", "method", r.Method, "path", r.URL.Path, "status", sw.status,
		"took", time.Since(start).Round(time.Millisecond), "remote", r.RemoteAddr)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) { w.status = code; w.ResponseWriter.WriteHeader(code) }
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Error is the body of every error answer.
type Error struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func writeError(w http.ResponseWriter, status int, code string, err error) {
	writeJSON(w, status, Error{Error: err.Error(), Code: code})
}

// fail answers err with the status its kind calls for.
func fail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrBadInput):
		writeError(w, http.StatusBadRequest, "bad_input", err)
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", err)
	case errors.Is(err, store.ErrExists), errors.Is(err, store.ErrLeaseHeld), errors.Is(err, store.ErrConflict):
		writeError(w, http.StatusConflict, "conflict", err)
	default:
		writeError(w, http.StatusInternalServerError, "internal", err)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// Info is apiv1.Info.
type Info = apiv1.Info

func (s *Server) info(w http.ResponseWriter, r *http.Request) {
	tok := r.Context().Value(ctxKey{}).(Token)
	info := Info{Name: "compleat", Version: Version, User: tok.Name, Scopes: tok.Scopes, Deploy: true, CPIs: s.d.CPIs()}
	if s.d.Cluster != nil {
		info.Director, info.Leader = s.d.Cluster()
	}
	writeJSON(w, http.StatusOK, info)
}

// view runs a read transaction and answers its value as JSON.
func view[T any](s *Server, w http.ResponseWriter, fn func(tx *store.Tx) (T, error)) {
	var v T
	err := s.d.Store.View(func(tx *store.Tx) error {
		var err error
		v, err = fn(tx)
		return err
	})
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func nonNil[T any](v []T, err error) ([]T, error) {
	if v == nil {
		v = []T{}
	}
	return v, err
}

func (s *Server) deployments(w http.ResponseWriter, r *http.Request) {
	view(s, w, func(tx *store.Tx) ([]store.Deployment, error) {
		ds, err := nonNil(tx.Deployments())
		for i := range ds {
			ds[i] = withoutLinkProperties(ds[i])
		}
		return ds, err
	})
}

func (s *Server) deployment(w http.ResponseWriter, r *http.Request) {
	view(s, w, func(tx *store.Tx) (store.Deployment, error) {
		d, err := tx.Deployment(r.PathValue("name"))
		return withoutLinkProperties(d), err
	})
}

// InstanceView is an instance as GET /v1/deployments/{name}/instances
// answers it: the record, its addresses and, with ps=true, its agent's state
// (protocol.State as JSON) or why it could not be had.
type InstanceView struct {
	store.Instance
	IPs        []string        `json:"ips,omitempty"`
	AgentState json.RawMessage `json:"agent_state,omitempty"`
	AgentError string          `json:"agent_error,omitempty"`
}

func (s *Server) instances(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var out []InstanceView
	err := s.d.Store.View(func(tx *store.Tx) error {
		if _, err := tx.Deployment(name); err != nil {
			return err
		}
		insts, err := tx.Instances(name)
		if err != nil {
			return err
		}
		ips, err := tx.IPReservations("")
		if err != nil {
			return err
		}
		byInst := map[string][]string{}
		for _, ip := range ips {
			if ip.Deployment == name {
				byInst[ip.InstanceID] = append(byInst[ip.InstanceID], ip.IP)
			}
		}
		out = make([]InstanceView, 0, len(insts))
		for _, i := range insts {
			out = append(out, InstanceView{Instance: i, IPs: byInst[i.ID]})
		}
		return nil
	})
	if err != nil {
		fail(w, err)
		return
	}
	// The agents are asked after the transaction, in parallel.
	if r.URL.Query().Get("ps") == "true" {
		s.askAgents(r.Context(), len(out), func(i int) string { return out[i].AgentID }, func(i int, st json.RawMessage, err string) {
			out[i].AgentState, out[i].AgentError = st, err
		})
	}
	writeJSON(w, http.StatusOK, out)
}

// askAgents asks n agents for their state, 16 at a time, each for up to
// 10 s; answer receives the state, or why there is none ("no vm" for an
// empty agent id).
func (s *Server) askAgents(ctx context.Context, n int, agentID func(i int) string, answer func(i int, state json.RawMessage, err string)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		id := agentID(i)
		if id == "" {
			answer(i, nil, "no vm")
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			st, err := s.d.Agents.State(ctx, id)
			if err != nil {
				answer(i, nil, err.Error())
				return
			}
			answer(i, st, "")
		})
	}
	wg.Wait()
}

// VMView is a VM as GET /v1/deployments/{name}/vms answers it: the record,
// the instance it serves (GROUP/ID) and, with vitals=true, its agent's job
// state and vitals (protocol.Vitals as JSON: cpu, mem, swap, load, disk,
// uptime_s) or why they could not be had.
type VMView struct {
	store.VM
	Instance   string          `json:"instance,omitempty"`
	JobState   string          `json:"job_state,omitempty"`
	Vitals     json.RawMessage `json:"vitals,omitempty"`
	AgentError string          `json:"agent_error,omitempty"`
}

func (s *Server) vms(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	vitals := r.URL.Query().Get("vitals") == "true"
	out := []VMView{}
	err := s.d.Store.View(func(tx *store.Tx) error {
		if _, err := tx.Deployment(name); err != nil {
			return err
		}
		vms, err := tx.VMs(name)
		if err != nil {
			return err
		}
		insts, err := tx.Instances(name)
		if err != nil {
			return err
		}
		group := map[string]string{}
		for _, i := range insts {
			group[i.ID] = i.Group
		}
		for _, v := range vms {
			vv := VMView{VM: v}
			if g, ok := group[v.InstanceID]; ok {
				vv.Instance = g + "/" + v.InstanceID
			}
			out = append(out, vv)
		}
		return nil
	})
	if err != nil {
		fail(w, err)
		return
	}
	if vitals {
		s.askAgents(r.Context(), len(out), func(i int) string { return out[i].AgentID }, func(i int, st json.RawMessage, errText string) {
			if errText != "" {
				out[i].AgentError = errText
				return
			}
			var state struct {
				JobState string          `json:"job_state"`
				Vitals   json.RawMessage `json:"vitals"`
			}
			if err := json.Unmarshal(st, &state); err != nil {
				out[i].AgentError = "bad state from the agent: " + err.Error()
				return
			}
			out[i].JobState, out[i].Vitals = state.JobState, state.Vitals
		})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) locks(w http.ResponseWriter, r *http.Request) {
	view(s, w, func(tx *store.Tx) ([]store.Lock, error) { return nonNil(tx.Locks()) })
}

func (s *Server) configs(w http.ResponseWriter, r *http.Request) {
	typ := r.URL.Query().Get("type")
	all := r.URL.Query().Get("all") == "true"
	admin := isAdmin(r)
	view(s, w, func(tx *store.Tx) ([]store.Config, error) {
		cs, err := tx.Configs(typ, !all)
		if !admin {
			for i := range cs {
				cs[i] = redactConfig(cs[i])
			}
		}
		return nonNil(cs, err)
	})
}

// ConfigRequest is POST /v1/configs.
type ConfigRequest struct {
	Type    string `json:"type"`
	Name    string `json:"name,omitempty"`
	Content string `json:"content"`
	// File is the name of the file the content came from, for messages.
	File string `json:"file,omitempty"`
}

// ConfigResult answers POST /v1/configs.
type ConfigResult struct {
	Config  store.Config `json:"config"`
	Changed bool         `json:"changed"`
}

func (s *Server) updateConfig(w http.ResponseWriter, r *http.Request) {
	var req ConfigRequest
	if err := decodeBody(r, &req); err != nil {
		fail(w, err)
		return
	}
	switch req.Type {
	case store.ConfigCloud, store.ConfigRuntime, store.ConfigCPI:
	default:
		fail(w, fmt.Errorf("%w: unknown config type %q (cloud, runtime, cpi)", ErrBadInput, req.Type))
		return
	}
	file := req.File
	if file == "" {
		file = req.Type + "-config.yml"
	}
	if err := s.d.Configs.Validate(req.Type, file, []byte(req.Content)); err != nil {
		fail(w, task.BadInput(err))
		return
	}
	var res ConfigResult
	err := s.d.Store.Update(func(tx *store.Tx) error {
		var err error
		res.Config, res.Changed, err = tx.AddConfig(req.Type, req.Name, req.Content)
		return err
	})
	if err != nil {
		fail(w, err)
		return
	}
	if res.Changed {
		if err := s.d.Configs.Applied(res.Config); err != nil {
			fail(w, fmt.Errorf("config %d stored but not applied: %w", res.Config.ID, err))
			return
		}
	}
	writeJSON(w, http.StatusOK, res)
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: request body: %w", ErrBadInput, err)
	}
	return nil
}

// startTask starts a task and answers 202 with its record.
func (s *Server) startTask(w http.ResponseWriter, r *http.Request, spec task.Spec, fn task.Func) {
	spec.User = user(r)
	t, err := s.d.Tasks.Start(context.WithoutCancel(r.Context()), spec, fn)
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

// receive stores the request body in the upload directory.
func (s *Server) receive(r *http.Request, pattern string) (string, error) {
	f, err := os.CreateTemp(s.d.UploadDir, pattern)
	if err != nil {
		return "", fmt.Errorf("upload: %w", err)
	}
	_, err = io.Copy(f, http.MaxBytesReader(nil, r.Body, s.d.MaxUpload))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return "", fmt.Errorf("%w: upload larger than %d bytes", ErrBadInput, s.d.MaxUpload)
		}
		return "", fmt.Errorf("receive upload: %w", err)
	}
	return f.Name(), nil
}

func (s *Server) uploadRelease(w http.ResponseWriter, r *http.Request) {
	path, err := s.receive(r, "release-*.tgz")
	if err != nil {
		fail(w, err)
		return
	}
	s.startTask(w, r, task.Spec{Type: "upload-release", Description: "upload release"}, func(ctx context.Context, rep *task.Reporter) (string, error) {
		defer os.Remove(path)
		return s.d.Importer.ImportRelease(ctx, rep, path)
	})
}

func (s *Server) uploadStemcell(w http.ResponseWriter, r *http.Request) {
	path, err := s.receive(r, "stemcell-*.tgz")
	if err != nil {
		fail(w, err)
		return
	}
	s.startTask(w, r, task.Spec{Type: "upload-stemcell", Description: "upload stemcell"}, func(ctx context.Context, rep *task.Reporter) (string, error) {
		defer os.Remove(path)
		return s.d.Importer.ImportStemcell(ctx, rep, path)
	})
}

func (s *Server) deploy(w http.ResponseWriter, r *http.Request) {
	var req DeployRequest
	if err := decodeBody(r, &req); err != nil {
		fail(w, err)
		return
	}
	if req.Deployment == "" {
		fail(w, fmt.Errorf("%w: deployment name missing", ErrBadInput))
		return
	}
	desc := "create deployment"
	if req.DryRun {
		desc = "plan deployment (dry run)"
	}
	s.submitTask(w, r, task.Spec{Type: "deploy", Description: desc, Deployment: req.Deployment}, req)
}

func (s *Server) deleteDeployment(w http.ResponseWriter, r *http.Request) {
	name, force := r.PathValue("name"), r.URL.Query().Get("force") == "true"
	s.submitTask(w, r, task.Spec{Type: "delete-deployment", Description: "delete deployment " + name, Deployment: name},
		deleteArgs{Deployment: name, Force: force})
}

func (s *Server) changeState(w http.ResponseWriter, r *http.Request) {
	var req StateRequest
	if err := decodeBody(r, &req); err != nil {
		fail(w, err)
		return
	}
	req.Deployment = r.PathValue("name")
	switch req.Action {
	case "recreate", "restart", "stop", "start":
	default:
		fail(w, fmt.Errorf("%w: unknown action %q (recreate, restart, stop, start)", ErrBadInput, req.Action))
		return
	}
	s.submitTask(w, r, task.Spec{Type: req.Action, Description: req.Action + " " + req.Deployment, Deployment: req.Deployment}, req)
}

func taskID(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		fail(w, fmt.Errorf("%w: task id %q is not a number", ErrBadInput, r.PathValue("id")))
		return 0, false
	}
	return id, true
}

func (s *Server) tasks(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 30
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			fail(w, fmt.Errorf("%w: limit %q", ErrBadInput, v))
			return
		}
		limit = n
	}
	state, dep := q.Get("state"), q.Get("deployment")
	view(s, w, func(tx *store.Tx) ([]store.Task, error) {
		return publicList(nonNil(tx.Tasks(limit, func(t store.Task) bool {
			switch {
			case dep != "" && t.Deployment != dep:
				return false
			case state == "running":
				return !t.Finished()
			case state != "":
				return t.State == state
			}
			return true
		})))
	})
}

func (s *Server) task(w http.ResponseWriter, r *http.Request) {
	id, ok := taskID(w, r)
	if !ok {
		return
	}
	view(s, w, func(tx *store.Tx) (store.Task, error) { t, err := tx.Task(id); return public(t), err })
}

func (s *Server) cancelTask(w http.ResponseWriter, r *http.Request) {
	id, ok := taskID(w, r)
	if !ok {
		return
	}
	if err := s.d.Tasks.Cancel(id); err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			err = fmt.Errorf("%w: %w", store.ErrConflict, err)
		}
		fail(w, err)
		return
	}
	view(s, w, func(tx *store.Tx) (store.Task, error) { t, err := tx.Task(id); return public(t), err })
}

// events streams a task's events as JSON lines; with follow=true it keeps the
// response open until the task finishes.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	id, ok := taskID(w, r)
	if !ok {
		return
	}
	after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
	follow := r.URL.Query().Get("follow") == "true"
	if err := s.d.Store.View(func(tx *store.Tx) error { _, err := tx.Task(id); return err }); err != nil {
		fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush() // the client sees the headers before the first event
	}
	enc := json.NewEncoder(w)
	if !follow {
		var evs []store.Event
		s.d.Store.View(func(tx *store.Tx) error {
			var err error
			evs, err = tx.Events(id, after)
			return err
		})
		for _, e := range evs {
			enc.Encode(e)
		}
		return
	}
	for {
		evs, t, err := s.d.Tasks.Wait(r.Context(), id, after)
		if err != nil {
			return
		}
		for _, e := range evs {
			if enc.Encode(e) != nil {
				return
			}
			after = e.Seq
		}
		if flusher != nil {
			flusher.Flush()
		}
		if t.Finished() && len(evs) == 0 {
			return
		}
	}
}

func (s *Server) disks(w http.ResponseWriter, r *http.Request) {
	orphaned := r.URL.Query().Get("orphaned") == "true"
	view(s, w, func(tx *store.Tx) ([]store.Disk, error) { return nonNil(tx.Disks(orphaned)) })
}

// deleteDisk deletes an orphaned disk: in its CPI, then its record.
func (s *Server) deleteDisk(w http.ResponseWriter, r *http.Request) {
	cid := r.PathValue("cid")
	var d store.Disk
	err := s.d.Store.View(func(tx *store.Tx) error {
		var err error
		d, err = tx.Disk(cid)
		return err
	})
	if err != nil {
		fail(w, err)
		return
	}
	if !d.Orphaned {
		fail(w, fmt.Errorf("disk %s belongs to an instance of %s: %w; only orphaned disks are deleted this way", cid, d.Deployment, store.ErrConflict))
		return
	}
	s.startTask(w, r, task.Spec{Type: "delete-disk", Description: "delete orphaned disk " + cid}, func(ctx context.Context, rep *task.Reporter) (string, error) {
		err := rep.Stage("Deleting orphaned disk", 1).Run(cid, func() error {
			if err := s.d.Disks.DeleteDisk(ctx, d.CPI, cid); err != nil {
				return err
			}
			return s.d.Store.Update(func(tx *store.Tx) error { return tx.DeleteDisk(cid) })
		})
		if err != nil {
			return "", err
		}
		return "deleted disk " + cid, nil
	})
}

// variables lists stored variables ("/<deployment>/<name>"), without their
// values unless reveal=true, which needs the admin scope.
func (s *Server) variables(w http.ResponseWriter, r *http.Request) {
	reveal := r.URL.Query().Get("reveal") == "true"
	if reveal && !r.Context().Value(ctxKey{}).(Token).has(config.ScopeAdmin) {
		writeError(w, http.StatusForbidden, "forbidden", errors.New("revealing variables needs the admin scope"))
		return
	}
	prefix := ""
	if d := r.URL.Query().Get("deployment"); d != "" {
		prefix = "/" + d + "/"
	}
	view(s, w, func(tx *store.Tx) ([]store.Variable, error) {
		names, err := tx.VariableNames()
		if err != nil {
			return nil, err
		}
		out := []store.Variable{}
		for _, v := range names {
			if !strings.HasPrefix(v.Name, prefix) {
				continue
			}
			if reveal {
				if v, err = tx.Variable(v.Name); err != nil {
					return nil, err
				}
			}
			out = append(out, v)
		}
		return out, nil
	})
}

// errands lists a deployment's errands.
func (s *Server) errands(w http.ResponseWriter, r *http.Request) {
	list, err := s.d.Deployer.Errands(r.Context(), r.PathValue("name"))
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, list)
}

// runErrand runs an errand as a task holding the deployment's lock.
func (s *Server) runErrand(w http.ResponseWriter, r *http.Request) {
	var req ErrandRequest
	if err := decodeBody(r, &req); err != nil {
		fail(w, err)
		return
	}
	req.Deployment, req.Name = r.PathValue("name"), r.PathValue("errand")
	s.submitTask(w, r, task.Spec{Type: ErrandTaskType, Description: ErrandTaskDescription(req.Name), Deployment: req.Deployment}, req)
}

// regenerateVariable makes a new value for a declared variable (and the
// certificates it signs), as a task holding the deployment's lock.
func (s *Server) regenerateVariable(w http.ResponseWriter, r *http.Request) {
	var req RegenerateRequest
	if err := decodeBody(r, &req); err != nil {
		fail(w, err)
		return
	}
	if req.Deployment == "" || req.Name == "" {
		fail(w, fmt.Errorf("%w: deployment and variable name needed", ErrBadInput))
		return
	}
	s.submitTask(w, r, task.Spec{Type: "regenerate-variable", Description: "regenerate variable " + req.Name, Deployment: req.Deployment}, req)
}

// rotateAgentCerts gives agents new bus identities, as a task (holding
// the deployment's lock when one is named).
func (s *Server) rotateAgentCerts(w http.ResponseWriter, r *http.Request) {
	var req RotateRequest
	if err := decodeBody(r, &req); err != nil {
		fail(w, err)
		return
	}
	desc := "rotate agent certificates"
	if req.Deployment != "" {
		desc += " of " + req.Deployment
	}
	s.submitTask(w, r, task.Spec{Type: "rotate-agent-certs", Description: desc, Deployment: req.Deployment}, req)
}

func (s *Server) backup(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="state.db"`)
	if _, err := s.d.Store.Backup(w); err != nil {
		s.d.Logger.Error("backup", "error", err)
	}
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	promhttp.HandlerFor(s.d.Metrics, promhttp.HandlerOpts{}).ServeHTTP(w, r)
}
