package manifest

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestVarsStoreGeneratesDeclaredVariablesOnce(t *testing.T) {
	t.Parallel()
	doc := []byte(`name: app
properties:
  pw: ((admin_password))
  given: ((host))
variables:
- {name: admin_password, type: password, options: {length: 40}}
- {name: unused_key, type: ssh}
- {name: ca, type: certificate, options: {is_ca: true, common_name: ca}}
- {name: tls, type: certificate, options: {ca: ca, common_name: app, alternative_names: [127.0.0.1], extended_key_usage: [client_auth]}}
`)
	path := filepath.Join(t.TempDir(), "creds.yml")
	run := func() string {
		t.Helper()
		s, err := OpenVarsStore(path, doc)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.GenerateAll(); err != nil {
			t.Fatal(err)
		}
		if err := s.Save(); err != nil {
			t.Fatal(err)
		}
		out, err := Interpolate(context.Background(), "m.yml", doc, LoadOptions{Vars: []string{"host=h.example"}, Source: s, Strict: true})
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	first := run()
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("vars store: %v mode %v, want 0600", err, st.Mode())
	}
	var stored map[string]any
	raw, _ := os.ReadFile(path)
	if err := yaml.Unmarshal(raw, &stored); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"admin_password", "unused_key", "ca", "tls"} {
		if stored[n] == nil {
			t.Errorf("the store lacks %s", n)
		}
	}
	if len(stored["admin_password"].(string)) != 40 || !strings.Contains(first, "given: h.example") {
		t.Errorf("interpolated:\n%s", first)
	}
	cert := func(name string) *x509.Certificate {
		b, _ := pem.Decode([]byte(stored[name].(map[string]any)["certificate"].(string)))
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert("ca"))
	if _, err := cert("tls").Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("tls does not chain to ca for client auth: %v", err)
	}
	if again := run(); again != first {
		t.Error("a second interpolate with the same store changed values")
	}
}
