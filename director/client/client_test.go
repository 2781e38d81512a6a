package client_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/compleat/compleat/director/api"
	"github.com/compleat/compleat/director/api/apitest"
	"github.com/compleat/compleat/director/apiv1"
	"github.com/compleat/compleat/director/client"
	"github.com/compleat/compleat/director/config"
	"github.com/compleat/compleat/director/store/storetest"
	"github.com/compleat/compleat/director/task"
)

const token = "client-test-token-0123456789"

// serve runs the real API over a store and a task manager with a "test"
// task type, and returns a client trusting its certificate.
func serve(t *testing.T, tok string) (*client.Client, *task.Manager) {
	t.Helper()
	s := storetest.New(t)
	tasks := task.NewManager(s, slog.New(slog.DiscardHandler), task.Options{})
	auth := api.NewAuth([]api.Token{{Name: "admin", SHA256: sha256.Sum256([]byte(token)), Scopes: []string{config.ScopeAdmin}}})
	srv := httptest.NewTLSServer(apitest.New(t, apitest.Deps(t, s, tasks, auth, slog.New(slog.DiscardHandler))))
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tasks.Shutdown(ctx)
	})
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	c, err := client.New(client.Options{Target: srv.URL + "/", Token: tok, CACert: ca})
	if err != nil {
		t.Fatal(err)
	}
	return c, tasks
}

func TestTypedCalls(t *testing.T) {
	t.Parallel()
	c, tasks := serve(t, token)
	ctx := context.Background()
	info, err := c.Info(ctx)
	if err != nil || info.User != "admin" || info.Name != "compleat" {
		t.Fatalf("info = %+v, %v", info, err)
	}
	tk, err := tasks.Start(ctx, task.Spec{Type: "test", Description: "a test task"}, func(ctx context.Context, r *task.Reporter) (string, error) {
		st := r.Stage("Working", 2)
		st.Step("a").Done(nil)
		st.Step("b").Done(nil)
		return "all done", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	final, err := c.Follow(ctx, tk.ID, 0, func(e apiv1.Event) error {
		if e.Stage == "Working" && e.State == "started" {
			steps = append(steps, e.Step)
		}
		return nil
	})
	if err != nil || final.State != apiv1.TaskDone || final.Result != "all done" || !final.Finished() {
		t.Fatalf("followed task = %+v, %v", final, err)
	}
	if len(steps) != 2 {
		t.Errorf("steps seen = %v, want a and b", steps)
	}
	list, err := c.Tasks(ctx, 5)
	if err != nil || len(list) != 1 || list[0].ID != tk.ID {
		t.Errorf("tasks = %+v, %v", list, err)
	}
	raw, err := c.GetRaw(ctx, "/v1/info")
	if err != nil || !json.Valid(raw) {
		t.Errorf("raw info = %s, %v", raw, err)
	}
}

func TestErrorsCarryTheDirectorsVerdict(t *testing.T) {
	t.Parallel()
	c, _ := serve(t, token)
	ctx := context.Background()
	_, err := c.Task(ctx, 999)
	var e *client.Error
	if !errors.As(err, &e) || e.Status != http.StatusNotFound || client.IsBadInput(err) {
		t.Errorf("missing task: %#v", err)
	}
	_, err = c.Deploy(ctx, apiv1.DeployRequest{Manifest: "name: web"})
	if !client.IsBadInput(err) {
		t.Errorf("deploy without a deployment name: %v, want a 400", err)
	}
	bad, _ := serve(t, "wrong-token-0123456789")
	if _, err := bad.Info(ctx); !errors.As(err, &e) || e.Status != http.StatusUnauthorized || e.Message == "" {
		t.Errorf("wrong token: %#v", err)
	}
	if _, err := client.New(client.Options{Target: "director.example.com", Token: token}); err == nil {
		t.Error("a target without a scheme accepted")
	}
	if _, err := client.New(client.Options{Target: "https://d:25555", Token: token, CACert: []byte("no pem")}); err == nil {
		t.Error("a CA without PEM accepted")
	}
}
