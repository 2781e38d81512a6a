package config_test

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/director/config"
)

func TestParseGoodConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "admin.token"), []byte("s3cret\n"), 0o600)
	doc := `listen: 0.0.0.0:25555
data_dir: state
tokens:
- name: admin
  token_file: admin.token
  scopes: [admin]
- name: ci
  sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
  scopes: [read]
blobstore: {type: s3, s3: {bucket: b, region: eu-west-1}}
nats: {listen: 0.0.0.0:4222, url: "nats://10.0.0.6:4222"}
cpis:
- {name: aws, type: aws, properties: {region: eu-west-1}}
`
	file := filepath.Join(dir, "director.yml")
	os.WriteFile(file, []byte(doc), 0o600)
	c, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != filepath.Join(dir, "state") {
		t.Errorf("data_dir = %s, want it relative to the file", c.DataDir)
	}
	d, err := c.Tokens[0].Digest()
	if err != nil || d != sha256.Sum256([]byte("s3cret")) {
		t.Errorf("token file digest: %x, %v", d, err)
	}
	d, err = c.Tokens[1].Digest()
	if err != nil || d != sha256.Sum256([]byte("test")) {
		t.Errorf("sha256 digest: %x, %v", d, err)
	}
	if c.Blobstore.S3.Bucket != "b" || c.NATS.URL != "nats://10.0.0.6:4222" || c.CPIs.Kind == 0 {
		t.Errorf("config = %+v", c)
	}
}

func TestParseErrorsNameFileLineAndField(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ doc, want string }{
		{"data_dir: /x\ntokens: [{name: a, sha256: ab, scopes: [admin]}]\n", "d.yml: listen: required"},
		{"listen: nope\ndata_dir: /x\ntokens: [{name: a, token_file: t, scopes: [admin]}]\n", "d.yml:1: listen:"},
		{"listen: :1\ndata_dir: /x\ntokens:\n- name: a\n  sha256: abc\n  scopes: [admin]\n", "d.yml:5: tokens[0].sha256: must be 64 hex digits"},
		{"listen: :1\ndata_dir: /x\ntokens:\n- name: a\n  token_file: t\n  scopes: [root]\n", `d.yml:6: tokens[0].scopes[0]: unknown scope "root"`},
		{"listen: :1\ndata_dir: /x\ntokens:\n- name: a\n  scopes: [read]\n", "d.yml:4: tokens[0]: set exactly one of token_file and sha256"},
		{"listen: :1\ndata_dir: /x\n", "tokens: at least one token is required"},
		{"listen: :1\ndata_dir: /x\ntokens: [{name: a, token_file: t, scopes: [read]}]\nblobstore: {type: ftp}\n", `d.yml:4: blobstore.type: unknown type "ftp"`},
		{"listen: :1\ndata_dir: /x\ntokens: [{name: a, token_file: t, scopes: [read]}]\nblobstore: {type: s3}\n", "blobstore.s3.bucket: required"},
		{"listen: :1\nextra: 1\n", "field extra not found"},
		{"listen: :1\ndata_dir: /x\ntokens: [{name: a, token_file: t, scopes: [read]}]\nnats: {url: \"10.0.0.6:4222\"}\n", `d.yml:4: nats.url: want nats://HOST:PORT`},
		{"listen: :1\ndata_dir: /x\ntokens: [{name: a, token_file: t, scopes: [read]}]\nblobstore: {public_url: \"http://x\"}\n", `blobstore.public_url: want https://`},
		{"listen: :1\ndata_dir: /x\ntokens: [{name: a, token_file: t, scopes: [read]}]\nnats: {url: \"nats://a:1\", advertise: \"nats://b:1\"}\n", `d.yml:4: nats.advertise: set either nats.url or nats.advertise`},
		{"listen: :1\ndata_dir: /x\ntokens: [{name: a, token_file: t, scopes: [read]}]\nblobstore: {advertise: \"ftp://x\"}\n", `d.yml:4: blobstore.advertise: want https://`},
	} {
		_, err := config.Parse("d.yml", []byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q:\n err = %v\nwant %q", tc.doc, err, tc.want)
		}
	}
}

// Every director.yml example of docs/operations.md is a valid config: it
// parses and validates as written (the one-machine example is also started
// and deployed through by test/e2e TestProductionFromTheDocs).
func TestOperationsExamplesParse(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, block := range strings.Split(string(doc), "```yaml\n")[1:] {
		text, _, ok := strings.Cut(block, "```")
		if !ok || !strings.Contains(text, "data_dir:") || !strings.Contains(text, "tokens:") {
			continue // not a director.yml
		}
		n++
		if _, err := config.Parse(fmt.Sprintf("operations.md example %d", n), []byte(text)); err != nil {
			t.Errorf("example %d does not parse: %v\n%s", n, err, text)
		}
	}
	if n < 3 {
		t.Errorf("%d director.yml examples found in docs/operations.md, want at least 3", n)
	}
}

