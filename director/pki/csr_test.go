package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"strings"
	"testing"
)

func csrPEM(t *testing.T, key any, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestSignCSR(t *testing.T) {
	t.Parallel()
	ca, err := NewCA("test ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good := csrPEM(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "agent-1"}})
	cert, certPEM, err := ca.SignCSR(good, "agent-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "agent-1" || IsBootstrap(cert) || len(certPEM) == 0 {
		t.Errorf("signed %v (bootstrap %v)", cert.Subject, IsBootstrap(cert))
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		t.Error("the certificate is not for the request's key")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("verify: %v", err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	tampered := []byte(strings.Replace(string(good), "A", "B", 1))
	for name, tc := range map[string]struct {
		csr  []byte
		want string
	}{
		"another agent's name": {good, "is not the agent's"},
		"more than a name":     {csrPEM(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "agent-2", Organization: []string{"x"}}}), "more than its common name"},
		"a SAN":                {csrPEM(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "agent-2"}, DNSNames: []string{"director"}}), "more than its common name"},
		"another curve":        {csrPEM(t, p384, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "agent-2"}}), "want P-256"},
		"not PEM":              {[]byte("hello"), "no PEM"},
		"too big":              {make([]byte, MaxCSR+1), "more than"},
		"tampered":             {tampered, ""},
	} {
		if _, _, err := ca.SignCSR(tc.csr, "agent-2", 0); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, tc.want)
		}
	}
	boot, err := ca.IssueBootstrap("agent-3")
	if err != nil || !IsBootstrap(boot.Cert) || boot.Cert.NotAfter.Sub(boot.Cert.NotBefore) > BootstrapValidity+clockSkew {
		t.Errorf("bootstrap certificate: %v %v", err, boot.Cert.Subject)
	}
}
