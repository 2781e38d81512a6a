package openstack

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Config describes the simulated cloud. The zero value is usable: one
// project "compleat" in domain "Default", user "admin" with password
// "secret", region "RegionOne", a private network 127.82.0.0/16 and an
// external network 127.83.0.0/16 for floating IPs.
type Config struct {
	Region      string
	DomainName  string
	ProjectName string
	UserName    string
	Password    string
	// ApplicationCredentialID and ApplicationCredentialSecret, when set,
	// authenticate too (Keystone's application_credential method).
	ApplicationCredentialID     string
	ApplicationCredentialSecret string

	// Networks are the project's networks (default: private and public).
	Networks []NetworkConfig
	// FloatingIPs are allocated to the project at start (addresses on the
	// external network), so that vip networks can name them.
	FloatingIPs []string
	// KeyPairs exist at start (default: "compleat").
	KeyPairs []string
	// Images exist at start, active (default: one "compleat-light" image
	// with the fixed id LightImageID).
	Images []ImageConfig

	// DataDir holds uploaded image data (default: a temporary directory).
	DataDir string
	// MaxImageBytes bounds one image upload (default 8 GiB); larger
	// uploads answer 413.
	MaxImageBytes int64

	// BuildTime is how long a server stays in BUILD (and a volume in
	// creating, attaching, ...) before the next state, unless a Booter
	// decides (default 200ms).
	BuildTime time.Duration
	// TokenTTL is the lifetime of a Keystone token (default 1h).
	TokenTTL time.Duration
	// MaxLimit is the most items one page of a listing holds (Nova's
	// osapi_max_limit; default 1000): longer listings are paged with
	// next links.
	MaxLimit int

	// Booter boots a real local VM for every server, when set.
	Booter Booter
	Logger *slog.Logger
}

// NetworkConfig is one network with one IPv4 subnet.
type NetworkConfig struct {
	Name     string
	CIDR     string // in 127.0.0.0/8
	Gateway  string
	External bool
}

// ImageConfig is an image that exists when the cloud starts (a light
// stemcell's image).
type ImageConfig struct {
	ID   string
	Name string
}

// LightImageID is the id of the default image, the one light stemcells of
// the simulated cloud name.
const LightImageID = "5c1b3d3e-8f3a-4c1e-9a57-0c0de1f1a001"

// Default names of the simulated cloud.
const (
	DefaultRegion  = "RegionOne"
	DefaultAZ      = "nova"
	defaultDomain  = "Default"
	defaultProject = "compleat"
)

