package variables

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"

	"golang.org/x/crypto/ssh"
)

func parseCert(t *testing.T, s string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(s))
	if b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("not a CERTIFICATE PEM block: %q", s)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func parseKey(t *testing.T, s string) *rsa.PrivateKey {
	t.Helper()
	b, _ := pem.Decode([]byte(s))
	if b == nil || b.Type != "RSA PRIVATE KEY" {
		t.Fatalf("not an RSA PRIVATE KEY PEM block")
	}
	k, err := x509.ParsePKCS1PrivateKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func gen(t *testing.T, spec Spec, cas map[string]map[string]any) map[string]any {
	t.Helper()
	v, err := Generate(spec, func(name string) (map[string]any, error) { return cas[name], nil })
	if err != nil {
		t.Fatalf("generate %s: %v", spec.Name, err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s: %T is not a map", spec.Name, v)
	}
	return m
}

func TestPasswordOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		options map[string]any
		length  int
		allowed func(rune) bool
		must    []func(rune) bool
	}{
		{"default", nil, DefaultPasswordLength, isAlnum, []func(rune) bool{unicode.IsLower, unicode.IsUpper, unicode.IsDigit}},
		{"length 32", map[string]any{"length": 32}, 32, isAlnum, nil},
		{"length 200", map[string]any{"length": 200}, 200, isAlnum, nil},
		{"exclude_upper", map[string]any{"exclude_upper": true}, 20, func(r rune) bool { return unicode.IsLower(r) || unicode.IsDigit(r) }, nil},
		{"exclude_lower", map[string]any{"exclude_lower": true, "length": 40}, 40, func(r rune) bool { return unicode.IsUpper(r) || unicode.IsDigit(r) }, nil},
		{"exclude_number", map[string]any{"exclude_number": true}, 20, unicode.IsLetter, nil},
		{"digits only", map[string]any{"exclude_upper": true, "exclude_lower": true, "length": 8}, 8, unicode.IsDigit, nil},
		{"include_special", map[string]any{"include_special": true, "length": 64}, 64, func(r rune) bool { return r > ' ' && r < 127 }, []func(rune) bool{isSpecial}},
		{"exclude_special wins", map[string]any{"include_special": true, "exclude_special": true}, 20, isAlnum, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := Generate(Spec{Name: "pw", Type: Password, Options: tc.options}, nil)
			if err != nil {
				t.Fatal(err)
			}
			s := v.(string)
			if len(s) != tc.length {
				t.Errorf("length %d, want %d", len(s), tc.length)
			}
			for _, r := range s {
				if !tc.allowed(r) {
					t.Errorf("%q holds %q", s, r)
				}
			}
			for _, f := range tc.must {
				if !strings.ContainsFunc(s, f) {
					t.Errorf("%q lacks a class it must hold", s)
				}
			}
		})
	}
}

func isAlnum(r rune) bool { return r < 127 && (unicode.IsLetter(r) || unicode.IsDigit(r)) }
func isSpecial(r rune) bool {
	return r > ' ' && r < 127 && !unicode.IsLetter(r) && !unicode.IsDigit(r)
}

func TestKeyLengths(t *testing.T) {
	t.Parallel()
	for _, bits := range []int{2048, 3072, 4096} {
		for _, typ := range []string{RSA, SSH} {
			m := gen(t, Spec{Name: "k", Type: typ, Options: map[string]any{"key_length": bits}}, nil)
			if k := parseKey(t, m["private_key"].(string)); k.N.BitLen() != bits {
				t.Errorf("%s key_length %d: %d bits", typ, bits, k.N.BitLen())
			}
		}
	}
	m := gen(t, Spec{Name: "k", Type: RSA}, nil)
	if len(m) != 2 || parseKey(t, m["private_key"].(string)).N.BitLen() != DefaultKeyLength {
		t.Errorf("rsa default: keys %v", keys(m))
	}
	b, _ := pem.Decode([]byte(m["public_key"].(string)))
	if b == nil || b.Type != "PUBLIC KEY" {
		t.Fatal("rsa public_key is not a PUBLIC KEY PEM block")
	}
	if _, err := x509.ParsePKIXPublicKey(b.Bytes); err != nil {
		t.Fatal(err)
	}
}

