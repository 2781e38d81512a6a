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
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	kp, err := ca.issue(tmpl, validity)
	if err != nil {
		return nil, fmt.Errorf("issue server certificate for %v: %w", hosts, err)
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

// IssueBootstrap issues a short-lived client certificate (BootstrapValidity)
// for commonName: enough for a new VM to come up and be handed a long-lived
// one, little use to anyone who reads it from user data later.
func (ca *CA) IssueBootstrap(commonName string) (*KeyPair, error) {
	return ca.IssueClient(commonName, BootstrapValidity)
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
