// Package storetest gives tests a real state file in a temporary directory and
// checks its consistency (bbolt's tx.Check) when the test ends.
package storetest

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/compleat/compleat/director/store"
)

// New opens a fresh store under t.TempDir(). At cleanup it runs the
// consistency check, failing the test on any problem, and closes the store.
func New(t testing.TB) *store.Store {
	t.Helper()
	return Open(t, filepath.Join(t.TempDir(), "state.db"), store.Options{})
}

// Open opens the store at path with opts and registers the same check.
func Open(t testing.TB, path string, opts store.Options) *store.Store {
	t.Helper()
	if opts.Timeout == 0 {
		opts.Timeout = 200 * time.Millisecond
	}
	s, err := store.Open(path, opts)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Check(); err != nil {
			t.Errorf("state file consistency: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return s
}