func TestSSHShape(t *testing.T) {
	t.Parallel()
	m := gen(t, Spec{Name: "jump", Type: SSH}, nil)
	if len(m) != 3 {
		t.Fatalf("ssh keys %v", keys(m))
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(m["public_key"].(string)))
	if err != nil || pub.Type() != "ssh-rsa" {
		t.Fatalf("public_key: %v", err)
	}
	if ssh.FingerprintLegacyMD5(pub) != m["public_key_fingerprint"] {
		t.Errorf("fingerprint %v is not the public key's", m["public_key_fingerprint"])
	}
	signer, err := ssh.ParsePrivateKey([]byte(m["private_key"].(string)))
	if err != nil {
		t.Fatal(err)
	}
	if string(signer.PublicKey().Marshal()) != string(pub.Marshal()) {
		t.Error("private and public keys do not match")
	}
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestCertificateOptions checks each certificate option with crypto/x509.
func TestCertificateOptions(t *testing.T) {
	t.Parallel()
	root := gen(t, Spec{Name: "root_ca", Type: Certificate, Options: map[string]any{"is_ca": true, "common_name": "Root", "organization": "Acme", "duration": 3650}}, nil)
	inter := gen(t, Spec{Name: "inter_ca", Type: Certificate, Options: map[string]any{"is_ca": true, "ca": "root_ca", "common_name": "Inter"}}, map[string]map[string]any{"root_ca": root})
	cas := map[string]map[string]any{"root_ca": root, "inter_ca": inter}
	rootCert := parseCert(t, root["certificate"].(string))
	if !rootCert.IsCA || rootCert.Subject.CommonName != "Root" || rootCert.KeyUsage&x509.KeyUsageCertSign == 0 || root["ca"] != root["certificate"] {
		t.Errorf("root CA: is_ca %v cn %q usage %v", rootCert.IsCA, rootCert.Subject.CommonName, rootCert.KeyUsage)
	}
	if got := rootCert.Subject.Organization; len(got) != 1 || got[0] != "Acme" {
		t.Errorf("organization %v", got)
	}
	if inter["ca"] != root["certificate"] || !parseCert(t, inter["certificate"].(string)).IsCA {
		t.Error("the intermediate CA's ca is not the root's certificate, or it is no CA")
	}

	for _, tc := range []struct {
		name    string
		options map[string]any
		check   func(t *testing.T, c *x509.Certificate)
	}{
		{"common_name", map[string]any{"ca": "root_ca", "common_name": "svc.internal"}, func(t *testing.T, c *x509.Certificate) {
			if c.Subject.CommonName != "svc.internal" || c.IsCA {
				t.Errorf("cn %q ca %v", c.Subject.CommonName, c.IsCA)
			}
		}},
		{"alternative_names", map[string]any{"ca": "root_ca", "common_name": "svc", "alternative_names": []any{"a.example", "*.b.example", "127.0.0.7", "::1"}}, func(t *testing.T, c *x509.Certificate) {
			if strings.Join(c.DNSNames, ",") != "a.example,*.b.example" {
				t.Errorf("DNS SANs %v", c.DNSNames)
			}
			if len(c.IPAddresses) != 2 || !c.IPAddresses[0].Equal(net.ParseIP("127.0.0.7")) || !c.IPAddresses[1].Equal(net.IPv6loopback) {
				t.Errorf("IP SANs %v", c.IPAddresses)
			}
			if err := c.VerifyHostname("127.0.0.7"); err != nil {
				t.Error(err)
			}
		}},
		{"extended_key_usage client_auth", map[string]any{"ca": "root_ca", "common_name": "client", "extended_key_usage": []any{"client_auth"}}, func(t *testing.T, c *x509.Certificate) {
			if len(c.ExtKeyUsage) != 1 || c.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
				t.Errorf("eku %v", c.ExtKeyUsage)
			}
		}},
		{"extended_key_usage both", map[string]any{"ca": "root_ca", "common_name": "both", "extended_key_usage": []any{"server_auth", "client_auth"}}, func(t *testing.T, c *x509.Certificate) {
			if len(c.ExtKeyUsage) != 2 {
				t.Errorf("eku %v", c.ExtKeyUsage)
			}
		}},
		{"key_usage", map[string]any{"ca": "root_ca", "common_name": "ku", "key_usage": []any{"digital_signature", "key_agreement", "non_repudiation"}}, func(t *testing.T, c *x509.Certificate) {
			want := x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement | x509.KeyUsageContentCommitment
			if c.KeyUsage != want {
				t.Errorf("key usage %b, want %b", c.KeyUsage, want)
			}
		}},
		{"duration", map[string]any{"ca": "root_ca", "common_name": "short", "duration": 30}, func(t *testing.T, c *x509.Certificate) {
			if d := c.NotAfter.Sub(c.NotBefore); d < 30*24*time.Hour || d > 30*24*time.Hour+time.Hour {
				t.Errorf("valid for %v, want 30 days", d)
			}
		}},
		{"default duration", map[string]any{"ca": "root_ca", "common_name": "year"}, func(t *testing.T, c *x509.Certificate) {
			if d := c.NotAfter.Sub(c.NotBefore); d < 365*24*time.Hour || d > 366*24*time.Hour {
				t.Errorf("valid for %v, want 365 days", d)
			}
		}},
		{"key_length 4096", map[string]any{"ca": "root_ca", "common_name": "big", "key_length": 4096}, func(t *testing.T, c *x509.Certificate) {
			if k, ok := c.PublicKey.(*rsa.PublicKey); !ok || k.N.BitLen() != 4096 {
				t.Errorf("public key %T", c.PublicKey)
			}
		}},
		{"subject", map[string]any{"ca": "root_ca", "common_name": "s", "organization": "O", "organization_unit": "OU", "country": "NZ", "state": "Otago", "locality": "Dunedin"}, func(t *testing.T, c *x509.Certificate) {
			if got := c.Subject.String(); got != "CN=s,OU=OU,O=O,L=Dunedin,ST=Otago,C=NZ" {
				t.Errorf("subject %s", got)
			}
		}},
		{"signed by intermediate", map[string]any{"ca": "inter_ca", "common_name": "leaf", "extended_key_usage": []any{"client_auth"}}, func(t *testing.T, c *x509.Certificate) {
			if c.Issuer.CommonName != "Inter" {
				t.Errorf("issuer %s", c.Issuer)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := gen(t, Spec{Name: "leaf", Type: Certificate, Options: tc.options}, cas)
			c := parseCert(t, m["certificate"].(string))
			tc.check(t, c)
			if k := parseKey(t, m["private_key"].(string)); !k.PublicKey.Equal(c.PublicKey) {
				t.Error("private_key does not match the certificate")
			}
			caName := tc.options["ca"].(string)
			if m["ca"] != cas[caName]["certificate"] {
				t.Error("ca is not the signing CA's certificate")
			}
			roots := x509.NewCertPool()
			roots.AddCert(rootCert)
			inters := x509.NewCertPool()
			inters.AddCert(parseCert(t, inter["certificate"].(string)))
			if _, err := c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				t.Errorf("chain: %v", err)
			}
		})
	}
}

