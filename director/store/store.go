package store

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the schema this code reads and writes.
const SchemaVersion = 1

// Errors returned by the store. Callers test them with errors.Is.
var (
	// ErrNotFound: the record asked for does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: a record with the same key exists and may not be replaced.
	ErrExists = errors.New("already exists")
	// ErrLocked: another process holds the state file.
	ErrLocked = errors.New("state file is locked")
	// ErrSchemaTooNew: the state file was written by a newer director.
	ErrSchemaTooNew = errors.New("state file was written by a newer director")
	// ErrLeaseHeld: a lock is held by another owner whose lease has not expired.
	ErrLeaseHeld = errors.New("lock is held")
	// ErrConflict: an IP address is reserved by another instance.
	ErrConflict = errors.New("conflict")
)

var (
	bucketMeta         = []byte("meta")
	bucketReleases     = []byte("releases")
	bucketPackages     = []byte("packages")
	bucketJobs         = []byte("jobs")
	bucketStemcells    = []byte("stemcells")
	bucketConfigs      = []byte("configs")
	bucketDeployments  = []byte("deployments")
	bucketManifests    = []byte("manifests")
	bucketInstances    = []byte("instances")
	bucketVMs          = []byte("vms")
	bucketDisks        = []byte("disks")
	bucketIPs          = []byte("ip_reservations")
	bucketCompiled     = []byte("compiled_packages")
	bucketTasks        = []byte("tasks")
	bucketTaskEvents   = []byte("task_events")
	bucketVariables    = []byte("variables")
	bucketLocks        = []byte("locks")
	keySchemaVersion   = []byte("schema_version")
	allBucketsVersion1 = [][]byte{
		bucketMeta, bucketReleases, bucketPackages, bucketJobs, bucketStemcells,
		bucketConfigs, bucketDeployments, bucketManifests, bucketInstances,
		bucketVMs, bucketDisks, bucketIPs, bucketCompiled, bucketTasks,
		bucketTaskEvents, bucketVariables, bucketLocks,
	}
)

