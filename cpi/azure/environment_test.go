package azure

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	azfake "github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
)

// recorder answers every request 404 and records where it went.
type recorder struct {
	mu    sync.Mutex
	hosts []string
}

func (r *recorder) Do(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.hosts = append(r.hosts, req.URL.Host)
	r.mu.Unlock()
	return &http.Response{StatusCode: http.StatusNotFound, Request: req, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(`{"error": {"code": "ResourceNotFound", "message": "not found"}}`))}, nil
}

// environment picks the Resource Manager of the public cloud, Azure China
// or Azure US Government.
func TestEnvironments(t *testing.T) {
	for env, host := range map[string]string{
		"":                  "management.azure.com",
		"AzureCloud":        "management.azure.com",
		"AzureChinaCloud":   "management.chinacloudapi.cn",
		"AzureUSGovernment": "management.usgovcloudapi.net",
	} {
		var m map[string]any
		json.Unmarshal([]byte(validProps), &m)
		if env != "" {
			m["environment"] = env
		}
		raw, _ := json.Marshal(m)
		rec := &recorder{}
		c, err := New(context.Background(), raw, WithTransport(rec), WithCredential(&azfake.TokenCredential{}))
		if err != nil {
			t.Fatalf("%s: %v", env, err)
		}
		has, err := c.HasVM(context.Background(), "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-1")
		if err != nil || has {
			t.Errorf("%s: HasVM on a 404 = %v, %v", env, has, err)
		}
		if len(rec.hosts) != 1 || rec.hosts[0] != host {
			t.Errorf("environment %q: requests went to %v, want %s", env, rec.hosts, host)
		}
	}
}

// A client certificate is a PEM with the certificate and its key; one
// without a key is refused naming the field.
func TestClientCertificate(t *testing.T) {
	key, _ := rsa.GenerateKey(rand.Reader, 2048) // Entra ID takes RSA keys only
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sp"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	cert := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	both := cert + string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	props := func(pemData string) json.RawMessage {
		var m map[string]any
		json.Unmarshal([]byte(validProps), &m)
		delete(m, "client_secret")
		m["client_certificate"] = pemData
		b, _ := json.Marshal(m)
		return b
	}
	if _, err := New(context.Background(), props(both)); err != nil {
		t.Errorf("certificate with key: %v", err)
	}
	_, err := New(context.Background(), props(cert))
	if fieldOf(err) != "client_certificate" {
		t.Errorf("certificate without key: %v, want client_certificate named", err)
	}
	if err != nil && strings.Contains(err.Error(), "BEGIN CERTIFICATE") {
		t.Errorf("error echoes the certificate: %v", err)
	}
}
