// Command fakeplugin serves cpitest.Fake as a CPI plugin, for the host's
// tests and benchmarks. Properties: {"name": "...", "secret": "...",
// "state_file": "...", "fail_start": "..."}; fail_start makes it refuse to
// start with that reason; the name is reported by Info, the secret is only
// there to prove it is never logged, and the state file (optional) keeps the
// fake's objects across processes, as a cloud would; the process holds an
// exclusive lock on "<state_file>.lock" for its life, so concurrent JSON-mode
// processes take turns. A few cids trigger behaviours the tests need:
//
//	HasVM("block")               blocks until the call is cancelled
//	RebootVM("crash")            exits the process in the middle of the call
//	SetVMMetadata("error", md)   fails with the error md describes
//	                             (code, message, field, retryable)
//	SetDiskMetadata("print", _)  writes a line to os.Stdout and os.Stderr
//
// FAKEPLUGIN_CPUPROFILE=path writes a CPU profile of the plugin's first
// FAKEPLUGIN_CPUPROFILE_SECONDS seconds (default 5) to path, for
// BenchmarkHasVM (the host may kill the plugin, so the profile ends on a
// timer rather than at exit).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/cpitest"
)

func main() {
	// A plugin that exits before serving, without cpi.Main's report: the
	// host finds the reason in its log.
	if msg := os.Getenv("FAKEPLUGIN_EXIT"); msg != "" {
		cpi.Logger().Error("cannot start", "error", msg)
		os.Exit(1)
	}
	if path := os.Getenv("FAKEPLUGIN_CPUPROFILE"); path != "" {
		profileCPU(path, os.Getenv("FAKEPLUGIN_CPUPROFILE_SECONDS"))
	}
	cpi.Main(newPlugin)
}

func newPlugin(properties json.RawMessage, log *slog.Logger) (cpi.CPI, error) {
	var props struct {
		Name      string `json:"name"`
		Secret    string `json:"secret"`
		StateFile string `json:"state_file"`
		// FailStart makes the plugin refuse to start with this reason.
		FailStart string `json:"fail_start"`
	}
	if err := cpi.DecodeCloudProperties(properties, &props); err != nil {
		return nil, fmt.Errorf("properties: %w", err)
	}
	if props.FailStart == "panic" {
		panic("new: nil map")
	}
	if props.FailStart != "" {
		return nil, errors.New(props.FailStart)
	}
	var names []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		names = append(names, k)
	}
	slices.Sort(names)
	log.Debug("fake plugin starting", "pid", os.Getpid(), "env", strings.Join(names, ","), "gomaxprocs", runtime.GOMAXPROCS(0))
	fake := cpitest.NewFake()
	fake.RefuseUnknownCloudProperties() // as the contract asks of a plugin
	if props.StateFile != "" {
		lock, err := os.OpenFile(props.StateFile+".lock", os.O_CREATE|os.O_RDWR, 0o600)
		if err == nil {
			err = syscall.Flock(int(lock.Fd()), syscall.LOCK_EX)
		}
		if err == nil {
			err = fake.Persist(props.StateFile)
		}
		if err != nil {
			return nil, fmt.Errorf("state file: %w", err)
		}
	}
	return &plugin{Fake: fake, name: props.Name, log: log}, nil
}

type plugin struct {
	*cpitest.Fake
	name string
	log  *slog.Logger
}

func (p *plugin) Info(ctx context.Context) (cpi.Info, error) {
	info, err := p.Fake.Info(ctx)
	if p.name != "" {
		info.Name = p.name
	}
	return info, err
}

func (p *plugin) HasVM(ctx context.Context, cid string) (bool, error) {
	if cid == "block" {
		p.log.Info("blocking in HasVM", "pid", os.Getpid())
		<-ctx.Done()
		return false, ctx.Err()
	}
	return p.Fake.HasVM(ctx, cid)
}

func (p *plugin) RebootVM(ctx context.Context, cid string) error {
	if cid == "crash" {
		p.log.Warn("crashing on purpose")
		os.Exit(3)
	}
	return p.Fake.RebootVM(ctx, cid)
}

func (p *plugin) SetDiskMetadata(ctx context.Context, cid string, md map[string]string) error {
	if cid == "print" {
		fmt.Fprintln(os.Stdout, "hello on stdout")
		fmt.Fprintln(os.Stderr, "hello on stderr")
		return nil
	}
	return p.Fake.SetDiskMetadata(ctx, cid, md)
}

func (p *plugin) SetVMMetadata(ctx context.Context, cid string, md map[string]string) error {
	if cid == "error" {
		return &cpi.Error{Code: cpi.Code(md["code"]), Message: md["message"], Field: md["field"], Retryable: md["retryable"] == "true"}
	}
	return p.Fake.SetVMMetadata(ctx, cid, md)
}

// profileCPU profiles the process for seconds (default 5) into path.
func profileCPU(path, seconds string) {
	d := 5 * time.Second
	if n, err := strconv.Atoi(seconds); err == nil && n > 0 {
		d = time.Duration(n) * time.Second
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		cpi.Logger().Error("cpu profile", "error", err)
		return
	}
	time.AfterFunc(d, func() {
		pprof.StopCPUProfile()
		f.Close()
	})
}
