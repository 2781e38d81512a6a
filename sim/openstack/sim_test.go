package openstack_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	simos "github.com/compleat/compleat/sim/openstack"
)

// cloud is a simulated OpenStack on loopback and a token for it.
type cloud struct {
	*simos.Cloud
	base, token string
}

func start(t *testing.T) *cloud {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + lis.Addr().String()
	c, err := simos.New(base, simos.Config{DataDir: t.TempDir(), BuildTime: 10 * time.Millisecond, FloatingIPs: []string{"127.83.0.10"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: c.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() {
		_ = srv.Close()
		_ = c.Close()
	})
	cl := &cloud{Cloud: c, base: base}
	resp, body := cl.do(t, "POST", "/identity/v3/auth/tokens", `{"auth": {"identity": {"methods": ["password"],
		"password": {"user": {"name": "admin", "domain": {"name": "Default"}, "password": "secret"}}},
		"scope": {"project": {"name": "compleat", "domain": {"name": "Default"}}}}}`)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("token: %d %s", resp.StatusCode, body)
	}
	cl.token = resp.Header.Get("X-Subject-Token")
	return cl
}

func (c *cloud) do(t *testing.T, method, path, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("X-Auth-Token", c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// want checks the status and decodes the body into v (when not nil).
func (c *cloud) want(t *testing.T, status int, method, path, body string, v any) {
	t.Helper()
	resp, b := c.do(t, method, path, body)
	if resp.StatusCode != status {
		t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, b, status)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
}

func TestKeystoneRefusesBadCredentialsAndTokens(t *testing.T) {
	c := start(t)
	var doc struct {
		Token struct {
			Catalog []struct {
				Type      string
				Endpoints []struct{ Interface, URL string }
			}
		}
	}
	body := `{"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "admin", "domain": {"name": "Default"}, "password": "secret"}}},
		"scope": {"project": {"name": "compleat", "domain": {"name": "Default"}}}}}`
	c.want(t, http.StatusCreated, "POST", "/identity/v3/auth/tokens", body, &doc)
	types := map[string]bool{}
	for _, e := range doc.Token.Catalog {
		types[e.Type] = len(e.Endpoints) == 3
	}
	for _, ty := range []string{"identity", "compute", "network", "block-storage", "volumev3", "image"} {
		if !types[ty] {
			t.Errorf("catalog lacks %s with public, internal and admin endpoints: %+v", ty, doc.Token.Catalog)
		}
	}
	var e struct{ Error struct{ Code int } }
	c.want(t, http.StatusUnauthorized, "POST", "/identity/v3/auth/tokens", strings.Replace(body, `"secret"`, `"wrong"`, 1), &e)
	if e.Error.Code != 401 {
		t.Errorf("401 body: %+v", e)
	}
	c.want(t, http.StatusUnauthorized, "POST", "/identity/v3/auth/tokens", strings.Replace(body, `"compleat"`, `"other"`, 1), nil)
	c.token = "gAAAAAforged"
	var ne struct {
		Unauthorized struct{ Code int } `json:"unauthorized"`
	}
	c.want(t, http.StatusUnauthorized, "GET", "/compute/v2.1/servers", "", &ne)
	if ne.Unauthorized.Code != 401 {
		t.Errorf("Nova 401 body: %+v", ne)
	}
}

type serverDoc struct {
	Server struct {
		ID, Status string
		Fault      struct{ Message string }
		Addresses  map[string][]struct{ Addr string }
		Metadata   map[string]string
	}
}

func (c *cloud) createServer(t *testing.T, name string) string {
	t.Helper()
	var s serverDoc
	c.want(t, http.StatusAccepted, "POST", "/compute/v2.1/servers", `{"server": {"name": "`+name+`", "imageRef": "`+simos.LightImageID+`",
		"flavorRef": "2", "networks": [{"uuid": "`+c.NetworkID("private")+`"}], "metadata": {"k": "v"}, "user_data": "eyJhIjoxfQ=="}}`, &s)
	return s.Server.ID
}

func (c *cloud) waitStatus(t *testing.T, id, want string) serverDoc {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var s serverDoc
		c.want(t, http.StatusOK, "GET", "/compute/v2.1/servers/"+id, "", &s)
		if s.Server.Status == want || time.Now().After(deadline) {
			if s.Server.Status != want {
				t.Fatalf("server %s is %s, want %s", id, s.Server.Status, want)
			}
			return s
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNovaServerLifecycleFaultsAndPagination(t *testing.T) {
	c := start(t)
	id := c.createServer(t, "one")
	s := c.waitStatus(t, id, "ACTIVE")
	if a := s.Server.Addresses["private"]; len(a) != 1 || !strings.HasPrefix(a[0].Addr, "127.82.") {
		t.Errorf("addresses %+v, want one 127.82.x address on private", s.Server.Addresses)
	}
	// The metadata service serves the user data and meta_data.json.
	rec := httptest.NewRecorder()
	c.MetadataHandler(id).ServeHTTP(rec, httptest.NewRequest("GET", "/openstack/latest/meta_data.json", nil))
	var md struct {
		UUID string
		Meta map[string]string
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &md); err != nil || md.UUID != id || md.Meta["k"] != "v" {
		t.Errorf("meta_data.json = %s (%v), want uuid %s and meta k=v", rec.Body, err, id)
	}

	c.FailNextServers(1, "")
	bad := c.createServer(t, "two")
	s = c.waitStatus(t, bad, "ERROR")
	if !strings.Contains(s.Server.Fault.Message, "No valid host") {
		t.Errorf("fault %+v, want Nova's No valid host", s.Server.Fault)
	}
	for i := range 3 {
		c.createServer(t, "p"+string(rune('a'+i)))
	}
	// Five servers, two per page: three pages linked by absolute hrefs.
	var ids []string
	next := "/compute/v2.1/servers?limit=2"
	for pages := 0; next != ""; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		var page struct {
			Servers []struct{ ID string }
			Links   []struct{ Href, Rel string } `json:"servers_links"`
		}
		c.want(t, http.StatusOK, "GET", next, "", &page)
		for _, s := range page.Servers {
			ids = append(ids, s.ID)
		}
		next = ""
		for _, l := range page.Links {
			if l.Rel == "next" {
				if !strings.HasPrefix(l.Href, c.base) {
					t.Fatalf("next link %q is not absolute", l.Href)
				}
				next = strings.TrimPrefix(l.Href, c.base)
			}
		}
	}
	if len(ids) != 5 {
		t.Errorf("paged listing gave %d servers, want 5", len(ids))
	}
	var nf struct{ ItemNotFound struct{ Code int } }
	c.want(t, http.StatusNotFound, "GET", "/compute/v2.1/servers/"+"00000000-0000-4000-8000-000000000000", "", &nf)
	if nf.ItemNotFound.Code != 404 {
		t.Errorf("404 body %+v, want itemNotFound", nf)
	}
	c.want(t, http.StatusNoContent, "DELETE", "/compute/v2.1/servers/"+id, "", nil)
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, _ := c.do(t, "GET", "/compute/v2.1/servers/"+id, "")
		if resp.StatusCode == http.StatusNotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("deleted server never went away")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNeutronPortConflictAndCinderGlance(t *testing.T) {
	c := start(t)
	net := c.NetworkID("private")
	c.want(t, http.StatusCreated, "POST", "/network/v2.0/ports", `{"port": {"network_id": "`+net+`", "fixed_ips": [{"ip_address": "127.82.0.50"}]}}`, nil)
	var ne struct {
		NeutronError struct{ Type, Message string }
	}
	c.want(t, http.StatusConflict, "POST", "/network/v2.0/ports", `{"port": {"network_id": "`+net+`", "fixed_ips": [{"ip_address": "127.82.0.50"}]}}`, &ne)
	if ne.NeutronError.Type != "IpAddressAlreadyAllocated" {
		t.Errorf("409 body %+v, want IpAddressAlreadyAllocated", ne)
	}
	c.want(t, http.StatusBadRequest, "POST", "/network/v2.0/ports", `{"port": {"network_id": "`+net+`", "fixed_ips": [{"ip_address": "10.0.0.5"}]}}`, &ne)
	if ne.NeutronError.Type != "InvalidIpForNetwork" {
		t.Errorf("400 body %+v, want InvalidIpForNetwork", ne)
	}

	p := "/volume/v3/" + c.ProjectID()
	var v struct{ Volume struct{ ID, Status string } }
	c.want(t, http.StatusAccepted, "POST", p+"/volumes", `{"volume": {"size": 1, "name": "v"}}`, &v)
	c.want(t, http.StatusNotFound, "POST", p+"/volumes", `{"volume": {"size": 1, "volume_type": "gold"}}`, nil)
	c.want(t, http.StatusForbidden, "GET", "/volume/v3/someone-else/volumes", "", nil)

	var im struct{ ID, Status string }
	c.want(t, http.StatusCreated, "POST", "/image/v2/images", `{"name": "i", "disk_format": "raw", "container_format": "bare", "os_distro": "ubuntu"}`, &im)
	if im.Status != "queued" {
		t.Errorf("new image is %s, want queued", im.Status)
	}
	resp, b := c.do(t, "PUT", "/image/v2/images/"+im.ID+"/file", "data")
	if resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("upload without application/octet-stream: %d %s, want 415", resp.StatusCode, b)
	}
	resp, b = c.do(t, "GET", "/image/v2/images/00000000-0000-4000-8000-000000000000", "")
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(b), "<title>404 Not Found</title>") {
		t.Errorf("Glance 404: %d %s, want its HTML page", resp.StatusCode, b)
	}
}

func TestFaultsAnswerInTheServicesShape(t *testing.T) {
	c := start(t)
	c.InjectFault(simos.Fault{Method: "GET", Path: "/compute/v2.1/servers", Status: http.StatusRequestEntityTooLarge, RetryAfter: "3", Times: 1})
	resp, b := c.do(t, "GET", "/compute/v2.1/servers", "")
	var ol struct {
		OverLimit struct {
			Code       int
			RetryAfter string
		} `json:"overLimit"`
	}
	if resp.StatusCode != 413 || resp.Header.Get("Retry-After") != "3" || json.Unmarshal(b, &ol) != nil || ol.OverLimit.RetryAfter != "3" {
		t.Errorf("injected overLimit: %d %v %s", resp.StatusCode, resp.Header, b)
	}
	if resp, _ := c.do(t, "GET", "/compute/v2.1/servers", ""); resp.StatusCode != 200 {
		t.Errorf("fault outlived its Times: %d", resp.StatusCode)
	}
}

// The openstack command-line client (Debian's python3-openstackclient)
// sees the simulated cloud's servers, volumes and images.
func TestOpenStackClient(t *testing.T) {
	osc, err := exec.LookPath("openstack")
	if err != nil {
		t.Skip("the openstack command-line client is not installed (apt-get install python3-openstackclient; .ci/run installs it)")
	}
	c := start(t)
	id := c.createServer(t, "web-0")
	c.waitStatus(t, id, "ACTIVE")
	var v struct{ Volume struct{ ID string } }
	c.want(t, http.StatusAccepted, "POST", "/volume/v3/"+c.ProjectID()+"/volumes", `{"volume": {"size": 2, "name": "data"}}`, &v)
	run := func(args ...string) []map[string]any {
		t.Helper()
		cmd := exec.Command(osc, append(args, "-f", "json")...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir(),
			"OS_AUTH_URL=" + c.AuthURL(), "OS_USERNAME=admin", "OS_PASSWORD=secret", "OS_PROJECT_NAME=compleat",
			"OS_USER_DOMAIN_NAME=Default", "OS_PROJECT_DOMAIN_NAME=Default", "OS_REGION_NAME=" + simos.DefaultRegion,
			"OS_IDENTITY_API_VERSION=3"}
		out, err := cmd.Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("openstack %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
		}
		var list []map[string]any
		if json.Unmarshal(out, &list) != nil {
			var one map[string]any
			if err := json.Unmarshal(out, &one); err != nil {
				t.Fatalf("openstack %s: not JSON: %s", strings.Join(args, " "), out)
			}
			list = []map[string]any{one}
		}
		return list
	}
	servers := run("server", "list")
	if len(servers) != 1 || servers[0]["ID"] != id || servers[0]["Status"] != "ACTIVE" {
		t.Errorf("openstack server list = %v, want server %s ACTIVE", servers, id)
	}
	show := run("server", "show", id)
	if show[0]["name"] != "web-0" || show[0]["status"] != "ACTIVE" {
		t.Errorf("openstack server show = %v", show[0])
	}
	vols := run("volume", "list")
	if len(vols) != 1 || vols[0]["ID"] != v.Volume.ID {
		t.Errorf("openstack volume list = %v, want volume %s", vols, v.Volume.ID)
	}
	imgs := run("image", "list")
	if len(imgs) != 1 || imgs[0]["ID"] != simos.LightImageID {
		t.Errorf("openstack image list = %v, want the light image", imgs)
	}
}

// The example cloud config (manifests/openstack/cloud-config.yml) names the
// private network by its id, which must stay the same on every run.
func TestPrivateNetworkIDIsStable(t *testing.T) {
	c := start(t)
	if id := c.NetworkID("private"); id != "32561ef3-60a1-500f-97ba-856165eb72d2" {
		t.Errorf("network private has id %s; manifests/openstack/cloud-config.yml names 32561ef3-60a1-500f-97ba-856165eb72d2", id)
	}
}