// migrations[i] upgrades a store from schema version i to i+1. Version 0 is
// an empty store. Each step runs in the same write transaction as the
// others, so an upgrade either completes or leaves the store as it was.
var migrations = []func(tx kvTx) error{
	func(tx kvTx) error { // 0 -> 1: the initial schema
		for _, b := range allBucketsVersion1 {
			if err := tx.createBucket(path(b)); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		return nil
	},
}

// Options tune Open.
type Options struct {
	// Timeout is how long Open waits for another process to release the file
	// before returning ErrLocked. Zero means one second.
	Timeout time.Duration
	// KeyPath is the file holding the 32-byte key that seals variables; it is
	// created (mode 0600) when missing. Empty means "<path>.key" (required
	// with the etcd backend).
	KeyPath string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Store is an open state store. It is safe for concurrent use.
type Store struct {
	db   backend
	key  []byte
	now  func() time.Time
	path string
}

// Open opens or creates the state file at path, upgrading its schema when it
// is older than SchemaVersion.
func Open(path string, opts Options) (*Store, error) {
	if opts.Timeout == 0 {
		opts.Timeout = time.Second
	}
	if opts.KeyPath == "" {
		opts.KeyPath = path + ".key"
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.Timeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open state file %s: %w", path, err)
	}
	return open(newBoltBackend(db, path), opts)
}

// open readies a store on a backend: key, schema, sealed configs. It closes
// the backend on failure.
func open(db backend, opts Options) (*Store, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	where := db.name()
	// A store that holds a schema holds data sealed with its key: a
	// missing key is an error, never a reason to make a new one (which
	// would leave every variable unreadable). Only a new store gets a new
	// key, made before the schema is written.
	var v int
	err := db.view(func(tx kvTx) error {
		var err error
		v, err = schemaVersion(tx)
		return err
	})
	if err != nil {
		db.close()
		return nil, fmt.Errorf("state file %s: %w", where, err)
	}
	key, err := loadOrCreateKey(opts.KeyPath, v == 0)
	if err != nil {
		db.close()
		return nil, err
	}
	if err := db.update(upgrade); err != nil {
		db.close()
		return nil, fmt.Errorf("state file %s: %w", where, err)
	}
	st := &Store{db: db, key: key, now: opts.Now, path: where}
	if err := st.Update(func(tx *Tx) error { return tx.sealConfigs() }); err != nil {
		db.close()
		return nil, fmt.Errorf("state file %s: seal cpi configs: %w", where, err)
	}
	return st, nil
}

func upgrade(tx kvTx) error {
	v, err := schemaVersion(tx)
	if err != nil {
		return err
	}
	if v > SchemaVersion {
		return fmt.Errorf("%w: schema version %d, this director understands up to %d; run the director version that wrote it, or restore a backup taken before the upgrade", ErrSchemaTooNew, v, SchemaVersion)
	}
	if v == SchemaVersion {
		return nil
	}
	for ; v < SchemaVersion; v++ {
		if err := migrations[v](tx); err != nil {
			return fmt.Errorf("upgrade schema %d to %d: %w", v, v+1, err)
		}
	}
	return tx.put(path(bucketMeta), keySchemaVersion, []byte(strconv.Itoa(SchemaVersion)))
}

func schemaVersion(tx kvTx) (int, error) {
	raw, err := tx.get(path(bucketMeta), keySchemaVersion)
	if err != nil || raw == nil {
		return 0, err
	}
	v, err := strconv.Atoi(string(raw))
	if err != nil {
		return 0, fmt.Errorf("bad schema version %q: %w", raw, err)
	}
	return v, nil
}

// ErrKeyMissing: the state file holds data but its variables key is gone.
var ErrKeyMissing = errors.New("variables key missing")

// loadOrCreateKey reads the variables key, creating it only when create is
// set (a state file without data).
func loadOrCreateKey(path string, create bool) ([]byte, error) {
	key, err := os.ReadFile(path)
	if err == nil {
		if len(key) != 32 {
			return nil, fmt.Errorf("variables key %s: want 32 bytes, have %d", path, len(key))
		}
		return key, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read variables key: %w", err)
	}
	if !create {
		return nil, fmt.Errorf("%w: %s does not exist but the state file next to it holds data sealed with it: restore the key from where you keep it (a new key would leave every variable unreadable)", ErrKeyMissing, path)
	}
	key = make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate variables key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create variables key: %w", err)
	}
	if _, err := f.Write(key); err != nil {
		f.Close()
		return nil, fmt.Errorf("write variables key: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write variables key: %w", err)
	}
	return key, nil
}

// Close closes the store.
func (s *Store) Close() error { return s.db.close() }

// Path is the state file's path (with etcd: its endpoints and prefix).
func (s *Store) Path() string { return s.path }

// Now is the store's clock.
func (s *Store) Now() time.Time { return s.now() }

// Tx is a transaction with typed accessors for every record.
type Tx struct {
	tx  kvTx
	key []byte
	now func() time.Time
}

// View runs fn in a read-only transaction.
func (s *Store) View(fn func(*Tx) error) error {
	return s.db.view(func(tx kvTx) error { return fn(&Tx{tx: tx, key: s.key, now: s.now}) })
}

// Update runs fn in a read-write transaction, committed when fn returns nil.
// With etcd, fn runs again when another writer committed first, so it must
// only touch the transaction.
func (s *Store) Update(fn func(*Tx) error) error {
	return s.db.update(func(tx kvTx) error { return fn(&Tx{tx: tx, key: s.key, now: s.now}) })
}

// Batch runs fn in a write transaction that may be shared with other
// concurrent Batch calls, so that many small writes from parallel goroutines
// (the records of a batch's instances) share one commit: on bbolt, a group
// commit (groupCommit) that never waits for company. fn may run more than
// once and must only touch the transaction.
func (s *Store) Batch(fn func(*Tx) error) error {
	return s.db.batch(func(tx kvTx) error { return fn(&Tx{tx: tx, key: s.key, now: s.now}) })
}

// Backup writes a consistent copy of the state file to w. The etcd backend
// has none: back etcd up with etcdctl snapshot save (docs/ha.md).
func (s *Store) Backup(w io.Writer) (int64, error) {
	n, err := s.db.backup(w)
	if err != nil {
		return n, fmt.Errorf("backup state: %w", err)
	}
	return n, nil
}

// Check verifies the store's internal consistency (with bbolt: pages,
// freelist, ordering) and returns every problem found, joined.
func (s *Store) Check() error { return s.db.check() }

// SchemaVersion reports the store's schema version.
func (s *Store) SchemaVersion() (int, error) {
	var v int
	err := s.db.view(func(tx kvTx) error {
		var err error
		v, err = schemaVersion(tx)
		return err
	})
	return v, err
}

func itob(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func btoi(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

func (t *Tx) put(bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s/%s: %w", bucket, key, err)
	}
	if err := t.tx.put(path(bucket), key, raw); err != nil {
		return fmt.Errorf("write %s/%s: %w", bucket, key, err)
	}
	return nil
}

func (t *Tx) get(bucket, key []byte, v any) error {
	raw, err := t.tx.get(path(bucket), key)
	if err != nil {
		return fmt.Errorf("read %s/%s: %w", bucket, key, err)
	}
	if raw == nil {
		return ErrNotFound
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("decode %s/%s: %w", bucket, key, err)
	}
	return nil
}

// exists reports whether bucket holds key.
func (t *Tx) exists(bucket, key []byte) (bool, error) {
	raw, err := t.tx.get(path(bucket), key)
	if err != nil {
		return false, fmt.Errorf("read %s/%s: %w", bucket, key, err)
	}
	return raw != nil, nil
}

func (t *Tx) del(bucket, key []byte) error {
	if err := t.tx.del(path(bucket), key); err != nil {
		return fmt.Errorf("delete %s/%s: %w", bucket, key, err)
	}
	return nil
}

// list decodes every record of bucket whose key starts with prefix.
func list[T any](t *Tx, bucket []byte, prefix string) ([]T, error) {
	var out []T
	err := t.tx.scan(path(bucket), []byte(prefix), nil, false, func(k, v []byte) (bool, error) {
		var rec T
		if err := json.Unmarshal(v, &rec); err != nil {
			return false, fmt.Errorf("decode %s/%s: %w", bucket, k, err)
		}
		out = append(out, rec)
		return true, nil
	})
	return out, err
}

func hasPrefix(b, p []byte) bool {
	return len(b) >= len(p) && string(b[:len(p)]) == string(p)
}

func decode(raw []byte, v any) error { return json.Unmarshal(raw, v) }

// Now is the store's clock, for records written in this transaction.
func (t *Tx) Now() time.Time { return t.now() }
