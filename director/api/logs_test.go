package api_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/compleat/compleat/agent/action"
	"github.com/compleat/compleat/agent/blob"
	"github.com/compleat/compleat/agent/client"
	"github.com/compleat/compleat/agent/layout"
	"github.com/compleat/compleat/director/api"
	"github.com/compleat/compleat/director/api/apitest"
	"github.com/compleat/compleat/director/blobstore"
	"github.com/compleat/compleat/director/config"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/store/storetest"
	"github.com/compleat/compleat/director/task"
)

// inProcess delivers requests straight to an agent's action handler: the
// real agent code without a bus.
type inProcess struct {
	ctx     context.Context
	actions *action.Actions
}

func (p inProcess) RequestWithContext(_ context.Context, _ string, data []byte) (*nats.Msg, error) {
	return &nats.Msg{Data: p.actions.Handle(p.ctx, data)}, nil
}

type remoteFixture struct {
	fixture
	vm layout.Layout // the agent's base directory
}

// newRemoteFixture serves the API with a deployment "web" of two
// instances, web/0 (id w0) on a real agent whose tree is f.vm and web/1
// (id w1) without a VM.
func newRemoteFixture(t *testing.T) *remoteFixture {
	t.Helper()
	s := storetest.New(t)
	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tasks := task.NewManager(s, logger, task.Options{})
	auth := api.NewAuth([]api.Token{
		{Name: "admin", SHA256: sha256.Sum256([]byte(adminToken)), Scopes: []string{config.ScopeAdmin}},
		{Name: "ci", SHA256: sha256.Sum256([]byte(readToken)), Scopes: []string{config.ScopeRead}},
	})
	blobs, err := blobstore.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	signer := blobstore.NewSigner(bytes.Repeat([]byte{7}, 32))
	var handler http.Handler
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }))
	srv.StartTLS()

	vm := layout.Layout{Base: t.TempDir()}
	if err := vm.Ensure(); err != nil {
		t.Fatal(err)
	}
	agentCtx, stopAgent := context.WithCancel(context.Background())
	actions := action.New(action.Deps{Layout: vm, Uploader: &blob.Store{Client: srv.Client(), CacheDir: vm.Blobs()}, Logger: logger})
	deps := apitest.Deps(t, s, tasks, auth, logger)
	deps.Blobs = blobstore.NewHandler(blobs, signer, logger)
	deps.Remote = api.Remote{
		Agent: func(id string) api.InstanceAgent {
			return client.New(inProcess{ctx: agentCtx, actions: actions}, id, client.Options{PollInterval: 10 * time.Millisecond})
		},
		Blobs: blobs, Signer: signer, BlobURL: srv.URL, FollowInterval: 20 * time.Millisecond,
	}
	handler = apitest.New(t, deps)
	t.Cleanup(func() {
		srv.Close()
		stopAgent()
		actions.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tasks.Shutdown(ctx)
	})
	err = s.Update(func(tx *store.Tx) error {
		if err := tx.PutDeployment(store.Deployment{Name: "web"}); err != nil {
			return err
		}
		if err := tx.PutInstance(store.Instance{Deployment: "web", Group: "web", ID: "w0", Index: 0, AgentID: "agent-w0", State: "started"}); err != nil {
			return err
		}
		return tx.PutInstance(store.Instance{Deployment: "web", Group: "web", ID: "w1", Index: 1, State: "started"})
	})
	if err != nil {
		t.Fatal(err)
	}
	return &remoteFixture{fixture: fixture{srv: srv, store: s, tasks: tasks, logs: logs}, vm: vm}
}

func TestRemoteRoutesNeedAdmin(t *testing.T) {
	f := newRemoteFixture(t)
	for _, r := range []struct{ method, path, body string }{
		{"POST", "/v1/deployments/web/ssh", `{"target":"web/0","command":"touch ran"}`},
		{"POST", "/v1/deployments/web/logs", `{"instance":"web/0"}`},
		{"GET", "/v1/deployments/web/logs/follow?instance=web/0", ""},
		{"GET", "/v1/logs/logs-0123", ""},
	} {
		if resp, _ := f.do(t, r.method, r.path, readToken, r.body); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s %s with a read token: %d, want 403", r.method, r.path, resp.StatusCode)
		}
		if resp, _ := f.do(t, r.method, r.path, "", r.body); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s %s without a token: %d, want 401", r.method, r.path, resp.StatusCode)
		}
	}
	if _, err := os.Stat(filepath.Join(f.vm.Base, "ran")); err == nil {
		t.Error("a read token ran a command")
	}
}

