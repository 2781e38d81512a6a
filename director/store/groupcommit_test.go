package store

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// memTx is a kvTx over a map, enough for groupCommit: only put is used.
type memTx struct {
	kvTx
	writes map[string]string
}

func (t memTx) put(_ bucketPath, key, value []byte) error {
	t.writes[string(key)] = string(value)
	return nil
}

// memCommits is an update function over a map that counts its commits
// and can hold the first one until released.
type memCommits struct {
	mu      sync.Mutex
	data    map[string]string
	commits int
	hold    chan struct{} // the first commit waits for it to close
	held    chan struct{} // closed once the first commit waits
}

func (m *memCommits) update(fn func(kvTx) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.commits == 0 && m.hold != nil {
		close(m.held)
		<-m.hold
	}
	tx := memTx{writes: map[string]string{}}
	if err := fn(tx); err != nil {
		return err // rolled back: nothing of tx kept
	}
	for k, v := range tx.writes {
		m.data[k] = v
	}
	m.commits++
	return nil
}

// TestGroupCommitSharesCommitsAndKeepsErrorsApart: a lone write commits at
// once, alone; writes that come while a commit runs share the next one;
// a write that fails gets its error and nothing of it is kept, while the
// others of its group commit; a panic is that writer's error.
func TestGroupCommitSharesCommitsAndKeepsErrorsApart(t *testing.T) {
	m := &memCommits{data: map[string]string{}, hold: make(chan struct{}), held: make(chan struct{})}
	g := &groupCommit{update: m.update}

	first := make(chan error)
	go func() {
		first <- g.do(func(tx kvTx) error { return tx.put(nil, []byte("first"), []byte("1")) })
	}()
	<-m.held // the first commit is under way

	const n = 20
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = g.do(func(tx kvTx) error {
				switch i {
				case 7:
					tx.put(nil, []byte("bad"), []byte("x"))
					return errors.New("refused")
				case 11:
					panic("boom")
				}
				return tx.put(nil, fmt.Appendf(nil, "k%d", i), []byte("v"))
			})
		})
	}
	// Every writer queued behind the held commit before it ends.
	for {
		g.mu.Lock()
		queued := len(g.pending)
		g.mu.Unlock()
		if queued == n {
			break
		}
		runtime.Gosched()
	}
	close(m.hold)
	if err := <-first; err != nil {
		t.Fatalf("first write: %v", err)
	}
	wg.Wait()

	for i, err := range errs {
		switch i {
		case 7:
			if err == nil || err.Error() != "refused" {
				t.Errorf("writer 7: %v, want its own error", err)
			}
		case 11:
			if err == nil || !strings.Contains(err.Error(), "panic in a batched write: boom") {
				t.Errorf("writer 11: %v, want its panic as an error", err)
			}
		default:
			if err != nil {
				t.Errorf("writer %d: %v", i, err)
			}
		}
	}
	if _, ok := m.data["bad"]; ok {
		t.Errorf("the failed write was kept")
	}
	if len(m.data) != n-1 { // first, and 18 of the 20
		t.Errorf("%d keys written, want %d: %v", len(m.data), n-1, m.data)
	}
	// The first commit alone, then the 18 good writes together (the two
	// that failed ran alone and committed nothing).
	if m.commits != 2 {
		t.Errorf("%d commits, want 2: the writes that queued share one", m.commits)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.running || len(g.pending) != 0 {
		t.Errorf("after the writes: running %v, %d pending", g.running, len(g.pending))
	}
}
