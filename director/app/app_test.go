package app_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/compleat/compleat/director/app"
	"github.com/compleat/compleat/director/blobstore"
	"github.com/compleat/compleat/director/cli"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
	"github.com/compleat/compleat/test/testbin"
)

// repoRoot is the repository's root.
func repoRoot(t *testing.T) string { return testbin.Root() }

func TestMain(m *testing.M) {
	// As a test binary it runs the tests; run as "director" or "exits" by
	// a script (script_test.go) it is that program.
	testscript.Main(cleaningUp{m}, scriptCommands)
}

// cleaningUp runs the tests, then removes the binaries testbin built.
type cleaningUp struct{ m *testing.M }

func (c cleaningUp) Run() int {
	defer testbin.Cleanup()
	return c.m.Run()
}

// binaries returns a directory holding director, agent and cpi-local
// (test/testbin: $COMPLEAT_BIN, or built once for this test binary).
func binaries(t *testing.T) string {
	t.Helper()
	dir, err := testbin.Build(testbin.Core...)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// syncBuffer holds output while a test reads it.
type syncBuffer = testbin.Buffer

// devDirector starts `director serve --dev` as a process and waits for
// DIR/env. stop ends it: with SIGTERM it must exit 0 after a graceful
// shutdown; with SIGKILL it dies as in a crash. Cleanup stops it with SIGTERM
// if the test did not.
func devDirector(t *testing.T, bin, data string) (env map[string]string, logs *syncBuffer, stop func(sig syscall.Signal)) {
	t.Helper()
	envFile := filepath.Join(data, "env")
	os.Remove(envFile)
	p := testbin.Start(t, filepath.Join(bin, "director"), []string{"serve", "--dev", "--data", data, "--listen", "127.0.0.1:0"},
		func(string) bool { _, err := os.Stat(envFile); return err == nil })
	var once sync.Once
	stop = func(sig syscall.Signal) {
		once.Do(func() {
			if err := p.Stop(sig); err != nil {
				t.Error(err)
				return
			}
			if sig != syscall.SIGTERM {
				return
			}
			if p.Err != nil {
				t.Errorf("director exit after SIGTERM: %v\n%s", p.Err, p.Logs)
			}
			if !strings.Contains(p.Logs.String(), "director stopped") {
				t.Errorf("no graceful shutdown in the director's log:\n%s", p.Logs)
			}
		})
	}
	t.Cleanup(func() { stop(syscall.SIGTERM) })
	raw, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	env = map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "="); ok && !strings.HasPrefix(k, "#") {
			env[k] = v
		}
	}
	return env, p.Logs, stop
}

