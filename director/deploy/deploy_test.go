package deploy

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/compleat/compleat/director/manifest"
	"github.com/compleat/compleat/director/store"
)

func TestRedactedDiffShowsWhereNotWhat(t *testing.T) {
	prev := `name: web
instance_groups:
- name: web
  instances: 2
  jobs:
  - name: web
    properties:
      password: hunter2
      port: 8080
`
	next := strings.Replace(strings.Replace(prev, "hunter2", "swordfish", 1), "instances: 2", "instances: 3", 1)
	diff := redactedDiff(prev, next)
	for _, secret := range []string{"hunter2", "swordfish", "8080"} {
		if strings.Contains(diff, secret) {
			t.Errorf("diff shows %q:\n%s", secret, diff)
		}
	}
	for _, want := range []string{"- instances: 2", "+ instances: 3", "+ password: " + redactedChanged} {
		if !strings.Contains(strings.ReplaceAll(diff, "  ", ""), strings.ReplaceAll(want, "  ", "")) {
			t.Errorf("diff lacks %q:\n%s", want, diff)
		}
	}
	if strings.Contains(diff, "port: "+redactedChanged) {
		t.Errorf("an unchanged property reads as changed:\n%s", diff)
	}
	if d := redactedDiff(next, next); d != "" {
		t.Errorf("diff of a manifest with itself:\n%s", d)
	}
	if d := redactedDiff("", next); !strings.Contains(d, "+ name: web") || strings.Contains(d, "swordfish") {
		t.Errorf("first deploy diff:\n%s", d)
	}
}

func TestLineDiffContext(t *testing.T) {
	a := "1\n2\n3\n4\n5\n6\n7\n8\n9\n"
	b := "1\n2\n3\n4\nfive\n6\n7\n8\n9\n"
	got := lineDiff(a, b)
	want := "  3\n  4\n- 5\n+ five\n  6\n  7\n"
	if got != want {
		t.Errorf("lineDiff:\n%s\nwant:\n%s", got, want)
	}
}

func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "state.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

const varsManifest = `name: app
variables:
- name: admin_password
  type: password
- name: app_ca
  type: certificate
  options: {is_ca: true, common_name: app-ca}
- name: app_tls
  type: certificate
  options: {ca: app_ca, common_name: app.example, alternative_names: [127.0.0.1]}
`

