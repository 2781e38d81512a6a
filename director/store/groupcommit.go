package store

import (
	"fmt"
	"slices"
	"sync"
)

// groupCommit shares commits between concurrent writers without waiting
// for company: a writer that finds no commit under way commits at once, in
// its own goroutine; writers that come while a commit is under way queue
// and share the next one. A lone writer pays one commit and no delay, and
// under load each commit carries every write that came during the one
// before. (bbolt's own Batch waits MaxBatchDelay on a timer first, which
// on a Linux machine sleeps at least a millisecond whatever the delay.)
//
// Like bbolt's Batch, a function may run more than once: when one fails,
// the transaction is rolled back, the failing function runs alone (its
// error is its own) and the others are committed again without it.
type groupCommit struct {
	update func(fn func(kvTx) error) error

	mu      sync.Mutex
	pending []*groupCall
	running bool // a goroutine is committing; it takes pending next
}

type groupCall struct {
	fn   func(kvTx) error
	done chan error // buffered: the committer never waits for the writer
}

func (g *groupCommit) do(fn func(kvTx) error) error {
	c := &groupCall{fn: fn, done: make(chan error, 1)}
	g.mu.Lock()
	g.pending = append(g.pending, c)
	if g.running {
		g.mu.Unlock()
		return <-c.done
	}
	g.running = true
	g.mu.Unlock()
	g.run()
	return <-c.done
}

// run commits what is pending; when more came meanwhile, another goroutine
// carries on, so that the writer who started the run returns after its
// own commit.
func (g *groupCommit) run() {
	g.mu.Lock()
	calls := g.pending
	g.pending = nil
	g.mu.Unlock()
	g.commit(calls)
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.pending) == 0 {
		g.running = false
		return
	}
	go g.run()
}

func (g *groupCommit) commit(calls []*groupCall) {
	for len(calls) > 0 {
		failed := -1
		err := g.update(func(tx kvTx) error {
			for i, c := range calls {
				if err := safely(c.fn, tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			for _, c := range calls {
				c.done <- err
			}
			return
		}
		c := calls[failed]
		c.done <- g.update(func(tx kvTx) error { return safely(c.fn, tx) })
		calls = slices.Delete(slices.Clone(calls), failed, failed+1)
	}
}

// safely runs fn, turning a panic into its error: the panic of one writer
// must neither stop the committer nor reach the others.
func safely(fn func(kvTx) error, tx kvTx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic in a batched write: %v", p)
		}
	}()
	return fn(tx)
}
