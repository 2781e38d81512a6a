package settings_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/agent/settings"
	"github.com/compleat/compleat/cpi"
)

const doc = `{
  "agent_id": "agent-1",
  "vm": {"cid": "vm-1"},
  "mbus": {"url": "nats://127.0.0.1:4222", "ca_cert": "CA", "cert": "CERT", "key": "KEY"},
  "blobstore": {"ca_cert": "BCA"},
  "networks": {"default": {"type": "manual", "ip": "127.77.0.5", "default": ["dns", "gateway"]}},
  "disks": {"persistent": {"disk-1": {"path": "/d/disk-1"}}},
  "env": {"bosh": {}},
  "heartbeat_interval": "2s"
}`

func check(t *testing.T, s settings.Settings) {
	t.Helper()
	if s.AgentID != "agent-1" || s.VM.CID != "vm-1" || s.Mbus.URL != "nats://127.0.0.1:4222" || s.Mbus.Key != "KEY" {
		t.Fatalf("settings %+v", s)
	}
	if s.IP() != "127.77.0.5" || s.Heartbeat() != 2*time.Second || s.Disks.Persistent["disk-1"].Path != "/d/disk-1" {
		t.Fatalf("settings %+v", s)
	}
}

func TestParseErrorsNameLineAndField(t *testing.T) {
	for name, tc := range map[string]struct{ in, want string }{
		"syntax":        {"{\n\"agent_id\": \"a\",\n oops}", "line 3"},
		"type":          {"{\n\"agent_id\": 7}", "field agent_id"},
		"missing id":    {`{"mbus": {"url": "nats://x:1"}}`, "field agent_id: required"},
		"bad id":        {`{"agent_id": "a.b"}`, "field agent_id"},
		"missing url":   {`{"agent_id": "a"}`, "field mbus.url: required"},
		"bad url":       {`{"agent_id": "a", "mbus": {"url": "http://x", "ca_cert": "c", "cert": "c", "key": "k"}}`, "field mbus.url"},
		"missing key":   {`{"agent_id": "a", "mbus": {"url": "nats://x:1", "ca_cert": "c", "cert": "c"}}`, "field mbus.key: required"},
		"bad heartbeat": {`{"agent_id": "a", "heartbeat_interval": "soon"}`, "duration"},
		"bad urls":      {`{"agent_id": "a", "mbus": {"url": "nats://x:1", "urls": ["nats://x:1", "nats://y:1,nats://z:1"], "ca_cert": "c", "cert": "c", "key": "k"}}`, "field mbus.urls[1]"},
	} {
		_, err := settings.Parse("test.json", []byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "test.json") {
			t.Errorf("%s: err = %v, want mention of %q and the source", name, err, tc.want)
		}
	}
	s, err := settings.Parse("x", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	check(t, s)
	if got := (settings.Mbus{URL: "nats://a:1", URLs: []string{"nats://b:1", "nats://a:1", "nats://c:1"}}).Servers(); strings.Join(got, " ") != "nats://a:1 nats://b:1 nats://c:1" {
		t.Errorf("servers = %v: want url first, then the others once", got)
	}
	s.HeartbeatInterval = 0
	if s.Heartbeat() != settings.DefaultHeartbeatInterval {
		t.Fatal("no default heartbeat")
	}
}

func TestFileSource(t *testing.T) {
	p := filepath.Join(t.TempDir(), "settings.json")
	os.WriteFile(p, []byte(doc), 0o600)
	b, err := settings.File{Path: p}.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s, err := settings.Parse(p, b)
	if err != nil {
		t.Fatal(err)
	}
	check(t, s)
}

// TestAWSIMDSv2 serves the two IMDSv2 endpoints as EC2 documents them: the
// user data is only given to a request bearing a token from PUT
// /latest/api/token.
func TestAWSIMDSv2(t *testing.T) {
	const token = "tok-123"
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /latest/api/token", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds") == "" {
			http.Error(w, "missing ttl", http.StatusBadRequest)
			return
		}
		w.Write([]byte(token))
	})
	mux.HandleFunc("GET /latest/user-data", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-aws-ec2-metadata-token") != token {
			http.Error(w, "", http.StatusUnauthorized)
			return
		}
		w.Write([]byte(doc))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	b, err := settings.AWS{BaseURL: srv.URL, Attempts: 1}.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s, err := settings.Parse("aws", b)
	if err != nil {
		t.Fatal(err)
	}
	check(t, s)
}

func TestAWSRetriesUntilMetadataAnswers(t *testing.T) {
	calls := 0
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /latest/api/token", func(w http.ResponseWriter, r *http.Request) {
		calls++
		if calls < 3 {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("t"))
	})
	mux.HandleFunc("GET /latest/user-data", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(doc)) })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	if _, err := (settings.AWS{BaseURL: srv.URL, Attempts: 5, Backoff: time.Millisecond}).Fetch(context.Background()); err != nil {
		t.Fatal(err)
	}
	// No user data at all is final: a 404 is not retried.
	srv404 := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(srv404.Close)
	if _, err := (settings.AWS{BaseURL: srv404.URL, Attempts: 50, Backoff: time.Hour}).Fetch(context.Background()); err == nil {
		t.Fatal("fetch from an empty metadata service succeeded")
	}
}

// TestAzureIMDS serves userData as Azure IMDS does: base64 text, only with
// the Metadata: true header.
func TestAzureIMDS(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metadata/instance/compute/userData", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Metadata") != "true" || r.URL.Query().Get("api-version") == "" || r.URL.Query().Get("format") != "text" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		w.Write([]byte(base64.StdEncoding.EncodeToString([]byte(doc))))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	b, err := settings.Azure{BaseURL: srv.URL, Attempts: 1}.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s, err := settings.Parse("azure", b)
	if err != nil {
		t.Fatal(err)
	}
	check(t, s)
}

