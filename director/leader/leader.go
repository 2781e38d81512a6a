// Package leader elects one director among several sharing an etcd cluster:
// an etcd lease held by a session that keeps it alive, and an election on a
// key prefix (go.etcd.io/etcd/client/v3/concurrency). The leader is the
// campaigner whose key under the prefix is oldest; when its process dies,
// its lease expires after TTL and the next one leads.
//
// director/app wires it in when director.yml has an ha section (docs/ha.md).
package leader

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// DefaultPrefix is where the election's keys live unless told otherwise.
const DefaultPrefix = "/compleat/leader/"

// ErrNoLeader: nobody is campaigning.
var ErrNoLeader = errors.New("no leader")

// Options tune an Elector.
type Options struct {
	// Prefix is the election's key prefix; DefaultPrefix when empty.
	Prefix string
	// TTL is how long the cluster keeps a dead candidate's lease (and
	// so its leadership); whole seconds, at least 1; 10 s when zero.
	TTL time.Duration
}

// Elector is one candidate: a director's id and its lease.
type Elector struct {
	id       string
	prefix   string
	session  *concurrency.Session
	election *concurrency.Election
}

// New makes a candidate called id (a director's id or address) with a
// lease of opts.TTL kept alive until Close or until the process dies.
func New(ctx context.Context, c *clientv3.Client, id string, opts Options) (*Elector, error) {
	if id == "" {
		return nil, fmt.Errorf("leader election: empty candidate id")
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.TTL == 0 {
		opts.TTL = 10 * time.Second
	}
	ttl := int(opts.TTL / time.Second)
	if ttl < 1 {
		return nil, fmt.Errorf("leader election: ttl %s: want at least 1s", opts.TTL)
	}
	s, err := concurrency.NewSession(c, concurrency.WithTTL(ttl), concurrency.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("leader election: lease: %w", err)
	}
	return &Elector{id: id, prefix: opts.Prefix, session: s, election: concurrency.NewElection(s, opts.Prefix)}, nil
}

// ID is the candidate's id.
func (e *Elector) ID() string { return e.id }

// Campaign waits until this candidate leads, or ctx ends.
func (e *Elector) Campaign(ctx context.Context) error {
	if err := e.election.Campaign(ctx, e.id); err != nil {
		return fmt.Errorf("leader election: campaign: %w", err)
	}
	return nil
}

// Resign gives up leadership (a no-op when not leading); another
// campaigner takes over at once.
func (e *Elector) Resign(ctx context.Context) error {
	if err := e.election.Resign(ctx); err != nil {
		return fmt.Errorf("leader election: resign: %w", err)
	}
	return nil
}

// Leader is the id of the current leader, ErrNoLeader when there is none.
func (e *Elector) Leader(ctx context.Context) (string, error) {
	r, err := e.election.Leader(ctx)
	if errors.Is(err, concurrency.ErrElectionNoLeader) {
		return "", ErrNoLeader
	}
	if err != nil {
		return "", fmt.Errorf("leader election: leader: %w", err)
	}
	return string(r.Kvs[0].Value), nil
}

// Candidates are the ids of every live candidate (the leader and those
// waiting): each holds a key under the prefix for as long as its lease
// lives.
func (e *Elector) Candidates(ctx context.Context) (map[string]bool, error) {
	r, err := e.session.Client().Get(ctx, e.prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("leader election: candidates: %w", err)
	}
	out := make(map[string]bool, len(r.Kvs))
	for _, kv := range r.Kvs {
		out[string(kv.Value)] = true
	}
	return out, nil
}

// Observe sends the leader's id each time leadership changes (first the
// current one) until ctx ends; then the channel closes.
func (e *Elector) Observe(ctx context.Context) <-chan string {
	out := make(chan string)
	go func() {
		defer close(out)
		for r := range e.election.Observe(ctx) {
			if len(r.Kvs) == 0 {
				continue
			}
			select {
			case out <- string(r.Kvs[0].Value):
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// Lost is closed when the lease is gone (expired while the cluster was out
// of reach, or revoked): a leader must stop acting as one at once.
func (e *Elector) Lost() <-chan struct{} { return e.session.Done() }

// Close resigns and revokes the lease.
func (e *Elector) Close() error { return e.session.Close() }
