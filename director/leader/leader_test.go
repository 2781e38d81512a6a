package leader

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/compleat/compleat/director/store/etcdtest"
)

func client(t *testing.T, srv *etcdtest.Server) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func elector(t *testing.T, c *clientv3.Client, id string, ttl time.Duration) *Elector {
	t.Helper()
	e, err := New(context.Background(), c, id, Options{Prefix: "/test/leader/", TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func within(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func next(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case id := <-ch:
		return id
	case <-time.After(20 * time.Second):
		t.Fatal("no leadership change observed")
		return ""
	}
}

// One leads, the other waits; resigning hands over at once; a candidate
// whose process dies (its client gone, the lease not revoked) loses
// leadership when its lease expires.
func TestCampaignResignAndLeaseExpiry(t *testing.T) {
	srv := etcdtest.Start(t)
	a := elector(t, client(t, srv), "director-a", 2*time.Second)
	defer a.Close()
	bc := client(t, srv)
	b := elector(t, bc, "director-b", 2*time.Second)
	watcher := elector(t, client(t, srv), "watcher", 2*time.Second)
	defer watcher.Close()

	if _, err := watcher.Leader(within(t, 5*time.Second)); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("leader before any campaign: err = %v, want ErrNoLeader", err)
	}
	if err := a.Campaign(within(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	changes := watcher.Observe(within(t, 60*time.Second))
	if id := next(t, changes); id != "director-a" {
		t.Fatalf("observed %q, want director-a", id)
	}
	won := make(chan error, 1)
	go func() { won <- b.Campaign(within(t, 30*time.Second)) }()
	select {
	case err := <-won:
		t.Fatalf("b won while a leads: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if got, err := watcher.Candidates(within(t, 5*time.Second)); err != nil || !got["director-a"] || !got["director-b"] || got["watcher"] {
		t.Fatalf("candidates while b waits = %v, %v; want director-a and director-b (the watcher does not campaign)", got, err)
	}
	if err := a.Resign(within(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := <-won; err != nil {
		t.Fatal(err)
	}
	if id := next(t, changes); id != "director-b" {
		t.Fatalf("observed %q after a resigned, want director-b", id)
	}

	// a campaigns again and waits; b's process "dies": its client closes
	// without revoking the lease, which expires after its TTL.
	go func() { won <- a.Campaign(within(t, 30*time.Second)) }()
	bc.Close()
	if err := <-won; err != nil {
		t.Fatalf("a after b's lease expired: %v", err)
	}
	if id := next(t, changes); id != "director-a" {
		t.Fatalf("observed %q after b died, want director-a", id)
	}
	if id, err := watcher.Leader(within(t, 5*time.Second)); err != nil || id != "director-a" {
		t.Fatalf("leader = %q, %v", id, err)
	}
}

// Close revokes the lease: Lost fires and the leadership is free at once.
func TestCloseRevokes(t *testing.T) {
	srv := etcdtest.Start(t)
	c := client(t, srv)
	a := elector(t, c, "a", 10*time.Second)
	if err := a.Campaign(within(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("Lost not closed after Close")
	}
	b := elector(t, c, "b", 10*time.Second)
	defer b.Close()
	if _, err := b.Leader(within(t, 5*time.Second)); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("leader after a closed (10 s ttl): err = %v, want none at once", err)
	}
	if _, err := New(context.Background(), c, "x", Options{TTL: 100 * time.Millisecond}); err == nil {
		t.Error("ttl below 1 s accepted")
	}
}
