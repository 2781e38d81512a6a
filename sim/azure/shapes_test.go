package azure_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/compleat/compleat/sim/azure"
)

// Entra ID's answers: a wrong secret is 401 invalid_client with its
// AADSTS code, and the plugin's error says so without the secret; a
// request to Resource Manager without a token is 401, without an
// api-version 400, as Azure answers.
func TestAuthAnswers(t *testing.T) {
	s := newSim(t)
	cfg := s.Config()
	resp, err := httpsClient(s).PostForm(s.URL()+"/"+cfg.TenantID+"/oauth2/v2.0/token", url.Values{
		"grant_type": {"client_credentials"}, "client_id": {cfg.ClientID}, "client_secret": {"wrong"}, "scope": {"https://management.azure.com/.default"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var oauth struct {
		Error      string `json:"error"`
		ErrorCodes []int  `json:"error_codes"`
	}
	json.NewDecoder(resp.Body).Decode(&oauth)
	resp.Body.Close()
	if resp.StatusCode != 401 || oauth.Error != "invalid_client" || len(oauth.ErrorCodes) != 1 || oauth.ErrorCodes[0] != 7000215 {
		t.Errorf("wrong secret: %d %+v", resp.StatusCode, oauth)
	}

	c := newCPI(t, s, map[string]any{"client_secret": "not-the-secret", "max_retries": 0})
	_, err = c.HasVM(context.Background(), "/subscriptions/"+cfg.SubscriptionID+"/resourceGroups/compleat/providers/Microsoft.Compute/virtualMachines/vm-x")
	if err == nil || !strings.Contains(err.Error(), "AADSTS7000215") || strings.Contains(err.Error(), "not-the-secret") {
		t.Errorf("HasVM with a wrong secret: %v, want Entra ID's AADSTS7000215 without the secret", err)
	}

	for _, tc := range []struct {
		token, query string
		status       int
		code         string
	}{
		{"", "?api-version=2024-07-01", 401, "AuthenticationFailed"},
		{"forged", "?api-version=2024-07-01", 401, "InvalidAuthenticationToken"},
		{armToken(t, s), "", 400, "MissingApiVersionParameter"},
		{armToken(t, s), "?api-version=2024-07-01", 404, "ResourceNotFound"},
	} {
		req, _ := http.NewRequest(http.MethodGet, s.URL()+"/subscriptions/"+cfg.SubscriptionID+"/resourceGroups/compleat/providers/Microsoft.Compute/virtualMachines/nope"+tc.query, nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := httpsClient(s).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || body.Error.Code != tc.code || body.Error.Message == "" {
			t.Errorf("GET (token %v) %s: %d %+v, want %d %s", tc.token != "", tc.query, resp.StatusCode, body.Error, tc.status, tc.code)
		}
	}
}

// IMDS as Azure's: the Metadata header and an api-version are required,
// user data is served base64 with format=text, the instance document
// names the VM and its addresses.
func TestIMDS(t *testing.T) {
	s := newSim(t)
	f := newFixtureOn(t, s, nil)
	res, err := f.c.CreateVM(f.ctx, f.request("agent-imds", "127.80.1.50"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(azure.NewIMDS(s, res.CID))
	defer srv.Close()
	get := func(path string, header bool) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if header {
			req.Header.Set("Metadata", "true")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/metadata/instance?api-version=2021-01-01", false); code != 400 {
		t.Errorf("without Metadata: true: %d, want 400", code)
	}
	if code, _ := get("/metadata/instance", true); code != 400 {
		t.Errorf("without api-version: %d, want 400", code)
	}
	code, ud := get("/metadata/instance/compute/userData?api-version=2021-01-01&format=text", true)
	want, _ := userData(s, res.CID)
	if got, err := decodeBase64(ud); code != 200 || err != nil || got != string(want) {
		t.Errorf("userData: %d %q, want the base64 of %s", code, ud, want)
	}
	code, doc := get("/metadata/instance?api-version=2021-01-01", true)
	var inst struct {
		Compute struct{ Name, ResourceID, VMSize string } `json:"compute"`
		Network struct {
			Interface []struct {
				IPv4 struct {
					IPAddress []struct {
						PrivateIPAddress string `json:"privateIpAddress"`
						PublicIPAddress  string `json:"publicIpAddress"`
					} `json:"ipAddress"`
				} `json:"ipv4"`
			} `json:"interface"`
		} `json:"network"`
	}
	if err := json.Unmarshal([]byte(doc), &inst); code != 200 || err != nil {
		t.Fatalf("instance: %d %v %s", code, err, doc)
	}
	if inst.Compute.Name != "vm-agent-imds" || !strings.EqualFold(inst.Compute.ResourceID, res.CID) || inst.Compute.VMSize != "Standard_B2s" ||
		len(inst.Network.Interface) != 1 || inst.Network.Interface[0].IPv4.IPAddress[0].PrivateIPAddress != "127.80.1.50" ||
		!strings.HasPrefix(inst.Network.Interface[0].IPv4.IPAddress[0].PublicIPAddress, "127.254.") {
		t.Errorf("instance document: %s", doc)
	}
	if err := f.c.DeleteVM(f.ctx, res.CID); err != nil {
		t.Fatal(err)
	}
	if code, _ := get("/metadata/instance?api-version=2021-01-01", true); code != 404 {
		t.Errorf("IMDS of a deleted VM: %d, want 404", code)
	}
}

func decodeBase64(s string) (string, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	return string(b), err
}
