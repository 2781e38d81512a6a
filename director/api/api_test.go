package api_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compleat/compleat/director/api"
	"github.com/compleat/compleat/director/api/apitest"
	"github.com/compleat/compleat/director/config"
	"github.com/compleat/compleat/director/metrics"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/store/storetest"
	"github.com/compleat/compleat/director/task"
)

const (
	adminToken = "admin-token-7f3a9c1e5d"
	readToken  = "read-token-2b8e4f6a0c"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type fixture struct {
	srv   *httptest.Server
	store *store.Store
	tasks *task.Manager
	logs  *syncBuffer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	s := storetest.New(t)
	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tasks := task.NewManager(s, logger, task.Options{})
	m := metrics.New(nil, nil)
	tasks.OnFinish = m.TaskFinished
	auth := api.NewAuth([]api.Token{
		{Name: "admin", SHA256: sha256.Sum256([]byte(adminToken)), Scopes: []string{config.ScopeAdmin}},
		{Name: "ci", SHA256: sha256.Sum256([]byte(readToken)), Scopes: []string{config.ScopeRead}},
	})
	deps := apitest.Deps(t, s, tasks, auth, logger)
	deps.Metrics = m.Registry
	h := apitest.New(t, deps)
	srv := httptest.NewTLSServer(h)
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tasks.Shutdown(ctx)
	})
	return &fixture{srv: srv, store: s, tasks: tasks, logs: logs}
}

func (f *fixture) do(t *testing.T, method, path, token string, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp, raw
}

var routes = []struct{ method, path string }{
	{"GET", "/v1/info"},
	{"GET", "/v1/releases"}, {"POST", "/v1/releases"},
	{"GET", "/v1/stemcells"}, {"POST", "/v1/stemcells"},
	{"GET", "/v1/configs"}, {"POST", "/v1/configs"},
	{"GET", "/v1/deployments"}, {"POST", "/v1/deployments"},
	{"GET", "/v1/deployments/web"}, {"DELETE", "/v1/deployments/web"},
	{"GET", "/v1/deployments/web/instances"}, {"GET", "/v1/deployments/web/vms"},
	{"POST", "/v1/deployments/web/state"},
	{"PUT", "/v1/deployments/web/instances/web/0/ignore"},
	{"GET", "/v1/tasks"}, {"GET", "/v1/tasks/1"}, {"POST", "/v1/tasks/1/cancel"},
	{"GET", "/v1/tasks/1/events"},
	{"GET", "/v1/locks"}, {"GET", "/v1/backup"}, {"GET", "/metrics"},
	{"GET", "/v1/variables"}, {"GET", "/v1/variables?reveal=true"},
	{"GET", "/v1/deployments/web/health"},
	{"GET", "/v1/deployments/web/problems"}, {"POST", "/v1/deployments/web/problems"},
	{"GET", "/v1/deployments/web/resurrection"}, {"PUT", "/v1/deployments/web/resurrection"},
	{"GET", "/v1/events"},
	{"GET", "/v1/disks"}, {"DELETE", "/v1/disks/d-1"},
	{"GET", "/v1/nonexistent"},
}

func TestEveryRouteNeedsAToken(t *testing.T) {
	f := newFixture(t)
	for _, r := range routes {
		for _, tok := range []string{"", "wrong-token", "Bearer"} {
			resp, _ := f.do(t, r.method, r.path, tok, "")
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s %s with token %q: status %d, want 401", r.method, r.path, tok, resp.StatusCode)
			}
		}
	}
}

func TestAdminTokenWorksEverywhere(t *testing.T) {
	f := newFixture(t)
	for _, r := range routes {
		resp, body := f.do(t, r.method, r.path, adminToken, "")
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			t.Errorf("%s %s as admin: status %d: %s", r.method, r.path, resp.StatusCode, body)
		}
	}
}

func TestReadTokenCannotWrite(t *testing.T) {
	f := newFixture(t)
	for _, r := range routes {
		resp, _ := f.do(t, r.method, r.path, readToken, "")
		// GETs that need admin: the state file, secrets, and cloud-check's
		// scan (it talks to the CPIs and agents).
		write := r.method != "GET" || r.path == "/v1/backup" || strings.Contains(r.path, "reveal=true") || strings.HasSuffix(r.path, "/problems")
		if write && resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s %s with a read token: status %d, want 403", r.method, r.path, resp.StatusCode)
		}
		if !write && (resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized) {
			t.Errorf("%s %s with a read token: status %d", r.method, r.path, resp.StatusCode)
		}
	}
}

