package app_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/compleat/compleat/director/store/etcdtest"
)

// TestServeConfigEtcdStore runs `serve --config` with the state in etcd: a
// config uploaded through the API lands under the prefix, and no state file
// is made.
func TestServeConfigEtcdStore(t *testing.T) {
	srv := etcdtest.Start(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "admin.token"), []byte("admin-secret-0123456789\n"), 0o600)
	cfg := `listen: 127.0.0.1:0
data_dir: data
tokens:
- {name: admin, token_file: admin.token, scopes: [admin]}
nats: {listen: "127.0.0.1:0"}
store: {backend: etcd, endpoints: ["` + srv.Endpoint + `"], prefix: /director-test/}
`
	os.WriteFile(filepath.Join(dir, "director.yml"), []byte(cfg), 0o600)
	d := serveConfig(t, filepath.Join(dir, "director.yml"), "admin-secret-0123456789")
	admin := d.env
	admin["DIRECTOR_CA_CERT"] = filepath.Join(dir, "data", "ca.pem")
	mustRun(t, admin, "update-cloud-config", filepath.Join(repoRoot(t), "manifests", "local", "cloud-config.yml"))
	if err := d.stop(); err != nil {
		t.Errorf("serve: %v", err)
	}

	c, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	gctx, gcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer gcancel()
	r, err := c.Get(gctx, "/director-test/configs/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Kvs) != 1 || !strings.Contains(string(r.Kvs[0].Value), "compilation") {
		t.Errorf("configs in etcd = %v, want the cloud config", r.Kvs)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "state.db")); !os.IsNotExist(err) {
		t.Errorf("state.db made with the etcd backend: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "state.db.key")); err != nil {
		t.Errorf("variables key: %v", err)
	}
}
