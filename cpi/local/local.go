// Package local is the local CPI: a cloud whose "VMs" are process trees on
// this machine.
//
// A VM is a directory, <data_dir>/vms/<cid>/, plus an agent process started
// from the stemcell in its own session. When the plugin runs as root, the
// agent also gets its own mount namespace in which the VM's root/ directory
// is bind-mounted at /var/vcap, so jobs see BOSH's paths and nothing the VM
// mounts is seen by the host. Without root the agent is told to use
// <vm dir>/root as its base directory instead.
//
// Every VM has its own address in 127.0.0.0/8: manual networks use the
// address the director chose; dynamic networks get one from the
// dynamic_range property. Persistent disks are directories under
// <data_dir>/disks/; attaching one hands the agent its path, and the agent
// bind-mounts it at its store path.
//
// All state lives on disk, guarded by an flock(2) on
// <data_dir>/cpi-local/lock, so a restarted plugin (or a second one on the
// same data directory) knows every VM, disk and address. docs/cpi/local.md describes the layout for
// operators.
package local

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/proctree"
)

// DefaultDynamicRange is where dynamic networks take addresses from when the
// dynamic_range property is not set. It stays clear of 127.77.0.0/16, which
// the example manifests use for manual networks.
const DefaultDynamicRange = "127.78.0.0/16"

// defaultStopTimeout is how long DeleteVM and RebootVM wait after SIGTERM
// before they send SIGKILL.
const defaultStopTimeout = 3 * time.Second

// Properties are the plugin's configuration, passed by the host as one JSON
// object.
type Properties struct {
	// DataDir is the absolute directory holding every stemcell, VM, disk and
	// snapshot. It is created when missing.
	DataDir string `json:"data_dir"`
	// DynamicRange is the IPv4 prefix, inside 127.0.0.0/8, from which VMs on
	// dynamic networks get their address.
	DynamicRange string `json:"dynamic_range,omitempty"`
	// Agent holds default agent settings: top-level keys that a VM's agent
	// settings document does not set are taken from here.
	Agent json.RawMessage `json:"agent,omitempty"`
	// ResizeDisk false makes the plugin behave as a cloud that cannot
	// resize disks: Info reports no ResizeDisk capability and ResizeDisk
	// answers ErrNotImplemented, so that a director replaces a growing disk
	// and moves its data. Default true.
	ResizeDisk *bool `json:"resize_disk,omitempty"`
}

// CPI is the local CPI. Its methods are safe for concurrent use, also by
// several CPI values (or processes) sharing one data directory.
type CPI struct {
	dataDir       string
	dynamic       netip.Prefix
	agentDefaults map[string]json.RawMessage
	// isolate is true when agents get their own mount namespace (root).
	isolate     bool
	stopTimeout time.Duration
	logger      *slog.Logger
	noResize    bool // properties.resize_disk: false
}

var _ cpi.CPI = (*CPI)(nil)

// Option configures a CPI.
type Option func(*CPI)

// WithLogger sets the logger; the default writes JSON to stderr, as plugins
// do.
func WithLogger(l *slog.Logger) Option { return func(c *CPI) { c.logger = l } }

// WithStopTimeout sets how long a VM's processes get between SIGTERM and
// SIGKILL.
func WithStopTimeout(d time.Duration) Option { return func(c *CPI) { c.stopTimeout = d } }

// New returns the local CPI configured by properties (a JSON object, see
// Properties). Bad properties yield cpi.ErrInvalidCloudProperties naming the
// field.
func New(properties json.RawMessage, opts ...Option) (*CPI, error) {
	props, err := parseProperties(properties)
	if err != nil {
		return nil, err
	}
	rng := props.DynamicRange
	if rng == "" {
		rng = DefaultDynamicRange
	}
	prefix, err := netip.ParsePrefix(rng)
	if err != nil {
		return nil, cpi.InvalidCloudProperty("dynamic_range", "%q is not a CIDR prefix: %v", rng, err)
	}
	if !prefix.Addr().Is4() || prefix.Bits() < 8 || prefix.Bits() > 30 || !loopback.Contains(prefix.Addr()) {
		return nil, cpi.InvalidCloudProperty("dynamic_range", "%q must be an IPv4 prefix of length 8 to 30 inside 127.0.0.0/8", rng)
	}
	c := &CPI{
		dataDir:     filepath.Clean(props.DataDir),
		dynamic:     prefix.Masked(),
		isolate:     os.Geteuid() == 0,
		stopTimeout: defaultStopTimeout,
		logger:      slog.New(slog.NewJSONHandler(os.Stderr, nil)),
		noResize:    props.ResizeDisk != nil && !*props.ResizeDisk,
	}
	if len(props.Agent) > 0 {
		if err := json.Unmarshal(props.Agent, &c.agentDefaults); err != nil || c.agentDefaults == nil {
			return nil, cpi.InvalidCloudProperty("agent", "must be a JSON object")
		}
	}
	for _, o := range opts {
		o(c)
	}
	if c.isolate {
		if err := proctree.ProbeNamespace(); err != nil {
			c.logger.Warn("root, but no mount namespaces here: VMs share the host's mounts and work in <vm dir>/root", "error", err)
			c.isolate = false
		}
	}
	if c.isolate && (c.dataDir == proctree.VcapDir || strings.HasPrefix(c.dataDir, proctree.VcapDir+"/")) {
		return nil, cpi.InvalidCloudProperty("data_dir", "%q is under %s, which every VM replaces with its own", c.dataDir, proctree.VcapDir)
	}
	for _, d := range []string{c.dataDir, c.dir(kindStemcell), c.dir(kindVM), c.dir(kindDisk), c.dir(kindSnapshot), c.tmpDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("local cpi: create data directory: %w", err)
		}
	}
	c.sweepTmp()
	return c, nil
}

