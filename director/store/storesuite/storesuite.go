// Package storesuite runs a store test against every backend: a bbolt file
// in a temporary directory and a prefix of a real etcd server run in the
// test process (etcdtest.Shared). It is apart from storetest so that the
// tests of other packages, which use bbolt, do not link the etcd server.
package storesuite

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/store/etcdtest"
)

// Backend opens stores of one kind.
type Backend struct {
	// Name is "bbolt" or "etcd".
	Name string
	open func(t testing.TB, dir, name string, opts store.Options) (*store.Store, error)
	dir  string
}

// Bolt is the bbolt backend.
func Bolt() Backend {
	return Backend{Name: "bbolt", open: func(t testing.TB, dir, name string, opts store.Options) (*store.Store, error) {
		if opts.Timeout == 0 {
			opts.Timeout = 200 * time.Millisecond
		}
		return store.Open(filepath.Join(dir, name+".db"), opts)
	}}
}

// Etcd is the etcd backend, on the server shared by the process's tests;
// each test gets its own key prefix.
func Etcd() Backend {
	return Backend{Name: "etcd", open: func(t testing.TB, dir, name string, opts store.Options) (*store.Store, error) {
		srv := etcdtest.Shared(t)
		if opts.KeyPath == "" {
			opts.KeyPath = filepath.Join(dir, name+".key")
		}
		return store.OpenEtcd(Options(srv, dir, name), opts)
	}}
}

// Options are the etcd options of the store called name of a test's
// directory on srv.
func Options(srv *etcdtest.Server, dir, name string) store.EtcdOptions {
	return store.EtcdOptions{Endpoints: []string{srv.Endpoint}, Prefix: "/" + filepath.Base(dir) + "/" + name + "/", MaxTxnOps: etcdtest.MaxTxnOps}
}

// Open opens (or opens again) the store called name: a file in the test's
// directory (bbolt), a prefix of the shared server (etcd). Its variables
// key is the file name+".key" in the test's directory unless opts say. At
// cleanup the store is checked and closed.
func (b Backend) Open(t testing.TB, name string, opts store.Options) *store.Store {
	t.Helper()
	s, err := b.Try(t, name, opts)
	if err != nil {
		t.Fatalf("open %s store: %v", b.Name, err)
	}
	t.Cleanup(func() {
		if err := s.Check(); err != nil {
			t.Errorf("state store consistency: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return s
}

// Try opens the store called name and returns the error, for tests of
// failing opens; the caller closes the store.
func (b Backend) Try(t testing.TB, name string, opts store.Options) (*store.Store, error) {
	t.Helper()
	if b.dir == "" {
		b.dir = Dir(t)
	}
	return b.open(t, b.dir, name, opts)
}

// Dir is the directory of the test's stores (bbolt files, variables keys).
func (b Backend) Dir() string { return b.dir }

// Run runs fn as a subtest per backend, each with its own directory and key
// prefix.
func Run(t *testing.T, fn func(t *testing.T, b Backend)) {
	for _, b := range []Backend{Bolt(), Etcd()} {
		t.Run(b.Name, func(t *testing.T) {
			b.dir = Dir(t)
			fn(t, b)
		})
	}
}

// Dir makes a fresh directory whose base name is unique, so that it also
// serves as a unique etcd prefix.
func Dir(t testing.TB) string {
	var r [8]byte
	rand.Read(r[:])
	dir := filepath.Join(t.TempDir(), "t"+hex.EncodeToString(r[:]))
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Main runs the package's tests and stops the shared etcd server after
// them: call it as os.Exit(storesuite.Main(m)) from TestMain.
func Main(m *testing.M) int {
	code := m.Run()
	etcdtest.StopShared()
	return code
}
