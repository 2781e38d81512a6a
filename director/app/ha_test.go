package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/compleat/compleat/director/app"
	"github.com/compleat/compleat/director/store/etcdtest"
	"github.com/compleat/compleat/test/testbin"
)

// served is a director run in-process by `serve --config`.
type served struct {
	env  map[string]string
	logs *syncBuffer
	stop func() error
}

// serveConfig runs `director serve --config file` in-process until the
// returned stop (also run at cleanup) and waits until it is ready.
func serveConfig(t *testing.T, file, token string) *served {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, logs := &syncBuffer{}, &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, []string{"serve", "--config", file}, out, logs) }()
	var stopErr error
	stopped := false
	stop := func() error {
		if stopped {
			return stopErr
		}
		stopped = true
		cancel()
		select {
		case stopErr = <-done:
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
		return stopErr
	}
	t.Cleanup(func() { stop() })
	re := regexp.MustCompile(`Director ready at (https://\S+)`)
	for deadline := time.Now().Add(30 * time.Second); ; {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			data := filepath.Join(filepath.Dir(file), strings.TrimSuffix(filepath.Base(file), ".yml"))
			return &served{logs: logs, stop: stop, env: map[string]string{"DIRECTOR_TARGET": m[1], "DIRECTOR_TOKEN": token,
				"DIRECTOR_CA_CERT": filepath.Join(data, "ca.pem")}}
		}
		select {
		case err := <-done:
			t.Fatalf("serve exited: %v\n%s", err, logs)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready:\n%s", logs)
		}
	}
}

type clusterInfo struct{ Director, Leader string }

func infoOf(t *testing.T, d *served) clusterInfo {
	t.Helper()
	var i clusterInfo
	if err := json.Unmarshal([]byte(mustRun(t, d.env, "--json", "info")), &i); err != nil {
		t.Fatal(err)
	}
	return i
}

// waitLeader polls d until it names a leader that want accepts.
func waitLeader(t *testing.T, d *served, what string, want func(clusterInfo) bool) clusterInfo {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		i := infoOf(t, d)
		if want(i) {
			return i
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: info = %+v after 30 s\n%s", what, i, d.logs)
		}
	}
}

// lastTask is the newest task's record as the API shows it.
func lastTask(t *testing.T, d *served) map[string]any {
	t.Helper()
	out := mustRun(t, d.env, "--json", "tasks", "--recent=1")
	var tasks []map[string]any
	if err := json.Unmarshal([]byte(out), &tasks); err != nil || len(tasks) != 1 {
		t.Fatalf("tasks: %v\n%s", err, out)
	}
	return tasks[0]
}

// busCluster is the nats section of directors names: each its bus and
// route port on 127.0.0.1, routes to the others, every bus for agents.
func busCluster(t testing.TB, names ...string) map[string]string {
	t.Helper()
	type ports struct{ bus, route int }
	all := map[string]ports{}
	var urls []string
	for _, n := range names {
		p := ports{freePort(t), freePort(t)}
		all[n] = p
		urls = append(urls, fmt.Sprintf("%q", fmt.Sprintf("nats://127.0.0.1:%d", p.bus)))
	}
	out := map[string]string{}
	for _, n := range names {
		var routes []string
		for _, o := range names {
			if o != n {
				routes = append(routes, fmt.Sprintf("%q", fmt.Sprintf("nats-route://127.0.0.1:%d", all[o].route)))
			}
		}
		out[n] = fmt.Sprintf("nats: {listen: \"127.0.0.1:%d\", cluster: {listen: \"127.0.0.1:%d\", routes: [%s], agent_urls: [%s]}}\n",
			all[n].bus, all[n].route, strings.Join(routes, ", "), strings.Join(urls, ", "))
	}
	return out
}

func freePort(t testing.TB) int { return testbin.FreePort(t) }

// TestHADirectorsLeadOneAtATime runs two directors on one etcd state and
// one S3 bucket: one leads, a task submitted to the other runs on the
// leader, and when the leader stops the other leads and runs the next.
func TestHADirectorsLeadOneAtATime(t *testing.T) {
	etcd := etcdtest.Start(t)
	backend := s3mem.New()
	if err := backend.CreateBucket("blobs"); err != nil {
		t.Fatal(err)
	}
	s3 := httptest.NewServer(gofakes3.New(backend).Server())
	t.Cleanup(s3.Close)
	dir := t.TempDir()
	const token = "admin-secret-0123456789"
	os.WriteFile(filepath.Join(dir, "admin.token"), []byte(token+"\n"), 0o600)
	buses := busCluster(t, "a", "b")
	config := func(name string) string {
		file := filepath.Join(dir, name+".yml")
		os.WriteFile(file, []byte(`listen: 127.0.0.1:0
data_dir: `+name+`
tokens:
- {name: admin, token_file: admin.token, scopes: [admin]}
`+buses[name]+`store: {backend: etcd, endpoints: ["`+etcd.Endpoint+`"], prefix: /ha-test/}
blobstore: {type: s3, s3: {bucket: blobs, region: us-east-1, endpoint: "`+s3.URL+`", path_style: true, access_key_id: k, secret_access_key: s}}
ha: {name: `+name+`, lease_ttl: 2s}
`), 0o600)
		return file
	}
	a := serveConfig(t, config("a"), token)
	ia := waitLeader(t, a, "the first director", func(i clusterInfo) bool { return i.Leader != "" && i.Leader == i.Director })
	if !strings.HasPrefix(ia.Director, "a@") {
		t.Errorf("first director's instance = %q, want a@…", ia.Director)
	}
	// The second director shares the first one's CA, uuid and variables
	// key (docs/ha.md: copied when a director is added).
	os.MkdirAll(filepath.Join(dir, "b"), 0o700)
	for _, f := range []string{"ca.pem", "ca.key", "director-uuid", "state.db.key"} {
		raw, err := os.ReadFile(filepath.Join(dir, "a", f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "b", f), raw, 0o600)
	}
	b := serveConfig(t, config("b"), token)
	ib := waitLeader(t, b, "the second director", func(i clusterInfo) bool { return i.Leader == ia.Director })
	if ib.Director == ia.Director || !strings.HasPrefix(ib.Director, "b@") {
		t.Errorf("second director's instance = %q", ib.Director)
	}

	// A data task accepted by the follower runs on the leader.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("first director's log:\n%s", a.logs)
		}
	})
	mustRun(t, b.env, "-n", "clean-up")
	if tk := lastTask(t, b); tk["state"] != "done" || tk["director"] != ia.Director {
		t.Errorf("clean-up through the follower = %v; want done by %s", tk, ia.Director)
	}

	// The leader stops (resigning): the follower leads at once and runs
	// the next task itself.
	if err := a.stop(); err != nil {
		t.Fatalf("leader stop: %v", err)
	}
	waitLeader(t, b, "after the leader stopped", func(i clusterInfo) bool { return i.Leader == ib.Director })
	mustRun(t, b.env, "-n", "clean-up")
	if tk := lastTask(t, b); tk["state"] != "done" || tk["director"] != ib.Director {
		t.Errorf("clean-up after the failover = %v; want done by %s", tk, ib.Director)
	}
	if !strings.Contains(b.logs.String(), "leading: running the task queue") {
		t.Errorf("the new leader did not log its take-over:\n%s", b.logs)
	}
}
