package store

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func checkAndClose(t *testing.T, s *Store) {
	t.Helper()
	if err := s.Check(); err != nil {
		t.Errorf("consistency: %v", err)
	}
	s.Close()
}

func TestNewFileGetsCurrentSchema(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer checkAndClose(t, s)
	v, err := s.SchemaVersion()
	if err != nil || v != SchemaVersion {
		t.Fatalf("schema version = %d, %v; want %d", v, err, SchemaVersion)
	}
}

func TestUpgradeFromEmptyFile(t *testing.T) {
	// A file bbolt created but nothing initialised: version 0.
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer checkAndClose(t, s)
	if err := s.View(func(tx *Tx) error {
		for _, b := range allBucketsVersion1 {
			if tx.tx.(boltTx).tx.Bucket(b) == nil {
				t.Errorf("bucket %s missing after upgrade", b)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestNewerSchemaIsRefusedWithAdvice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.db.(*boltBackend).db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchemaVersion, []byte("99"))
	}); err != nil {
		t.Fatal(err)
	}
	checkAndClose(t, s)

	_, err = Open(path, Options{})
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("open newer file: err = %v, want ErrSchemaTooNew", err)
	}
	for _, want := range []string{"schema version 99", "understands up to 1", "restore a backup"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
