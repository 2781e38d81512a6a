package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

func TestIgnoreAndUnignoreAnInstance(t *testing.T) {
	f := newFixture(t)
	if err := f.store.Update(func(tx *store.Tx) error {
		tx.PutDeployment(store.Deployment{Name: "web"})
		return tx.PutInstance(store.Instance{Deployment: "web", Group: "web", ID: "i-1", Index: 0, State: "started"})
	}); err != nil {
		t.Fatal(err)
	}
	instance := func() store.Instance {
		var in store.Instance
		f.store.View(func(tx *store.Tx) error { in, _ = tx.Instance("web", "web", "i-1"); return nil })
		return in
	}
	// By index, then by id.
	resp, raw := f.do(t, "PUT", "/v1/deployments/web/instances/web/0/ignore", adminToken, `{"ignore": true}`)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(raw), `"ignore": true`) || !instance().IgnoreFix {
		t.Fatalf("ignore: %d %s; record %+v", resp.StatusCode, raw, instance())
	}
	resp, raw = f.do(t, "PUT", "/v1/deployments/web/instances/web/i-1/ignore", adminToken, `{"ignore": false}`)
	if resp.StatusCode != http.StatusOK || instance().IgnoreFix {
		t.Fatalf("unignore: %d %s", resp.StatusCode, raw)
	}
	if resp, _ := f.do(t, "PUT", "/v1/deployments/web/instances/web/7/ignore", adminToken, `{"ignore": true}`); resp.StatusCode != http.StatusNotFound {
		t.Errorf("ignore of a missing instance: %d", resp.StatusCode)
	}
	if resp, _ := f.do(t, "PUT", "/v1/deployments/web/instances/web/0/ignore", readToken, `{"ignore": true}`); resp.StatusCode != http.StatusForbidden {
		t.Errorf("ignore with a read token: %d", resp.StatusCode)
	}
	var evs []store.AuditEvent
	f.store.View(func(tx *store.Tx) error { evs, _ = tx.AuditEvents(store.AuditFilter{Deployment: "web"}); return nil })
	var actions []string
	for _, e := range evs {
		actions = append(actions, e.Action+" "+e.Instance+" "+e.User)
	}
	if got := strings.Join(actions, ", "); !strings.Contains(got, "ignore web/i-1 admin") || !strings.Contains(got, "unignore web/i-1 admin") {
		t.Errorf("audit events: %s", got)
	}
}

func TestQueuedDeployShowsNoArguments(t *testing.T) {
	f := newFixture(t)
	// The deployment is busy: the deploy queues with its request stored.
	release := make(chan struct{})
	running := make(chan struct{})
	hold, err := f.tasks.Start(context.Background(), task.Spec{Type: "hold", Deployment: "web"}, func(ctx context.Context, r *task.Reporter) (string, error) {
		close(running)
		<-release
		return "", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	<-running
	tk, err := f.tasks.Submit(task.Spec{Type: "deploy", Deployment: "web"}, map[string]any{"manifest": "name: web", "vars": map[string]string{"pw": "s3cr3t-from-v"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/v1/tasks", "/v1/tasks?state=queued", "/v1/tasks/2"} {
		resp, raw := f.do(t, "GET", path, readToken, "")
		if resp.StatusCode != http.StatusOK || strings.Contains(string(raw), "s3cr3t") || !strings.Contains(string(raw), `"queued"`) {
			t.Errorf("GET %s: %d %s", path, resp.StatusCode, raw)
		}
	}
	resp, raw := f.do(t, "POST", "/v1/tasks/2/cancel", adminToken, "")
	var got store.Task
	json.Unmarshal(raw, &got)
	if resp.StatusCode != http.StatusOK || got.State != store.TaskCancelled || got.ID != tk.ID || strings.Contains(string(raw), "s3cr3t") {
		t.Errorf("cancel of the queued deploy: %d %s", resp.StatusCode, raw)
	}
	close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		_, cur, err := f.tasks.Wait(ctx, hold.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		if cur.Finished() {
			break
		}
	}
}