func parseProperties(raw json.RawMessage) (Properties, error) {
	var p Properties
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return p, cpi.InvalidCloudProperty("data_dir", "is required")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return p, cpi.InvalidCloudProperty("", "properties must be a JSON object: %v", err)
	}
	for k, v := range fields {
		var err error
		switch k {
		case "data_dir":
			err = json.Unmarshal(v, &p.DataDir)
		case "dynamic_range":
			err = json.Unmarshal(v, &p.DynamicRange)
		case "agent":
			p.Agent = v
		case "resize_disk":
			var b bool
			if err := json.Unmarshal(v, &b); err != nil {
				return p, cpi.InvalidCloudProperty(k, "must be true or false")
			}
			p.ResizeDisk = &b
		default:
			return p, cpi.InvalidCloudProperty(k, "unknown property")
		}
		if err != nil {
			return p, cpi.InvalidCloudProperty(k, "must be a string")
		}
	}
	if p.DataDir == "" {
		return p, cpi.InvalidCloudProperty("data_dir", "is required")
	}
	if !filepath.IsAbs(p.DataDir) {
		return p, cpi.InvalidCloudProperty("data_dir", "%q must be an absolute path", p.DataDir)
	}
	return p, nil
}

// Info reports what the local CPI supports: everything (but ResizeDisk
// when properties.resize_disk is false).
func (c *CPI) Info(ctx context.Context) (cpi.Info, error) {
	return cpi.Info{
		Name:            "local",
		APIVersion:      cpi.APIVersion,
		StemcellFormats: []string{"local-tgz"},
		Capabilities: cpi.Capabilities{
			Snapshots:       true,
			ResizeDisk:      !c.noResize,
			DiskHints:       true,
			DynamicNetworks: true,
			ListVMs:         true,
			ListDisks:       true,
		},
	}, nil
}

// kind is the kind of object a cid names; it is the cid's prefix.
type kind string

const (
	kindStemcell kind = "sc"
	kindVM       kind = "vm"
	kindDisk     kind = "disk"
	kindSnapshot kind = "snap"
)

var cidPattern = regexp.MustCompile(`^(sc|vm|disk|snap)-[0-9a-f]{16}$`)

func (k kind) dirName() string {
	switch k {
	case kindStemcell:
		return "stemcells"
	case kindVM:
		return "vms"
	case kindDisk:
		return "disks"
	default:
		return "snapshots"
	}
}

func newCID(k kind) string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return string(k) + "-" + hex.EncodeToString(b[:])
}

// validCID reports whether cid names an object of kind k. Anything else,
// in particular anything that could escape the data directory, names no
// object.
func validCID(k kind, cid string) bool {
	return cidPattern.MatchString(cid) && strings.HasPrefix(cid, string(k)+"-")
}

func (c *CPI) dir(k kind) string { return filepath.Join(c.dataDir, k.dirName()) }

func (c *CPI) path(k kind, cid string) string { return filepath.Join(c.dir(k), cid) }

// privateDir holds what only the CPI uses: its lock and its staging area.
// It has a name of its own because data_dir may be shared (the director's
// --data directory, with its own tmp/).
func (c *CPI) privateDir() string { return filepath.Join(c.dataDir, "cpi-local") }

func (c *CPI) tmpDir() string { return filepath.Join(c.privateDir(), "tmp") }

// stage returns a fresh directory under tmp/ in which an object is prepared
// before it is renamed into place, so a half-made object is never seen.
func (c *CPI) stage(cid string) (string, error) {
	d := filepath.Join(c.tmpDir(), cid+"."+newCID("x")[2:])
	if err := os.Mkdir(d, 0o755); err != nil {
		return "", err
	}
	return d, nil
}

// hide renames dir out of sight, into tmp/, and returns its new path for
// the caller to delete: the object disappears at once even when deleting its
// files takes time. A missing dir yields "".
func (c *CPI) hide(dir string) (string, error) {
	gone := filepath.Join(c.tmpDir(), "deleting."+filepath.Base(dir)+"."+newCID("x")[2:])
	if err := os.Rename(dir, gone); err != nil {
		if os.IsNotExist(err) {
			return "", nil
		}
		return "", err
	}
	return gone, nil
}

// sweepTmp deletes leftovers of operations interrupted long ago (a crashed
// plugin). Recent entries may belong to another plugin process at work.
func (c *CPI) sweepTmp() {
	entries, err := os.ReadDir(c.tmpDir())
	if err != nil {
		return
	}
	for _, e := range entries {
		info, err := e.Info()
		if err == nil && time.Since(info.ModTime()) > time.Hour {
			_ = os.RemoveAll(filepath.Join(c.tmpDir(), e.Name()))
		}
	}
}

// lock takes the data directory's lock, which guards address allocation,
// attachments and the records. It polls so that ctx can cancel the wait.
func (c *CPI) lock(ctx context.Context) (unlock func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(c.privateDir(), "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing releases the lock
		}
		if err != syscall.EWOULDBLOCK && err != syscall.EINTR {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for lock on %s: %w", c.dataDir, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// writeJSON writes v to path atomically (temporary file, then rename).
func writeJSON(path string, v any, mode os.FileMode) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(path, append(b, '\n'), mode)
}

func writeFile(path string, b []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// objectFields decodes a cloud_properties document, which must be a JSON
// object (or absent).
func objectFields(raw json.RawMessage) (map[string]json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return map[string]json.RawMessage{}, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, cpi.InvalidCloudProperty("", "cloud properties must be a JSON object")
	}
	return m, nil
}
