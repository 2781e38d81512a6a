// Package host is the director's side of the CPI plugin contract: it
// launches a plugin binary, keeps it up, and calls it.
//
// [Start] launches the binary over hashicorp/go-plugin (gRPC only, automatic
// mutual TLS, protocol version negotiation) and returns a [*Plugin], which
// implements cpi.CPI. The plugin gets a clean environment: PATH, HOME and
// TMPDIR from the host, its properties in COMPLEAT_CPI_PROPERTIES, the
// variables Config.Env names, and go-plugin's own handshake variables;
// nothing else of the host's environment (credentials included) leaks in.
//
// Every call runs under the caller's context, with Config.CallTimeout as
// the deadline when the context has none. When the plugin process has died
// (crash, OOM, kill), the next call starts a new one. A call in flight when
// the plugin dies answers cpi.ErrOutcomeUnknown: the operation may or may
// not have happened, and the caller must find out (HasVM, GetDisks) before
// retrying.
//
// On Linux the plugin is started with a parent-death signal (SIGKILL), so
// it dies with the host even when the host is killed. The kernel sends that
// signal when the *thread* that forked the plugin exits, not the process, and
// the Go runtime may retire threads; so every plugin process of a Plugin is
// forked from one goroutine locked to its OS thread for the Plugin's whole
// life (until Close).
//
// The plugin's standard error carries its JSON logs (cpi.Logger); each
// record is re-emitted through Config.Logger with the plugin's level and
// attributes. Properties and Env values are never logged.
package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"google.golang.org/grpc"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/compleat/compleat/cpi"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Config describes the plugin to run.
type Config struct {
	// Path is the plugin binary.
	Path string
	// Args are extra arguments for the binary.
	Args []string
	// Properties is the plugin's configuration (a JSON object), passed in
	// COMPLEAT_CPI_PROPERTIES. It may hold credentials; it is never logged.
	Properties json.RawMessage
	// Env adds variables to the plugin's environment (values never logged).
	// Without GOMAXPROCS among them the plugin runs with GOMAXPROCS=1
	// (PluginProcs).
	Env map[string]string
	// StartTimeout bounds starting the plugin and its handshake
	// (default 1 minute).
	StartTimeout time.Duration
	// CallTimeout is the deadline of a call whose context has none
	// (default 30 minutes: creating a VM in a cloud takes minutes).
	CallTimeout time.Duration
	// Logger receives the host's events and the plugin's logs (default: the
	// slog default logger).
	Logger *slog.Logger
	// Observe, when set, is told every call's method, duration and outcome
	// (a gRPC interceptor: every method, present and future).
	Observe cpi.CallObserver
}

// PluginProcs is a plugin's GOMAXPROCS unless Config.Env sets one. A
// plugin mostly waits (on its cloud, on the host), and with one P the Go
// runtime in it does not spin idle threads looking for work after each
// call: a call through the plugin costs about a third less of the
// plugin's CPU and takes about a sixth less time (BenchmarkHasVM).
const PluginProcs = "1"

// Plugin is a running CPI plugin. It implements cpi.CPI and is safe for
// concurrent use. Close it when done.
type Plugin struct {
	cfg      Config
	log      *slog.Logger
	launcher *launcher

	mu     sync.Mutex
	cur    *instance
	closed bool
}

var _ cpi.CPI = (*Plugin)(nil)

// instance is one plugin process.
type instance struct {
	client *plugin.Client
	cpi    cpi.CPI
	pid    int
	proc   *procWatch
}

// ErrClosed is returned by calls on a closed Plugin.
var ErrClosed = errors.New("cpi plugin is closed")

