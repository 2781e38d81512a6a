package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/cpi/cpitest"
	"github.com/compleat/compleat/director/api"
	"github.com/compleat/compleat/director/api/apitest"
	"github.com/compleat/compleat/director/cloudcheck"
	"github.com/compleat/compleat/director/config"
	"github.com/compleat/compleat/director/health"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/store/storetest"
	"github.com/compleat/compleat/director/task"
)

type healthFixture struct {
	srv   *httptest.Server
	store *store.Store
	mon   *health.Monitor
}

func newHealthFixture(t *testing.T) *healthFixture {
	t.Helper()
	s := storetest.New(t)
	logger := slog.New(slog.DiscardHandler)
	tasks := task.NewManager(s, logger, task.Options{})
	auth := api.NewAuth([]api.Token{
		{Name: "admin", SHA256: sha256.Sum256([]byte(adminToken)), Scopes: []string{config.ScopeAdmin}},
		{Name: "ci", SHA256: sha256.Sum256([]byte(readToken)), Scopes: []string{config.ScopeRead}},
	})
	mon := health.NewMonitor(health.Config{Instances: health.Store{S: s}, Events: health.Store{S: s}})
	cloud := cpitest.NewFake() // knows no VM: every recorded VM is missing
	cc := &cloudcheck.Checker{Store: s, Events: health.Store{S: s},
		CPIs: func(context.Context, string) (cloudcheck.CPI, error) { return cloud, nil }}
	deps := apitest.Deps(t, s, tasks, auth, logger)
	deps.Health = api.Health{Monitor: mon, CloudCheck: cc}
	srv := httptest.NewTLSServer(apitest.New(t, deps))
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tasks.Shutdown(ctx)
	})
	err := s.Update(func(tx *store.Tx) error {
		if err := tx.PutDeployment(store.Deployment{Name: "web"}); err != nil {
			return err
		}
		if err := tx.PutVM(store.VM{CID: "vm-1", CPI: "fake", AgentID: "a-1", Deployment: "web", InstanceID: "i-1"}); err != nil {
			return err
		}
		return tx.PutInstance(store.Instance{Deployment: "web", Group: "web", ID: "i-1", AgentID: "a-1", VMCID: "vm-1", State: "started"})
	})
	if err != nil {
		t.Fatal(err)
	}
	return &healthFixture{srv: srv, store: s, mon: mon}
}

func (f *healthFixture) do(t *testing.T, method, path, token, body string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
	return resp.StatusCode
}

func TestHealthRoute(t *testing.T) {
	f := newHealthFixture(t)
	f.mon.Heartbeat("a-1", protocol.Heartbeat{State: protocol.State{JobState: "running",
		Jobs: []protocol.JobState{{Name: "web", State: "running", Processes: []protocol.ProcessState{{Name: "webapp", State: "running"}}}}}})
	if err := f.mon.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	var hs []health.InstanceHealth
	if code := f.do(t, "GET", "/v1/deployments/web/health", readToken, "", &hs); code != 200 {
		t.Fatalf("status %d", code)
	}
	if len(hs) != 1 || hs[0].Status != "running" || hs[0].Name() != "web/i-1" || hs[0].Jobs[0].Processes[0].Name != "webapp" {
		t.Errorf("health = %+v", hs)
	}
	if code := f.do(t, "GET", "/v1/deployments/nope/health", readToken, "", nil); code != 404 {
		t.Errorf("unknown deployment: %d", code)
	}
}

func TestResurrectionSwitchRoutesAndEvents(t *testing.T) {
	f := newHealthFixture(t)
	if code := f.do(t, "PUT", "/v1/deployments/web/resurrection", readToken, `{"enabled":false}`, nil); code != 403 {
		t.Errorf("read token switched resurrection: %d", code)
	}
	var sw []store.ResurrectionSwitch
	if code := f.do(t, "PUT", "/v1/deployments/web/resurrection", adminToken, `{"group":"web","enabled":false}`, &sw); code != 200 {
		t.Fatalf("status %d", code)
	}
	if len(sw) != 1 || sw[0].Group != "web" || sw[0].Enabled || sw[0].User != "admin" {
		t.Errorf("switches = %+v", sw)
	}
	if code := f.do(t, "PUT", "/v1/deployments/nope/resurrection", adminToken, `{"enabled":false}`, nil); code != 404 {
		t.Errorf("unknown deployment: %d", code)
	}
	if code := f.do(t, "PUT", "/v1/deployments/web/resurrection", adminToken, `{"group":"a/b","enabled":false}`, nil); code != 400 {
		t.Errorf("bad group: %d", code)
	}
	var evs []store.AuditEvent
	if code := f.do(t, "GET", "/v1/events?deployment=web", readToken, "", &evs); code != 200 {
		t.Fatalf("events: %d", code)
	}
	if len(evs) != 1 || evs[0].Action != "update-resurrection" || evs[0].Object != "web/web" || evs[0].Context["resurrection"] != "off" || evs[0].User != "admin" {
		t.Errorf("events = %+v", evs)
	}
	for _, q := range []string{"since=yesterday", "limit=-1", "before=x"} {
		if code := f.do(t, "GET", "/v1/events?"+q, readToken, "", nil); code != 400 {
			t.Errorf("%s: %d", q, code)
		}
	}
	if code := f.do(t, "GET", "/v1/events?since="+time.Now().Add(time.Hour).UTC().Format(time.RFC3339), readToken, "", &evs); code != 200 || len(evs) != 0 {
		t.Errorf("events in the future: %d %+v", code, evs)
	}
}

func TestCloudCheckRoutes(t *testing.T) {
	f := newHealthFixture(t)
	var ps []cloudcheck.Problem
	if code := f.do(t, "GET", "/v1/deployments/web/problems", adminToken, "", &ps); code != 200 {
		t.Fatalf("status %d", code)
	}
	if len(ps) != 1 || ps[0].ID != "missing_vm:vm-1" {
		t.Fatalf("problems = %+v", ps)
	}
	var tk store.Task
	if code := f.do(t, "POST", "/v1/deployments/web/problems", adminToken, `{"resolutions":{"missing_vm:vm-1":"delete_vm_reference"}}`, &tk); code != 202 {
		t.Fatalf("resolve: %d", code)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !tk.Finished() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		f.do(t, "GET", "/v1/tasks/"+strconv.FormatUint(tk.ID, 10), adminToken, "", &tk)
	}
	if tk.State != store.TaskDone || tk.User != "admin" {
		t.Fatalf("task = %+v", tk)
	}
	if code := f.do(t, "GET", "/v1/deployments/web/problems", adminToken, "", &ps); code != 200 || len(ps) != 0 {
		t.Errorf("after resolution: %d %+v", code, ps)
	}
	var evs []store.AuditEvent
	f.do(t, "GET", "/v1/events?action=cloud-check-resolve", readToken, "", &evs)
	if len(evs) != 1 || evs[0].User != "admin" || evs[0].Context["resolution"] != "delete_vm_reference" {
		t.Errorf("resolve events = %+v", evs)
	}
	if code := f.do(t, "POST", "/v1/deployments/web/problems", adminToken, `{"resolutions":{"x":"y"},"bogus":1}`, nil); code != 400 {
		t.Errorf("bad body: %d", code)
	}
}
