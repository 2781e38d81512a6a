package machine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/compleat/compleat/cpi/proctree"
)

// The files of a VM directory, <dir>/vms/<name>/.
const (
	recordFile     = "vm.json"      // record
	agentLogFile   = "agent.log"    // the agent's stdout and stderr
	rootDirName    = "root"         // the VM's /var/vcap
	devDiskDir     = "dev-disk"     // the VM's /dev/disk
	configDriveDir = "config-drive" // the config drive's files
)

// DevDisk is where, in an isolated VM, the VM's dev-disk/ directory appears.
const DevDisk = "/dev/disk"

// Errors of the boot machinery.
var (
	// ErrNotFound: no VM has that id.
	ErrNotFound = errors.New("no such vm")
	// ErrExists: Boot was called for an id that has a VM already.
	ErrExists = errors.New("vm exists already")
	// ErrNoVolumes: the VM cannot take volumes (not isolated: no root or no
	// mount namespaces).
	ErrNoVolumes = errors.New("volumes need an isolated vm (root and mount namespaces)")
)

// Infrastructures the agent reads its settings from, as its --infrastructure.
const (
	AWS       = "aws"
	Azure     = "azure"
	OpenStack = "openstack"
)

// Spec describes the VM of a cloud instance.
type Spec struct {
	// ID is the cloud's id for the instance (i-…, an ARM id, a Nova
	// uuid); unique on the host.
	ID string
	// Agent is the agent binary (the stemcell's), an absolute path.
	Agent string
	// IP is the instance's private address, in 127.0.0.0/8.
	IP string
	// Infrastructure is the agent's --infrastructure: AWS, Azure or
	// OpenStack.
	Infrastructure string
	// Metadata, when set, is the cloud's metadata service as this instance
	// sees it. It is served on a listener of the VM's own, whose URL the
	// agent gets as --metadata-url.
	Metadata http.Handler
	// ConfigDrive, when set, holds the files of a config drive by
	// slash-separated relative path ("openstack/latest/user_data"). They are
	// written to the VM's config-drive/ directory, which the agent gets as
	// --config-drive.
	ConfigDrive map[string][]byte
	// AgentArgs are further arguments for the agent (e.g. "--log-level",
	// "debug").
	AgentArgs []string
}

// VM is a snapshot of a VM's state.
type VM struct {
	ID  string
	IP  string
	Dir string
	// MetadataURL is where the VM's metadata service listens ("" without
	// one, or while the Host that booted it is not running).
	MetadataURL string
	// PID is the agent's process id (0 when stopped).
	PID int
	// Running is true while the agent runs.
	Running bool
	// Isolated is true when the VM has its own mount namespace.
	Isolated bool
	// Volumes are the ids of the attached volumes, sorted.
	Volumes []string
}

// record is what the host keeps about a VM, in vm.json.
type record struct {
	ID             string                  `json:"id"`
	IP             string                  `json:"ip"`
	Agent          string                  `json:"agent"`
	Infrastructure string                  `json:"infrastructure"`
	AgentArgs      []string                `json:"agent_args,omitempty"`
	ConfigDrive    bool                    `json:"config_drive,omitempty"`
	Isolated       bool                    `json:"isolated"`
	Stopped        bool                    `json:"stopped,omitempty"`
	Process        proctree.Process        `json:"process"`
	Volumes        map[string]volumeRecord `json:"volumes,omitempty"`
	CreatedAt      time.Time               `json:"created_at"`
}

type volumeRecord struct {
	Image string `json:"image"`
	// Loop and PartLoop are the loop devices of the disk and its
	// partition; Node names their nodes in dev-disk/devices/.
	Loop     string   `json:"loop"`
	PartLoop string   `json:"part_loop"`
	Node     string   `json:"node"`
	Links    []string `json:"links"`
}

// vm is a VM booted by this Host: its record and its metadata listener.
type vm struct {
	mu     sync.Mutex // serialises operations on the VM
	dir    string
	rec    record
	server *http.Server
	url    string
	gone   bool
}

