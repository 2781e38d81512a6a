package host_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi/host"
)

// A plugin serves its calls on a few goroutines kept for them (cpi.Serve);
// calls beyond those still run at once, each on a goroutine of its own:
// with more calls blocked in the plugin than it keeps goroutines, another
// call is answered.
func TestCallsBeyondTheServingGoroutinesAreAnswered(t *testing.T) {
	const blocked = 8
	logs, logger := newCapture(t)
	p := start(t, host.Config{Logger: logger})
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, blocked)
	for range blocked {
		go func() {
			_, err := p.HasVM(ctx, "block")
			errc <- err
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for logs.count("blocking in HasVM") < blocked {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d calls reached the plugin", logs.count("blocking in HasVM"), blocked)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if has, err := p.HasVM(t.Context(), "vm-1"); err != nil || has {
		t.Fatalf("HasVM beside %d blocked calls = %v, %v", blocked, has, err)
	}
	cancel()
	for range blocked {
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("blocked call after cancel = %v, want context.Canceled", err)
		}
	}
}

// count is the number of records with the message.
func (c *capture) count(msg string) int {
	n := 0
	for _, r := range c.all() {
		if r.msg == msg {
			n++
		}
	}
	return n
}