func TestVariablesGeneratedOnceAndStoredSealed(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	v, err := newVariables(st, "app", []byte(varsManifest), true)
	if err != nil {
		t.Fatal(err)
	}
	pw, ok, err := v.Get(ctx, "admin_password")
	if err != nil || !ok || len(pw.(string)) != 20 {
		t.Fatalf("password: %v %v %v", pw, ok, err)
	}
	tls, ok, err := v.Get(ctx, "app_tls")
	if err != nil || !ok {
		t.Fatalf("certificate: %v %v", ok, err)
	}
	m := tls.(map[string]any)
	block, _ := pem.Decode([]byte(m["certificate"].(string)))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	caBlock, _ := pem.Decode([]byte(m["ca"].(string)))
	ca, err := x509.ParseCertificate(caBlock.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.CheckSignatureFrom(ca); err != nil || ca.Subject.CommonName != "app-ca" {
		t.Errorf("certificate not signed by the app_ca variable (%s): %v", ca.Subject.CommonName, err)
	}
	if _, ok, _ := v.Get(ctx, "undeclared"); ok {
		t.Error("an undeclared variable resolved")
	}

	// A later deploy reads the same values back.
	again, _ := newVariables(st, "app", []byte(varsManifest), true)
	pw2, _, _ := again.Get(ctx, "admin_password")
	if pw2 != pw {
		t.Error("the password changed between deploys")
	}
	var names []string
	st.View(func(tx *store.Tx) error {
		vs, err := tx.VariableNames()
		for _, x := range vs {
			names = append(names, x.Name)
		}
		return err
	})
	if strings.Join(names, ",") != "/app/admin_password,/app/app_ca,/app/app_tls" {
		t.Errorf("stored variables %v", names)
	}

	// A dry run generates in memory only.
	dry, _ := newVariables(st, "other", []byte(strings.Replace(varsManifest, "name: app\n", "name: other\n", 1)), false)
	if _, ok, err := dry.Get(ctx, "admin_password"); !ok || err != nil {
		t.Fatalf("dry run: %v %v", ok, err)
	}
	st.View(func(tx *store.Tx) error {
		if _, err := tx.Variable("/other/admin_password"); err == nil {
			t.Error("a dry run stored a variable")
		}
		return nil
	})
}

func TestVariablesInterpolateIntoTheManifest(t *testing.T) {
	st := openStore(t)
	doc := varsManifest + `properties:
  password: ((admin_password))
  cert: ((app_tls.certificate))
  given: ((from_cli))
`
	v, err := newVariables(st, "app", []byte(doc), true)
	if err != nil {
		t.Fatal(err)
	}
	out, err := manifest.Interpolate(context.Background(), "manifest.yml", []byte(doc), manifest.LoadOptions{Source: v, Vars: []string{"from_cli=x"}, Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "BEGIN CERTIFICATE") || !strings.Contains(string(out), "given: x") || strings.Contains(string(out), "((") {
		t.Errorf("interpolated manifest:\n%s", out)
	}
	if _, err := manifest.Interpolate(context.Background(), "manifest.yml", []byte(doc+"  missing: ((nobody))\n"), manifest.LoadOptions{Source: v, Vars: []string{"from_cli=x"}, Strict: true}); err == nil || !strings.Contains(err.Error(), "nobody") {
		t.Errorf("an undeclared, unset variable: %v", err)
	}
}

const keysManifest = `name: app
variables:
- name: signing
  type: rsa
- name: jumpbox
  type: ssh
`

func TestVariablesRSAAndSSHKeys(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "state.db")
	st, err := store.Open(dbPath, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	v, _ := newVariables(st, "app", []byte(keysManifest), true)

	val, ok, err := v.Get(ctx, "signing")
	if err != nil || !ok {
		t.Fatalf("rsa: %v %v", ok, err)
	}
	m := val.(map[string]any)
	if len(m) != 2 {
		t.Errorf("rsa keys: %v, want private_key and public_key", sortedKeys(m))
	}
	block, _ := pem.Decode([]byte(m["private_key"].(string)))
	if block == nil || block.Type != "RSA PRIVATE KEY" {
		t.Fatalf("rsa private_key is not an RSA PRIVATE KEY PEM block")
	}
	priv, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil || priv.N.BitLen() != 2048 {
		t.Fatalf("rsa private_key: %v", err)
	}
	block, _ = pem.Decode([]byte(m["public_key"].(string)))
	if block == nil || block.Type != "PUBLIC KEY" {
		t.Fatalf("rsa public_key is not a PUBLIC KEY PEM block")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil || !priv.PublicKey.Equal(pub) {
		t.Errorf("rsa public_key is not the private key's: %v", err)
	}

	val, ok, err = v.Get(ctx, "jumpbox")
	if err != nil || !ok {
		t.Fatalf("ssh: %v %v", ok, err)
	}
	m = val.(map[string]any)
	if len(m) != 3 {
		t.Errorf("ssh keys: %v, want private_key, public_key and public_key_fingerprint", sortedKeys(m))
	}
	sshPriv, err := ssh.ParseRawPrivateKey([]byte(m["private_key"].(string)))
	if err != nil {
		t.Fatalf("ssh private_key: %v", err)
	}
	authorized, _, _, _, err := ssh.ParseAuthorizedKey([]byte(m["public_key"].(string)))
	if err != nil || !strings.HasPrefix(m["public_key"].(string), "ssh-rsa AAAA") {
		t.Fatalf("ssh public_key %q: %v", m["public_key"], err)
	}
	signer, err := ssh.NewSignerFromKey(sshPriv)
	if err != nil || !bytes.Equal(signer.PublicKey().Marshal(), authorized.Marshal()) {
		t.Errorf("ssh public_key is not the private key's: %v", err)
	}
	if got, want := m["public_key_fingerprint"], strings.TrimPrefix(ssh.FingerprintLegacyMD5(authorized), "MD5:"); got != want {
		t.Errorf("fingerprint %q, want %q", got, want)
	}

	// Stored sealed: the state file holds neither private key in clear.
	st.Close()
	raw, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"PRIVATE KEY", m["public_key"].(string)[8:40]} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("the state file holds %q in clear", secret)
		}
	}
}
