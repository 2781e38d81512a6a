package openstack

import (
	"context"
	"log/slog"
	"testing"
)

type slogLogger = slog.Logger

// newTestLogger logs through t.
func newTestLogger(t testing.TB) *slog.Logger {
	return slog.New(tHandler{t: t})
}

type tHandler struct {
	t     testing.TB
	attrs []slog.Attr
}

func (h tHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h tHandler) Handle(_ context.Context, r slog.Record) error {
	msg := r.Level.String() + " " + r.Message
	for _, a := range h.attrs {
		msg += " " + a.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		msg += " " + a.String()
		return true
	})
	h.t.Log(msg)
	return nil
}

func (h tHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return tHandler{t: h.t, attrs: append(append([]slog.Attr{}, h.attrs...), as...)}
}

func (h tHandler) WithGroup(string) slog.Handler { return h }