// Host boots and ends the VMs of one simulated cloud, under one directory.
// Its methods are safe for concurrent use.
type Host struct {
	dir          string
	isolate      bool
	metadataAddr string
	stopTimeout  time.Duration
	logger       *slog.Logger

	mu   sync.Mutex
	vms  map[string]*vm
	loop sync.Mutex // serialises loop device allocation
}

// Option configures a Host.
type Option func(*Host)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(h *Host) { h.logger = l } }

// WithStopTimeout sets how long a VM's processes get between SIGTERM and
// SIGKILL on Stop, Reboot and Delete (default 3s).
func WithStopTimeout(d time.Duration) Option { return func(h *Host) { h.stopTimeout = d } }

// WithMetadataAddr sets the loopback address on which metadata services
// listen, each on a port of its own (default 127.0.0.1).
func WithMetadataAddr(addr string) Option { return func(h *Host) { h.metadataAddr = addr } }

// WithoutIsolation makes VMs share the host's mounts even as root, as
// without root (no private /var/vcap, no volumes).
func WithoutIsolation() Option { return func(h *Host) { h.isolate = false } }

// NewHost returns a Host keeping its VMs under dir (created when missing).
// As root, where the kernel allows mount namespaces, VMs are isolated.
func NewHost(dir string, opts ...Option) (*Host, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("machine: directory %q must be absolute", dir)
	}
	h := &Host{
		dir:          filepath.Clean(dir),
		isolate:      os.Geteuid() == 0,
		metadataAddr: "127.0.0.1",
		stopTimeout:  3 * time.Second,
		logger:       slog.New(slog.DiscardHandler),
		vms:          map[string]*vm{},
	}
	for _, o := range opts {
		o(h)
	}
	if a, err := netip.ParseAddr(h.metadataAddr); err != nil || !a.Is4() || !a.IsLoopback() {
		return nil, fmt.Errorf("machine: metadata address %q must be an IPv4 address in 127.0.0.0/8", h.metadataAddr)
	}
	if h.isolate {
		if err := proctree.ProbeNamespace(); err != nil {
			h.logger.Warn("root, but no mount namespaces here: VMs share the host's mounts and take no volumes", "error", err)
			h.isolate = false
		}
	}
	if h.isolate && (h.dir == proctree.VcapDir || strings.HasPrefix(h.dir, proctree.VcapDir+"/")) {
		return nil, fmt.Errorf("machine: directory %q is under %s, which every VM replaces with its own", h.dir, proctree.VcapDir)
	}
	if err := os.MkdirAll(filepath.Join(h.dir, "vms"), 0o755); err != nil {
		return nil, fmt.Errorf("machine: %w", err)
	}
	return h, nil
}

// Isolated reports whether the host's VMs get mount namespaces (and so can
// take volumes).
func (h *Host) Isolated() bool { return h.isolate }

var safeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`)

// dirName is the directory name of the VM with the cloud id id: the id
// itself when it is a safe file name, else a hash of it (an ARM id).
func dirName(id string) string {
	if safeName.MatchString(id) {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "vm-" + hex.EncodeToString(sum[:12])
}

func (h *Host) vmDir(id string) string { return filepath.Join(h.dir, "vms", dirName(id)) }

// Boot boots the VM of a cloud instance and returns once its agent has
// started. On error nothing of the VM is left.
func (h *Host) Boot(ctx context.Context, s Spec) (VM, error) {
	if err := h.check(s); err != nil {
		return VM{}, fmt.Errorf("boot vm %s: %w", s.ID, err)
	}
	h.mu.Lock()
	if _, ok := h.vms[s.ID]; ok {
		h.mu.Unlock()
		return VM{}, fmt.Errorf("boot vm %s: %w", s.ID, ErrExists)
	}
	v := &vm{dir: h.vmDir(s.ID)}
	v.mu.Lock()
	defer v.mu.Unlock()
	h.vms[s.ID] = v
	h.mu.Unlock()

	err := h.boot(ctx, v, s)
	if err != nil {
		_ = h.remove(context.WithoutCancel(ctx), v)
		h.mu.Lock()
		delete(h.vms, s.ID)
		h.mu.Unlock()
		return VM{}, fmt.Errorf("boot vm %s: %w", s.ID, err)
	}
	h.logger.InfoContext(ctx, "booted vm", "vm", s.ID, "ip", s.IP, "pid", v.rec.Process.PID, "metadata", v.url, "isolated", v.rec.Isolated)
	return v.snapshot(), nil
}

func (h *Host) check(s Spec) error {
	if s.ID == "" {
		return errors.New("no instance id")
	}
	if !filepath.IsAbs(s.Agent) {
		return fmt.Errorf("agent %q: not an absolute path", s.Agent)
	}
	if fi, err := os.Stat(s.Agent); err != nil || !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("agent %s: not an executable file", s.Agent)
	}
	ip, err := netip.ParseAddr(s.IP)
	if err != nil || !ip.Is4() || !ip.IsLoopback() {
		return fmt.Errorf("private address %q: simulated networks live in 127.0.0.0/8", s.IP)
	}
	switch s.Infrastructure {
	case AWS, Azure, OpenStack:
	default:
		return fmt.Errorf("infrastructure %q: want aws, azure or openstack", s.Infrastructure)
	}
	if s.Metadata == nil && s.ConfigDrive == nil {
		return errors.New("neither a metadata service nor a config drive: the agent would find no settings")
	}
	for name := range s.ConfigDrive {
		if !filepath.IsLocal(filepath.FromSlash(name)) || strings.HasPrefix(name, "/") {
			return fmt.Errorf("config drive file %q: not a relative path inside the drive", name)
		}
	}
	return nil
}

func (h *Host) boot(ctx context.Context, v *vm, s Spec) error {
	if _, err := os.Stat(v.dir); err == nil {
		return fmt.Errorf("%s exists: a vm of a previous run is left (delete it first)", v.dir)
	}
	for _, d := range []string{v.dir, filepath.Join(v.dir, rootDirName), filepath.Join(v.dir, devDiskDir)} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	v.rec = record{
		ID: s.ID, IP: s.IP, Agent: s.Agent, Infrastructure: s.Infrastructure,
		AgentArgs: s.AgentArgs, ConfigDrive: s.ConfigDrive != nil, Isolated: h.isolate,
		CreatedAt: time.Now().UTC(),
	}
	if s.ConfigDrive != nil {
		for name, b := range s.ConfigDrive {
			p := filepath.Join(v.dir, configDriveDir, filepath.FromSlash(name))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			// User data carries the agent's credentials.
			if err := os.WriteFile(p, b, 0o600); err != nil {
				return err
			}
		}
		if err := os.MkdirAll(filepath.Join(v.dir, configDriveDir), 0o755); err != nil {
			return err
		}
	}
	if err := h.save(v); err != nil {
		return err
	}
	if s.Metadata != nil {
		if err := h.serveMetadata(v, s.Metadata); err != nil {
			return err
		}
	}
	return h.start(v)
}

// serveMetadata serves the VM's metadata service on a listener of its own.
func (h *Host) serveMetadata(v *vm, handler http.Handler) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(h.metadataAddr, "0"))
	if err != nil {
		return fmt.Errorf("metadata service: %w", err)
	}
	v.server = &http.Server{
		Handler:           http.MaxBytesHandler(handler, 64<<10),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(h.logger.Handler(), slog.LevelWarn),
	}
	v.url = "http://" + ln.Addr().String()
	go v.server.Serve(ln)
	return nil
}

// start starts the VM's agent and records it.
func (h *Host) start(v *vm) error {
	args := []string{"--infrastructure", v.rec.Infrastructure}
	if v.url != "" {
		args = append(args, "--metadata-url", v.url)
	}
	if v.rec.ConfigDrive {
		args = append(args, "--config-drive", filepath.Join(v.dir, configDriveDir))
	}
	binds := []proctree.Bind(nil)
	if v.rec.Isolated {
		binds = []proctree.Bind{{Source: filepath.Join(v.dir, devDiskDir), Target: DevDisk}}
	} else {
		args = append(args, "--base-dir", filepath.Join(v.dir, rootDirName))
	}
	args = append(args, v.rec.AgentArgs...)
	p, err := proctree.Start(proctree.Spec{
		Path:    v.rec.Agent,
		Args:    args,
		Log:     filepath.Join(v.dir, agentLogFile),
		Root:    filepath.Join(v.dir, rootDirName),
		Isolate: v.rec.Isolated,
		Binds:   binds,
	})
	if err != nil {
		return fmt.Errorf("start agent: %w", err)
	}
	v.rec.Process, v.rec.Stopped = p, false
	if err := h.save(v); err != nil {
		return err
	}
	return nil
}

// stop ends every process of the VM.
func (h *Host) stop(ctx context.Context, v *vm, timeout time.Duration) error {
	root := filepath.Join(v.dir, rootDirName)
	if err := proctree.Stop(ctx, v.rec.Process, root, timeout); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	if !v.rec.Isolated {
		if err := proctree.UnmountUnder(v.dir); err != nil {
			return err
		}
	}
	v.rec.Process, v.rec.Stopped = proctree.Process{}, true
	return h.save(v)
}

func (h *Host) save(v *vm) error {
	b, err := json.MarshalIndent(v.rec, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(v.dir, "."+recordFile+".new")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("record vm: %w", err)
	}
	return os.Rename(tmp, filepath.Join(v.dir, recordFile))
}

// lookup returns the VM with the id, locked, or ErrNotFound.
func (h *Host) lookup(id string) (*vm, error) {
	h.mu.Lock()
	v, ok := h.vms[id]
	h.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("vm %s: %w", id, ErrNotFound)
	}
	v.mu.Lock()
	if v.gone {
		v.mu.Unlock()
		return nil, fmt.Errorf("vm %s: %w", id, ErrNotFound)
	}
	return v, nil
}

// Stop ends every process of the VM (SIGTERM, then SIGKILL after the stop
// timeout), as stopping the instance does. Its directory, volumes and
// metadata service stay; Start boots it again. Stopping a stopped VM does
// nothing.
func (h *Host) Stop(ctx context.Context, id string) error {
	v, err := h.lookup(id)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	if v.rec.Stopped {
		return nil
	}
	if err := h.stop(ctx, v, h.stopTimeout); err != nil {
		return fmt.Errorf("stop vm %s: %w", id, err)
	}
	h.logger.InfoContext(ctx, "stopped vm", "vm", id)
	return nil
}

// Kill ends every process of the VM at once with SIGKILL, as a host
// failure does; the VM is then stopped.
func (h *Host) Kill(ctx context.Context, id string) error {
	v, err := h.lookup(id)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	root := filepath.Join(v.dir, rootDirName)
	for _, pid := range proctree.Members(v.rec.Process, root) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if err := h.stop(ctx, v, 0); err != nil {
		return fmt.Errorf("kill vm %s: %w", id, err)
	}
	h.logger.InfoContext(ctx, "killed vm", "vm", id)
	return nil
}

// Start boots a stopped VM again; starting a running VM does nothing.
func (h *Host) Start(ctx context.Context, id string) error {
	v, err := h.lookup(id)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	if !v.rec.Stopped && v.rec.Process.Running() {
		return nil
	}
	if err := h.start(v); err != nil {
		return fmt.Errorf("start vm %s: %w", id, err)
	}
	h.logger.InfoContext(ctx, "started vm", "vm", id, "pid", v.rec.Process.PID)
	return nil
}

// Reboot stops the VM and starts it again, with its volumes attached.
func (h *Host) Reboot(ctx context.Context, id string) error {
	v, err := h.lookup(id)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	if err := h.stop(ctx, v, h.stopTimeout); err != nil {
		return fmt.Errorf("reboot vm %s: %w", id, err)
	}
	if err := h.start(v); err != nil {
		return fmt.Errorf("reboot vm %s: %w", id, err)
	}
	h.logger.InfoContext(ctx, "rebooted vm", "vm", id, "pid", v.rec.Process.PID)
	return nil
}

// Delete stops the VM, releases its volumes (their images stay: they are
// the cloud's), ends its metadata service and removes its directory, as
// terminating the instance does. Deleting a VM that does not exist
// succeeds; a VM left by an earlier Host on the same directory (see
// Leftovers) is deleted too.
func (h *Host) Delete(ctx context.Context, id string) error {
	h.mu.Lock()
	v, ok := h.vms[id]
	if !ok {
		v = &vm{dir: h.vmDir(id)}
		if err := readRecord(v.dir, &v.rec); err != nil {
			h.mu.Unlock()
			if errors.Is(err, os.ErrNotExist) {
				if _, serr := os.Stat(v.dir); serr != nil {
					return nil
				}
				// A directory without a record: debris of a failed boot.
				return os.RemoveAll(v.dir)
			}
			return fmt.Errorf("delete vm %s: %w", id, err)
		}
		h.vms[id] = v
	}
	h.mu.Unlock()
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.gone {
		return nil
	}
	if err := h.remove(ctx, v); err != nil {
		return fmt.Errorf("delete vm %s: %w", id, err)
	}
	h.mu.Lock()
	delete(h.vms, id)
	h.mu.Unlock()
	h.logger.InfoContext(ctx, "deleted vm", "vm", id)
	return nil
}

// remove stops the VM and removes what boot made; v.mu is held.
func (h *Host) remove(ctx context.Context, v *vm) error {
	if err := proctree.Stop(ctx, v.rec.Process, filepath.Join(v.dir, rootDirName), h.stopTimeout); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	if v.server != nil {
		_ = v.server.Close()
		v.server, v.url = nil, ""
	}
	var errs []error
	for id, vol := range v.rec.Volumes {
		if err := releaseVolume(v.dir, vol); err != nil {
			errs = append(errs, fmt.Errorf("volume %s: %w", id, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := proctree.UnmountUnder(v.dir); err != nil {
		return err
	}
	if err := os.RemoveAll(v.dir); err != nil {
		return fmt.Errorf("remove files: %w", err)
	}
	v.gone = true
	return nil
}

// Get returns the VM with the id.
func (h *Host) Get(id string) (VM, bool) {
	v, err := h.lookup(id)
	if err != nil {
		return VM{}, false
	}
	defer v.mu.Unlock()
	return v.snapshot(), true
}

// List returns every VM booted by this Host, by id.
func (h *Host) List() []VM {
	h.mu.Lock()
	ids := make([]string, 0, len(h.vms))
	for id := range h.vms {
		ids = append(ids, id)
	}
	h.mu.Unlock()
	sort.Strings(ids)
	out := make([]VM, 0, len(ids))
	for _, id := range ids {
		if v, ok := h.Get(id); ok {
			out = append(out, v)
		}
	}
	return out
}

// Leftovers returns the ids of VMs on the host's directory that this Host
// did not boot: those of an earlier run.
func (h *Host) Leftovers() ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(h.dir, "vms"))
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	known := map[string]bool{}
	for id := range h.vms {
		known[dirName(id)] = true
	}
	var ids []string
	for _, e := range entries {
		if known[e.Name()] {
			continue
		}
		var rec record
		if readRecord(filepath.Join(h.dir, "vms", e.Name()), &rec) == nil {
			ids = append(ids, rec.ID)
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// Close ends every metadata service of the host's VMs. The VMs keep
// running; Delete them first when the cloud goes away.
func (h *Host) Close() error {
	h.mu.Lock()
	vms := make([]*vm, 0, len(h.vms))
	for _, v := range h.vms {
		vms = append(vms, v)
	}
	h.mu.Unlock()
	for _, v := range vms {
		v.mu.Lock()
		if v.server != nil {
			_ = v.server.Close()
			v.server, v.url = nil, ""
		}
		v.mu.Unlock()
	}
	return nil
}

func (v *vm) snapshot() VM {
	out := VM{
		ID: v.rec.ID, IP: v.rec.IP, Dir: v.dir, MetadataURL: v.url,
		Isolated: v.rec.Isolated, Running: !v.rec.Stopped && v.rec.Process.Running(),
	}
	if out.Running {
		out.PID = v.rec.Process.PID
	}
	for id := range v.rec.Volumes {
		out.Volumes = append(out.Volumes, id)
	}
	sort.Strings(out.Volumes)
	return out
}

func readRecord(dir string, rec *record) error {
	b, err := os.ReadFile(filepath.Join(dir, recordFile))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, rec); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(dir, recordFile), err)
	}
	return nil
}