func TestSSHRunsOnTheAgentAndIsAudited(t *testing.T) {
	f := newRemoteFixture(t)
	os.WriteFile(filepath.Join(f.vm.Base, "secret.txt"), []byte("s3cr3t-output\n"), 0o600)
	resp, body := f.do(t, "POST", "/v1/deployments/web/ssh", adminToken, `{"target":"web/w0","command":"cat secret.txt; echo oops >&2; exit 2"}`)
	if resp.StatusCode != 200 {
		t.Fatalf("ssh: %d %s", resp.StatusCode, body)
	}
	var res api.SSHResult
	json.Unmarshal(body, &res)
	if len(res.Results) != 1 {
		t.Fatalf("results %s", body)
	}
	r := res.Results[0]
	if r.Instance != "web/w0" || r.ExitCode != 2 || r.Stdout != "s3cr3t-output\n" || r.Stderr != "oops\n" || r.OK() {
		t.Errorf("result %+v", r)
	}

	// The group: every instance, by index; one without a VM says so.
	_, body = f.do(t, "POST", "/v1/deployments/web/ssh", adminToken, `{"target":"web","command":"true"}`)
	json.Unmarshal(body, &res)
	if len(res.Results) != 2 || !res.Results[0].OK() || res.Results[1].Instance != "web/w1" || res.Results[1].Error != "no vm" {
		t.Errorf("group results %s", body)
	}

	var evs []store.AuditEvent
	f.store.View(func(tx *store.Tx) error {
		var err error
		evs, err = tx.AuditEvents(store.AuditFilter{Action: "ssh"})
		return err
	})
	if len(evs) != 3 {
		t.Fatalf("%d ssh audit events, want 3: %+v", len(evs), evs)
	}
	first := evs[len(evs)-1] // newest first
	if first.User != "admin" || first.Instance != "web/w0" || first.Context["command_sha256"] != hexSHA256("cat secret.txt; echo oops >&2; exit 2") ||
		first.Context["exit_code"] != "2" || first.Result != store.ResultFailed {
		t.Errorf("audit event %+v", first)
	}
	raw, _ := json.Marshal(evs)
	// The command line may carry a secret: the audit log (listed with a
	// read token, kept in backups) holds only its digest.
	if strings.Contains(string(raw), "cat secret.txt") {
		t.Errorf("an ssh command line is in the audit log: %s", raw)
	}
	if strings.Contains(string(raw), "s3cr3t-output") || strings.Contains(f.logs.String(), "s3cr3t-output") {
		t.Error("a command's output reached the audit log or the director's log")
	}

	for body, want := range map[string]int{
		`{"target":"web/0","command":""}`:                     400,
		`{"target":"web/0","command":"true","timeout":"2h"}`:  400,
		`{"target":"web/9","command":"true"}`:                 404,
		`{"target":"db","command":"true"}`:                    404,
		`{"target":"web/0/x","command":"true"}`:               400,
		`{"target":"web/0","command":"true","extra":"field"}`: 400,
		`{"target":"web/0","command":"true","timeout":"bad"}`: 400,
		`{"target":"web/0","command":"true","timeout":"90s"}`: 200,
	} {
		if resp, b := f.do(t, "POST", "/v1/deployments/web/ssh", adminToken, body); resp.StatusCode != want {
			t.Errorf("ssh %s: %d %s, want %d", body, resp.StatusCode, b, want)
		}
	}
	if resp, _ := f.do(t, "POST", "/v1/deployments/nope/ssh", adminToken, `{"target":"web","command":"true"}`); resp.StatusCode != 404 {
		t.Errorf("unknown deployment: %d", resp.StatusCode)
	}
}