// Start launches the plugin and waits for its handshake, at most
// Config.StartTimeout. ctx bounds the wait only (a process half started
// when ctx ends is killed once the StartTimeout passes); the plugin runs
// until Close.
func Start(ctx context.Context, cfg Config) (*Plugin, error) {
	if cfg.Path == "" {
		return nil, errors.New("start cpi plugin: no path")
	}
	path, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("start cpi plugin %s: %w", cfg.Path, err)
	}
	cfg.Path = path
	if len(cfg.Properties) == 0 {
		cfg.Properties = json.RawMessage(`{}`)
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(cfg.Properties, &probe); err != nil {
		// Do not quote the document: it may hold credentials.
		return nil, fmt.Errorf("start cpi plugin %s: properties are not a JSON object: %w", path, err)
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = time.Minute
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 30 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p := &Plugin{
		cfg:      cfg,
		log:      cfg.Logger.With("cpi", filepath.Base(path)),
		launcher: newLauncher(),
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	inst, err := p.start(ctx)
	if err != nil {
		p.launcher.stop()
		return nil, err
	}
	p.cur = inst
	return p, nil
}

// environ is the plugin's whole environment, apart from what go-plugin adds
// (magic cookie, protocol versions, port range, client certificate).
func (p *Plugin) environ() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	if _, set := p.cfg.Env["GOMAXPROCS"]; !set {
		env = append(env, "GOMAXPROCS="+PluginProcs)
	}
	for k, v := range p.cfg.Env {
		env = append(env, k+"="+v)
	}
	return append(env, cpi.PropertiesEnv+"="+string(p.cfg.Properties))
}

// start launches one plugin process from the launcher thread. p.mu is held.
func (p *Plugin) start(ctx context.Context) (*instance, error) {
	cmd := exec.Command(p.cfg.Path, p.cfg.Args...)
	cmd.Env = p.environ()
	cmd.Dir = "/"
	setDeathSignal(cmd)

	sink := &slogSink{log: p.log}
	hl := hclog.NewInterceptLogger(&hclog.LoggerOptions{Name: "cpi", Output: discard{}, Level: hclog.Trace})
	hl.RegisterSink(sink)
	var dial []grpc.DialOption
	if p.cfg.Observe != nil {
		dial = append(dial, grpc.WithChainUnaryInterceptor(cpi.ObserveCalls(p.cfg.Observe)))
	}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  cpi.Handshake(),
		VersionedPlugins: cpi.PluginSets(nil),
		Cmd:              cmd,
		SkipHostEnv:      true,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		StartTimeout:     p.cfg.StartTimeout,
		Logger:           hl,
		SyncStdout:       &lineLogger{log: p.log, stream: "stdout"},
		SyncStderr:       &lineLogger{log: p.log, stream: "stderr"},
		GRPCDialOptions:  dial,
	})

	done := make(chan error, 1)
	p.launcher.do(func() {
		_, err := client.Start()
		done <- err
	})
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		// go-plugin's start cannot be interrupted: it goes on until the
		// handshake or StartTimeout; then what it started is killed.
		go func() { <-done; client.Kill() }()
		return nil, fmt.Errorf("start cpi plugin %s: %w", p.cfg.Path, ctx.Err())
	}
	if err != nil {
		client.Kill()
		if reason, ok := startupError(err); ok {
			return nil, fmt.Errorf("cpi plugin %s did not start: %s", p.cfg.Path, reason)
		}
		if reason := sink.pluginError(); reason != "" {
			return nil, fmt.Errorf("cpi plugin %s did not start (%v); its last error: %s", p.cfg.Path, firstLine(err), reason)
		}
		return nil, fmt.Errorf("start cpi plugin %s: %w", p.cfg.Path, err)
	}
	rpc, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("connect to cpi plugin %s: %w", p.cfg.Path, err)
	}
	raw, err := rpc.Dispense(cpi.PluginName)
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("dispense cpi plugin %s: %w", p.cfg.Path, err)
	}
	c, ok := raw.(cpi.CPI)
	if !ok {
		client.Kill()
		return nil, fmt.Errorf("cpi plugin %s: dispensed %T, not a CPI", p.cfg.Path, raw)
	}
	inst := &instance{client: client, cpi: c, pid: cmd.Process.Pid, proc: watchProcess(cmd.Process.Pid)}
	p.log.Info("cpi plugin started", "pid", inst.pid, "protocol_version", client.NegotiatedVersion())
	return inst, nil
}

// alive reports whether the instance's process still runs.
func (i *instance) alive() bool {
	return !i.client.Exited() && i.proc.alive()
}

