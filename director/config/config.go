// Package config reads the director's own configuration: director.yml for
// `director serve --config`, and the defaults `serve --dev` builds in memory.
//
//	listen: 0.0.0.0:25555            # the HTTPS API (and /blobs/, /metrics)
//	advertise: https://director.example.com:25555  # how the CLI and agents reach it
//	data_dir: /var/lib/compleat       # state file, variables key, CA, blobs (fs)
//	tls:                              # omit to have the director's CA issue one
//	  cert_file: /etc/compleat/tls.crt
//	  key_file: /etc/compleat/tls.key
//	  ca_file: /etc/compleat/tls-ca.crt # what signed cert_file (given to agents)
//	  hosts: [director.example.com]   # names for a generated certificate
//	tokens:                           # bearer tokens and their scopes
//	- name: admin
//	  token_file: /etc/compleat/admin.token
//	  scopes: [admin]
//	- name: ci
//	  sha256: 9f86d0...               # hex sha256 of the token, never the token
//	  scopes: [read]
//	blobstore:
//	  type: fs                        # or s3
//	  dir: /var/lib/compleat/blobs    # fs (default: <data_dir>/blobs)
//	  s3: {bucket: b, region: r, endpoint: "", path_style: false,
//	       access_key_id: ..., secret_access_key: ...}
//	  public_url: https://director.example.com:25555   # how agents reach /blobs/ (or advertise:)
//	nats:
//	  listen: 0.0.0.0:4222
//	  url: nats://10.0.0.6:4222        # how agents reach it (or advertise:; default from listen)
//	  cluster:                         # with ha: the other directors' bus servers (docs/ha.md)
//	    listen: 0.0.0.0:4248
//	    routes: [nats-route://10.0.0.7:4248, nats-route://10.0.0.8:4248]
//	    agent_urls: [nats://10.0.0.6:4222, nats://10.0.0.7:4222, nats://10.0.0.8:4222]
//	external_cpis: [/var/vcap/jobs/vsphere_cpi/bin/cpi]   # what type: external may run
//	store:                            # where the state lives (default: bbolt, <data_dir>/state.db)
//	  backend: etcd                   # or bbolt
//	  endpoints: [https://10.0.0.11:2379, https://10.0.0.12:2379]
//	  ca_file: /etc/compleat/etcd-ca.crt      # TLS: the CA of the members,
//	  cert_file: /etc/compleat/etcd-client.crt  # and the director's client certificate
//	  key_file: /etc/compleat/etcd-client.key
//	  prefix: /compleat/              # every key is under it
//	  max_txn_ops: 128                # the cluster's --max-txn-ops
//	  variables_key_file: /var/lib/compleat/state.db.key  # default <data_dir>/state.db.key
//	ha:                               # several directors on one etcd state (docs/ha.md)
//	  name: director-1                # this director among the others (default: host name)
//	  lease_ttl: 10s                  # a dead leader leads this long at most (1s-60s)
//	cpis:                             # used until a cpi config is uploaded
//	- name: aws-east
//	  type: aws
//	  properties: {...}
//
// Every error names the file, the line and the field.
package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Scopes a token may hold. Admin implies read.
const (
	ScopeAdmin = "admin"
	ScopeRead  = "read"
)

// Director is director.yml.
type Director struct {
	Listen string `yaml:"listen"`
	// Advertise is the API's URL as clients and agents reach it
	// (https://HOST:PORT); default: the listen address, or the last of
	// tls.hosts when listen is 0.0.0.0. Its host is in the generated
	// certificate, and it is the default of blobstore.public_url and of the
	// bus URL's host.
	Advertise string    `yaml:"advertise"`
	DataDir   string    `yaml:"data_dir"`
	TLS       TLS       `yaml:"tls"`
	Tokens    []Token   `yaml:"tokens"`
	Blobstore Blobstore `yaml:"blobstore"`
	NATS      NATS      `yaml:"nats"`
	CPIs      yaml.Node `yaml:"cpis"`
	Store     Store     `yaml:"store"`
	// HA, when present, makes this director one of several sharing the
	// etcd state: one of them leads (runs tasks, resurrects), every one
	// serves the API.
	HA *HA `yaml:"ha"`
	// ExternalCPIs are the absolute paths of the BOSH CPI executables (or
	// directories of them) that cpi config entries of type external may
	// run; nothing else can be named by an uploaded cpi config.
	ExternalCPIs []string `yaml:"external_cpis"`
	file         string   `yaml:"-"`
	lines        map[string]int
}

