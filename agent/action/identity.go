package action

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"sync"

	"github.com/compleat/compleat/agent/protocol"
)

// pendingIdentity is the key of the last request_identity, kept in memory
// until update_settings brings the certificate for it: the key is made on
// this VM and never sent.
type pendingIdentity struct {
	mu  sync.Mutex
	key *ecdsa.PrivateKey
}

// requestIdentity makes a new key and answers a certificate request for it
// whose common name is the agent id.
func (a *Actions) requestIdentity(context.Context) (protocol.IdentityRequest, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return protocol.IdentityRequest{}, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: a.d.Settings.Current().AgentID}}, key)
	if err != nil {
		return protocol.IdentityRequest{}, fmt.Errorf("request_identity: %w", err)
	}
	a.identity.mu.Lock()
	a.identity.key = key
	a.identity.mu.Unlock()
	return protocol.IdentityRequest{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))}, nil
}

// withPendingKey fills an update's empty mbus.key with the pending
// identity's key when the certificate is for it.
func (a *Actions) withPendingKey(req *protocol.UpdateSettingsRequest) error {
	if req.Mbus == nil || req.Mbus.Key != "" {
		return nil
	}
	a.identity.mu.Lock()
	key := a.identity.key
	a.identity.mu.Unlock()
	block, _ := pem.Decode([]byte(req.Mbus.Cert))
	var cert *x509.Certificate
	if block != nil {
		cert, _ = x509.ParseCertificate(block.Bytes)
	}
	if key == nil || cert == nil || !key.PublicKey.Equal(cert.PublicKey) {
		return &protocol.Exception{Code: protocol.CodeBadArguments, Message: "update_settings: field mbus.key: empty, and mbus.cert is not for the key of the last request_identity"}
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	req.Mbus.Key = string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	return nil
}