// kill stops the instance's process, waiting for go-plugin's bookkeeping
// at most a few seconds (a plugin's child holding its stderr open must not
// hang the host).
func (p *Plugin) kill(i *instance) {
	defer i.proc.close()
	done := make(chan struct{})
	go func() {
		i.client.Kill()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.log.Warn("cpi plugin did not finish exiting", "pid", i.pid)
	}
}

// instance returns the running plugin process, starting a new one when the
// last has died.
func (p *Plugin) instance(ctx context.Context) (*instance, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	if p.cur != nil && p.cur.alive() {
		return p.cur, nil
	}
	if p.cur != nil {
		p.log.Warn("cpi plugin exited; restarting it", "pid", p.cur.pid)
		p.kill(p.cur)
		p.cur = nil
	}
	inst, err := p.start(ctx)
	if err != nil {
		return nil, fmt.Errorf("restart: %w", err)
	}
	p.cur = inst
	return inst, nil
}

// PID is the process id of the running plugin (0 when none runs).
func (p *Plugin) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil {
		return 0
	}
	return p.cur.pid
}

// Close stops the plugin. Calls after Close fail with ErrClosed.
func (p *Plugin) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	if p.cur != nil {
		p.kill(p.cur)
		p.log.Info("cpi plugin stopped", "pid", p.cur.pid)
		p.cur = nil
	}
	p.launcher.stop()
	return nil
}

// call runs fn against the running plugin under the call deadline and
// classifies its failure.
func (p *Plugin) call(ctx context.Context, method string, fn func(context.Context, cpi.CPI) error) error {
	inst, err := p.instance(ctx)
	if err != nil {
		return fmt.Errorf("cpi %s: %w", method, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.cfg.CallTimeout)
		defer cancel()
	}
	err = fn(ctx, inst.cpi)
	if err == nil || !transportFailure(err) {
		return err
	}
	// The connection broke under the call: the plugin died, or is about
	// to be restarted because it is unreachable. Either way nobody knows
	// whether the call took effect.
	dead := p.waitDead(inst, 2*time.Second)
	if !dead {
		p.mu.Lock()
		if p.cur == inst {
			p.log.Warn("cpi plugin unreachable; killing it", "pid", inst.pid, "error", err)
			p.kill(inst)
			p.cur = nil
		}
		p.mu.Unlock()
	}
	p.log.Error("cpi plugin failed during a call; outcome unknown", "method", method, "pid", inst.pid, "plugin_exited", dead)
	return &cpi.Error{
		Code:    cpi.CodeOutcomeUnknown,
		Message: fmt.Sprintf("cpi %s: plugin (pid %d) failed during the call, outcome unknown: %v", method, inst.pid, err),
	}
}

// transportFailure reports whether err is a failure of the connection
// (the plugin died, or cannot be reached) rather than an answer of the
// plugin. Answers carry an Error detail and come back as *cpi.Error; a
// cancelled call is the caller's doing; other statuses (a message too
// large, say) are the host's own errors and say nothing about the plugin.
func transportFailure(err error) bool {
	var e *cpi.Error
	if errors.As(err, &e) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	st, ok := status.FromError(err)
	return ok && (st.Code() == codes.Unavailable || st.Code() == codes.Internal)
}

// waitDead waits up to d for the instance's process to be gone.
func (p *Plugin) waitDead(i *instance, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if !i.alive() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startupError finds, in go-plugin's failed handshake, the line of a
// plugin that reported why it cannot start (cpi.Main).
func startupError(err error) (string, bool) {
	_, rest, ok := strings.Cut(err.Error(), cpi.StartupErrorPrefix)
	if !ok {
		return "", false
	}
	line, _, _ := strings.Cut(rest, "\n")
	var doc struct {
		Error string `json:"error"`
	}
	if json.Unmarshal([]byte(line), &doc) != nil || doc.Error == "" {
		return "", false
	}
	return doc.Error, true
}

// firstLine is the first line of err's message (go-plugin appends advice
// meant for Terraform users).
func firstLine(err error) string {
	line, _, _ := strings.Cut(err.Error(), "\n")
	return line
}
