package cli_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi/cpitest"
	"github.com/compleat/compleat/director/api"
	"github.com/compleat/compleat/director/api/apitest"
	"github.com/compleat/compleat/director/cli"
	"github.com/compleat/compleat/director/cloudcheck"
	"github.com/compleat/compleat/director/config"
	"github.com/compleat/compleat/director/health"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/store/storetest"
	"github.com/compleat/compleat/director/task"
)

const token = "health-cli-token-5e1d"

// director serves the real API over TLS from a fresh store holding
// deployment "web" with instance web/i-1 on vm-1, which the fake cloud
// does not have.
func director(t *testing.T) (env func(string) string, st *store.Store) {
	t.Helper()
	st = storetest.New(t)
	logger := slog.New(slog.DiscardHandler)
	tasks := task.NewManager(st, logger, task.Options{})
	auth := api.NewAuth([]api.Token{{Name: "admin", SHA256: sha256.Sum256([]byte(token)), Scopes: []string{config.ScopeAdmin}}})
	mon := health.NewMonitor(health.Config{Instances: health.Store{S: st}, Events: health.Store{S: st}})
	cloud := cpitest.NewFake()
	cc := &cloudcheck.Checker{Store: st, Events: health.Store{S: st}, CPIs: func(context.Context, string) (cloudcheck.CPI, error) { return cloud, nil }}
	deps := apitest.Deps(t, st, tasks, auth, logger)
	deps.Health = api.Health{Monitor: mon, CloudCheck: cc}
	srv := httptest.NewTLSServer(apitest.New(t, deps))
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tasks.Shutdown(ctx)
	})
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
	err := st.Update(func(tx *store.Tx) error {
		tx.PutDeployment(store.Deployment{Name: "web"})
		tx.PutVM(store.VM{CID: "vm-1", CPI: "fake", AgentID: "a-1", Deployment: "web", InstanceID: "i-1"})
		return tx.PutInstance(store.Instance{Deployment: "web", Group: "web", ID: "i-1", VMCID: "vm-1", AgentID: "a-1", State: "started"})
	})
	if err != nil {
		t.Fatal(err)
	}
	mon.Check(context.Background())
	vars := map[string]string{"DIRECTOR_TARGET": srv.URL, "DIRECTOR_TOKEN": token, "DIRECTOR_CA_CERT": ca}
	return func(k string) string { return vars[k] }, st
}

func runCLI(t *testing.T, env func(string) string, stdin string, args ...string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	err := cli.Run(context.Background(), cli.Deps{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &out, Getenv: env}, args)
	return out.String(), cli.ExitCode(err)
}

func TestUpdateResurrectionAndEvents(t *testing.T) {
	env, st := director(t)
	out, code := runCLI(t, env, "", "update-resurrection", "off", "-d", "web", "--instance-group", "web")
	if code != 0 || !strings.Contains(out, "Resurrection off for instance group web of web") {
		t.Fatalf("exit %d: %s", code, out)
	}
	st.View(func(tx *store.Tx) error {
		on, _ := tx.ResurrectionEnabled("web", "web")
		if on {
			t.Error("still on")
		}
		return nil
	})
	if _, code := runCLI(t, env, "", "update-resurrection", "maybe", "-d", "web"); code != cli.ExitUsage {
		t.Errorf("bad argument: exit %d", code)
	}
	out, code = runCLI(t, env, "", "events", "-d", "web", "--since", "1h")
	if code != 0 || !strings.Contains(out, "update-resurrection") || !strings.Contains(out, "resurrection=off") || !strings.Contains(out, "1 events") {
		t.Errorf("events exit %d:\n%s", code, out)
	}
	out, code = runCLI(t, env, "", "events", "--json", "--since", "2000-01-01")
	var evs []store.AuditEvent
	if code != 0 || json.Unmarshal([]byte(out), &evs) != nil || len(evs) != 1 {
		t.Errorf("events --json exit %d: %s", code, out)
	}
	out, _ = runCLI(t, env, "", "events", "--since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	if !strings.Contains(out, "0 events") {
		t.Errorf("future since: %s", out)
	}
	if _, code := runCLI(t, env, "", "events", "--since", "last tuesday"); code != cli.ExitUsage {
		t.Errorf("bad --since: exit %d", code)
	}
}

func TestCloudCheckReportInteractiveAndAuto(t *testing.T) {
	env, st := director(t)
	out, code := runCLI(t, env, "", "cloud-check", "--report", "-d", "web")
	if code != cli.ExitFailed || !strings.Contains(out, "missing_vm:vm-1") || !strings.Contains(out, "1 problems") {
		t.Fatalf("report exit %d:\n%s", code, out)
	}
	// Interactive: a wrong answer, then the second choice.
	out, code = runCLI(t, env, "9\n2\n", "cloud-check", "-d", "web")
	if code != 0 || !strings.Contains(out, "Delete the VM reference") || !strings.Contains(out, `"9" is not a choice`) || !strings.Contains(out, "Task ") {
		t.Fatalf("interactive exit %d:\n%s", code, out)
	}
	st.View(func(tx *store.Tx) error {
		in, _ := tx.Instance("web", "web", "i-1")
		if in.VMCID != "" {
			t.Errorf("reference kept: %+v", in)
		}
		return nil
	})
	out, code = runCLI(t, env, "", "cloud-check", "--auto", "-d", "web")
	if code != 0 || !strings.Contains(out, "0 problems") {
		t.Errorf("auto on a clean deployment: exit %d:\n%s", code, out)
	}
	if _, code := runCLI(t, env, "", "cloud-check", "--auto", "--report", "-d", "web"); code != cli.ExitUsage {
		t.Errorf("--auto --report: exit %d", code)
	}
}

func TestHealthCommand(t *testing.T) {
	env, _ := director(t)
	out, code := runCLI(t, env, "", "health", "-d", "web")
	if code != 0 || !strings.Contains(out, "web/i-1") || !strings.Contains(out, "unknown") {
		t.Errorf("health exit %d:\n%s", code, out)
	}
}
