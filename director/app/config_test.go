package app_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/director/app"
	"github.com/compleat/compleat/director/cli"
)

// TestServeConfigTokensAndScopes runs `serve --config` in-process with two
// tokens and checks what each may do through the CLI.
func TestServeConfigTokensAndScopes(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "admin.token"), []byte("admin-secret-0123456789\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "ci.token"), []byte("ci-secret-9876543210\n"), 0o600)
	cfg := `listen: 127.0.0.1:0
data_dir: data
tokens:
- {name: admin, token_file: admin.token, scopes: [admin]}
- {name: ci, token_file: ci.token, scopes: [read]}
nats: {listen: "127.0.0.1:0"}
`
	os.WriteFile(filepath.Join(dir, "director.yml"), []byte(cfg), 0o600)

	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- app.Run(ctx, []string{"serve", "--config", filepath.Join(dir, "director.yml")}, out, logs)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
	})
	re := regexp.MustCompile(`Director ready at (https://\S+)`)
	var target string
	for deadline := time.Now().Add(20 * time.Second); target == ""; {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			target = m[1]
			break
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
	ca := filepath.Join(dir, "data", "ca.pem")
	as := func(token string) map[string]string {
		return map[string]string{"DIRECTOR_TARGET": target, "DIRECTOR_TOKEN": token, "DIRECTOR_CA_CERT": ca}
	}
	admin, ci := as("admin-secret-0123456789"), as("ci-secret-9876543210")

	cloud := filepath.Join(repoRoot(t), "manifests", "local", "cloud-config.yml")
	mustRun(t, admin, "update-cloud-config", cloud)
	if out := mustRun(t, ci, "cloud-config"); !strings.Contains(out, "compilation") {
		t.Errorf("cloud-config as ci:\n%s", out)
	}
	if _, code := director(t, ci, "update-cloud-config", cloud); code != cli.ExitFailed {
		t.Errorf("update as the read-only token: exit %d, want 1 (403)", code)
	}
	if _, code := director(t, as("not-a-token"), "releases"); code != cli.ExitFailed {
		t.Errorf("unknown token: exit %d, want 1 (401)", code)
	}
	badAZ := filepath.Join(dir, "bad-az.yml")
	raw, _ := os.ReadFile(cloud)
	os.WriteFile(badAZ, []byte(strings.Replace(string(raw), "azs:\n- name: z1\n", "azs:\n- name: z1\n  cpi: gcp\n", 1)), 0o600)
	if !strings.Contains(string(raw), "azs:\n- name: z1\n") {
		t.Fatalf("cloud config fixture changed shape:\n%s", raw)
	}
	if _, code := director(t, admin, "update-cloud-config", badAZ); code != cli.ExitUsage {
		t.Errorf("az naming an unknown cpi: exit %d, want 2", code)
	}
	if info := mustRun(t, ci, "info"); !strings.Contains(info, "ci (read)") {
		t.Errorf("info as ci:\n%s", info)
	}
	for _, secret := range []string{"admin-secret-0123456789", "ci-secret-9876543210"} {
		if strings.Contains(logs.String(), secret) || strings.Contains(out.String(), secret) {
			t.Errorf("a token appears in the director's output")
		}
	}
}
