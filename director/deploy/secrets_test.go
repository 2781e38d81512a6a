package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compleat/compleat/director/api"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestGivenVariablesNeverInClear deploys with -v secret=… (as the CLI
// sends it: beside the manifest), then misuses it where the manifest
// names a vm_type, and scans every task's events, error and result, every
// log line, the audit events, the state file and a backup: the secret is
// nowhere, and the stored manifest keeps its ((secret)) reference.
func TestGivenVariablesNeverInClear(t *testing.T) {
	logs := &lockedBuffer{}
	r := newRigLogging(t, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	const secret = "hunter2-Zq8vWm3kP0"
	m := strings.Replace(benchManifest(2, "((secret))", 0), "name: big\n", "name: big\nvariables:\n- {name: pw, type: password}\n", 1)
	deploy := func(manifest string, vars map[string]any) store.Task {
		t.Helper()
		tk, err := r.tasks.Start(context.Background(), task.Spec{Type: "deploy", Description: "deploy", Deployment: "big"}, func(ctx context.Context, rep *task.Reporter) (string, error) {
			return r.d.Deploy(ctx, rep, api.DeployRequest{Deployment: "big", Manifest: manifest, Vars: vars})
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		for {
			_, cur, err := r.tasks.Wait(ctx, tk.ID, 1<<62)
			if err != nil {
				t.Fatal(err)
			}
			if cur.Finished() {
				return cur
			}
		}
	}
	vars := map[string]any{"secret": secret}
	if tk := deploy(m, vars); tk.State != store.TaskDone {
		t.Fatalf("deploy: %s %s", tk.State, tk.Error)
	}
	if n := len(r.cloud.VMs()); n != 2 {
		t.Fatalf("%d VMs, want 2", n)
	}
	// A deploy without -v finds the sealed value.
	if tk := deploy(strings.Replace(m, "canaries: 1", "canaries: 2", 1), nil); tk.State != store.TaskDone {
		t.Fatalf("deploy without -v: %s %s", tk.State, tk.Error)
	}
	bad := strings.Replace(m, "vm_type: small", "vm_type: ((secret))", 1)
	tk := deploy(bad, vars)
	if tk.State == store.TaskDone || !strings.Contains(tk.Error, "vm_type") {
		t.Fatalf("misused secret: %s %q", tk.State, tk.Error)
	}
	badPW := strings.Replace(m, "vm_type: small", "vm_type: ((pw))", 1)
	if tk := deploy(badPW, vars); tk.State == store.TaskDone {
		t.Fatalf("misused password deployed")
	}
	var pw string
	r.store.View(func(tx *store.Tx) error {
		v, err := tx.Variable("/big/pw")
		pw = strings.Trim(string(v.Value), `"`)
		return err
	})
	if len(pw) < 10 {
		t.Fatalf("generated password %q", pw)
	}

	var where []string
	scan := func(what, text string) {
		for _, s := range []string{secret, pw} {
			if strings.Contains(text, s) {
				where = append(where, what)
			}
		}
	}
	err := r.store.View(func(tx *store.Tx) error {
		tasks, err := tx.Tasks(0, nil)
		if err != nil {
			return err
		}
		for _, tk := range tasks {
			scan("task error", tk.Error)
			scan("task result", tk.Result)
			evs, err := tx.Events(tk.ID, 0)
			if err != nil {
				return err
			}
			for _, e := range evs {
				b, _ := json.Marshal(e)
				scan("task event", string(b))
			}
		}
		audit, err := tx.AuditEvents(store.AuditFilter{})
		if err != nil {
			return err
		}
		for _, a := range audit {
			b, _ := json.Marshal(a)
			scan("audit event", string(b))
		}
		dep, err := tx.Deployment("big")
		if err != nil {
			return err
		}
		man, err := tx.Manifest("big", dep.ManifestID)
		if err != nil {
			return err
		}
		if !strings.Contains(man.Content, "((secret))") {
			t.Errorf("the stored manifest lost its ((secret)) reference:\n%s", man.Content)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	scan("log", logs.String())
	var backup bytes.Buffer
	if _, err := r.store.Backup(&backup); err != nil {
		t.Fatal(err)
	}
	scan("backup", backup.String())
	raw, err := os.ReadFile(r.stateFile)
	if err != nil {
		t.Fatal(err)
	}
	scan("state file", string(raw))
	if len(where) > 0 {
		t.Errorf("a secret is in clear in: %v", where)
	}
}

// TestRegenerateVariable renews a CA and the certificate it signs on the
// deployment's stored manifest; the next deploy rolls the new values out.
func TestRegenerateVariable(t *testing.T) {
	r := newRig(t)
	m := strings.Replace(benchManifest(1, "((tls.certificate))", 0), "name: big\n", `name: big
variables:
- {name: ca, type: certificate, options: {is_ca: true, common_name: ca}}
- {name: tls, type: certificate, options: {ca: ca, common_name: app, extended_key_usage: [server_auth]}}
- {name: pw, type: password}
`, 1)
	r.deploy(m, false)
	value := func(name string) string {
		var v store.Variable
		r.store.View(func(tx *store.Tx) (err error) { v, err = tx.Variable("/big/" + name); return })
		return string(v.Value)
	}
	ca, tls, pw := value("ca"), value("tls"), value("pw")
	if ca == "" || tls == "" || pw == "" {
		t.Fatal("variables not generated at deploy")
	}
	tk, _ := r.run("regenerate-variable", "big", func(ctx context.Context, rep *task.Reporter) (string, error) {
		return r.d.RegenerateVariable(ctx, rep, "big", "ca")
	})
	if !strings.Contains(tk.Result, "regenerated /big/ca") {
		t.Errorf("result %q", tk.Result)
	}
	if value("ca") == ca || value("tls") == tls || value("pw") != pw {
		t.Error("regenerating the CA did not renew exactly the CA and its certificate")
	}
	res, _ := r.deploy(m, false)
	if !strings.Contains(res, "1 updated") {
		t.Errorf("the deploy after a rotation: %q, want the instance updated", res)
	}
}

// TestRuntimeConfigVariables: a runtime config's variables are generated
// at deploy and resolve the deployment's references.
func TestRuntimeConfigVariables(t *testing.T) {
	r := newRig(t)
	if err := r.store.Update(func(tx *store.Tx) error {
		_, _, err := tx.AddConfig(store.ConfigRuntime, "default", "variables:\n- {name: rc_pw, type: password, options: {length: 12}}\n- {name: rc_unused, type: rsa}\n")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	r.deploy(benchManifest(1, "((rc_pw))", 0), false)
	for _, name := range []string{"/big/rc_pw", "/big/rc_unused"} {
		err := r.store.View(func(tx *store.Tx) error {
			v, err := tx.Variable(name)
			if err == nil && name == "/big/rc_pw" && len(v.Value) != 14 {
				t.Errorf("rc_pw %d bytes of JSON, want a 12-character string", len(v.Value))
			}
			return err
		})
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestErrandTemplatesCheckedAtDeploy: an errand group's jobs are planned
// and rendered at deploy (a job its release lacks fails the deploy),
// although it gets no VM.
func TestErrandTemplatesCheckedAtDeploy(t *testing.T) {
	r := newRig(t)
	errand := `- name: smoke
  lifecycle: errand
  instances: 1
  azs: [z1]
  vm_type: small
  stemcell: default
  networks: [{name: default}]
  jobs:
  - name: app
    release: bench
    properties: {version: VERSION}
`
	m := benchManifest(1, "v1", 0)
	good := m + strings.Replace(errand, "VERSION", "v1", 1)
	if res, _ := r.deploy(good, false); !strings.Contains(res, "1 updated") || len(r.cloud.VMs()) != 1 {
		t.Fatalf("deploy with an errand group: %q, %d VMs, want 1 (the errand gets none)", res, len(r.cloud.VMs()))
	}
	// A job the release lacks fails the deploy, errand or not.
	bad := m + strings.Replace(strings.Replace(errand, "VERSION", "v1", 1), "- name: app\n    release: bench", "- name: nojob\n    release: bench", 1)
	tk, err := r.tasks.Start(context.Background(), task.Spec{Type: "deploy", Description: "deploy", Deployment: "big"}, func(ctx context.Context, rep *task.Reporter) (string, error) {
		return r.d.Deploy(ctx, rep, api.DeployRequest{Deployment: "big", Manifest: bad})
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		_, cur, err := r.tasks.Wait(ctx, tk.ID, 1<<62)
		if err != nil {
			t.Fatal(err)
		}
		if cur.Finished() {
			if cur.State == store.TaskDone || !strings.Contains(cur.Error, "errands") {
				t.Errorf("a broken errand deployed: %s %q", cur.State, cur.Error)
			}
			return
		}
	}
}
