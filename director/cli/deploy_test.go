package cli_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compleat/compleat/director/api"
	"github.com/compleat/compleat/director/api/apitest"
	"github.com/compleat/compleat/director/cli"
	"github.com/compleat/compleat/director/config"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/store/storetest"
	"github.com/compleat/compleat/director/task"
)

// fakeDeployer is a stateful api.Deployer: it keeps the manifest deployed
// last and reports a deploy as the real one does, with a "Manifest diff"
// note (here the deployed and the submitted manifest, no redaction) and a
// "Plan" note; a dry run's result only says nothing changed.
type fakeDeployer struct {
	apitest.Refusing // errands, variables, pause: not in these tests
	mu               sync.Mutex
	deployed         string
	requests         []api.DeployRequest
	// grown, when set, makes a deploy plan one instance more than a dry
	// run: what another operator's deploy in between would do.
	grown bool
}

// plan names its new instance by a fresh id, as every plan does.
func (f *fakeDeployer) plan(req api.DeployRequest) string {
	var b [6]byte
	rand.Read(b[:])
	id := fmt.Sprintf("%x-0000-4000-8000-%x", b[:4], b)
	n := 1
	if f.grown && !req.DryRun {
		n = 2
	}
	return fmt.Sprintf("Deployment %s\n\n  web/%s (0) az=z1 ip=-\n    create: new\n    job web (web/1) rendered %x: config/x\n\n%d to create, 0 to update (0 recreated), 0 to delete, 0 unchanged\n", req.Deployment, id, b, n)
}

func note(r *task.Reporter, stage, text string) {
	raw, _ := json.Marshal(map[string]string{"text": text})
	r.Event(store.Event{Stage: stage, State: "info", Data: raw})
}

func (f *fakeDeployer) Deploy(ctx context.Context, r *task.Reporter, req api.DeployRequest) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, req)
	if strings.Contains(req.Manifest, "bad") {
		return "", task.BadInput(errors.New("manifest.yml:1: bad: not a field"))
	}
	note(r, "Manifest diff", "- "+f.deployed+"\n+ "+req.Manifest+"\n")
	note(r, "Plan", f.plan(req))
	if req.DryRun {
		return "Dry run: nothing changed.\n", nil
	}
	r.Stage("Updating instance", 1).Run("web/0", func() error { return nil }, "canary")
	f.deployed = req.Manifest
	return "Deployed " + req.Deployment, nil
}

func (f *fakeDeployer) Delete(ctx context.Context, r *task.Reporter, deployment string, force bool) (string, error) {
	return "", errors.ErrUnsupported
}

func (f *fakeDeployer) ChangeState(ctx context.Context, r *task.Reporter, req api.StateRequest) (string, error) {
	return "", errors.ErrUnsupported
}

// state is the manifest deployed last and which requests were dry runs.
func (f *fakeDeployer) state() (deployed string, dry []bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.requests {
		dry = append(dry, r.DryRun)
	}
	return f.deployed, dry
}

// deployDirector serves the real API over TLS with a fakeDeployer and
// writes a manifest deploying "web" whose content is its name line.
func deployDirector(t *testing.T) (env func(string) string, f *fakeDeployer, manifest string) {
	t.Helper()
	env, f, manifest, _ = deployDirectorWith(t, nil)
	return env, f, manifest
}