func TestTokensNeverReachTheLogs(t *testing.T) {
	f := newFixture(t)
	for _, r := range routes {
		f.do(t, r.method, r.path, adminToken, "")
		f.do(t, r.method, r.path, readToken, "")
		f.do(t, r.method, r.path, "wrong-secret-token-99", "")
	}
	logs := f.logs.String()
	if !strings.Contains(logs, "api request") {
		t.Fatal("no request was logged; the test proves nothing")
	}
	for _, secret := range []string{adminToken, readToken, "wrong-secret-token-99"} {
		if strings.Contains(logs, secret) {
			t.Errorf("token %q appears in the logs", secret)
		}
	}
}

func TestConfigsAreVersionedThroughTheAPI(t *testing.T) {
	f := newFixture(t)
	resp, body := f.do(t, "POST", "/v1/configs", adminToken, `{"type":"cloud","content":"azs: []\n"}`)
	if resp.StatusCode != 200 {
		t.Fatalf("update cloud config: %d %s", resp.StatusCode, body)
	}
	resp, body = f.do(t, "POST", "/v1/configs", adminToken, `{"type":"bogus","content":""}`)
	if resp.StatusCode != 400 || !strings.Contains(string(body), "unknown config type") {
		t.Errorf("bogus type: %d %s", resp.StatusCode, body)
	}
	_, body = f.do(t, "GET", "/v1/configs?type=cloud", readToken, "")
	var cfgs []store.Config
	if err := json.Unmarshal(body, &cfgs); err != nil || len(cfgs) != 1 || cfgs[0].Content != "azs: []\n" {
		t.Errorf("configs = %s (%v)", body, err)
	}
}

func TestTaskEventsStreamUntilTheTaskEnds(t *testing.T) {
	f := newFixture(t)
	step := make(chan struct{})
	tk, err := f.tasks.Start(context.Background(), task.Spec{Type: "test"}, func(ctx context.Context, r *task.Reporter) (string, error) {
		st := r.Stage("Doing", 2)
		for _, name := range []string{"a", "b"} {
			<-step
			st.Run(name, func() error { return nil })
		}
		return "ok", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", f.srv.URL+"/v1/tasks/1/events?follow=true", nil)
	req.Header.Set("Authorization", "Bearer "+readToken)
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	var got []store.Event
	step <- struct{}{}
	for len(got) < 2 && sc.Scan() { // the first step arrives while the task still runs
		var e store.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		got = append(got, e)
	}
	step <- struct{}{}
	for sc.Scan() {
		var e store.Event
		json.Unmarshal(sc.Bytes(), &e)
		got = append(got, e)
	}
	if len(got) != 4 || got[3].Step != "b" || got[3].State != "finished" {
		t.Errorf("events = %+v", got)
	}
	_, body := f.do(t, "GET", "/v1/tasks/1", readToken, "")
	var final store.Task
	json.Unmarshal(body, &final)
	if final.ID != tk.ID || final.State != store.TaskDone {
		t.Errorf("task = %s", body)
	}
	// Metrics are counted as the task ends, a moment after its state is
	// visible: look again for a while.
	want := `compleat_tasks_finished_total{state="done",type="test"} 1`
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		_, body = f.do(t, "GET", "/metrics", readToken, "")
		if strings.Contains(string(body), want) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("metrics lack %s", want)
			break
		}
	}
}