func TestFetchLogsThroughTheBlobstore(t *testing.T) {
	f := newRemoteFixture(t)
	os.MkdirAll(filepath.Join(f.vm.SysLog(), "web"), 0o755)
	os.WriteFile(filepath.Join(f.vm.SysLog(), "web", "webapp.stdout.log"), []byte("hello from web\n"), 0o644)

	resp, body := f.do(t, "POST", "/v1/deployments/web/logs", adminToken, `{"instance":"web/0"}`)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("fetch logs: %d %s", resp.StatusCode, body)
	}
	var tk store.Task
	json.Unmarshal(body, &tk)
	deadline := time.Now().Add(20 * time.Second)
	for !tk.Finished() {
		if time.Now().After(deadline) {
			t.Fatalf("task %+v", tk)
		}
		time.Sleep(20 * time.Millisecond)
		_, body = f.do(t, "GET", "/v1/tasks/"+strconv.FormatUint(tk.ID, 10), adminToken, "")
		json.Unmarshal(body, &tk)
	}
	if tk.State != store.TaskDone || tk.Deployment != "" {
		t.Fatalf("task %+v (a logs task takes no deployment lock)", tk)
	}
	var res api.LogsResult
	if err := json.Unmarshal([]byte(tk.Result), &res); err != nil || res.ID != "w0" || res.Group != "web" || !strings.HasPrefix(res.BlobID, "logs-") {
		t.Fatalf("result %q: %v", tk.Result, err)
	}
	resp, archive := f.do(t, "GET", "/v1/logs/"+res.BlobID, adminToken, "")
	if resp.StatusCode != 200 || sha(archive) != res.SHA256 || int64(len(archive)) != res.Size {
		t.Fatalf("download: %d, %d bytes", resp.StatusCode, len(archive))
	}
	if got := tarFile(t, archive, "web/webapp.stdout.log"); got != "hello from web\n" {
		t.Errorf("archive holds %q", got)
	}
	// Served once, then gone.
	if resp, _ := f.do(t, "GET", "/v1/logs/"+res.BlobID, adminToken, ""); resp.StatusCode != 404 {
		t.Errorf("second download: %d, want 404", resp.StatusCode)
	}
	if resp, _ := f.do(t, "GET", "/v1/logs/stemcell-blob", adminToken, ""); resp.StatusCode != 400 {
		t.Errorf("a blob that is not a logs archive: %d, want 400", resp.StatusCode)
	}
	if resp, _ := f.do(t, "POST", "/v1/deployments/web/logs", adminToken, `{"instance":"web"}`); resp.StatusCode != 400 {
		t.Errorf("logs of a group of two: %d, want 400", resp.StatusCode)
	}
	if resp, _ := f.do(t, "POST", "/v1/deployments/web/logs", adminToken, `{"instance":"web/0","jobs":["../bosh"]}`); resp.StatusCode != 400 {
		t.Errorf("logs of a job named ../bosh: %d, want 400", resp.StatusCode)
	}
	if resp, _ := f.do(t, "GET", "/v1/deployments/web/logs/follow?instance=web/0&job=..", adminToken, ""); resp.StatusCode != 400 {
		t.Errorf("following a job named ..: %d, want 400", resp.StatusCode)
	}
	if resp, _ := f.do(t, "POST", "/v1/deployments/web/logs", adminToken, `{"instance":"web/1"}`); resp.StatusCode != 409 {
		t.Errorf("logs of an instance without a vm: %d, want 409", resp.StatusCode)
	}
}

func TestFollowLogsStreamsNewLines(t *testing.T) {
	f := newRemoteFixture(t)
	dir := filepath.Join(f.vm.SysLog(), "web")
	os.MkdirAll(dir, 0o755)
	logFile := filepath.Join(dir, "webapp.stderr.log")
	os.WriteFile(logFile, []byte("old 1\nold 2\nold 3\n"), 0o644)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", f.srv.URL+"/v1/deployments/web/logs/follow?instance=web/w0&lines=2&job=web", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("follow: %d", resp.StatusCode)
	}
	lines := make(chan api.LogLine)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var l api.LogLine
			json.Unmarshal(sc.Bytes(), &l)
			lines <- l
		}
		close(lines)
	}()
	next := func() api.LogLine {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("stream ended")
			}
			return l
		case <-time.After(10 * time.Second):
			t.Fatal("no line within 10s")
		}
		return api.LogLine{}
	}
	for _, want := range []string{"old 2", "old 3"} {
		if l := next(); l.Line != want || l.File != "web/webapp.stderr.log" || l.Instance != "web/w0" {
			t.Fatalf("line %+v, want %q", l, want)
		}
	}
	fh, _ := os.OpenFile(logFile, os.O_APPEND|os.O_WRONLY, 0)
	fh.WriteString("new line\n")
	fh.Close()
	if l := next(); l.Line != "new line" {
		t.Fatalf("line %+v, want the appended one", l)
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func tarFile(t *testing.T, archive []byte, name string) string {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return ""
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == name {
			b, _ := io.ReadAll(tr)
			return string(b)
		}
	}
}

func hexSHA256(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