// TLS is the API server's certificate. Empty means the director's own CA
// issues one for Hosts (and the listen address).
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// CAFile holds the certificates that signed CertFile; agents are given
	// them to trust the blob URLs. Default: the certificates of CertFile
	// themselves (its leaf is then trusted as it is).
	CAFile string   `yaml:"ca_file"`
	Hosts  []string `yaml:"hosts"`
}

// Token is one accepted bearer token. Exactly one of TokenFile (a file whose
// trimmed content is the token), SHA256 (hex digest of the token) or Token
// (only in configs built in memory, e.g. --dev) is set.
type Token struct {
	Name      string   `yaml:"name"`
	TokenFile string   `yaml:"token_file"`
	SHA256    string   `yaml:"sha256"`
	Scopes    []string `yaml:"scopes"`
	Token     string   `yaml:"-"`
}

// Digest returns the sha256 of the token, reading TokenFile when set.
func (t Token) Digest() ([32]byte, error) {
	switch {
	case t.Token != "":
		return sha256.Sum256([]byte(t.Token)), nil
	case t.TokenFile != "":
		raw, err := os.ReadFile(t.TokenFile)
		if err != nil {
			return [32]byte{}, fmt.Errorf("token %s: %w", t.Name, err)
		}
		tok := strings.TrimSpace(string(raw))
		if tok == "" {
			return [32]byte{}, fmt.Errorf("token %s: %s is empty", t.Name, t.TokenFile)
		}
		return sha256.Sum256([]byte(tok)), nil
	default:
		var d [32]byte
		raw, err := hex.DecodeString(t.SHA256)
		if err != nil || len(raw) != 32 {
			return d, fmt.Errorf("token %s: sha256 must be 64 hex digits", t.Name)
		}
		copy(d[:], raw)
		return d, nil
	}
}

// Blobstore selects and configures the blobstore.
type Blobstore struct {
	Type      string `yaml:"type"` // "fs" (default) or "s3"
	Dir       string `yaml:"dir"`
	S3        S3     `yaml:"s3"`
	PublicURL string `yaml:"public_url"`
	// Advertise is PublicURL under the listen/advertise naming of the API
	// and the bus; set one of them.
	Advertise string `yaml:"advertise"`
}

// S3 configures an S3 (or compatible) bucket.
type S3 struct {
	Bucket          string `yaml:"bucket"`
	Region          string `yaml:"region"`
	Endpoint        string `yaml:"endpoint"`
	PathStyle       bool   `yaml:"path_style"`
	AccessKeyID     string `yaml:"access_key_id"`
	SecretAccessKey string `yaml:"secret_access_key"`
	Prefix          string `yaml:"prefix"`
}

// NATS configures the embedded message bus.
type NATS struct {
	Listen string `yaml:"listen"`
	URL    string `yaml:"url"`
	// Cluster joins the bus to the other directors' (ha).
	Cluster *NATSCluster `yaml:"cluster"`
	// Advertise is URL under the listen/advertise naming of the API; set
	// one of them.
	Advertise string `yaml:"advertise"`
}

// NATSCluster joins the director's bus server to the other directors' by
// routes (mutual TLS with route certificates the shared CA issues).
type NATSCluster struct {
	// Listen is where the other servers' routes come (host:port).
	Listen string `yaml:"listen"`
	// Routes are the other servers' route addresses,
	// nats-route://HOST:PORT (this one's own may be listed: it is skipped).
	Routes []string `yaml:"routes"`
	// AgentURLs are every server's address as agents reach it
	// (nats://HOST:PORT), this one's among them: agents are given all and
	// move to another when theirs goes.
	AgentURLs []string `yaml:"agent_urls"`
}

