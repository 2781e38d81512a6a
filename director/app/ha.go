package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/compleat/compleat/director/config"
	"github.com/compleat/compleat/director/leader"
	"github.com/compleat/compleat/director/store"
)

// cluster is this director's part in a group of directors sharing one etcd
// state (director.yml ha:). Every director serves the API and watches the
// agents; the leader alone runs the task queue's data tasks (deploys and
// the like), resurrects and records health events. A director that loses
// its lease (etcd out of reach for longer than the TTL) stops, so that two
// never lead at once; its supervisor starts it again as a follower.
type cluster struct {
	// Instance names this process: the configured name and a random
	// suffix, so that a restarted director is told apart from the process
	// before it (tasks record it; the election's candidates are these).
	Instance string
	elector  *leader.Elector
	leading  atomic.Bool
	leader   atomic.Value // string: the leader's instance, "" while unknown
	lost     chan error
	logger   *slog.Logger
}

// newCluster names this process for an ha section.
func newCluster(c config.HA, logger *slog.Logger) (*cluster, error) {
	name := c.Name
	if name == "" {
		host, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("ha.name: unset and no host name: %w", err)
		}
		name = host
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	cl := &cluster{Instance: name + "@" + hex.EncodeToString(b[:]), lost: make(chan error, 1), logger: logger.With("component", "ha")}
	cl.leader.Store("")
	return cl, nil
}

// Leading reports whether this director leads now.
func (c *cluster) Leading() bool { return c != nil && c.leading.Load() }

// Leader is the leading director's instance ("" while unknown).
func (c *cluster) Leader() string { return c.leader.Load().(string) }

// Lost is sent an error when this director can no longer lead or follow
// safely; run stops on it.
func (c *cluster) Lost() <-chan error { return c.lost }

// startCluster joins the election; once this director leads, it takes over
// the tasks of the directors that are gone and starts the queue.
func (d *Director) startCluster(ctx context.Context, s settings, stops *stack) error {
	cl := d.Cluster
	client, err := store.EtcdClient(EtcdOptions(s.store))
	if err != nil {
		return err
	}
	stops.push(func() { client.Close() })
	el, err := leader.New(ctx, client, cl.Instance, leader.Options{Prefix: electionPrefix(s.store), TTL: s.ha.TTL()})
	if err != nil {
		return err
	}
	cl.elector = el
	// Closing the session resigns and revokes the lease, so that a director
	// stopped in order hands over at once rather than after the TTL.
	stops.push(func() { el.Close() })
	watchCtx, stopWatch := context.WithCancel(ctx)
	stops.push(stopWatch)
	go func() {
		for id := range el.Observe(watchCtx) {
			if id != cl.Leader() {
				cl.leader.Store(id)
				cl.logger.Info("leader", "leader", id, "self", id == cl.Instance)
			}
		}
	}()
	go cl.campaign(watchCtx, d)
	cl.logger.Info("joined the directors' election", "instance", cl.Instance, "lease_ttl", s.ha.TTL())
	return nil
}

// campaign waits to lead, then leads until the lease is lost.
func (c *cluster) campaign(ctx context.Context, d *Director) {
	if err := c.elector.Campaign(ctx); err != nil {
		if ctx.Err() == nil {
			c.fail(fmt.Errorf("leader election: %w", err))
		}
		return
	}
	began := time.Now()
	alive, err := c.elector.Candidates(ctx)
	if err != nil {
		c.fail(err)
		return
	}
	n, err := d.Tasks.TakeOver(func(instance string) bool { return alive[instance] })
	if err != nil {
		c.fail(err)
		return
	}
	c.leader.Store(c.Instance)
	c.leading.Store(true)
	d.Tasks.Wake()
	c.logger.Info("leading: running the task queue and the resurrector", "failed_tasks_of_gone_directors", n, "took", time.Since(began).Round(time.Millisecond))
	select {
	case <-ctx.Done():
	case <-c.elector.Lost():
		c.leading.Store(false)
		c.fail(errors.New("lost the leader's lease (etcd out of reach for longer than ha.lease_ttl); stopping so that another director leads alone"))
	}
}

func (c *cluster) fail(err error) {
	c.leading.Store(false)
	select {
	case c.lost <- err:
	default:
	}
}

// electionPrefix keeps the election beside the state it guards, outside
// its prefix (a backup of the state holds no lease): "/compleat.leader/".
func electionPrefix(c config.Store) string {
	p := c.Prefix
	if p == "" {
		p = store.DefaultEtcdPrefix
	}
	return strings.TrimSuffix(p, "/") + ".leader/"
}