func TestVariablesRevealOnlyToAdmin(t *testing.T) {
	f := newFixture(t)
	err := f.store.Update(func(tx *store.Tx) error {
		for _, n := range []string{"/web/admin_password", "/db/password"} {
			if err := tx.PutVariable(store.Variable{Name: n, Type: "password", Value: json.RawMessage(`"value-of-` + n + `"`)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_, body := f.do(t, "GET", "/v1/variables?deployment=web", readToken, "")
	if !strings.Contains(string(body), "/web/admin_password") || strings.Contains(string(body), "/db/") || strings.Contains(string(body), "value-of") {
		t.Errorf("listing as read: %s", body)
	}
	resp, _ := f.do(t, "GET", "/v1/variables?reveal=true", readToken, "")
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("reveal as read: %d", resp.StatusCode)
	}
	_, body = f.do(t, "GET", "/v1/variables?reveal=true&deployment=web", adminToken, "")
	if !strings.Contains(string(body), "value-of-/web/admin_password") {
		t.Errorf("reveal as admin: %s", body)
	}
	if strings.Contains(f.logs.String(), "value-of") {
		t.Error("a variable's value reached the logs")
	}
}

type fakeAgents map[string]string

func (f fakeAgents) State(ctx context.Context, id string) (json.RawMessage, error) {
	if s, ok := f[id]; ok {
		return json.RawMessage(s), nil
	}
	return nil, errors.New("agent unresponsive")
}

func TestInstancesWithAgentStates(t *testing.T) {
	s := storetest.New(t)
	logger := slog.New(slog.DiscardHandler)
	auth := api.NewAuth([]api.Token{{Name: "ci", SHA256: sha256.Sum256([]byte(readToken)), Scopes: []string{config.ScopeRead}}})
	agents := fakeAgents{"a-1": `{"job_state":"running","jobs":[{"name":"web","processes":[{"name":"webapp","state":"running"}]}]}`}
	deps := apitest.Deps(t, s, task.NewManager(s, logger, task.Options{}), auth, logger)
	deps.Agents = agents
	srv := httptest.NewTLSServer(apitest.New(t, deps))
	defer srv.Close()
	err := s.Update(func(tx *store.Tx) error {
		tx.PutDeployment(store.Deployment{Name: "web"})
		tx.PutInstance(store.Instance{Deployment: "web", Group: "web", ID: "i-1", AgentID: "a-1", State: "started"})
		tx.PutInstance(store.Instance{Deployment: "web", Group: "web", ID: "i-2", AgentID: "a-2", State: "started"})
		return tx.ReserveIP(store.IPReservation{Network: "default", IP: "127.77.0.10", Deployment: "web", InstanceID: "i-1"})
	})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", srv.URL+"/v1/deployments/web/instances?ps=true", nil)
	req.Header.Set("Authorization", "Bearer "+readToken)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got []api.InstanceView
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].IPs[0] != "127.77.0.10" || !strings.Contains(string(got[0].AgentState), "webapp") || got[1].AgentError != "agent unresponsive" {
		t.Errorf("instances = %+v", got)
	}
}

type recordingDisks struct{ deleted []string }

func (r *recordingDisks) DeleteDisk(ctx context.Context, cpiName, cid string) error {
	r.deleted = append(r.deleted, cpiName+":"+cid)
	return nil
}

func TestDeleteOnlyOrphanedDisks(t *testing.T) {
	s := storetest.New(t)
	logger := slog.New(slog.DiscardHandler)
	tasks := task.NewManager(s, logger, task.Options{})
	auth := api.NewAuth([]api.Token{{Name: "admin", SHA256: sha256.Sum256([]byte(adminToken)), Scopes: []string{config.ScopeAdmin}}})
	disks := &recordingDisks{}
	deps := apitest.Deps(t, s, tasks, auth, logger)
	deps.Disks = disks
	srv := httptest.NewTLSServer(apitest.New(t, deps))
	defer srv.Close()
	s.Update(func(tx *store.Tx) error {
		tx.PutDisk(store.Disk{CID: "d-used", CPI: "local", Deployment: "web", InstanceID: "i-1", SizeMB: 1024})
		tx.PutDisk(store.Disk{CID: "d-old", CPI: "local", Deployment: "web", SizeMB: 512})
		return tx.OrphanDisk("d-old")
	})
	f := &fixture{srv: srv, store: s, tasks: tasks}
	_, body := f.do(t, "GET", "/v1/disks?orphaned=true", adminToken, "")
	if !strings.Contains(string(body), "d-old") || strings.Contains(string(body), "d-used") {
		t.Errorf("orphaned disks: %s", body)
	}
	if resp, body := f.do(t, "DELETE", "/v1/disks/d-used", adminToken, ""); resp.StatusCode != http.StatusConflict {
		t.Errorf("delete an attached disk: %d %s", resp.StatusCode, body)
	}
	resp, body := f.do(t, "DELETE", "/v1/disks/d-old", adminToken, "")
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("delete orphaned: %d %s", resp.StatusCode, body)
	}
	var tk store.Task
	json.Unmarshal(body, &tk)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		_, cur, err := tasks.Wait(ctx, tk.ID, 1<<62)
		if err != nil {
			t.Fatal(err)
		}
		if cur.Finished() {
			if cur.State != store.TaskDone {
				t.Errorf("delete-disk task: %+v", cur)
			}
			break
		}
	}
	if len(disks.deleted) != 1 || disks.deleted[0] != "local:d-old" {
		t.Errorf("deleted in cpi: %v", disks.deleted)
	}
	if err := s.View(func(tx *store.Tx) error { _, err := tx.Disk("d-old"); return err }); err == nil {
		t.Error("disk record kept")
	}
}
