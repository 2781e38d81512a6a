package host

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
)

// slogSink re-emits go-plugin's events and the plugin's parsed JSON log
// records through slog, keeping level and attributes.
type slogSink struct {
	log *slog.Logger

	mu sync.Mutex
	// lastError is the plugin's last error record, for a plugin that
	// exits before the handshake without cpi.Main's report.
	lastError string
}

// pluginError returns the plugin's last error record ("" when none).
func (s *slogSink) pluginError() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastError
}

func (s *slogSink) Accept(name string, level hclog.Level, msg string, args ...any) {
	if level >= hclog.Error && strings.HasPrefix(name, "cpi.") { // the plugin's own log, not go-plugin's
		rec := msg
		for i := 0; i+1 < len(args); i += 2 {
			if k := fmt.Sprint(args[i]); k == "error" || k == "err" {
				rec += ": " + fmt.Sprint(args[i+1])
			}
		}
		s.mu.Lock()
		s.lastError = rec
		s.mu.Unlock()
	}
	var l slog.Level
	switch level {
	case hclog.Trace, hclog.Debug:
		l = slog.LevelDebug
	case hclog.Info, hclog.NoLevel:
		l = slog.LevelInfo
	case hclog.Warn:
		l = slog.LevelWarn
	default:
		l = slog.LevelError
	}
	ctx := context.Background()
	if !s.log.Enabled(ctx, l) {
		return
	}
	attrs := make([]slog.Attr, 0, len(args)/2+1)
	if name != "" {
		attrs = append(attrs, slog.String("source", name))
	}
	for i := 0; i+1 < len(args); i += 2 {
		k := fmt.Sprint(args[i])
		if k == "timestamp" { // added by go-plugin; slog has its own time
			continue
		}
		attrs = append(attrs, slog.Any(k, args[i+1]))
	}
	s.log.LogAttrs(ctx, l, msg, attrs...)
}

// lineLogger logs what the plugin writes to its os.Stdout and os.Stderr
// (go-plugin forwards them over the connection), one record per line.
type lineLogger struct {
	log    *slog.Logger
	stream string
	mu     sync.Mutex
	buf    []byte
}

func (w *lineLogger) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		if line := bytes.TrimRight(w.buf[:i], "\r"); len(line) > 0 {
			w.log.Info(string(line), "stream", w.stream)
		}
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > 64<<10 {
		w.log.Info(string(w.buf), "stream", w.stream)
		w.buf = w.buf[:0]
	}
	return len(p), nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