func (c *Config) defaults() {
	if c.Region == "" {
		c.Region = DefaultRegion
	}
	if c.DomainName == "" {
		c.DomainName = defaultDomain
	}
	if c.ProjectName == "" {
		c.ProjectName = defaultProject
	}
	if c.UserName == "" {
		c.UserName = "admin"
	}
	if c.Password == "" {
		c.Password = "secret"
	}
	if len(c.Networks) == 0 {
		c.Networks = []NetworkConfig{
			{Name: "private", CIDR: "127.82.0.0/16", Gateway: "127.82.0.1"},
			{Name: "public", CIDR: "127.83.0.0/16", Gateway: "127.83.0.1", External: true},
		}
	}
	if len(c.KeyPairs) == 0 {
		c.KeyPairs = []string{"compleat"}
	}
	if len(c.Images) == 0 {
		c.Images = []ImageConfig{{ID: LightImageID, Name: "compleat-light"}}
	}
	if c.MaxImageBytes == 0 {
		c.MaxImageBytes = 8 << 30
	}
	if c.BuildTime == 0 {
		c.BuildTime = 200 * time.Millisecond
	}
	if c.TokenTTL == 0 {
		c.TokenTTL = time.Hour
	}
	if c.MaxLimit <= 0 {
		c.MaxLimit = 1000
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Cloud is one simulated OpenStack: Keystone, Nova, Neutron, Cinder and
// Glance behind one HTTP handler, sharing one state. Its methods are safe
// for concurrent use.
type Cloud struct {
	cfg      Config
	log      *slog.Logger
	baseURL  string
	dataDir  string
	ownsData bool

	projectID, domainID, userID string

	mu         sync.Mutex
	tokens     map[string]time.Time
	flavors    []*flavor
	keypairs   map[string]*keypair
	networks   map[string]*network
	subnets    map[string]*subnet
	ports      map[string]*port
	secgroups  map[string]*secGroup
	fips       map[string]*floatingIP
	servers    map[string]*server
	groups     map[string]*serverGroup
	volumes    map[string]*volume
	snapshots  map[string]*snapshot
	volTypes   []*volumeType
	images     map[string]*image
	faults     []*Fault
	buildFails []string // fault messages of the next servers that fail
	holdBuild  bool
	seq        int64 // creation order, for stable listings
	timers     sync.WaitGroup
	closed     bool
	requests   map[string]int
}

// New returns a simulated cloud answering at baseURL (scheme, host and
// port, no path: the service catalog points there).
func New(baseURL string, cfg Config) (*Cloud, error) {
	cfg.defaults()
	c := &Cloud{
		cfg:       cfg,
		log:       cfg.Logger,
		baseURL:   strings.TrimRight(baseURL, "/"),
		projectID: stableID("project", cfg.ProjectName),
		domainID:  "default",
		userID:    stableID("user", cfg.UserName),
		tokens:    map[string]time.Time{},
		keypairs:  map[string]*keypair{},
		networks:  map[string]*network{},
		subnets:   map[string]*subnet{},
		ports:     map[string]*port{},
		secgroups: map[string]*secGroup{},
		fips:      map[string]*floatingIP{},
		servers:   map[string]*server{},
		groups:    map[string]*serverGroup{},
		volumes:   map[string]*volume{},
		snapshots: map[string]*snapshot{},
		images:    map[string]*image{},
		requests:  map[string]int{},
	}
	if cfg.DomainName != defaultDomain {
		c.domainID = stableID("domain", cfg.DomainName)
	}
	c.dataDir = cfg.DataDir
	if c.dataDir == "" {
		d, err := os.MkdirTemp("", "openstack-sim-")
		if err != nil {
			return nil, fmt.Errorf("openstack sim: %w", err)
		}
		c.dataDir, c.ownsData = d, true
	}
	if err := os.MkdirAll(filepath.Join(c.dataDir, "images"), 0o700); err != nil {
		return nil, fmt.Errorf("openstack sim: %w", err)
	}
	c.flavors = defaultFlavors()
	c.volTypes = []*volumeType{
		{ID: stableID("volume-type", "standard"), Name: "standard", IsPublic: true},
		{ID: stableID("volume-type", "ssd"), Name: "ssd", IsPublic: true},
	}
	for _, k := range cfg.KeyPairs {
		c.keypairs[k] = newKeypair(k)
	}
	sg := &secGroup{ID: stableID("security-group", "default"), Name: "default", Description: "Default security group", ProjectID: c.projectID}
	c.secgroups[sg.ID] = sg
	for _, n := range cfg.Networks {
		if err := c.addNetwork(n); err != nil {
			return nil, err
		}
	}
	for _, a := range cfg.FloatingIPs {
		if _, err := c.allocateFloatingIP(a); err != nil {
			return nil, err
		}
	}
	for _, im := range cfg.Images {
		c.images[im.ID] = &image{
			ID: im.ID, Name: im.Name, Status: "active", DiskFormat: "raw", ContainerFormat: "bare",
			Visibility: "public", Created: time.Now().UTC(), Updated: time.Now().UTC(), seq: c.next(),
			Properties: map[string]any{},
		}
	}
	return c, nil
}

// Close stops the cloud's timers and boots and removes the data it owns.
func (c *Cloud) Close() error {
	c.mu.Lock()
	c.closed = true
	var ids []string
	for id := range c.servers {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	c.timers.Wait()
	if b := c.cfg.Booter; b != nil {
		for _, id := range ids {
			_ = b.Delete(id)
		}
	}
	if c.ownsData {
		return os.RemoveAll(c.dataDir)
	}
	return nil
}

// ProjectID is the id of the simulated project.
func (c *Cloud) ProjectID() string { return c.projectID }

// NetworkID is the id of the network called name ("" when none is).
func (c *Cloud) NetworkID(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.networks {
		if n.Name == name {
			return n.ID
		}
	}
	return ""
}

// AuthURL is Keystone's v3 endpoint, what OS_AUTH_URL holds.
func (c *Cloud) AuthURL() string { return c.baseURL + "/identity/v3" }

// Requests returns how many requests each "METHOD /path-pattern" got.
func (c *Cloud) Requests() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[string]int, len(c.requests))
	for k, v := range c.requests {
		m[k] = v
	}
	return m
}

// next returns the next creation sequence number; c.mu is held or the
// cloud is being built.
func (c *Cloud) next() int64 {
	c.seq++
	return c.seq
}

// later runs fn (under c.mu) after d, unless the cloud is closed.
func (c *Cloud) later(d time.Duration, fn func()) {
	c.timers.Add(1)
	time.AfterFunc(d, func() {
		defer c.timers.Done()
		c.mu.Lock()
		defer c.mu.Unlock()
		if !c.closed {
			fn()
		}
	})
}

// newID returns a random UUID (version 4).
func newID() string {
	var b [16]byte
	_, _ = io.ReadFull(rand.Reader, b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return formatUUID(b[:])
}

// stableID returns a UUID derived from a kind and a name, so that the
// default objects keep their ids across runs (manifests name them).
func stableID(kind, name string) string {
	h := sha1.Sum([]byte("compleat-openstack-sim/" + kind + "/" + name))
	h[6] = h[6]&0x0f | 0x50
	h[8] = h[8]&0x3f | 0x80
	return formatUUID(h[:16])
}

func formatUUID(b []byte) string {
	s := hex.EncodeToString(b)
	return s[:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:32]
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = io.ReadFull(rand.Reader, b)
	return hex.EncodeToString(b)
}

// isLoopback4 reports whether p lies in 127.0.0.0/8.
func isLoopback4(p netip.Prefix) bool {
	return p.Addr().Is4() && netip.MustParsePrefix("127.0.0.0/8").Contains(p.Addr()) && p.Bits() >= 8
}

func timestamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }
