package api_test

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/director/store"
)

// A read-scope token lists configs but never a cpi config's credentials,
// whichever way it asks; an admin token reads them (to edit the config).
func TestReadTokenSeesCPICredentialsRedacted(t *testing.T) {
	f := newFixture(t)
	content := "cpis:\n- name: aws\n  type: aws\n  properties:\n    access_key_id: AKIAEXAMPLEKEY\n    secret_access_key: &s wJalrXUtnFEMIsecret\n    again: *s\n    nested: {token: [tok-secret]}\n"
	body, _ := json.Marshal(map[string]string{"type": "cpi", "content": content})
	if resp, raw := f.do(t, "POST", "/v1/configs", adminToken, string(body)); resp.StatusCode != 200 {
		t.Fatalf("update cpi config: %d %s", resp.StatusCode, raw)
	}
	secrets := []string{"AKIAEXAMPLEKEY", "wJalrXUtnFEMIsecret", "tok-secret"}
	for _, path := range []string{"/v1/configs?type=cpi", "/v1/configs", "/v1/configs?type=cpi&all=true"} {
		resp, raw := f.do(t, "GET", path, readToken, "")
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s as read: %d %s", path, resp.StatusCode, raw)
		}
		for _, s := range secrets {
			if strings.Contains(string(raw), s) {
				t.Errorf("GET %s as read shows %s: %s", path, s, raw)
			}
		}
		var cfgs []store.Config
		if err := json.Unmarshal(raw, &cfgs); err != nil || len(cfgs) != 1 {
			t.Fatalf("GET %s: %s (%v)", path, raw, err)
		}
		for _, keep := range []string{"name: aws", "access_key_id: <redacted>", "secret_access_key: <redacted>"} {
			if !strings.Contains(cfgs[0].Content, keep) {
				t.Errorf("GET %s as read lacks %q:\n%s", path, keep, cfgs[0].Content)
			}
		}
	}
	_, raw := f.do(t, "GET", "/v1/configs?type=cpi", adminToken, "")
	var cfgs []store.Config
	if err := json.Unmarshal(raw, &cfgs); err != nil || len(cfgs) != 1 || cfgs[0].Content != content {
		t.Errorf("GET as admin: %s (%v)", raw, err)
	}
}

// A request without a valid token is answered 401 and its connection closed,
// so token-less clients cannot hold connections open.
func TestTokenlessConnectionsAreClosed(t *testing.T) {
	f := newFixture(t)
	for _, token := range []string{"", "wrong-token"} {
		conn, err := tls.Dial("tcp", f.srv.Listener.Addr().String(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		req := "GET /v1/info HTTP/1.1\r\nHost: x\r\n"
		if token != "" {
			req += "Authorization: Bearer " + token + "\r\n"
		}
		if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusUnauthorized || !resp.Close {
			t.Errorf("token %q: status %d, close %v", token, resp.StatusCode, resp.Close)
		}
		// The server closes its side: the next read ends (the deadline only
		// keeps a failing run from hanging).
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Read(make([]byte, 1)); err == nil {
			t.Errorf("token %q: connection still open", token)
		}
		conn.Close()
	}
}
