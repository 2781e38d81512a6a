package openstack

import (
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	simos "github.com/compleat/compleat/sim/openstack"
)

// An application credential authenticates without username or project,
// and a TLS endpoint is trusted through ca_cert.
func TestApplicationCredentialOverTLS(t *testing.T) {
	if live() {
		t.Skip("runs its own simulated cloud")
	}
	srv := httptest.NewUnstartedServer(nil)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c, err := simos.New(srv.URL, simos.Config{DataDir: t.TempDir(), BuildTime: 10 * time.Millisecond,
		ApplicationCredentialID: "ac-1", ApplicationCredentialSecret: "ac-secret"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	srv.Config.Handler = c.Handler()
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	props := `{"auth_url": "` + c.AuthURL() + `", "application_credential_id": "ac-1", "application_credential_secret": "ac-secret",
		"region": "` + simos.DefaultRegion + `", "ca_cert": ` + jsonString(ca) + `, "poll_interval": 0.02}`
	p, err := New([]byte(props), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	if has, err := p.HasVM(t.Context(), newUUID()); err != nil || has {
		t.Fatalf("HasVM over TLS with an application credential = %v, %v; want false, nil", has, err)
	}
	// Without the CA the cloud's certificate is not trusted.
	untrusted, err := New([]byte(`{"auth_url": "`+c.AuthURL()+`", "application_credential_id": "ac-1", "application_credential_secret": "ac-secret"}`), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := untrusted.HasVM(t.Context(), newUUID()); err == nil {
		t.Error("HasVM against an untrusted certificate succeeded")
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestHumanReadableVMNames(t *testing.T) {
	c := simOnly(t, simos.Config{})
	p := c.newCPI(t, map[string]any{"human_readable_vm_names": true})
	res, err := p.CreateVM(t.Context(), c.vmRequest(t, p, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SetVMMetadata(t.Context(), res.CID, map[string]string{"job": "web", "index": "3", "deployment": "d"}); err != nil {
		t.Fatal(err)
	}
	cl, _ := p.session(t.Context())
	s, err := servers.Get(t.Context(), cl.compute, res.CID).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "web/3" || s.Metadata["deployment"] != "d" || s.Metadata[AgentIDKey] == "" {
		t.Errorf("server name %q, metadata %v; want web/3 with the metadata and the agent id kept", s.Name, s.Metadata)
	}
}

func TestRetryAfterIsRead(t *testing.T) {
	date := time.Now().Add(3 * time.Second).UTC().Format(http.TimeFormat)
	for _, tc := range []struct {
		header, body string
		want         time.Duration
		ok           bool
	}{
		{"2", "", 2 * time.Second, true},
		{"0.5", "", 500 * time.Millisecond, true},
		{"", `{"overLimit": {"code": 413, "message": "This request was rate-limited.", "retryAfter": "7"}}`, 7 * time.Second, true},
		{"", `{"badRequest": {"code": 400}}`, 0, false},
		{"soon", "", 0, false},
	} {
		got, ok := retryAfter(tc.header, []byte(tc.body))
		if ok != tc.ok || got != tc.want {
			t.Errorf("retryAfter(%q, %s) = %v, %v; want %v, %v", tc.header, tc.body, got, ok, tc.want, tc.ok)
		}
	}
	if got, ok := retryAfter(date, nil); !ok || got <= 0 || got > 3*time.Second {
		t.Errorf("retryAfter(HTTP date 3s ahead) = %v, %v", got, ok)
	}
	if !isOverLimit([]byte(`{"overLimit": {}}`)) || isOverLimit([]byte(`{"badRequest": {"message": "Request Entity Too Large"}}`)) {
		t.Error("isOverLimit tells Nova's rate limiting from a body that is too large wrongly")
	}
}