// deployDirectorWith is deployDirector whose agents are agents.
func deployDirectorWith(t *testing.T, agents api.Agents) (env func(string) string, f *fakeDeployer, manifest string, st *store.Store) {
	t.Helper()
	st = storetest.New(t)
	logger := slog.New(slog.DiscardHandler)
	tasks := task.NewManager(st, logger, task.Options{})
	const tok = "deploy-cli-token-77a0"
	auth := api.NewAuth([]api.Token{{Name: "admin", SHA256: sha256.Sum256([]byte(tok)), Scopes: []string{config.ScopeAdmin}}})
	f = &fakeDeployer{deployed: "name: web-old"}
	deps := apitest.Deps(t, st, tasks, auth, logger)
	deps.Deployer = f
	if agents != nil {
		deps.Agents = agents
	}
	srv := httptest.NewTLSServer(apitest.New(t, deps))
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tasks.Shutdown(ctx)
	})
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
	manifest = filepath.Join(dir, "web.yml")
	if err := os.WriteFile(manifest, []byte("name: web\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{"DIRECTOR_TARGET": srv.URL, "DIRECTOR_TOKEN": tok, "DIRECTOR_CA_CERT": ca}
	return func(k string) string { return vars[k] }, f, manifest, st
}

// fileTools reads manifests as they are (no ops files, no variables).
type fileTools struct{ cli.Tools }

func (fileTools) Interpolate(ctx context.Context, file string, o cli.InterpolateOptions) ([]byte, error) {
	return os.ReadFile(file)
}

func (fileTools) DeploymentName(file string, manifest []byte) (string, error) {
	name, _, _ := strings.Cut(strings.TrimPrefix(string(manifest), "name: "), "\n")
	return name, nil
}

// deployCLI runs the CLI with stdin; stdout and stderr are kept apart,
// and the question (on stderr) is marked in stdout where it was asked.
func deployCLI(env func(string) string, stdin string, args ...string) (stdout, stderr string, code int) {
	var out, errOut bytes.Buffer
	in := &askReader{r: strings.NewReader(stdin), out: &out}
	err := cli.Run(context.Background(), cli.Deps{Stdin: in, Stdout: &out, Stderr: &errOut, Getenv: env, Tools: fileTools{}}, args)
	return out.String(), errOut.String(), cli.ExitCode(err)
}

// askReader writes "<asked>" to out when the answer is first read.
type askReader struct {
	r     *strings.Reader
	out   *bytes.Buffer
	asked bool
}

func (a *askReader) Read(p []byte) (int, error) {
	if !a.asked {
		a.asked = true
		a.out.WriteString("<asked>\n")
	}
	return a.r.Read(p)
}

func TestDeployShowsDiffAndPlanBeforeAsking(t *testing.T) {
	env, f, manifest := deployDirector(t)

	out, errOut, code := deployCLI(env, "n\n", "deploy", manifest)
	if code != cli.ExitFailed || !strings.Contains(errOut, `Deploy "web"? [yN]`) {
		t.Fatalf("answering no: exit %d, stderr %q", code, errOut)
	}
	before, _, asked := strings.Cut(out, "<asked>")
	if !asked {
		t.Fatalf("never asked:\n%s", out)
	}
	for _, want := range []string{"Manifest diff", "  - name: web-old", "  + name: web", "Plan:", "    create: new", "1 to create"} {
		if !strings.Contains(before, want) {
			t.Errorf("before the question, the output lacks %q:\n%s", want, before)
		}
	}
	if strings.Contains(before, "Dry run: nothing changed") {
		t.Errorf("the preview reads as a dry run:\n%s", before)
	}
	if deployed, dry := f.state(); deployed != "name: web-old" || len(dry) != 1 || !dry[0] {
		t.Errorf("after no: deployed %q, requests (dry run?) %v; want only a dry run", deployed, dry)
	}

	out, _, code = deployCLI(env, "y\n", "deploy", manifest)
	if code != 0 {
		t.Fatalf("answering yes: exit %d\n%s", code, out)
	}
	if deployed, dry := f.state(); deployed != "name: web\n" || len(dry) != 3 || !dry[1] || dry[2] {
		t.Errorf("after yes: deployed %q, requests (dry run?) %v; want a dry run then a deploy", deployed, dry)
	}
	_, after, _ := strings.Cut(out, "<asked>")
	if n := strings.Count(out, "1 to create"); n != 1 {
		t.Errorf("the plan printed %d times, want once (not again while following):\n%s", n, out)
	}
	if !strings.Contains(after, "Updating instance web/0 (canary) ... done") || !strings.Contains(after, "Deployed web") {
		t.Errorf("the deploy was not followed:\n%s", after)
	}
	for _, stage := range []string{"Manifest diff", "Plan"} {
		if !strings.Contains(after, "| "+stage+": as shown above\n") {
			t.Errorf("following the deploy does not say the %s is the one shown:\n%s", stage, after)
		}
	}
}

func TestDeployPrintsAPlanThatChangedSinceItWasShown(t *testing.T) {
	env, f, manifest := deployDirector(t)
	f.grown = true
	out, _, code := deployCLI(env, "y\n", "deploy", manifest)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	before, after, _ := strings.Cut(out, "<asked>")
	if !strings.Contains(before, "1 to create") || !strings.Contains(after, "| Plan\n") || !strings.Contains(after, "2 to create") || strings.Contains(after, "Plan: as shown above") {
		t.Errorf("a plan that differs from the preview prints in full:\n%s", out)
	}
}

func TestDeployNonInteractivePrintsNotesWhileFollowing(t *testing.T) {
	env, f, manifest := deployDirector(t)
	out, errOut, code := deployCLI(env, "", "-n", "deploy", manifest)
	if code != 0 || strings.Contains(out, "<asked>") || errOut != "" {
		t.Fatalf("exit %d, stderr %q:\n%s", code, errOut, out)
	}
	if _, dry := f.state(); len(dry) != 1 || dry[0] {
		t.Errorf("-n: requests (dry run?) %v, want one deploy", dry)
	}
	// The notes print as blocks under their stage, in the task's lines.
	for _, want := range []string{"| Manifest diff\n  - name: web-old\n  + name: web\n", "| Plan\n  Deployment web\n", "\n  1 to create"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	out, _, code = deployCLI(env, "", "--json", "deploy", manifest)
	if code != 0 {
		t.Fatalf("--json: exit %d\n%s", code, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("--json printed a line that is not JSON: %q", line)
		}
	}
	if _, dry := f.state(); len(dry) != 2 || dry[1] {
		t.Errorf("--json asks nothing and plans nothing first: requests (dry run?) %v", dry)
	}
}

func TestDeployDryRunShowsDiffThenPlanOnce(t *testing.T) {
	env, _, manifest := deployDirector(t)
	out, _, code := deployCLI(env, "", "deploy", manifest, "--dry-run")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	diff, plan := strings.Index(out, "| Manifest diff\n"), strings.Index(out, "Dry run: nothing changed.")
	if diff < 0 || plan < diff || strings.Count(out, "1 to create") != 1 {
		t.Errorf("want the diff, then the plan once:\n%s", out)
	}
}

func TestDeployPreviewFailureStops(t *testing.T) {
	env, f, manifest := deployDirector(t)
	os.WriteFile(manifest, []byte("name: web\nbad: 1\n"), 0o644)
	out, errOut, code := deployCLI(env, "y\n", "deploy", manifest)
	if code != cli.ExitUsage || strings.Contains(out, "<asked>") {
		t.Errorf("a plan that fails on bad input: exit %d (want 2), asked anyway?\n%s%s", code, out, errOut)
	}
	if _, dry := f.state(); len(dry) != 1 || !dry[0] {
		t.Errorf("requests (dry run?) %v, want the dry run only", dry)
	}
}

// agentStates answers get_state from a map of agent id to state.
type agentStates map[string]string

func (a agentStates) State(ctx context.Context, id string) (json.RawMessage, error) {
	if s, ok := a[id]; ok {
		return json.RawMessage(s), nil
	}
	return nil, errors.New("agent a-2 unresponsive: nats: timeout")
}

func TestVMsVitals(t *testing.T) {
	agents := agentStates{"a-1": `{"job_state":"running","vitals":{"cpu":{"user":12.5,"sys":2,"wait":0.5},"mem":{"kb":524288,"percent":25},"swap":{"kb":0,"percent":0},"load":[0.5,0.25,0.1],"disk":{"system":{"percent":40,"inode_percent":3},"ephemeral":{"percent":7,"inode_percent":1}},"uptime_s":3700}}`}
	env, _, _, st := deployDirectorWith(t, agents)
	err := st.Update(func(tx *store.Tx) error {
		tx.PutDeployment(store.Deployment{Name: "web"})
		tx.PutInstance(store.Instance{Deployment: "web", Group: "web", ID: "i-1", VMCID: "vm-1", AgentID: "a-1", State: "started"})
		tx.PutInstance(store.Instance{Deployment: "web", Group: "lb", ID: "i-2", VMCID: "vm-2", AgentID: "a-2", State: "started"})
		tx.PutVM(store.VM{CID: "vm-1", CPI: "local", AgentID: "a-1", Deployment: "web", InstanceID: "i-1"})
		return tx.PutVM(store.VM{CID: "vm-2", CPI: "local", AgentID: "a-2", Deployment: "web", InstanceID: "i-2"})
	})
	if err != nil {
		t.Fatal(err)
	}
	out, _, code := deployCLI(env, "", "-d", "web", "vms", "--vitals")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	lines := strings.Split(out, "\n")
	if len(lines) < 3 || !strings.Contains(lines[0], "Load (1m, 5m, 15m)") || !strings.Contains(lines[0], "Persistent Disk") {
		t.Fatalf("table:\n%s", out)
	}
	for _, want := range []string{"vm-1", "web/i-1", "running", "1h 1m", "0.50, 0.25, 0.10", "12.5%", "25% (512.0 MiB)", "40% (3% inodes)", "7% (1% inodes)"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("vm-1 line lacks %q: %q", want, lines[1])
		}
	}
	if !strings.Contains(lines[2], "vm-2") || !strings.Contains(lines[2], "lb/i-2") || !strings.Contains(lines[2], "unresponsive agent (agent a-2 unresponsive") {
		t.Errorf("vm-2 line: %q", lines[2])
	}

	out, _, code = deployCLI(env, "", "--json", "-d", "web", "vms", "--vitals")
	var got []struct {
		CID      string `json:"cid"`
		Instance string `json:"instance"`
		Vitals   struct {
			Uptime int64 `json:"uptime_s"`
		} `json:"vitals"`
		AgentError string `json:"agent_error"`
	}
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil {
		t.Fatalf("--json: exit %d, %v\n%s", code, err, out)
	}
	if len(got) != 2 || got[0].Instance != "web/i-1" || got[0].Vitals.Uptime != 3700 || got[1].AgentError == "" {
		t.Errorf("--json: %+v", got)
	}

	out, _, code = deployCLI(env, "", "-d", "web", "vms")
	if code != 0 || strings.Contains(out, "Load") || !strings.Contains(out, "web/i-1") || !strings.Contains(out, "2 vms") {
		t.Errorf("vms without --vitals: exit %d\n%s", code, out)
	}
}

// TestInstancesAndVMsOfEveryDeployment: without -d, instances and vms list
// every deployment's, each table under its name; --json is one array.
func TestInstancesAndVMsOfEveryDeployment(t *testing.T) {
	env, _, _, st := deployDirectorWith(t, agentStates{})
	err := st.Update(func(tx *store.Tx) error {
		for _, d := range []string{"api", "web"} {
			tx.PutDeployment(store.Deployment{Name: d})
			tx.PutInstance(store.Instance{Deployment: d, Group: d, ID: d + "-1", VMCID: "vm-" + d, AgentID: "a-" + d, State: "started"})
			if err := tx.PutVM(store.VM{CID: "vm-" + d, CPI: "local", AgentID: "a-" + d, Deployment: d, InstanceID: d + "-1"}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"instances", "vms"} {
		out, _, code := deployCLI(env, "", cmd)
		if code != 0 {
			t.Fatalf("%s without -d: exit %d\n%s", cmd, code, out)
		}
		a, w := strings.Index(out, "Deployment api"), strings.Index(out, "Deployment web")
		if a < 0 || w < a || !strings.Contains(out[a:w], "vm-api") || !strings.Contains(out[w:], "vm-web") {
			t.Errorf("%s without -d:\n%s", cmd, out)
		}
		out, _, code = deployCLI(env, "", "--json", cmd)
		var got []struct {
			Deployment string `json:"deployment"`
		}
		if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || len(got) != 2 || got[0].Deployment != "api" || got[1].Deployment != "web" {
			t.Errorf("%s --json without -d: exit %d, %v: %+v\n%s", cmd, code, err, got, out)
		}
		out, _, code = deployCLI(env, "", "-d", "web", cmd)
		if code != 0 || strings.Contains(out, "vm-api") || !strings.Contains(out, "vm-web") {
			t.Errorf("%s -d web: exit %d\n%s", cmd, code, out)
		}
	}
}
