package api_test

import (
	"crypto/sha256"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/compleat/compleat/director/api"
	"github.com/compleat/compleat/director/api/apitest"
	"github.com/compleat/compleat/director/config"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/store/storetest"
	"github.com/compleat/compleat/director/task"
)

func TestVMsWithVitals(t *testing.T) {
	s := storetest.New(t)
	logger := slog.New(slog.DiscardHandler)
	auth := api.NewAuth([]api.Token{{Name: "ci", SHA256: sha256.Sum256([]byte(readToken)), Scopes: []string{config.ScopeRead}}})
	agents := fakeAgents{"a-1": `{"agent_id":"a-1","job_state":"running","jobs":[],"vitals":{"cpu":{"user":12.5,"sys":2,"wait":0.5},"mem":{"kb":524288,"percent":25},"load":[0.5,0.25,0.1],"disk":{"system":{"percent":40,"inode_percent":3}},"uptime_s":3700}}`}
	deps := apitest.Deps(t, s, task.NewManager(s, logger, task.Options{}), auth, logger)
	deps.Agents = agents
	srv := httptest.NewTLSServer(apitest.New(t, deps))
	defer srv.Close()
	err := s.Update(func(tx *store.Tx) error {
		tx.PutDeployment(store.Deployment{Name: "web"})
		tx.PutInstance(store.Instance{Deployment: "web", Group: "web", ID: "i-1", VMCID: "vm-1", AgentID: "a-1", State: "started"})
		tx.PutVM(store.VM{CID: "vm-1", CPI: "local", AgentID: "a-1", Deployment: "web", InstanceID: "i-1"})
		return tx.PutVM(store.VM{CID: "vm-2", CPI: "local", AgentID: "a-2", Deployment: "web", InstanceID: "compilation"})
	})
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) []api.VMView {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+readToken)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var got []api.VMView
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	plain := get("/v1/deployments/web/vms")
	if len(plain) != 2 || plain[0].Instance != "web/i-1" || plain[1].Instance != "" || plain[0].Vitals != nil || plain[0].JobState != "" {
		t.Errorf("vms without vitals = %+v", plain)
	}
	got := get("/v1/deployments/web/vms?vitals=true")
	if len(got) != 2 {
		t.Fatalf("vms = %+v", got)
	}
	var v struct {
		CPU    struct{ User float64 } `json:"cpu"`
		Uptime int64                  `json:"uptime_s"`
	}
	json.Unmarshal(got[0].Vitals, &v)
	if got[0].CID != "vm-1" || got[0].JobState != "running" || v.CPU.User != 12.5 || v.Uptime != 3700 || got[0].AgentError != "" {
		t.Errorf("vm-1 = %+v (vitals %s)", got[0], got[0].Vitals)
	}
	if got[1].Vitals != nil || !strings.Contains(got[1].AgentError, "unresponsive") {
		t.Errorf("vm-2 (its agent does not answer) = %+v", got[1])
	}
}

func TestNewNamesTheMissingParts(t *testing.T) {
	s := storetest.New(t)
	logger := slog.New(slog.DiscardHandler)
	deps := apitest.Deps(t, s, task.NewManager(s, logger, task.Options{}), api.NewAuth(nil), logger)
	if _, err := api.New(deps); err != nil {
		t.Fatalf("complete deps: %v", err)
	}
	deps.Agents, deps.Remote.Agent = nil, nil
	_, err := api.New(deps)
	if err == nil || !strings.Contains(err.Error(), "missing Agents, Remote.Agent") {
		t.Errorf("New without agents = %v, want the missing parts named", err)
	}
}