func TestOpenStackMetadataService(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /openstack/latest/user_data", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(doc)) })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	b, err := settings.OpenStackMetadata{BaseURL: srv.URL, Attempts: 1}.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s, err := settings.Parse("openstack", b)
	if err != nil {
		t.Fatal(err)
	}
	check(t, s)
}

// The CPI cannot know the server id when it writes the user data: the
// agent takes it from meta_data.json's uuid, from either source.
func TestOpenStackVMCIDFromMetaData(t *testing.T) {
	userData := `{"agent_id": "a-1", "vm": {"name": "vm-a-1"}, "mbus": "nats://127.0.0.1:4222"}`
	meta := `{"uuid": "0f4c3e8a-1111-4222-8333-944455556666", "name": "vm-a-1"}`
	mux := http.NewServeMux()
	mux.HandleFunc("GET /openstack/latest/user_data", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(userData)) })
	mux.HandleFunc("GET /openstack/latest/meta_data.json", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(meta)) })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	latest := filepath.Join(dir, "openstack", "latest")
	os.MkdirAll(latest, 0o755)
	os.WriteFile(filepath.Join(latest, "meta_data.json"), []byte(meta), 0o644)
	os.WriteFile(filepath.Join(latest, "user_data"), []byte(userData), 0o644)
	for _, src := range []settings.Source{settings.OpenStackMetadata{BaseURL: srv.URL, Attempts: 1}, settings.OpenStackConfigDrive{Dir: dir}} {
		b, err := src.Fetch(context.Background())
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		var got struct {
			VM struct{ CID, Name string }
		}
		if err := json.Unmarshal(b, &got); err != nil || got.VM.CID != "0f4c3e8a-1111-4222-8333-944455556666" || got.VM.Name != "vm-a-1" {
			t.Errorf("%s: vm = %+v (%v), want the uuid of meta_data.json as cid and the name kept", src, got.VM, err)
		}
	}
}

// TestOpenStackConfigDrive lays out a mounted config drive as OpenStack
// documents it (openstack/latest/{meta_data.json,user_data}).
func TestOpenStackConfigDrive(t *testing.T) {
	dir := t.TempDir()
	latest := filepath.Join(dir, "openstack", "latest")
	os.MkdirAll(latest, 0o755)
	os.WriteFile(filepath.Join(latest, "meta_data.json"), []byte(`{"uuid": "vm-1"}`), 0o644)
	os.WriteFile(filepath.Join(latest, "user_data"), []byte(doc), 0o644)
	src := settings.FirstOf{settings.OpenStackConfigDrive{Dir: filepath.Join(dir, "missing")}, settings.OpenStackConfigDrive{Dir: dir}}
	b, err := src.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s, err := settings.Parse(src.String(), b)
	if err != nil {
		t.Fatal(err)
	}
	check(t, s)
}

func TestStoreCachesAndLayersUpdates(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "src.json")
	os.WriteFile(p, []byte(doc), 0o600)
	st := settings.Store{Dir: filepath.Join(dir, "bosh")}
	log := slog.New(slog.DiscardHandler)
	ctx := context.Background()
	if _, err := st.Load(ctx, settings.File{Path: p}, log); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "bosh", "settings.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cached settings: %v %v", fi, err)
	}
	if err := st.Update(protocol.UpdateSettingsRequest{
		Disks:             map[string]cpi.DiskHint{"disk-2": {Path: "/d/disk-2"}},
		HeartbeatInterval: protocol.Duration(7 * time.Second),
	}); err != nil {
		t.Fatal(err)
	}
	os.Remove(p) // the source is gone: the cache answers
	s, err := st.Load(ctx, settings.File{Path: p}, log)
	if err != nil {
		t.Fatal(err)
	}
	if s.AgentID != "agent-1" || s.Heartbeat() != 7*time.Second || s.Disks.Persistent["disk-2"].Path != "/d/disk-2" || len(s.Disks.Persistent) != 1 {
		t.Fatalf("settings %+v", s)
	}
	if _, err := (settings.Store{Dir: t.TempDir()}).Load(ctx, settings.File{Path: p}, log); err == nil {
		t.Fatal("load without source or cache succeeded")
	}
}

// TestAWSInstanceIDWhenUserDataHasNoCID: the AWS CPI cannot know the instance
// id when it writes user data, so the agent asks the metadata service.
func TestAWSInstanceIDWhenUserDataHasNoCID(t *testing.T) {
	var m map[string]any
	if err := json.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "vm")
	noCID, _ := json.Marshal(m)
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /latest/api/token", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("t")) })
	mux.HandleFunc("GET /latest/user-data", func(w http.ResponseWriter, r *http.Request) { w.Write(noCID) })
	mux.HandleFunc("GET /latest/meta-data/instance-id", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-aws-ec2-metadata-token") != "t" {
			http.Error(w, "", http.StatusUnauthorized)
			return
		}
		w.Write([]byte("i-0abc123\n"))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	b, err := settings.AWS{BaseURL: srv.URL, Attempts: 1}.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s, err := settings.Parse("aws", b)
	if err != nil {
		t.Fatal(err)
	}
	if s.VM.CID != "i-0abc123" {
		t.Fatalf("vm.cid = %q, want the instance id from the metadata service", s.VM.CID)
	}
	if s.AgentID == "" || s.Mbus.URL == "" {
		t.Fatalf("other settings lost: %+v", s)
	}
}
