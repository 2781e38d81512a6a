package cpimanager

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/compleat/compleat/cpi"
)

// ErrUnknownCPI: the name is not in the cpi config.
var ErrUnknownCPI = errors.New("unknown cpi")

// Process is a launched plugin: the CPI and a way to stop it.
type Process interface {
	cpi.CPI
	Close() error
}

// Launcher starts a plugin binary with the plugin's properties and returns the
// running process (the host of the CPI SDK in production). observe, when not
// nil, must be told of every call to the process: the host installs it as a
// gRPC interceptor (host.Config.Observe).
type Launcher interface {
	Launch(ctx context.Context, binary string, p Plugin, observe cpi.CallObserver) (Process, error)
}

// Observer receives the duration and outcome of every CPI call.
type Observer func(cpiName, method string, took time.Duration, err error)

// Options configure a Manager.
type Options struct {
	Launcher Launcher
	Logger   *slog.Logger
	Observer Observer // may be nil
	// SearchDirs are looked in for cpi-<type> before PATH (the directory of
	// the director's executable, normally).
	SearchDirs []string
	// ExternalCPIs are the executables, or directories of executables,
	// that `type: external` entries may run (director.yml's external_cpis),
	// besides SearchDirs. A cpi config, which an API token uploads, can
	// name no other program.
	ExternalCPIs []string
	// DirectorUUID is sent in the context of every external CPI call.
	DirectorUUID string
}

// Manager owns the running plugins.
type Manager struct {
	opts    Options
	mu      sync.Mutex
	cfg     Config
	running map[string]*running

	listMu   sync.Mutex
	listings map[string]vmListing // CheckVM's recent ListVMs answers by CPI
}

type running struct {
	plugin Plugin
	proc   Process
	info   *cpi.Info
}

// New returns a Manager for cfg; nothing is launched yet.
func New(cfg Config, opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{opts: opts, cfg: cfg, running: map[string]*running{}}
}

// SetConfig replaces the cpi config. Plugins whose entry changed or vanished
// are stopped; the others keep running.
func (m *Manager) SetConfig(cfg Config) {
	m.forgetListings()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cfg = cfg
	for name, r := range m.running {
		p, ok := find(cfg, name)
		if ok && samePlugin(p, r.plugin) {
			continue
		}
		m.opts.Logger.Info("stopping cpi plugin after config change", "cpi", name)
		r.proc.Close()
		delete(m.running, name)
	}
}

// Config returns the current cpi config.
func (m *Manager) Config() Config {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cfg
}

func samePlugin(a, b Plugin) bool {
	return a.Type == b.Type && a.ExecPath == b.ExecPath && bytes.Equal(a.Properties, b.Properties)
}

func find(cfg Config, name string) (Plugin, bool) {
	for _, p := range cfg.CPIs {
		if p.Name == name {
			return p, true
		}
	}
	return Plugin{}, false
}

// Names lists the configured CPIs.
func (m *Manager) Names() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, p := range m.cfg.CPIs {
		out = append(out, p.Name)
	}
	return out
}

// Resolve names the CPI of an AZ: azCPI when set, else the default one (the
// only CPI, or the one marked default).
func (m *Manager) Resolve(azCPI string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if azCPI != "" {
		if _, ok := find(m.cfg, azCPI); !ok {
			return "", fmt.Errorf("cpi %q: %w (configured: %v)", azCPI, ErrUnknownCPI, m.namesLocked())
		}
		return azCPI, nil
	}
	if len(m.cfg.CPIs) == 1 {
		return m.cfg.CPIs[0].Name, nil
	}
	for _, p := range m.cfg.CPIs {
		if p.Default {
			return p.Name, nil
		}
	}
	if len(m.cfg.CPIs) == 0 {
		return "", errors.New("no cpi configured: run `director update-cpi-config`")
	}
	return "", fmt.Errorf("several cpis are configured (%v) and none is default: name one in the az's cpi field", m.namesLocked())
}

func (m *Manager) namesLocked() []string {
	var out []string
	for _, p := range m.cfg.CPIs {
		out = append(out, p.Name)
	}
	return out
}

// Get returns the named CPI, launching its plugin on first use.
func (m *Manager) Get(ctx context.Context, name string) (cpi.CPI, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.running[name]; ok {
		return r.proc, nil
	}
	p, ok := find(m.cfg, name)
	if !ok {
		return nil, fmt.Errorf("cpi %q: %w", name, ErrUnknownCPI)
	}
	if p.Type == TypeExternal {
		proc, err := m.external(p)
		if err != nil {
			return nil, err
		}
		m.running[name] = &running{plugin: p, proc: proc}
		return proc, nil
	}
	bin, err := m.binary(p)
	if err != nil {
		return nil, err
	}
	if m.opts.Launcher == nil {
		return nil, fmt.Errorf("launch %s: no plugin launcher configured", p)
	}
	m.opts.Logger.Info("launching cpi plugin", "cpi", p.Name, "type", p.Type, "binary", bin)
	var observe cpi.CallObserver
	if obs := m.opts.Observer; obs != nil {
		observe = func(method string, took time.Duration, err error) { obs(name, method, took, err) }
	}
	proc, err := m.opts.Launcher.Launch(ctx, bin, p, observe)
	if err != nil {
		return nil, fmt.Errorf("launch %s from %s: %w", p, bin, err)
	}
	m.running[name] = &running{plugin: p, proc: proc}
	return proc, nil
}

// Info returns the named CPI's Info, asked once per launched plugin.
func (m *Manager) Info(ctx context.Context, name string) (cpi.Info, error) {
	c, err := m.Get(ctx, name)
	if err != nil {
		return cpi.Info{}, err
	}
	m.mu.Lock()
	r := m.running[name]
	if r != nil && r.info != nil {
		info := *r.info
		m.mu.Unlock()
		return info, nil
	}
	m.mu.Unlock()
	info, err := c.Info(ctx)
	if err != nil {
		return info, fmt.Errorf("cpi %s info: %w", name, err)
	}
	m.mu.Lock()
	if r := m.running[name]; r != nil {
		r.info = &info
	}
	m.mu.Unlock()
	return info, nil
}

// binary finds the plugin's executable: exec_path (only inside SearchDirs or
// ExternalCPIs), else cpi-<type> in the search directories, else on the
// director's PATH (ParseConfig allows only plain names as types).
func (m *Manager) binary(p Plugin) (string, error) {
	if p.ExecPath != "" {
		path, err := m.allowedExec(p.ExecPath)
		if err != nil {
			return "", fmt.Errorf("%s: %w", p, err)
		}
		return path, nil
	}
	if !validType(p.Type) {
		return "", fmt.Errorf("%s: type %q is not a plain name", p, p.Type)
	}
	name := "cpi-" + p.Type
	for _, d := range m.opts.SearchDirs {
		cand := filepath.Join(d, name)
		if st, err := os.Stat(cand); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return cand, nil
		}
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s: %s not found next to the director (%v) nor on PATH; build it (make build) or set exec_path in the cpi config", p, name, m.opts.SearchDirs)
	}
	return path, nil
}

// Close stops every plugin.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for name, r := range m.running {
		if err := r.proc.Close(); err != nil {
			errs = append(errs, fmt.Errorf("stop cpi %s: %w", name, err))
		}
		delete(m.running, name)
	}
	return errors.Join(errs...)
}