// director runs the CLI in-process against the dev director.
func director(t *testing.T, env map[string]string, args ...string) (stdout string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	full := append([]string{"-e", env["DIRECTOR_TARGET"], "--token", env["DIRECTOR_TOKEN"], "--ca-cert", env["DIRECTOR_CA_CERT"]}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := app.Run(ctx, full, &out, &errb)
	if errb.Len() > 0 {
		t.Logf("director %s: stderr:\n%s", strings.Join(args, " "), errb.String())
	}
	return out.String(), app.ExitCode(err)
}

func mustRun(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	out, code := director(t, env, args...)
	if code != 0 {
		t.Fatalf("director %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

func TestDevDirectorEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the director, the agent and the local CPI")
	}
	bin := binaries(t)
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	root := repoRoot(t)
	work := t.TempDir()
	data := filepath.Join(work, "data")
	env, logs, _ := devDirector(t, bin, data)
	for _, k := range []string{"DIRECTOR_TARGET", "DIRECTOR_TOKEN", "DIRECTOR_CA_CERT"} {
		if env[k] == "" {
			t.Fatalf("DIR/env lacks %s", k)
		}
	}

	// A second director on the same data directory fails fast, with advice.
	second := exec.Command(filepath.Join(bin, "director"), "serve", "--dev", "--data", data, "--listen", "127.0.0.1:0")
	raw, err := second.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(raw), "is another director running with --data "+data) {
		t.Errorf("second director: %v\n%s", err, raw)
	}

	// The web release, built from its source directory on the fly.
	webSrc := filepath.Join(work, "web")
	copyTree(t, filepath.Join(root, "releases", "web"), webSrc)
	mustRun(t, env, "upload-release", webSrc)

	// The local stemcell.
	stemcell := filepath.Join(work, "local.tgz")
	mustRun(t, env, "create-stemcell", "--agent", filepath.Join(bin, "agent"), "--tarball", stemcell)
	mustRun(t, env, "upload-stemcell", stemcell)

	mustRun(t, env, "update-cloud-config", filepath.Join(root, "manifests", "local", "cloud-config.yml"))

	var releases []struct {
		Name, Version string
		Jobs          []struct {
			Name   string
			BlobID string `json:"blob_id"`
			SHA256 string `json:"sha256"`
		}
		Packages []struct{ Name, Fingerprint string }
	}
	decode(t, mustRun(t, env, "releases", "--json"), &releases)
	if len(releases) != 1 || releases[0].Name != "web" || len(releases[0].Jobs) == 0 || len(releases[0].Packages) == 0 {
		t.Errorf("releases = %+v", releases)
	}
	var stemcells []struct {
		Name string
		CIDs map[string]string `json:"cids"`
	}
	decode(t, mustRun(t, env, "stemcells", "--json"), &stemcells)
	if len(stemcells) != 1 || stemcells[0].CIDs["local"] == "" {
		t.Errorf("stemcells = %+v", stemcells)
	}
	// The local CPI really imported it under the data directory.
	if _, err := os.Stat(filepath.Join(data, "stemcells", stemcells[0].CIDs["local"])); err != nil {
		t.Errorf("stemcell not in the local CPI's directory: %v", err)
	}
	var configs []struct{ Type, Content string }
	decode(t, mustRun(t, env, "configs", "--json", "--type", "cloud"), &configs)
	if len(configs) != 1 || !strings.Contains(configs[0].Content, "compilation") {
		t.Errorf("cloud configs = %+v", configs)
	}
	var tasks []struct {
		ID    int
		State string
	}
	decode(t, mustRun(t, env, "tasks", "--recent", "--json"), &tasks)
	if len(tasks) != 2 || tasks[0].State != "done" || tasks[1].State != "done" {
		t.Errorf("tasks = %+v", tasks)
	}

	// Uploading the same release again changes nothing and succeeds.
	mustRun(t, env, "upload-release", webSrc)
	decode(t, mustRun(t, env, "releases", "--json"), &releases)
	if len(releases) != 1 {
		t.Errorf("releases after re-upload = %+v", releases)
	}

	// Task streaming, BOSH style.
	out := mustRun(t, env, "task", "1")
	if !strings.Contains(out, "Task 1 | ") || !strings.Contains(out, "Creating new release web/") || !strings.Contains(out, "... done (00:00:0") {
		t.Errorf("task 1 output:\n%s", out)
	}

	// Bad input exits 2 and names the file and field.
	bad := filepath.Join(work, "bad-cloud.yml")
	os.WriteFile(bad, []byte("azs: [{name: z1, bogus: 1}]\n"), 0o600)
	if _, code := director(t, env, "update-cloud-config", bad); code != cli.ExitUsage {
		t.Errorf("bad cloud config: exit %d, want 2", code)
	}
	if _, code := director(t, env, "no-such-command"); code != cli.ExitUsage {
		t.Errorf("unknown command: exit %d, want 2", code)
	}
	if _, code := director(t, env, "task", "999"); code != cli.ExitFailed {
		t.Errorf("missing task: exit %d, want 1", code)
	}

	// A consistent backup of the state.
	backup := filepath.Join(work, "state-backup.db")
	mustRun(t, env, "backup", backup)
	if st, err := os.Stat(backup); err != nil || st.Size() == 0 {
		t.Errorf("backup: %v", err)
	}

	// Agents fetch blobs from /blobs/ with URLs signed by the director's key.
	key, err := os.ReadFile(filepath.Join(data, "blobs.key"))
	if err != nil {
		t.Fatal(err)
	}
	job := releases[0].Jobs[0]
	signed, err := blobstore.NewSigner(key).URL(env["DIRECTOR_TARGET"], "GET", job.BlobID, time.Minute, "")
	if err != nil {
		t.Fatal(err)
	}
	hc := httpsClient(t, env["DIRECTOR_CA_CERT"])
	if body, status := get(t, hc, signed, ""); status != 200 || fmt.Sprintf("%x", sha256.Sum256(body)) != job.SHA256 {
		t.Errorf("signed blob GET: status %d, %d bytes", status, len(body))
	}
	if _, status := get(t, hc, env["DIRECTOR_TARGET"]+"/blobs/"+job.BlobID, ""); status == 200 {
		t.Error("unsigned blob GET succeeded")
	}

	// Metrics: the CPI call of the stemcell upload and the finished tasks.
	// (Counted as a task ends, a moment after its state is visible: look
	// again for a while.)
	for _, want := range []string{`compleat_cpi_call_duration_seconds_count{cpi="local",method="CreateStemcell",outcome="ok"} 1`, `compleat_tasks_finished_total{state="done",type="upload-release"} 2`, "compleat_agents_seen 0"} {
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			metrics, status := get(t, hc, env["DIRECTOR_TARGET"]+"/metrics", env["DIRECTOR_TOKEN"])
			if status == 200 && strings.Contains(string(metrics), want) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("metrics (status %d) lack %s", status, want)
				break
			}
		}
	}

	if strings.Contains(logs.String(), env["DIRECTOR_TOKEN"]) {
		t.Error("the admin token appears in the director's log")
	}
}

