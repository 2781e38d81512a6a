package deploy

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/compleat/compleat/director/store"
)

func storedNames(t *testing.T, st *store.Store) string {
	t.Helper()
	var names []string
	st.View(func(tx *store.Tx) error {
		vs, err := tx.VariableNames()
		for _, x := range vs {
			names = append(names, x.Name)
		}
		return err
	})
	return strings.Join(names, ",")
}

func TestEveryDeclaredVariableIsGenerated(t *testing.T) {
	st := openStore(t)
	rc := []byte("variables:\n- name: addon_pw\n  type: password\n")
	v, _ := newVariables(st, "app", []byte(varsManifest), true, rc)
	if err := v.GenerateAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := storedNames(t, st); got != "/app/addon_pw,/app/admin_password,/app/app_ca,/app/app_tls" {
		t.Errorf("stored %s", got)
	}
}

const convergeManifest = `name: app
variables:
- name: pw
  type: password
  options: {length: LEN}
  update_mode: MODE
- name: ca
  type: certificate
  options: {is_ca: true, common_name: CA_CN}
  update_mode: converge
- name: tls
  type: certificate
  options: {ca: ca, common_name: svc}
`

func deployVars(t *testing.T, st *store.Store, doc string) map[string]any {
	t.Helper()
	v, _ := newVariables(st, "app", []byte(doc), true)
	if err := v.GenerateAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	out := map[string]any{}
	for _, n := range v.Declared() {
		out[n], _, _ = v.Get(context.Background(), n)
	}
	return out
}

func TestConvergeRegeneratesWhenOptionsChange(t *testing.T) {
	st := openStore(t)
	doc := func(length, mode, cn string) string {
		return strings.NewReplacer("LEN", length, "MODE", mode, "CA_CN", cn).Replace(convergeManifest)
	}
	first := deployVars(t, st, doc("12", "converge", "ca-1"))
	if len(first["pw"].(string)) != 12 {
		t.Fatalf("pw %q", first["pw"])
	}
	same := deployVars(t, st, doc("12", "converge", "ca-1"))
	if same["pw"] != first["pw"] || fmtCert(same["tls"]) != fmtCert(first["tls"]) {
		t.Error("unchanged options regenerated a value")
	}
	// no-overwrite keeps the value although the options changed.
	kept := deployVars(t, st, doc("16", "no-overwrite", "ca-1"))
	if kept["pw"] != first["pw"] {
		t.Error("a no-overwrite variable was regenerated")
	}
	conv := deployVars(t, st, doc("16", "converge", "ca-1"))
	if len(conv["pw"].(string)) != 16 {
		t.Errorf("converge kept %q", conv["pw"])
	}
	// A converged CA takes the certificates it signs with it.
	rot := deployVars(t, st, doc("16", "converge", "ca-2"))
	if fmtCert(rot["ca"]) == fmtCert(conv["ca"]) {
		t.Fatal("the CA was not regenerated")
	}
	tls := rot["tls"].(map[string]any)
	if tls["ca"] != rot["ca"].(map[string]any)["certificate"] || fmtCert(rot["tls"]) == fmtCert(conv["tls"]) {
		t.Error("the certificate signed by the old CA was kept")
	}
}

func TestRegenerateTakesSignedCertificates(t *testing.T) {
	st := openStore(t)
	doc := strings.NewReplacer("LEN", "12", "MODE", "no-overwrite", "CA_CN", "ca").Replace(convergeManifest)
	before := deployVars(t, st, doc)
	v, _ := newVariables(st, "app", []byte(doc), true)
	if err := v.Regenerate(context.Background(), "ca"); err != nil {
		t.Fatal(err)
	}
	after := deployVars(t, st, doc)
	if fmtCert(after["ca"]) == fmtCert(before["ca"]) || fmtCert(after["tls"]) == fmtCert(before["tls"]) || after["pw"] != before["pw"] {
		t.Error("regenerating the CA did not renew it and its certificate alone")
	}
	if err := v.Regenerate(context.Background(), "nobody"); err == nil {
		t.Error("regenerated an undeclared variable")
	}
}

func fmtCert(v any) string {
	m, _ := v.(map[string]any)
	s, _ := m["certificate"].(string)
	return s
}

func TestOptionsTakeGivenValues(t *testing.T) {
	st := openStore(t)
	doc := `name: app
variables:
- {name: ca, type: certificate, options: {is_ca: true, common_name: ca}}
- name: tls
  type: certificate
  update_mode: converge
  options: {ca: ca, common_name: ((domain)), alternative_names: ["((domain))", "*.((domain))"]}
`
	gen := func(domain string, given bool) string {
		v, _ := newVariables(st, "app", []byte(doc), true)
		if given {
			v.given = map[string]any{"domain": domain}
		}
		if err := v.GenerateAll(context.Background()); err != nil {
			t.Fatal(err)
		}
		val, _, _ := v.Get(context.Background(), "tls")
		b, _ := pem.Decode([]byte(fmtCert(val)))
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c.Subject.CommonName + " " + strings.Join(c.DNSNames, ",")
	}
	if got := gen("a.example", true); got != "a.example a.example,*.a.example" {
		t.Errorf("certificate for %s", got)
	}
	if got := gen("", false); got != "a.example a.example,*.a.example" {
		t.Errorf("without -v, the stored domain: %s", got)
	}
	if got := gen("b.example", true); got != "b.example b.example,*.b.example" {
		t.Errorf("converge after the domain changed: %s", got)
	}
}