// Store selects where the director keeps its state: a bbolt file in
// data_dir (the default) or an etcd cluster shared by several directors.
type Store struct {
	Backend   string   `yaml:"backend"` // "bbolt" (default) or "etcd"
	Endpoints []string `yaml:"endpoints"`
	// CAFile verifies the members; CertFile and KeyFile are the
	// director's client certificate.
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// Prefix is put before every key; default "/compleat/".
	Prefix string `yaml:"prefix"`
	// MaxTxnOps is the cluster's --max-txn-ops; default 128.
	MaxTxnOps int `yaml:"max_txn_ops"`
	// VariablesKeyFile is the 32-byte key that seals variables, the same
	// file on every director sharing the state; default
	// <data_dir>/state.db.key.
	VariablesKeyFile string `yaml:"variables_key_file"`
}

// HA configures a director that is one of several (docs/ha.md).
type HA struct {
	// Name tells this director apart from the others in the election and
	// in the tasks it runs; default: the host name.
	Name string `yaml:"name"`
	// LeaseTTL is how long the leader's lease lives without renewal: a
	// leader that dies is replaced after at most this long. Default 10s.
	LeaseTTL string `yaml:"lease_ttl"`
}

// TTL is LeaseTTL parsed (10s when empty); validate has checked it.
func (h HA) TTL() time.Duration {
	if h.LeaseTTL == "" {
		return 10 * time.Second
	}
	d, _ := time.ParseDuration(h.LeaseTTL)
	return d
}

// Load reads and validates director.yml. Relative paths in it are relative to
// the file's directory.
func Load(file string) (*Director, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read director config: %w", err)
	}
	return Parse(file, raw)
}

// Parse decodes and validates director.yml content; file names it in errors.
func Parse(file string, raw []byte) (*Director, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	var d Director
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	d.file = file
	d.lines = map[string]int{}
	indexLines(&root, "", d.lines)
	base := filepath.Dir(file)
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(base, p)
	}
	d.DataDir = abs(d.DataDir)
	d.TLS.CertFile, d.TLS.KeyFile, d.TLS.CAFile = abs(d.TLS.CertFile), abs(d.TLS.KeyFile), abs(d.TLS.CAFile)
	d.Blobstore.Dir = abs(d.Blobstore.Dir)
	d.Store.CAFile, d.Store.CertFile, d.Store.KeyFile = abs(d.Store.CAFile), abs(d.Store.CertFile), abs(d.Store.KeyFile)
	d.Store.VariablesKeyFile = abs(d.Store.VariablesKeyFile)
	for i := range d.Tokens {
		d.Tokens[i].TokenFile = abs(d.Tokens[i].TokenFile)
	}
	if err := d.validate(); err != nil {
		return nil, err
	}
	if d.NATS.URL == "" {
		d.NATS.URL = d.NATS.Advertise
	}
	if d.Blobstore.PublicURL == "" {
		d.Blobstore.PublicURL = d.Blobstore.Advertise
	}
	return &d, nil
}

func (d *Director) errf(field, format string, args ...any) error {
	loc := d.file
	if l, ok := d.lines[field]; ok {
		loc = fmt.Sprintf("%s:%d", d.file, l)
	}
	return fmt.Errorf("%s: %s: %s", loc, field, fmt.Sprintf(format, args...))
}