func httpsClient(t *testing.T, caFile string) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 30 * time.Second}
}

func get(t *testing.T, c *http.Client, url, token string) ([]byte, int) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return body, resp.StatusCode
}

func decode(t *testing.T, out string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("--json output is not one JSON document: %v\n%s", err, out)
	}
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if rel == "dev_releases" && d.IsDir() {
			return filepath.SkipDir
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, raw, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRestartMarksRunningTasksFailed leaves the state as a director killed
// in the middle of a deploy would (a task processing, holding its deployment's
// lease), starts a new director on it and checks the task is failed with the
// reason and the lock is free.
func TestRestartMarksRunningTasksFailed(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the director")
	}
	bin := binaries(t)
	data := filepath.Join(t.TempDir(), "data")
	env, _, stop := devDirector(t, bin, data)
	mustRun(t, env, "update-cloud-config", filepath.Join(repoRoot(t), "manifests", "local", "cloud-config.yml"))
	stop(syscall.SIGKILL)

	st, err := store.Open(filepath.Join(data, "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var left store.Task
	err = st.Update(func(tx *store.Tx) error {
		var err error
		if left, err = tx.CreateTask(store.Task{Type: "deploy", Description: "create deployment", Deployment: "web", State: store.TaskProcessing}); err != nil {
			return err
		}
		if _, err := tx.AddEvent(store.Event{TaskID: left.ID, Stage: "Updating instance", Step: "web/0", State: "started"}); err != nil {
			return err
		}
		_, err = tx.AcquireLock(task.LockName("web"), fmt.Sprintf("task %d", left.ID), left.ID, time.Hour)
		return err
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}

	env, _, _ = devDirector(t, bin, data)
	out, code := director(t, env, "task", fmt.Sprint(left.ID))
	if code != cli.ExitFailed || !strings.Contains(out, task.RestartedReason) {
		t.Errorf("task %d after restart: exit %d\n%s", left.ID, code, out)
	}
	var locks []store.Lock
	decode(t, mustRun(t, env, "locks", "--json"), &locks)
	if len(locks) != 0 {
		t.Errorf("locks after restart = %+v", locks)
	}
}