// TestChainWithOpenSSL verifies client and server certificates as a TLS
// peer would, with openssl verify -purpose: a client_auth certificate is
// good for sslclient and refused for sslserver.
func TestChainWithOpenSSL(t *testing.T) {
	t.Parallel()
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl is not installed")
	}
	root := gen(t, Spec{Name: "ca", Type: Certificate, Options: map[string]any{"is_ca": true, "common_name": "ca"}}, nil)
	cas := map[string]map[string]any{"ca": root}
	client := gen(t, Spec{Name: "c", Type: Certificate, Options: map[string]any{"ca": "ca", "common_name": "client", "extended_key_usage": []any{"client_auth"}}}, cas)
	server := gen(t, Spec{Name: "s", Type: Certificate, Options: map[string]any{"ca": "ca", "common_name": "server", "alternative_names": []any{"127.0.0.1"}, "extended_key_usage": []any{"server_auth"}}}, cas)
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile := write("ca.pem", root["certificate"].(string))
	verify := func(cert map[string]any, purpose string) error {
		out, err := exec.Command(openssl, "verify", "-purpose", purpose, "-CAfile", caFile, write(purpose+".pem", cert["certificate"].(string))).CombinedOutput()
		if err != nil {
			t.Logf("openssl: %s", out)
		}
		return err
	}
	if err := verify(client, "sslclient"); err != nil {
		t.Errorf("client_auth certificate fails -purpose sslclient: %v", err)
	}
	if err := verify(client, "sslserver"); err == nil {
		t.Error("a client_auth-only certificate passed -purpose sslserver")
	}
	if err := verify(server, "sslserver"); err != nil {
		t.Errorf("server_auth certificate fails -purpose sslserver: %v", err)
	}
}

