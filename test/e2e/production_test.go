package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/compleat/compleat/director/pki"
	"github.com/compleat/compleat/test/testbin"
)

// TestProductionFromTheDocs starts `director serve --config` from the
// example of docs/operations.md ("Production on one machine"), changed only
// in its ports and directories: the API and the bus listen on every
// interface and are advertised by 127.0.0.1, the local CPI makes the VMs.
// The web sample deploys through it and the lb answers. Then the director
// is restarted with an API certificate of the operator's (tls.cert_file,
// signed by a CA of its own, tls.ca_file): a recreated VM's agent fetches
// its jobs over it, so agents are given what signed it.
func TestProductionFromTheDocs(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a production director, agents and the local CPI, and compiles releases/web")
	}
	doc, err := os.ReadFile(filepath.Join(repoRoot(), "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	example := yamlBlockAfter(t, string(doc), "### Production on one machine")
	bin := binaries(t)
	work := t.TempDir()
	etc, lib := filepath.Join(work, "etc"), filepath.Join(work, "lib")
	os.MkdirAll(etc, 0o700)
	t.Cleanup(func() { killAgents(filepath.Join(lib, "cpi")) })
	apiPort, busPort := freePort(t), freePort(t)
	prefix := fmt.Sprintf("127.%d.", 100+(os.Getpid()+53)%100)
	cfg := strings.NewReplacer(":25555", fmt.Sprintf(":%d", apiPort), ":4222", fmt.Sprintf(":%d", busPort),
		"/var/lib/compleat", lib, "/etc/compleat", etc, "127.77.", prefix).Replace(example)
	if !strings.Contains(cfg, "listen: 0.0.0.0:") || !strings.Contains(cfg, "advertise: https://127.0.0.1:") {
		t.Fatalf("the documented example changed shape:\n%s", example)
	}
	token := "prod-admin-token-0123456789abcdef"
	writeFile(t, filepath.Join(etc, "admin.token"), token+"\n")
	file := filepath.Join(etc, "director.yml")
	writeFile(t, file, cfg)

	target := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	d := startProduction(t, bin, file, target, token, filepath.Join(lib, "ca.pem"))
	t.Cleanup(func() {
		if !t.Failed() {
			return // the test deleted the deployment
		}
		if out, err := d.command("-n", "-d", "web", "delete-deployment", "--force").CombinedOutput(); err != nil {
			t.Logf("cleanup: delete-deployment: %v\n%s", err, out)
		}
	})
	stemcell := filepath.Join(work, "local.tgz")
	if out, err := exec.Command(filepath.Join(bin, "director"), "create-stemcell", "--agent", filepath.Join(bin, "agent"), "--tarball", stemcell).CombinedOutput(); err != nil {
		t.Fatalf("create-stemcell: %v\n%s", err, out)
	}
	d.run("-n", "upload-release", "releases/web")
	d.run("-n", "upload-stemcell", stemcell)
	moved := func(name string) string {
		raw, err := os.ReadFile(filepath.Join(repoRoot(), "manifests", "local", name))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(work, name)
		writeFile(t, p, strings.ReplaceAll(string(raw), "127.77.", prefix))
		return p
	}
	d.run("-n", "update-cloud-config", moved("cloud-config.yml"))
	lbAddr = prefix + "1.10:8080"
	d.deploy(moved("web.yml"))
	lbAnswers(t, "v1", 2)

	// The operator's certificate for the API and the blob URLs.
	opCA, err := pki.NewCA("operator ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := opCA.IssueServer([]string{"127.0.0.1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(etc, "tls.crt"), string(leaf.CertPEM))
	writeFile(t, filepath.Join(etc, "tls.key"), string(leaf.KeyPEM))
	writeFile(t, filepath.Join(etc, "tls-ca.crt"), string(opCA.CertPEM()))
	writeFile(t, file, strings.Replace(cfg, "data_dir:", fmt.Sprintf("tls:\n  cert_file: %s\n  key_file: %s\n  ca_file: %s\ndata_dir:",
		filepath.Join(etc, "tls.crt"), filepath.Join(etc, "tls.key"), filepath.Join(etc, "tls-ca.crt")), 1))
	d.stop(syscall.SIGTERM)
	d = startProduction(t, bin, file, target, token, filepath.Join(etc, "tls-ca.crt"))
	// The agents reconnect to the restarted bus with a backoff: wait until
	// every one answers again.
	for deadline := time.Now().Add(60 * time.Second); ; {
		out, err := d.command("-d", "web", "instances", "--ps", "--json").CombinedOutput()
		if err == nil && !strings.Contains(string(out), "agent_error") && strings.Count(string(out), `"job_state": "running"`) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agents did not come back after the restart:\n%s", out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	d.run("-n", "-d", "web", "recreate", "web/0")
	lbAnswers(t, "v1", 2)
	d.run("-n", "-d", "web", "delete-deployment")
}

// startProduction starts `director serve --config file` and waits until its
// API answers at target.
func startProduction(t *testing.T, bin, file, target, token, caCert string) *director {
	t.Helper()
	p := testbin.Start(t, filepath.Join(bin, "director"), []string{"serve", "--config", file}, func(logs string) bool {
		return strings.Contains(logs, "director ready") || strings.Contains(logs, "Director ready")
	})
	d := &director{t: t, bin: bin, proc: p, logs: p.Logs, cmd: p.Cmd, done: p.Done,
		env: map[string]string{"DIRECTOR_TARGET": target, "DIRECTOR_TOKEN": token, "DIRECTOR_CA_CERT": caCert}}
	t.Cleanup(func() { d.stop(syscall.SIGTERM) })
	return d
}

// yamlBlockAfter is the first ```yaml block after heading in a markdown
// text.
func yamlBlockAfter(t *testing.T, doc, heading string) string {
	t.Helper()
	i := strings.Index(doc, heading)
	if i < 0 {
		t.Fatalf("no %q in the docs", heading)
	}
	rest := doc[i:]
	start := strings.Index(rest, "```yaml\n")
	if start < 0 {
		t.Fatalf("no yaml block after %q", heading)
	}
	rest = rest[start+len("```yaml\n"):]
	end := strings.Index(rest, "```")
	if end < 0 {
		t.Fatalf("unterminated yaml block after %q", heading)
	}
	return rest[:end]
}

func freePort(t *testing.T) int { return testbin.FreePort(t) }

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
