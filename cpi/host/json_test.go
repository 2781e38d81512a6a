package host_test

import (
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/cpitest"
	"github.com/compleat/compleat/cpi/host"
)

func TestJSONProcess(t *testing.T) {
	ctx := t.Context()
	j := host.NewJSONProcess(fakePlugin, json.RawMessage(`{"name":"json-fake"}`))
	info, err := j.Info(ctx)
	if err != nil || info.Name != "json-fake" || info.APIVersion != cpi.APIVersion || !info.Capabilities.Snapshots {
		t.Fatalf("Info = %+v, %v", info, err)
	}
	sc, err := j.CreateStemcell(ctx, cpi.CreateStemcellRequest{ImagePath: "/img"})
	if err != nil || sc == "" {
		t.Fatalf("CreateStemcell = %q, %v", sc, err)
	}
	// Each call is a new process with an empty fake: the stemcell is gone.
	_, err = j.CreateVM(ctx, cpi.CreateVMRequest{StemcellCID: sc, AgentSettings: json.RawMessage(`{}`)})
	if !errors.Is(err, cpi.ErrStemcellNotFound) {
		t.Errorf("CreateVM in a fresh process = %v, want StemcellNotFound", err)
	}
	_, err = j.CreateVM(ctx, cpi.CreateVMRequest{StemcellCID: sc, CloudProperties: json.RawMessage(`{"instance_type": []}`)})
	var e *cpi.Error
	if !errors.As(err, &e) || e.Code != cpi.CodeInvalidCloudProperties || e.Field != "instance_type" {
		t.Errorf("CreateVM with bad cloud properties = %#v", err)
	}
	if err := j.RebootVM(ctx, "missing"); !errors.Is(err, cpi.ErrVMNotFound) {
		t.Errorf("RebootVM(missing) = %v", err)
	}
	if has, err := j.HasVM(ctx, "missing"); err != nil || has {
		t.Errorf("HasVM(missing) = %v, %v", has, err)
	}
	if err := j.DeleteVM(ctx, "missing"); err != nil {
		t.Errorf("DeleteVM(missing) = %v", err)
	}
	props, err := j.CalculateVMCloudProperties(ctx, cpi.VMResources{CPU: 2, RAMMB: 1024})
	if err != nil || len(props) == 0 {
		t.Errorf("CalculateVMCloudProperties = %s, %v", props, err)
	}
	if err := j.RebootVM(ctx, "crash"); err == nil {
		t.Error("a process that exits without answering should fail the call")
	}
}

// BenchmarkHasVM measures one HasVM round trip three ways: through the
// long-lived plugin binary (gRPC, mTLS), through a new process per call
// (the BOSH way, JSON on stdin/stdout), and, for reference, in-process
// over loopback gRPC without TLS. Through the plugin it also reports the
// CPU each call costs the host and the plugin process, with and without
// the observer the director installs for its metrics.
func BenchmarkHasVM(b *testing.B) {
	b.Run("plugin-grpc", func(b *testing.B) { benchPluginHasVM(b, nil) })
	// As the director calls: every call observed for its metrics
	// (host.Config.Observe, a gRPC interceptor).
	b.Run("plugin-grpc-observed", func(b *testing.B) {
		var calls atomic.Int64
		var took atomic.Int64
		benchPluginHasVM(b, func(method string, d time.Duration, err error) {
			calls.Add(1)
			took.Add(int64(d))
		})
		if calls.Load() == 0 {
			b.Fatal("no call observed")
		}
	})
	b.Run("inprocess-grpc", func(b *testing.B) {
		c := cpitest.ServeInProcess(b, cpitest.NewFake())
		ctx := b.Context()
		for b.Loop() {
			if _, err := c.HasVM(ctx, "vm-1"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("process-per-call-json", func(b *testing.B) {
		j := host.NewJSONProcess(fakePlugin, nil)
		ctx := b.Context()
		for b.Loop() {
			if _, err := j.HasVM(ctx, "vm-1"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchPluginHasVM calls HasVM through the fake plugin binary, reporting
// the CPU each call costs the host and the plugin. FAKEPLUGIN_CPUPROFILE
// (testdata/fakeplugin) profiles the plugin's side.
func benchPluginHasVM(b *testing.B, observe cpi.CallObserver) {
	env := map[string]string{}
	for _, k := range []string{"FAKEPLUGIN_CPUPROFILE", "FAKEPLUGIN_CPUPROFILE_SECONDS"} {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
	}
	p, err := host.Start(b.Context(), host.Config{Path: fakePlugin, Env: env, Observe: observe, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	ctx := b.Context()
	if _, err := p.HasVM(ctx, "vm-1"); err != nil {
		b.Fatal(err)
	}
	report := cpuSplit(b, p.PID())
	for b.Loop() {
		if _, err := p.HasVM(ctx, "vm-1"); err != nil {
			b.Fatal(err)
		}
	}
	report()
}

// The whole conformance suite through JSON mode, one process per call,
// against the fake plugin keeping its objects in a state file.
func TestConformanceThroughJSONProcess(t *testing.T) {
	props, _ := json.Marshal(map[string]string{"state_file": filepath.Join(t.TempDir(), "state.json")})
	cpitest.RunJSON(t, fakePlugin, props, fakeConfig())
}