func (d *Director) validate() error {
	var errs []error
	if d.Listen == "" {
		errs = append(errs, d.errf("listen", "required (host:port)"))
	} else if _, _, err := net.SplitHostPort(d.Listen); err != nil {
		errs = append(errs, d.errf("listen", "%v", err))
	}
	if d.DataDir == "" {
		errs = append(errs, d.errf("data_dir", "required"))
	}
	for i, p := range d.ExternalCPIs {
		if !filepath.IsAbs(p) {
			errs = append(errs, d.errf(fmt.Sprintf("external_cpis[%d]", i), "%q is not an absolute path", p))
		}
	}
	if (d.TLS.CertFile == "") != (d.TLS.KeyFile == "") {
		errs = append(errs, d.errf("tls", "cert_file and key_file go together"))
	}
	if len(d.Tokens) == 0 {
		errs = append(errs, d.errf("tokens", "at least one token is required"))
	}
	names := map[string]bool{}
	for i, t := range d.Tokens {
		f := fmt.Sprintf("tokens[%d]", i)
		if t.Name == "" {
			errs = append(errs, d.errf(f+".name", "required"))
		}
		if names[t.Name] {
			errs = append(errs, d.errf(f+".name", "duplicate token name %q", t.Name))
		}
		names[t.Name] = true
		if (t.TokenFile == "") == (t.SHA256 == "") {
			errs = append(errs, d.errf(f, "set exactly one of token_file and sha256"))
		} else if t.SHA256 != "" {
			if _, err := t.Digest(); err != nil {
				errs = append(errs, d.errf(f+".sha256", "must be 64 hex digits"))
			}
		}
		if len(t.Scopes) == 0 {
			errs = append(errs, d.errf(f+".scopes", "required: admin or read"))
		}
		for j, s := range t.Scopes {
			if s != ScopeAdmin && s != ScopeRead {
				errs = append(errs, d.errf(fmt.Sprintf("%s.scopes[%d]", f, j), "unknown scope %q (admin, read)", s))
			}
		}
	}
	switch d.Blobstore.Type {
	case "", "fs":
	case "s3":
		if d.Blobstore.S3.Bucket == "" {
			errs = append(errs, d.errf("blobstore.s3.bucket", "required for an s3 blobstore"))
		}
	default:
		errs = append(errs, d.errf("blobstore.type", "unknown type %q (fs, s3)", d.Blobstore.Type))
	}
	if d.NATS.Listen != "" {
		if _, _, err := net.SplitHostPort(d.NATS.Listen); err != nil {
			errs = append(errs, d.errf("nats.listen", "%v", err))
		}
	}
	if d.NATS.URL != "" && d.NATS.Advertise != "" {
		errs = append(errs, d.errf("nats.advertise", "set either nats.url or nats.advertise (the same setting), not both"))
	}
	for _, fv := range [][2]string{{"nats.url", d.NATS.URL}, {"nats.advertise", d.NATS.Advertise}} {
		field, v := fv[0], fv[1]
		if v == "" {
			continue
		}
		if u, err := url.Parse(v); err != nil || u.Scheme != "nats" || u.Port() == "" {
			errs = append(errs, d.errf(field, "want nats://HOST:PORT, have %q", v))
		}
	}
	if d.Advertise != "" {
		if u, err := url.Parse(d.Advertise); err != nil || u.Scheme != "https" || u.Host == "" || u.Path != "" && u.Path != "/" {
			errs = append(errs, d.errf("advertise", "want https://HOST[:PORT], have %q", d.Advertise))
		}
	}
	if d.TLS.CAFile != "" && d.TLS.CertFile == "" {
		errs = append(errs, d.errf("tls.ca_file", "goes with cert_file"))
	}
	if d.Blobstore.PublicURL != "" && d.Blobstore.Advertise != "" {
		errs = append(errs, d.errf("blobstore.advertise", "set either blobstore.public_url or blobstore.advertise (the same setting), not both"))
	}
	for _, fv := range [][2]string{{"blobstore.public_url", d.Blobstore.PublicURL}, {"blobstore.advertise", d.Blobstore.Advertise}} {
		field, v := fv[0], fv[1]
		if v == "" {
			continue
		}
		if u, err := url.Parse(v); err != nil || u.Scheme != "https" || u.Host == "" {
			errs = append(errs, d.errf(field, "want https://HOST[:PORT], have %q", v))
		}
	}
	errs = append(errs, d.validateStore()...)
	errs = append(errs, d.validateHA()...)
	errs = append(errs, d.validateNATSCluster()...)
	return errors.Join(errs...)
}