// nats.advertise and blobstore.advertise are nats.url and
// blobstore.public_url under the listen/advertise naming.
func TestAdvertiseNames(t *testing.T) {
	t.Parallel()
	d, err := config.Parse("d.yml", []byte("listen: 0.0.0.0:1\ndata_dir: /x\ntokens: [{name: a, token_file: t, scopes: [read]}]\n"+
		"nats: {listen: 0.0.0.0:4222, advertise: nats://10.0.0.6:4222}\nblobstore: {type: fs, advertise: https://blobs.example.com:25555}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d.NATS.URL != "nats://10.0.0.6:4222" || d.Blobstore.PublicURL != "https://blobs.example.com:25555" {
		t.Errorf("nats.url %q, blobstore.public_url %q", d.NATS.URL, d.Blobstore.PublicURL)
	}
}

func TestStoreSection(t *testing.T) {
	t.Parallel()
	const head = "listen: :1\ndata_dir: /x\ntokens: [{name: a, token_file: t, scopes: [read]}]\n"
	d, err := config.Parse(filepath.Join("/etc/compleat", "d.yml"), []byte(head+
		"store: {backend: etcd, endpoints: [\"https://127.0.0.1:2379\"], ca_file: ca.crt, cert_file: c.crt, key_file: c.key, prefix: /a/}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d.Store.Backend != "etcd" || d.Store.CertFile != filepath.Join("/etc/compleat", "c.crt") || d.Store.Prefix != "/a/" {
		t.Errorf("store = %+v", d.Store)
	}
	for _, tc := range []struct{ doc, want string }{
		{"store: {backend: consul}\n", `d.yml:4: store.backend: unknown backend "consul" (bbolt, etcd)`},
		{"store: {backend: etcd}\n", "store.endpoints: required for backend: etcd"},
		{"store:\n  backend: etcd\n  endpoints: [\"127.0.0.1:2379\"]\n", `d.yml:6: store.endpoints[0]: want https://HOST:PORT, have "127.0.0.1:2379"`},
		{"store: {backend: etcd, endpoints: [\"https://e:2379\"], cert_file: c}\n", "store: cert_file and key_file go together"},
		{"store: {backend: etcd, endpoints: [\"https://e:2379\"], prefix: compleat}\n", `store.prefix: want /NAME/`},
		{"store: {endpoints: [\"https://e:2379\"]}\n", "store.endpoints: only for backend: etcd"},
		{"store: {backend: etcd, endpoints: [\"https://e:2379\"], max_txn_ops: -1}\n", "store.max_txn_ops: must not be negative"},
		{"store: {backend: etcd, endpoint: x}\n", "field endpoint not found"},
	} {
		_, err := config.Parse("d.yml", []byte(head+tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q:\n err = %v\nwant %q", tc.doc, err, tc.want)
		}
	}
}

func TestHASection(t *testing.T) {
	t.Parallel()
	const head = "listen: :1\ndata_dir: /x\ntokens: [{name: a, token_file: t, scopes: [read]}]\n"
	const etcd = "store: {backend: etcd, endpoints: [\"https://127.0.0.1:2379\"]}\n"
	const s3 = "blobstore: {type: s3, s3: {bucket: b}}\n"
	const bus = "nats: {cluster: {listen: \"127.0.0.1:4248\", routes: [\"nats-route://127.0.0.2:4248\"], agent_urls: [\"nats://127.0.0.1:4222\", \"nats://127.0.0.2:4222\"]}}\n"
	d, err := config.Parse("d.yml", []byte(head+etcd+s3+bus+"ha: {name: d-1, lease_ttl: 5s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d.HA == nil || d.HA.Name != "d-1" || d.HA.TTL() != 5*time.Second {
		t.Errorf("ha = %+v", d.HA)
	}
	if d.NATS.Cluster == nil || len(d.NATS.Cluster.AgentURLs) != 2 {
		t.Errorf("nats.cluster = %+v", d.NATS.Cluster)
	}
	if d, err := config.Parse("d.yml", []byte(head+etcd+s3+bus+"ha: {}\n")); err != nil || d.HA == nil || d.HA.TTL() != 10*time.Second {
		t.Errorf("ha: {} = %+v, %v; want on, 10s", d, err)
	}
	if d, err := config.Parse("d.yml", []byte(head)); err != nil || d.HA != nil {
		t.Errorf("no ha section = %+v, %v; want off", d, err)
	}
	for _, tc := range []struct{ doc, want string }{
		{s3 + bus + "ha: {}\n", "d.yml:6: ha: needs store.backend: etcd"},
		{etcd + bus + "ha: {}\n", "d.yml:6: ha: needs blobstore.type: s3"},
		{etcd + s3 + "ha: {}\n", "d.yml:6: ha: needs nats.cluster"},
		{etcd + s3 + bus + "ha: {lease_ttl: 500ms}\n", "ha.lease_ttl: want whole seconds from 1s to 60s"},
		{etcd + s3 + bus + "ha: {lease_ttl: soon}\n", `ha.lease_ttl: time: invalid duration "soon"`},
		{etcd + s3 + bus + "ha: {name: \"a b\"}\n", `ha.name: want letters`},
		{etcd + s3 + bus + "ha: {leader: true}\n", "field leader not found"},
		{bus, "nats.cluster: only with ha"},
		{"nats: {cluster: {listen: x, routes: [\"nats://a:1\"], agent_urls: [\"http://a:1\"]}}\n", "nats.cluster.listen: want HOST:PORT"},
		{"nats: {cluster: {listen: x, routes: [\"nats://a:1\"], agent_urls: [\"http://a:1\"]}}\n", "nats.cluster.routes[0]: want nats-route://HOST:PORT"},
		{"nats: {cluster: {listen: x, routes: [\"nats://a:1\"], agent_urls: [\"http://a:1\"]}}\n", "nats.cluster.agent_urls[0]: want nats://HOST:PORT"},
		{"nats: {cluster: {listen: \"a:1\"}}\n", "nats.cluster.routes: required"},
	} {
		_, err := config.Parse("d.yml", []byte(head+tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q:\n err = %v\nwant %q", tc.doc, err, tc.want)
		}
	}
}