func TestSelfSigned(t *testing.T) {
	t.Parallel()
	m := gen(t, Spec{Name: "self", Type: Certificate, Options: map[string]any{"self_sign": true, "common_name": "me"}}, nil)
	c := parseCert(t, m["certificate"].(string))
	if err := c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature); err != nil || m["ca"] != m["certificate"] {
		t.Errorf("not self-signed: %v", err)
	}
}

func TestNonsenseRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		spec Spec
		want string
	}{
		{Spec{Type: Password, Options: map[string]any{"exclude_upper": true, "exclude_lower": true, "exclude_number": true}}, "every character class"},
		{Spec{Type: Password, Options: map[string]any{"length": 0}}, "options.length"},
		{Spec{Type: RSA, Options: map[string]any{"key_length": 1024}}, "options.key_length"},
		{Spec{Type: Certificate, Options: map[string]any{"common_name": "x"}}, "needs a ca"},
		{Spec{Type: Certificate, Options: map[string]any{"ca": "c", "self_sign": true, "common_name": "x"}}, "exclude each other"},
		{Spec{Type: Certificate, Options: map[string]any{"ca": "c"}}, "common_name"},
		{Spec{Type: Certificate, Options: map[string]any{"ca": "c", "common_name": "x", "extended_key_usage": []any{"bogus"}}}, "extended_key_usage"},
		{Spec{Type: Certificate, Options: map[string]any{"ca": "c", "common_name": "x", "key_usage": []any{"bogus"}}}, "key_usage"},
		{Spec{Type: Certificate, Options: map[string]any{"ca": "c", "common_name": "x", "duration": 0}}, "duration"},
		{Spec{Type: Certificate, Options: map[string]any{"is_ca": true, "key_length": 1000}}, "key_length"},
	} {
		err := Check(tc.spec)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.spec.Options, err, tc.want)
		}
	}
}

func TestDigest(t *testing.T) {
	t.Parallel()
	a := Spec{Type: Password, Options: map[string]any{"length": 10, "exclude_upper": true}}
	b := Spec{Type: Password, Options: map[string]any{"exclude_upper": true, "length": 10}}
	c := Spec{Type: Password, Options: map[string]any{"length": 11, "exclude_upper": true}}
	if a.Digest() != b.Digest() || a.Digest() == c.Digest() || (Spec{Type: Password}).Digest() != (Spec{Type: Password, Options: map[string]any{}}).Digest() {
		t.Error("digests do not follow the options")
	}
}
