package supervisor

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// helperEnv makes the test binary act as a supervised program (see helper).
const helperEnv = "COMPLEAT_SUPERVISOR_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		helper(mode, os.Args[1:])
		return
	}
	code := m.Run()
	if code == 0 {
		if leaked := leakedGoroutines(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines left behind by the supervisor after every test closed it:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines waits up to d for every goroutine running supervisor code
// (other than tests) to end, and returns the stacks of those that did not.
func leakedGoroutines(d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "compleat/agent/supervisor.") &&
				!strings.Contains(g, "supervisor.Test") && !strings.Contains(g, "supervisor.leakedGoroutines") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// helper is a small program run by the supervisor in tests:
//
//	tcp ADDR GATE     listen on ADDR once the file GATE exists
//	http ADDR GATE    serve on ADDR: 200 while GATE exists, else 503
//	ignore-term       print "TERM received" on SIGTERM and keep running
func helper(mode string, args []string) {
	waitFile := func(path string) {
		for {
			if _, err := os.Stat(path); err == nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	switch mode {
	case "tcp":
		waitFile(args[1])
		l, err := net.Listen("tcp", args[0])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		fmt.Println("listening")
		for {
			c, err := l.Accept()
			if err != nil {
				os.Exit(4)
			}
			c.Close()
		}
	case "http":
		err := http.ListenAndServe(args[0], http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := os.Stat(args[1]); err == nil {
				w.WriteHeader(http.StatusOK)
				return
			}
			w.WriteHeader(http.StatusServiceUnavailable)
		}))
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	case "ignore-term":
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM)
		fmt.Println("ready")
		for range ch {
			fmt.Println("TERM received")
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
		os.Exit(2)
	}
}

// helperProcess returns a Process running the test binary in helper mode.
func helperProcess(t *testing.T, name, mode string, args ...string) Process {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Process{
		Name:       name,
		Executable: exe,
		Args:       args,
		Env:        map[string]string{helperEnv: mode},
	}
}

// freeAddr returns a loopback address with a port the kernel just handed out.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// recorder keeps the events a supervisor reports.
type recorder struct {
	mu      sync.Mutex
	events  []Event
	changed chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{})} }

func (r *recorder) record(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// transitions returns the process's states in order ("running", "failing", ...).
func (r *recorder) transitions(process string) []State {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []State
	for _, e := range r.events {
		if e.Process == process {
			out = append(out, e.To)
		}
	}
	return out
}

func (r *recorder) eventsOf(process string) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	for _, e := range r.events {
		if e.Process == process {
			out = append(out, e)
		}
	}
	return out
}

// waitFor waits (test deadline 20s) until cond holds for the process's
// transitions.
func (r *recorder) waitFor(t *testing.T, process string, what string, cond func([]State) bool) {
	t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ch := r.changed
		r.mu.Unlock()
		if cond(r.transitions(process)) {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("process %s: %s: not seen; transitions: %v", process, what, r.transitions(process))
		}
	}
}

// expect waits for the process's transitions to reach len(want) and
// checks they are exactly want.
func (r *recorder) expect(t *testing.T, process string, want ...State) {
	t.Helper()
	r.waitFor(t, process, fmt.Sprint(want), func(s []State) bool { return len(s) >= len(want) })
	if got := r.transitions(process); !slices.Equal(got, want) {
		t.Errorf("process %s: transitions %v, want %v", process, got, want)
	}
}

// newSupervisor returns a supervisor with fast backoffs, logging through
// t, closed (and checked to end) when the test ends.
func newSupervisor(t *testing.T, cfg Config) (*Supervisor, *recorder) {
	t.Helper()
	rec := newRecorder()
	if cfg.LogDir == "" {
		cfg.LogDir = t.TempDir()
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 20 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 200 * time.Millisecond
	}
	cfg.OnEvent = rec.record
	sup, err := New(slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := sup.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return sup, rec
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
