package host_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/cpitest"
	"github.com/compleat/compleat/cpi/host"
)

// fakePlugin is the path of testdata/fakeplugin, built once by TestMain.
var fakePlugin string

func TestMain(m *testing.M) {
	if os.Getenv("CPI_HOST_HELPER") != "" {
		hostHelper()
		return
	}
	dir, err := os.MkdirTemp("", "cpi-host-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fakePlugin = filepath.Join(dir, "fakeplugin")
	out, err := exec.Command("go", "build", "-o", fakePlugin, "./testdata/fakeplugin").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build fake plugin: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// record is one captured log record.
type record struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

// capture is a slog handler that keeps every record and echoes it to t.Log
// while the test runs.
type capture struct {
	mu      sync.Mutex
	t       testing.TB
	done    bool
	records []record
}

type captureHandler struct {
	c     *capture
	attrs []slog.Attr
}

func newCapture(t testing.TB) (*capture, *slog.Logger) {
	c := &capture{t: t}
	t.Cleanup(func() {
		c.mu.Lock()
		c.done = true
		c.mu.Unlock()
	})
	return c, slog.New(&captureHandler{c: c})
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	rec := record{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	for _, a := range h.attrs {
		rec.attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.String()
		return true
	})
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	h.c.records = append(h.c.records, rec)
	if !h.c.done {
		h.c.t.Logf("%s %s %v", rec.level, rec.msg, rec.attrs)
	}
	return nil
}

func (h *captureHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &captureHandler{c: h.c, attrs: append(append([]slog.Attr{}, h.attrs...), as...)}
}

func (h *captureHandler) WithGroup(string) slog.Handler { return h }

// wait returns the first record with the message, waiting up to 10 s.
func (c *capture) wait(t *testing.T, msg string) record {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		for _, r := range c.records {
			if r.msg == msg {
				c.mu.Unlock()
				return r
			}
		}
		c.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no log record %q", msg)
	return record{}
}

func (c *capture) all() []record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]record(nil), c.records...)
}

