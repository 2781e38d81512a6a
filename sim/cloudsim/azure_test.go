package cloudsim

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cloudsim azure refuses a bad command line, then serves: cloud.env holds
// the AZURE_* variables and the CA, with which a plain HTTPS client takes
// a token and lists the subscription's VMs as on Azure; on interrupt it
// stops and removes the files that name it.
func TestAzure(t *testing.T) {
	agent := filepath.Join(t.TempDir(), "agent")
	os.WriteFile(agent, []byte("#!/bin/sh\n"), 0o755)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"azure", "--data", t.TempDir(), "--agent", agent, "--zones", "4"}, "--zones 4"},
		{[]string{"azure", "--data", t.TempDir(), "--agent", agent, "--listen", "0.0.0.0:8443"}, "want a loopback address"},
	} {
		var stdout, stderr bytes.Buffer
		if code := Main(context.Background(), tc.args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("cloudsim %v: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr.String(), tc.want)
		}
	}

	data := t.TempDir()
	env := filepath.Join(data, "cloud.env")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var stdout, stderr bytes.Buffer
	go func() {
		done <- Run(ctx, []string{"azure", "--data", data, "--agent", agent, "--log-level", "warn"}, &stdout, &stderr)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(env); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("cloudsim azure exited: %v\n%s", err, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("cloudsim azure not ready within 20s")
		}
	}
	out, err := exec.Command("sh", "-c", `. "$0" && printf '%s\n' "$AZURE_TENANT_ID" "$AZURE_CLIENT_ID" "$AZURE_CLIENT_SECRET" "$AZURE_AUTHORITY_HOST" "$AZURE_SUBSCRIPTION_ID" "$AZURE_RESOURCE_MANAGER_ENDPOINT" "$REQUESTS_CA_BUNDLE" "$SSL_CERT_FILE"`, env).Output()
	if err != nil {
		t.Fatal(err)
	}
	v := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(v) != 8 || v[6] != v[7] || v[3] != v[5] || !strings.HasPrefix(v[3], "https://127.0.0.1:") {
		t.Fatalf("cloud.env values %q", v)
	}
	pem, err := os.ReadFile(v[6])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	resp, err := client.PostForm(v[3]+v[0]+"/oauth2/v2.0/token", url.Values{
		"grant_type": {"client_credentials"}, "client_id": {v[1]}, "client_secret": {v[2]}, "scope": {"https://management.azure.com/.default"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	req, _ := http.NewRequest(http.MethodGet, v[5]+"subscriptions/"+v[4]+"/providers/Microsoft.Compute/virtualMachines?api-version=2024-07-01", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Value []any `json:"value"`
	}
	json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if resp.StatusCode != 200 || list.Value == nil {
		t.Errorf("list VMs: %d %+v", resp.StatusCode, list)
	}
	if fi, err := os.Stat(filepath.Join(data, "azure-vars.yml")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("azure-vars.yml: %v %v, want mode 0600", fi, err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("cloudsim azure on interrupt: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("cloudsim azure did not stop within 30s")
	}
	for _, f := range []string{env, filepath.Join(data, "azure-vars.yml")} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s left after stop: %v", f, err)
		}
	}
}