func (d *Director) validateStore() []error {
	var errs []error
	st := d.Store
	switch st.Backend {
	case "", "bbolt":
		for _, fv := range [][2]string{{"endpoints", strings.Join(st.Endpoints, ",")}, {"ca_file", st.CAFile}, {"cert_file", st.CertFile}, {"key_file", st.KeyFile}, {"prefix", st.Prefix}} {
			if fv[1] != "" {
				errs = append(errs, d.errf("store."+fv[0], "only for backend: etcd"))
			}
		}
		if st.MaxTxnOps != 0 {
			errs = append(errs, d.errf("store.max_txn_ops", "only for backend: etcd"))
		}
		return errs
	case "etcd":
	default:
		return []error{d.errf("store.backend", "unknown backend %q (bbolt, etcd)", st.Backend)}
	}
	if len(st.Endpoints) == 0 {
		errs = append(errs, d.errf("store.endpoints", "required for backend: etcd"))
	}
	for i, e := range st.Endpoints {
		if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Port() == "" || u.Path != "" && u.Path != "/" {
			errs = append(errs, d.errf(fmt.Sprintf("store.endpoints[%d]", i), "want https://HOST:PORT, have %q", e))
		}
	}
	if (st.CertFile == "") != (st.KeyFile == "") {
		errs = append(errs, d.errf("store", "cert_file and key_file go together"))
	}
	if st.Prefix != "" && (!strings.HasPrefix(st.Prefix, "/") || !strings.HasSuffix(st.Prefix, "/")) {
		errs = append(errs, d.errf("store.prefix", "want /NAME/ (starting and ending with /), have %q", st.Prefix))
	}
	if st.MaxTxnOps < 0 {
		errs = append(errs, d.errf("store.max_txn_ops", "must not be negative"))
	}
	return errs
}

func (d *Director) validateHA() []error {
	if d.HA == nil {
		return nil
	}
	var errs []error
	if d.Store.Backend != "etcd" {
		errs = append(errs, d.errf("ha", "needs store.backend: etcd (the directors share their state there)"))
	}
	if d.Blobstore.Type != "s3" {
		errs = append(errs, d.errf("ha", "needs blobstore.type: s3 (every director serves every blob)"))
	}
	if d.NATS.Cluster == nil {
		errs = append(errs, d.errf("ha", "needs nats.cluster (agents must reach the leader's bus, whichever director leads)"))
	}
	if d.HA.Name != "" && !validName(d.HA.Name) {
		errs = append(errs, d.errf("ha.name", "want letters, digits, '-', '_' and '.', at most 64, have %q", d.HA.Name))
	}
	if d.HA.LeaseTTL != "" {
		ttl, err := time.ParseDuration(d.HA.LeaseTTL)
		switch {
		case err != nil:
			errs = append(errs, d.errf("ha.lease_ttl", "%v", err))
		case ttl < time.Second || ttl > time.Minute || ttl%time.Second != 0:
			errs = append(errs, d.errf("ha.lease_ttl", "want whole seconds from 1s to 60s, have %s", d.HA.LeaseTTL))
		}
	}
	return errs
}

func (d *Director) validateNATSCluster() []error {
	c := d.NATS.Cluster
	if c == nil {
		return nil
	}
	var errs []error
	if d.HA == nil {
		errs = append(errs, d.errf("nats.cluster", "only with ha (several directors)"))
	}
	if _, port, err := net.SplitHostPort(c.Listen); err != nil || port == "" || port == "0" {
		errs = append(errs, d.errf("nats.cluster.listen", "want HOST:PORT, have %q", c.Listen))
	}
	if len(c.Routes) == 0 {
		errs = append(errs, d.errf("nats.cluster.routes", "required: the other directors' route addresses"))
	}
	for i, r := range c.Routes {
		if u, err := url.Parse(r); err != nil || u.Scheme != "nats-route" || u.Hostname() == "" || u.Port() == "" {
			errs = append(errs, d.errf(fmt.Sprintf("nats.cluster.routes[%d]", i), "want nats-route://HOST:PORT, have %q", r))
		}
	}
	if len(c.AgentURLs) == 0 || len(c.AgentURLs) > 16 {
		errs = append(errs, d.errf("nats.cluster.agent_urls", "want every bus server's nats://HOST:PORT (1 to 16)"))
	}
	for i, a := range c.AgentURLs {
		if u, err := url.Parse(a); err != nil || (u.Scheme != "nats" && u.Scheme != "tls") || u.Hostname() == "" || u.Port() == "" {
			errs = append(errs, d.errf(fmt.Sprintf("nats.cluster.agent_urls[%d]", i), "want nats://HOST:PORT, have %q", a))
		}
	}
	return errs
}

func validName(s string) bool {
	if len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// File is the path the config was read from.
func (d *Director) File() string { return d.file }

// indexLines records the line of every mapping key and sequence item by its
// field path (a.b[2].c).
func indexLines(n *yaml.Node, path string, out map[string]int) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			indexLines(c, path, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			out[p] = k.Line
			indexLines(v, p, out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			out[p] = c.Line
			indexLines(c, p, out)
		}
	}
}