func start(t *testing.T, cfg host.Config) *host.Plugin {
	t.Helper()
	if cfg.Path == "" {
		cfg.Path = fakePlugin
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	p, err := host.Start(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// waitGone waits until pid no longer runs (gone or a zombie).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if !running(pid) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("process %d still runs", pid)
}

func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

func fakeConfig() cpitest.Config {
	return cpitest.Config{
		Stemcell:                 cpi.CreateStemcellRequest{ImagePath: "/stemcells/image"},
		VMCloudProperties:        json.RawMessage(`{"instance_type": "small"}`),
		DiskCloudProperties:      json.RawMessage(`{"type": "ssd"}`),
		InvalidVMCloudProperties: json.RawMessage(`{"instance_type": 42}`),
		InvalidField:             "instance_type",
		ManualNetworks:           cpitest.ManualNetworks("127.77.0.10"),
		VIPNetworks: func(i int) map[string]cpi.Network {
			return map[string]cpi.Network{"public": {Type: "vip", IP: fmt.Sprintf("127.78.0.%d", 10+i)}}
		},
		Timeout: time.Minute,
	}
}

func TestConformanceThroughPluginBinary(t *testing.T) {
	cpitest.RunBinary(t, fakePlugin, json.RawMessage(`{"name": "fake-binary"}`), fakeConfig())
}

func TestConformanceInProcess(t *testing.T) {
	cfg := fakeConfig()
	cfg.Networks = cpitest.ManualNetworks("127.77.1.1")
	cpitest.RunInProcess(t, func(*testing.T) cpi.CPI {
		f := cpitest.NewFake()
		f.RefuseUnknownCloudProperties()
		return f
	}, cfg)
}

// sentinels is every error code of the contract with its sentinel.
var sentinels = []*cpi.Error{
	cpi.ErrVMNotFound, cpi.ErrDiskNotFound, cpi.ErrStemcellNotFound, cpi.ErrSnapshotNotFound,
	cpi.ErrNotImplemented, cpi.ErrInvalidCloudProperties, cpi.ErrVMCreationFailed, cpi.ErrOutcomeUnknown,
}

// checkRoundTrip asks the plugin behind c to fail SetVMMetadata with each
// code, with and without Retryable and Field, and checks what arrives.
func checkRoundTrip(t *testing.T, c cpi.CPI) {
	ctx := t.Context()
	for _, s := range append(sentinels, &cpi.Error{Code: cpi.CodeUnknown}) {
		for _, retry := range []bool{false, true} {
			md := map[string]string{"code": string(s.Code), "message": "boom " + string(s.Code), "field": "a.b", "retryable": fmt.Sprint(retry)}
			err := c.SetVMMetadata(ctx, "error", md)
			if !errors.Is(err, s) {
				t.Errorf("code %s: got %v, want errors.Is %s", s.Code, err, s.Code)
				continue
			}
			for _, other := range sentinels {
				if other.Code != s.Code && errors.Is(err, other) {
					t.Errorf("code %s: error also matches %s", s.Code, other.Code)
				}
			}
			var e *cpi.Error
			if !errors.As(err, &e) {
				t.Fatalf("code %s: %T is not a *cpi.Error", s.Code, err)
			}
			if e.Retryable != retry || cpi.IsRetryable(err) != retry {
				t.Errorf("code %s: Retryable = %v, want %v", s.Code, e.Retryable, retry)
			}
			if e.Field != "a.b" {
				t.Errorf("code %s: Field = %q, want a.b", s.Code, e.Field)
			}
			if !strings.Contains(err.Error(), "boom "+string(s.Code)) || strings.Count(err.Error(), "a.b") != 1 {
				t.Errorf("code %s: message %q, want the plugin's message with the field once", s.Code, err.Error())
			}
		}
	}
}

func TestErrorsRoundTripThroughPluginBinary(t *testing.T) {
	checkRoundTrip(t, start(t, host.Config{}))
}

func TestErrorsRoundTripThroughJSONProcess(t *testing.T) {
	checkRoundTrip(t, host.NewJSONProcess(fakePlugin, nil))
}

func TestPropertiesAndEnvironment(t *testing.T) {
	t.Setenv("COMPLEAT_TEST_HOST_SECRET", "host-only")
	logs, logger := newCapture(t)
	const secret = "s3cr3t-value-never-logged"
	p := start(t, host.Config{
		Properties: json.RawMessage(`{"name": "custom", "secret": "` + secret + `"}`),
		Env:        map[string]string{"EXTRA_VAR": "x"},
		Logger:     logger,
	})
	info, err := p.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "custom" {
		t.Errorf("Info.Name = %q: properties did not reach the plugin", info.Name)
	}
	rec := logs.wait(t, "fake plugin starting")
	if rec.level != slog.LevelDebug {
		t.Errorf("plugin's debug record arrived at level %s", rec.level)
	}
	if rec.attrs["pid"] != fmt.Sprint(p.PID()) {
		t.Errorf("plugin's record attributes %v lack its pid %d", rec.attrs, p.PID())
	}
	env := map[string]bool{}
	for _, k := range strings.Split(rec.attrs["env"], ",") {
		env[k] = true
	}
	if rec.attrs["gomaxprocs"] != host.PluginProcs {
		t.Errorf("plugin runs with GOMAXPROCS %s, want %s", rec.attrs["gomaxprocs"], host.PluginProcs)
	}
	for _, want := range []string{"PATH", "HOME", cpi.PropertiesEnv, "EXTRA_VAR", "GOMAXPROCS", "PLUGIN_PROTOCOL_VERSIONS", "PLUGIN_CLIENT_CERT"} {
		if !env[want] && (want != "HOME" || os.Getenv("HOME") != "") {
			t.Errorf("plugin environment lacks %s: %v", want, rec.attrs["env"])
		}
	}
	for k := range env {
		switch {
		case k == "PATH", k == "HOME", k == "TMPDIR", k == cpi.PropertiesEnv, k == "EXTRA_VAR", k == "GOMAXPROCS",
			strings.HasPrefix(k, "PLUGIN_"), k == cpi.Handshake().MagicCookieKey:
		default:
			t.Errorf("plugin inherited %s from the host", k)
		}
	}
	p.Close()
	for _, r := range logs.all() {
		if strings.Contains(fmt.Sprint(r.msg, r.attrs), secret) {
			t.Errorf("a log record holds the properties' secret: %s %v", r.msg, r.attrs)
		}
	}
}

// TestGOMAXPROCSGivenWins: a GOMAXPROCS in Config.Env replaces the
// plugin's default.
func TestGOMAXPROCSGivenWins(t *testing.T) {
	logs, logger := newCapture(t)
	p := start(t, host.Config{Env: map[string]string{"GOMAXPROCS": "3"}, Logger: logger})
	if _, err := p.Info(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := logs.wait(t, "fake plugin starting").attrs["gomaxprocs"]; got != "3" {
		t.Errorf("plugin runs with GOMAXPROCS %s, want the 3 given", got)
	}
}

func TestRestartAfterSIGKILLBetweenCalls(t *testing.T) {
	logs, logger := newCapture(t)
	// The state file plays the cloud: it outlives the plugin process.
	props, _ := json.Marshal(map[string]string{"state_file": filepath.Join(t.TempDir(), "state.json")})
	p := start(t, host.Config{Logger: logger, Properties: props})
	ctx := t.Context()
	sc, err := p.CreateStemcell(ctx, cpi.CreateStemcellRequest{ImagePath: "/img"})
	if err != nil {
		t.Fatal(err)
	}
	vm, err := p.CreateVM(ctx, cpi.CreateVMRequest{StemcellCID: sc, Networks: map[string]cpi.Network{"n": {Type: "dynamic"}}})
	if err != nil {
		t.Fatal(err)
	}
	old := p.PID()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, old)
	has, err := p.HasVM(ctx, vm.CID)
	if err != nil {
		t.Fatalf("HasVM after the plugin was killed: %v", err)
	}
	if !has {
		t.Errorf("the restarted plugin does not know VM %s", vm.CID)
	}
	if now := p.PID(); now == old || now == 0 || !running(now) {
		t.Errorf("plugin pid %d after restart (was %d)", now, old)
	}
	logs.wait(t, "cpi plugin exited; restarting it")
}

func TestCallInFlightWhenPluginKilled(t *testing.T) {
	logs, logger := newCapture(t)
	p := start(t, host.Config{Logger: logger})
	ctx := t.Context()
	errc := make(chan error, 1)
	go func() {
		_, err := p.HasVM(ctx, "block")
		errc <- err
	}()
	rec := logs.wait(t, "blocking in HasVM")
	if rec.level != slog.LevelInfo || rec.attrs["pid"] != fmt.Sprint(p.PID()) {
		t.Errorf("plugin log record re-emitted as %s %v", rec.level, rec.attrs)
	}
	old := p.PID()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, cpi.ErrOutcomeUnknown) {
			t.Fatalf("call in flight when the plugin died = %v, want ErrOutcomeUnknown", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("call in flight did not return after the plugin died")
	}
	if has, err := p.HasVM(ctx, "vm-1"); err != nil || has {
		t.Fatalf("HasVM after restart = %v, %v", has, err)
	}
	if p.PID() == old {
		t.Error("plugin was not restarted")
	}
}

func TestPluginCrashDuringCall(t *testing.T) {
	p := start(t, host.Config{})
	ctx := t.Context()
	err := p.RebootVM(ctx, "crash")
	if !errors.Is(err, cpi.ErrOutcomeUnknown) {
		t.Fatalf("RebootVM that crashes the plugin = %v, want ErrOutcomeUnknown", err)
	}
	if _, err := p.Info(ctx); err != nil {
		t.Fatalf("Info after the crash: %v", err)
	}
}

func TestCallTimeoutIsADeadlineNotACrash(t *testing.T) {
	p := start(t, host.Config{CallTimeout: 300 * time.Millisecond})
	pid := p.PID()
	_, err := p.HasVM(context.Background(), "block")
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, cpi.ErrOutcomeUnknown) {
		t.Fatalf("HasVM past the call timeout = %v, want DeadlineExceeded", err)
	}
	if _, err := p.Info(t.Context()); err != nil || p.PID() != pid {
		t.Fatalf("plugin after a timed-out call: err %v, pid %d (was %d)", err, p.PID(), pid)
	}
}

func TestCloseStopsThePlugin(t *testing.T) {
	p := start(t, host.Config{})
	pid := p.PID()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	if _, err := p.Info(t.Context()); !errors.Is(err, host.ErrClosed) {
		t.Fatalf("Info after Close = %v, want ErrClosed", err)
	}
}

func TestStartFailures(t *testing.T) {
	t.Parallel() // waits seconds for processes to give up
	dir := t.TempDir()
	notPlugin := filepath.Join(dir, "not-a-plugin")
	// A program that never completes the handshake.
	if err := os.WriteFile(notPlugin, []byte("#!/bin/sh\necho $$ > "+dir+"/pid\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := host.Start(t.Context(), host.Config{Path: notPlugin, StartTimeout: 500 * time.Millisecond})
	if err == nil {
		t.Fatal("Start of a program that never handshakes succeeded")
	}
	b, rerr := os.ReadFile(filepath.Join(dir, "pid"))
	if rerr != nil {
		t.Fatal(rerr)
	}
	var pid int
	fmt.Sscan(string(b), &pid)
	waitGone(t, pid)

	// A cancelled context ends the wait at once; the process goes when
	// go-plugin's own start gives up.
	os.Remove(filepath.Join(dir, "pid"))
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err = host.Start(ctx, host.Config{Path: notPlugin, StartTimeout: 5 * time.Second})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start under a short context = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(began); d >= 5*time.Second {
		t.Errorf("Start returned after %v, at its StartTimeout rather than when its context ended", d)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, rerr = os.ReadFile(filepath.Join(dir, "pid")); rerr == nil || time.Now().After(deadline) {
			break
		}
	}
	if rerr != nil {
		t.Fatal(rerr)
	}
	fmt.Sscan(string(b), &pid)
	waitGone(t, pid)

	_, err = host.Start(t.Context(), host.Config{Path: filepath.Join(dir, "missing")})
	if err == nil {
		t.Fatal("Start of a missing binary succeeded")
	}
	_, err = host.Start(t.Context(), host.Config{Path: fakePlugin, Properties: json.RawMessage(`["x"]`)})
	if err == nil || !strings.Contains(err.Error(), "not a JSON object") {
		t.Fatalf("Start with properties that are not an object = %v", err)
	}
}

func TestConcurrentCallsThroughPlugin(t *testing.T) {
	p := start(t, host.Config{})
	ctx := t.Context()
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 20 {
				if _, err := p.HasVM(ctx, "x"); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestPluginStdoutAndStderrAreLogged(t *testing.T) {
	logs, logger := newCapture(t)
	p := start(t, host.Config{Logger: logger})
	if err := p.SetDiskMetadata(t.Context(), "print", nil); err != nil {
		t.Fatal(err)
	}
	for msg, stream := range map[string]string{"hello on stdout": "stdout", "hello on stderr": "stderr"} {
		if r := logs.wait(t, msg); r.attrs["stream"] != stream {
			t.Errorf("%q logged with attributes %v", msg, r.attrs)
		}
	}
}

// A call the transport refuses (here a message over gRPC's size limit) is
// an error of that call, not a dead plugin.
func TestOversizedCallIsNotACrash(t *testing.T) {
	p := start(t, host.Config{})
	pid := p.PID()
	huge := json.RawMessage(`{"blob":"` + strings.Repeat("x", 5<<20) + `"}`)
	_, err := p.CreateVM(t.Context(), cpi.CreateVMRequest{AgentSettings: huge})
	if err == nil || errors.Is(err, cpi.ErrOutcomeUnknown) {
		t.Fatalf("oversized CreateVM = %v, want a plain error", err)
	}
	if _, err := p.Info(t.Context()); err != nil || p.PID() != pid {
		t.Fatalf("plugin after an oversized call: err %v, pid %d (was %d)", err, p.PID(), pid)
	}
}

// Every call through the plugin is observed with its method and its typed
// outcome, including methods the observer was never told about.
func TestObserveSeesEveryCall(t *testing.T) {
	type call struct {
		method string
		err    error
	}
	var mu sync.Mutex
	var calls []call
	p := start(t, host.Config{Observe: func(method string, took time.Duration, err error) {
		mu.Lock()
		calls = append(calls, call{method, err})
		mu.Unlock()
	}})
	ctx := t.Context()
	if _, err := p.Info(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.RebootVM(ctx, "no-such-vm"); !errors.Is(err, cpi.ErrVMNotFound) {
		t.Fatalf("RebootVM of a missing VM: %v", err)
	}
	if _, err := p.ListVMs(ctx, cpi.ListFilter{}); err != nil && !errors.Is(err, cpi.ErrNotImplemented) {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 3 || calls[0].method != "Info" || calls[0].err != nil ||
		calls[1].method != "RebootVM" || !errors.Is(calls[1].err, cpi.ErrVMNotFound) || calls[2].method != "ListVMs" {
		t.Errorf("observed %+v", calls)
	}
}

// TestStartupErrorReachesTheUser: a plugin that cannot start (cpi.Main's
// constructor failed) is reported with its reason, not as a handshake
// failure; bad properties likewise, with the field.
func TestStartupErrorReachesTheUser(t *testing.T) {
	for props, want := range map[string]string{
		`{"fail_start": "region us-nowhere-1 does not exist | try again"}`: "did not start: start: region us-nowhere-1 does not exist | try again",
		`{"nmae": "x"}`:           `did not start: start: properties: nmae: unknown property`,
		`{"fail_start": "panic"}`: "did not start: start: panic: new: nil map",
	} {
		_, logger := newCapture(t)
		_, err := host.Start(t.Context(), host.Config{Path: fakePlugin, Properties: json.RawMessage(props), StartTimeout: 20 * time.Second, Logger: logger})
		if err == nil {
			t.Fatalf("%s: the plugin started", props)
		}
		if !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "Unrecognized remote plugin message") {
			t.Errorf("%s: start error %q, want it to say %q", props, err, want)
		}
	}
}

// TestNoOutcomeUnknownForCallsAfterSIGKILL: calls made right after the
// plugin was killed were never in flight: they run on a restarted plugin
// instead of answering ErrOutcomeUnknown.
func TestNoOutcomeUnknownForCallsAfterSIGKILL(t *testing.T) {
	_, logger := newCapture(t)
	p := start(t, host.Config{Logger: logger})
	ctx := t.Context()
	for round := range 5 {
		if _, err := p.HasVM(ctx, "vm-1"); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(p.PID(), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		errs := make([]error, 3)
		var wg sync.WaitGroup
		for i := range errs {
			wg.Go(func() { _, errs[i] = p.HasVM(ctx, "vm-1") })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("round %d: call %d made after the plugin was killed: %v, want it run on the restarted plugin", round, i, err)
			}
		}
	}
}

// TestExitBeforeServingIsExplained: a plugin that logs an error and exits
// before the handshake (not using cpi.Main) is reported with that error.
func TestExitBeforeServingIsExplained(t *testing.T) {
	_, logger := newCapture(t)
	_, err := host.Start(t.Context(), host.Config{
		Path: fakePlugin, Env: map[string]string{"FAKEPLUGIN_EXIT": "region is required"},
		StartTimeout: 20 * time.Second, Logger: logger,
	})
	if err == nil || !strings.Contains(err.Error(), "its last error: cannot start: region is required") {
		t.Errorf("start error %v, want the plugin's logged reason", err)
	}
}
