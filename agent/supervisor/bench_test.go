package supervisor

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"
)

// BenchmarkStartStop measures starting a job of one process until it is
// running (no readiness check) and stopping it gracefully.
func BenchmarkStartStop(b *testing.B) {
	sup, err := New(slog.New(slog.DiscardHandler), Config{LogDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	defer sup.Close(ctx) //nolint:errcheck // benchmark
	procs := []Process{{Name: "p", Executable: "/bin/sleep", Args: []string{"1000"}}}
	for b.Loop() {
		if err := sup.Start(ctx, "job", procs); err != nil {
			b.Fatal(err)
		}
		if err := sup.Wait(ctx, "job", StateRunning); err != nil {
			b.Fatal(err)
		}
		if err := sup.Stop(ctx, "job"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTCPReadiness measures start to running of a process gated by a
// TCP check against a port that is already open.
func BenchmarkTCPReadiness(b *testing.B) {
	sup, err := New(slog.New(slog.DiscardHandler), Config{LogDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	defer sup.Close(ctx) //nolint:errcheck // benchmark
	addr := benchListener(b)
	procs := []Process{{Name: "p", Executable: "/bin/sleep", Args: []string{"1000"},
		Readiness: &Readiness{TCP: addr, Interval: 10 * time.Millisecond, Timeout: time.Second}}}
	for b.Loop() {
		if err := sup.Start(ctx, "job", procs); err != nil {
			b.Fatal(err)
		}
		if err := sup.Wait(ctx, "job", StateRunning); err != nil {
			b.Fatal(err)
		}
		if err := sup.Stop(ctx, "job"); err != nil {
			b.Fatal(err)
		}
	}
}

func benchListener(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l.Addr().String()
}
