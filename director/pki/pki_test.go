package pki_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/compleat/compleat/director/pki"
)

func newCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA("test ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestCARoundTripPEM(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := pki.LoadCA(ca.CertPEM(), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(ca.Cert) || !loaded.Key.Equal(ca.Key) {
		t.Fatal("loaded ca differs from the original")
	}
	other := newCA(t)
	if _, err := pki.LoadCA(ca.CertPEM(), mustKeyPEM(t, other)); err == nil {
		t.Fatal("LoadCA accepted a key that does not match the certificate")
	}
	leaf, err := ca.IssueClient("a", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.LoadCA(leaf.CertPEM, leaf.KeyPEM); err == nil {
		t.Fatal("LoadCA accepted a leaf certificate")
	}
}

func mustKeyPEM(t *testing.T, ca *pki.CA) []byte {
	k, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	if _, err := pki.DecodeCertificate([]byte("garbage")); !errors.Is(err, pki.ErrNoPEM) {
		t.Fatalf("DecodeCertificate(garbage) = %v, want ErrNoPEM", err)
	}
	if _, err := pki.DecodePrivateKey([]byte("garbage")); !errors.Is(err, pki.ErrNoPEM) {
		t.Fatalf("DecodePrivateKey(garbage) = %v, want ErrNoPEM", err)
	}
	if _, err := pki.CertPool(nil); err == nil {
		t.Fatal("CertPool(nil) succeeded")
	}
}

func TestClientCertificateIdentityAndUsage(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	kp, err := ca.IssueClient("agent-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := pki.DecodeCertificate(kp.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject.CommonName != "agent-1" {
		t.Fatalf("CN = %q", c.Subject.CommonName)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("verify client cert: %v", err)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Fatal("client certificate verified for server auth")
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: newCA(t).Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Fatal("client certificate verified against another ca")
	}
	if _, err := ca.IssueClient("", 0); err == nil {
		t.Fatal("empty common name accepted")
	}
}

func TestBootstrapIsShortLived(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	kp, err := ca.IssueBootstrap("agent-2")
	if err != nil {
		t.Fatal(err)
	}
	if life := time.Until(kp.Cert.NotAfter); life > pki.BootstrapValidity || life < pki.BootstrapValidity-time.Minute {
		t.Fatalf("bootstrap certificate lives %v, want about %v", life, pki.BootstrapValidity)
	}
}

// TestMutualTLS runs a real TLS handshake on loopback with a server
// certificate for 127.0.0.1 and a client certificate, both from the CA.
func TestMutualTLS(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	srv, err := ca.IssueServer([]string{"127.0.0.1", "localhost"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca.IssueClient(pki.DirectorCN, 0)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := pki.X509KeyPair(srv.CertPEM, srv.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{pair},
		ClientCAs:    ca.Pool(),
		ClientAuth:   tls.RequireAndVerifyClientCert,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	gotCN := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			gotCN <- ""
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			gotCN <- "handshake: " + err.Error()
			return
		}
		gotCN <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
		io.Copy(io.Discard, c)
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{
		RootCAs:      ca.Pool(),
		Certificates: []tls.Certificate{cli.TLSCertificate()},
	})
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if cn := <-gotCN; cn != pki.DirectorCN {
		t.Fatalf("server saw CN %q, want %q", cn, pki.DirectorCN)
	}
	host, _, _ := net.SplitHostPort(ln.Addr().String())
	if _, err := srv.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: host}); err != nil {
		t.Fatalf("server cert does not verify for %s: %v", host, err)
	}
	if err := srv.Cert.VerifyHostname("localhost"); err != nil {
		t.Fatal(err)
	}
}
