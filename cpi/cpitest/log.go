package cpitest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
)

// LogEnv names the environment variable that sets how much of a plugin's
// log (and the host's, about the plugin) StartBinary, RunBinary and the
// in-process runs write to t.Log: "debug", "info", "warn" (the default:
// warnings and errors only) or "error".
const LogEnv = "CPITEST_LOG"

// logLevel is the level LogEnv asks for.
func logLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(os.Getenv(LogEnv))); err != nil {
		return slog.LevelWarn
	}
	return l
}

// testLogger returns a logger writing to t.Log, from the level LogEnv asks
// for, that goes quiet once the test has finished (a plugin's last lines
// may arrive while it is being stopped).
func testLogger(t testing.TB) *slog.Logger {
	h := &tHandler{state: &tState{t: t}, level: logLevel()}
	t.Cleanup(func() {
		h.state.mu.Lock()
		h.state.done = true
		h.state.mu.Unlock()
	})
	return slog.New(h)
}

type tState struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

type tHandler struct {
	state *tState
	attrs []slog.Attr
	level slog.Level
}

func (h *tHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *tHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
	for _, a := range h.attrs {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
	}
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.state.mu.Lock()
	defer h.state.mu.Unlock()
	if !h.state.done {
		h.state.t.Log(b.String())
	}
	return nil
}

func (h *tHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &tHandler{state: h.state, attrs: append(append([]slog.Attr{}, h.attrs...), as...), level: h.level}
}

func (h *tHandler) WithGroup(string) slog.Handler { return h }
