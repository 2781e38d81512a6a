// Package pki issues the certificates that secure the director's message bus
// and API: one certificate authority (ECDSA P-256), server certificates for
// loopback addresses and host names, and client certificates whose common name
// is the identity the bus authorises (an agent id, or DirectorCN for the
// director itself).
//
// Everything is PEM in, PEM out, so that certificates travel in agent settings
// and director state as text. Keys never leave the process except through
// KeyPEM, which callers must treat as a secret.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// DirectorCN is the common name of the director's own client certificate.
const DirectorCN = "director"

// Default validities.
const (
	CAValidity        = 10 * 365 * 24 * time.Hour
	CertValidity      = 2 * 365 * 24 * time.Hour
	BootstrapValidity = time.Hour
)

// clockSkew backdates NotBefore so that a certificate is valid at once on a
// machine whose clock runs a little behind.
const clockSkew = 5 * time.Minute

// ErrNoPEM is returned when a PEM input holds no block of the expected type.
var ErrNoPEM = errors.New("no PEM block found")

// CA is a certificate authority: its certificate and private key.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// KeyPair is an issued certificate with its private key, parsed and as PEM.
type KeyPair struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA creates a self-signed certificate authority named commonName, valid
// for validity (CAValidity when zero).
func NewCA(commonName string, validity time.Duration) (*CA, error) {
	if validity <= 0 {
		validity = CAValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ca key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"Compleat"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create ca certificate %q: %w", commonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse ca certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LoadCA parses a CA from its PEM certificate and key.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := DecodeCertificate(certPEM)
	if err != nil {
		return nil, fmt.Errorf("load ca certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("load ca certificate %q: not a ca", cert.Subject.CommonName)
	}
	key, err := DecodePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load ca key: %w", err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("load ca %q: key does not match certificate", cert.Subject.CommonName)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// CertPEM is the CA certificate in PEM form.
func (ca *CA) CertPEM() []byte { return EncodeCertificate(ca.Cert) }

// KeyPEM is the CA private key in PEM form. It is a secret.
func (ca *CA) KeyPEM() ([]byte, error) { return EncodePrivateKey(ca.Key) }

// Pool is a certificate pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// IssueServer issues a server certificate for hosts (IP addresses or DNS
// names), valid for validity (CertValidity when zero). The first host is the
// common name.
func (ca *CA) IssueServer(hosts []string, validity time.Duration) (*KeyPair, error) {
	if len(hosts) == 0 {
		return nil, errors.New("issue server certificate: no hosts")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0]},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	addHosts(tmpl, hosts)
	kp, err := ca.issue(tmpl, validity)
	if err != nil {
		return nil, fmt.Errorf("issue server certificate for %v: %w", hosts, err)
	}
	return kp, nil
}

// addHosts names hosts (IP addresses or DNS names) in tmpl's SANs.
func addHosts(tmpl *x509.Certificate, hosts []string) {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
}

// RouteCN is the common name of the certificates directors' bus servers
// present to each other on their cluster routes (IssueRoute).
const RouteCN = "bus-route"

// IssueRoute issues the certificate a director's bus server presents on its
// cluster routes, both when it accepts a route and when it dials one: common
// name RouteCN, for hosts (its route address), server and client use.
func (ca *CA) IssueRoute(hosts []string, validity time.Duration) (*KeyPair, error) {
	if len(hosts) == 0 {
		return nil, errors.New("issue route certificate: no hosts")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: RouteCN},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	addHosts(tmpl, hosts)
	kp, err := ca.issue(tmpl, validity)
	if err != nil {
		return nil, fmt.Errorf("issue route certificate for %v: %w", hosts, err)
	}
	return kp, nil
}

// IssueClient issues a client certificate whose common name is the identity
// commonName (an agent id, or DirectorCN), valid for validity (CertValidity
// when zero).
func (ca *CA) IssueClient(commonName string, validity time.Duration) (*KeyPair, error) {
	if commonName == "" {
		return nil, errors.New("issue client certificate: empty common name")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: commonName},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	kp, err := ca.issue(tmpl, validity)
	if err != nil {
		return nil, fmt.Errorf("issue client certificate %q: %w", commonName, err)
	}
	return kp, nil
}

// BootstrapOU is the organizational unit of bootstrap certificates: the bus
// lets them only answer the director (request_identity), not publish.
const BootstrapOU = "bootstrap"

// IssueBootstrap issues a short-lived client certificate (BootstrapValidity)
// for commonName, marked BootstrapOU: enough for a new VM to come up and
// ask for its long-lived identity (SignCSR), little use to anyone who reads
// it from user data later.
func (ca *CA) IssueBootstrap(commonName string) (*KeyPair, error) {
	if commonName == "" {
		return nil, errors.New("issue bootstrap certificate: empty common name")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: commonName, OrganizationalUnit: []string{BootstrapOU}},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	kp, err := ca.issue(tmpl, BootstrapValidity)
	if err != nil {
		return nil, fmt.Errorf("issue bootstrap certificate %q: %w", commonName, err)
	}
	return kp, nil
}

// IsBootstrap reports whether cert is a bootstrap certificate.
func IsBootstrap(cert *x509.Certificate) bool {
	for _, ou := range cert.Subject.OrganizationalUnit {
		if ou == BootstrapOU {
			return true
		}
	}
	return false
}

// MaxCSR bounds a certificate request's PEM.
const MaxCSR = 16 << 10

// SignCSR signs a client certificate for the key of a certificate request
// (PEM) made by the agent commonName: the request's signature must hold,
// its common name must be commonName and nothing else may be asked (no
// other subject field, no SAN, no extension), its key must be ECDSA P-256
// or RSA of at least 2048 bits. The private key never leaves the agent.
// The certificate is valid for validity (CertValidity when zero).
func (ca *CA) SignCSR(csrPEM []byte, commonName string, validity time.Duration) (*x509.Certificate, []byte, error) {
	fail := func(format string, a ...any) (*x509.Certificate, []byte, error) {
		return nil, nil, fmt.Errorf("certificate request of %s: "+format, append([]any{commonName}, a...)...)
	}
	if len(csrPEM) > MaxCSR {
		return fail("%d bytes, more than %d", len(csrPEM), MaxCSR)
	}
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return fail("%w (CERTIFICATE REQUEST)", ErrNoPEM)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return fail("%v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return fail("signature: %v", err)
	}
	if csr.Subject.CommonName != commonName {
		return fail("common name %q is not the agent's", csr.Subject.CommonName)
	}
	if len(csr.Subject.Names) != 1 || len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses)+len(csr.URIs) > 0 || len(csr.Extensions) > 0 {
		return fail("asks for more than its common name")
	}
	switch pub := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() {
			return fail("ECDSA key on %s, want P-256", pub.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if pub.N.BitLen() < 2048 {
			return fail("RSA key of %d bits, want 2048 or more", pub.N.BitLen())
		}
	default:
		return fail("unsupported key type %T", csr.PublicKey)
	}
	if validity <= 0 {
		validity = CertValidity
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validity),
		BasicConstraintsValid: true,
		AuthorityKeyId:        ca.Cert.SubjectKeyId,
	}
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return fail("sign: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fail("parse: %v", err)
	}
	return cert, EncodeCertificate(cert), nil
}

func (ca *CA) issue(tmpl *x509.Certificate, validity time.Duration) (*KeyPair, error) {
	if validity <= 0 {
		validity = CertValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-clockSkew)
	tmpl.NotAfter = now.Add(validity)
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	tmpl.BasicConstraintsValid = true
	tmpl.SubjectKeyId = keyID(&key.PublicKey)
	tmpl.AuthorityKeyId = ca.Cert.SubjectKeyId
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse issued certificate: %w", err)
	}
	keyPEM, err := EncodePrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &KeyPair{Cert: cert, Key: key, CertPEM: EncodeCertificate(cert), KeyPEM: keyPEM}, nil
}

// TLSCertificate is the pair as a tls.Certificate, for tls.Config.
func (kp *KeyPair) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{kp.Cert.Raw}, PrivateKey: kp.Key, Leaf: kp.Cert}
}

// EncodeCertificate is cert as a PEM "CERTIFICATE" block.
func EncodeCertificate(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

// DecodeCertificate parses the first "CERTIFICATE" block of data.
func DecodeCertificate(data []byte) (*x509.Certificate, error) {
	certs, err := DecodeCertificates(data)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// DecodeCertificates parses every "CERTIFICATE" block of data; at least one is
// required.
func DecodeCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("decode certificate: %w", ErrNoPEM)
	}
	return certs, nil
}

// EncodePrivateKey is key as a PEM "EC PRIVATE KEY" block.
func EncodePrivateKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// DecodePrivateKey parses an ECDSA key from an "EC PRIVATE KEY" or PKCS#8
// "PRIVATE KEY" block.
func DecodePrivateKey(data []byte) (*ecdsa.PrivateKey, error) {
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, fmt.Errorf("decode private key: %w", ErrNoPEM)
		}
		switch b.Type {
		case "EC PRIVATE KEY":
			k, err := x509.ParseECPrivateKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("decode private key: %w", err)
			}
			return k, nil
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("decode private key: %w", err)
			}
			ek, ok := k.(*ecdsa.PrivateKey)
			if !ok {
				return nil, fmt.Errorf("decode private key: %T is not an ecdsa key", k)
			}
			return ek, nil
		}
	}
}

// CertPool parses every certificate in caPEM into a pool.
func CertPool(caPEM []byte) (*x509.CertPool, error) {
	certs, err := DecodeCertificates(caPEM)
	if err != nil {
		return nil, fmt.Errorf("ca pool: %w", err)
	}
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p, nil
}

// X509KeyPair parses a PEM certificate and key into a tls.Certificate.
func X509KeyPair(certPEM, keyPEM []byte) (tls.Certificate, error) {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load key pair: %w", err)
	}
	return c, nil
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	return s, nil
}

func keyID(pub *ecdsa.PublicKey) []byte {
	b, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha256.Sum256(b)
	return sum[:20]
}
