package store

import (
	"errors"
	"fmt"
	"io"
	"slices"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// A bucket path names a bucket: its first element is a top-level bucket
// (bucketTasks, ...), further elements nested buckets (a deployment's
// manifests, a task's events).
type bucketPath [][]byte

func path(top []byte, nested ...[]byte) bucketPath { return append(bucketPath{top}, nested...) }

// kvTx is what the typed transactions need from a backend: keys and values
// in ordered buckets, with a sequence per bucket. Buckets spring into being
// on first write; reading a missing bucket reads nothing.
type kvTx interface {
	// get returns the value of key, nil when absent.
	get(p bucketPath, key []byte) ([]byte, error)
	// put writes key, creating the buckets of p as needed.
	put(p bucketPath, key, value []byte) error
	// del removes key; a missing key is no error.
	del(p bucketPath, key []byte) error
	// createBucket makes sure the bucket exists.
	createBucket(p bucketPath) error
	// deleteBucket removes a bucket, everything in it and its sequence; a
	// missing bucket is no error.
	deleteBucket(p bucketPath) error
	// nextSequence increments the bucket's sequence and returns it (the
	// first is 1), creating the bucket as needed.
	nextSequence(p bucketPath) (uint64, error)
	// scan calls fn for the records of the bucket whose key starts with
	// prefix, in key order (reverse: descending), from the first key at or
	// after from (reverse: at or before; nil: from the start or the end),
	// until fn returns false or an error. Nested buckets are skipped.
	scan(p bucketPath, prefix, from []byte, reverse bool, fn func(k, v []byte) (bool, error)) error
	// setSequence sets the bucket's sequence, creating the bucket as
	// needed.
	setSequence(p bucketPath, seq uint64) error
	// dump calls fn for every record and every non-zero bucket sequence
	// of the store (raw: the backend's own keys, such as etcd's commit
	// key, are not records).
	dump(fn func(r rawRecord) error) error
}

// rawRecord is a record (Key set) or a bucket's sequence (Key nil) as the
// backends hold them, for copying a store.
type rawRecord struct {
	Path       bucketPath
	Key, Value []byte
	Seq        uint64
}

// backend is a state store: bbolt (one file) or etcd (a cluster).
type backend interface {
	view(fn func(kvTx) error) error
	update(fn func(kvTx) error) error
	// batch is update shared with concurrent callers: fn may run more
	// than once.
	batch(fn func(kvTx) error) error
	backup(w io.Writer) (int64, error)
	check() error
	close() error
	// maxWrites is how many writes one transaction may hold; 0: no limit.
	maxWrites() int
	// name says what the store is, for messages: a file's path or etcd's
	// endpoints and prefix.
	name() string
}

// boltBackend keeps the state in one bbolt file.
type boltBackend struct {
	db    *bolt.DB
	path  string
	group groupCommit // batch's commits, over update
}

func newBoltBackend(db *bolt.DB, path string) *boltBackend {
	b := &boltBackend{db: db, path: path}
	b.group.update = b.update
	return b
}

func (b *boltBackend) view(fn func(kvTx) error) error {
	return b.db.View(func(tx *bolt.Tx) error { return fn(boltTx{tx}) })
}

func (b *boltBackend) update(fn func(kvTx) error) error {
	return b.db.Update(func(tx *bolt.Tx) error { return fn(boltTx{tx}) })
}

func (b *boltBackend) batch(fn func(kvTx) error) error { return b.group.do(fn) }

func (b *boltBackend) backup(w io.Writer) (int64, error) {
	var n int64
	err := b.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

func (b *boltBackend) check() error {
	var errs []error
	err := b.db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (b *boltBackend) close() error   { return b.db.Close() }
func (b *boltBackend) name() string   { return b.path }
func (b *boltBackend) maxWrites() int { return 0 }

type boltTx struct{ tx *bolt.Tx }

// bucket finds the bucket of p; nil when it (or a parent) is missing.
func (t boltTx) bucket(p bucketPath) *bolt.Bucket {
	b := t.tx.Bucket(p[0])
	for _, n := range p[1:] {
		if b == nil {
			return nil
		}
		b = b.Bucket(n)
	}
	return b
}

func (t boltTx) create(p bucketPath) (*bolt.Bucket, error) {
	b, err := t.tx.CreateBucketIfNotExists(p[0])
	for _, n := range p[1:] {
		if err != nil {
			break
		}
		b, err = b.CreateBucketIfNotExists(n)
	}
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", p, err)
	}
	return b, nil
}

func (t boltTx) get(p bucketPath, key []byte) ([]byte, error) {
	b := t.bucket(p)
	if b == nil {
		return nil, nil
	}
	return b.Get(key), nil
}

func (t boltTx) put(p bucketPath, key, value []byte) error {
	b, err := t.create(p)
	if err != nil {
		return err
	}
	return b.Put(key, value)
}

func (t boltTx) del(p bucketPath, key []byte) error {
	b := t.bucket(p)
	if b == nil {
		return nil
	}
	return b.Delete(key)
}

func (t boltTx) createBucket(p bucketPath) error { _, err := t.create(p); return err }

func (t boltTx) deleteBucket(p bucketPath) error {
	var err error
	if len(p) == 1 {
		err = t.tx.DeleteBucket(p[0])
	} else if parent := t.bucket(p[:len(p)-1]); parent != nil {
		err = parent.DeleteBucket(p[len(p)-1])
	}
	if errors.Is(err, berrors.ErrBucketNotFound) {
		return nil
	}
	return err
}

func (t boltTx) nextSequence(p bucketPath) (uint64, error) {
	b, err := t.create(p)
	if err != nil {
		return 0, err
	}
	return b.NextSequence()
}

func (t boltTx) scan(p bucketPath, prefix, from []byte, reverse bool, fn func(k, v []byte) (bool, error)) error {
	b := t.bucket(p)
	if b == nil {
		return nil
	}
	c := b.Cursor()
	var k, v []byte
	switch {
	case !reverse && from == nil:
		k, v = c.Seek(prefix)
	case !reverse:
		if string(from) < string(prefix) {
			from = prefix
		}
		k, v = c.Seek(from)
	case from == nil:
		k, v = c.Last()
	default:
		k, v = c.Seek(from)
		if k == nil {
			k, v = c.Last()
		} else if string(k) > string(from) {
			k, v = c.Prev()
		}
	}
	next := c.Next
	if reverse {
		next = c.Prev
	}
	for ; k != nil; k, v = next() {
		if !hasPrefix(k, prefix) {
			if reverse && string(k) > string(prefix) {
				continue // past the prefix's range, walking back into it
			}
			break
		}
		if v == nil { // nested bucket
			continue
		}
		more, err := fn(k, v)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

func (t boltTx) setSequence(p bucketPath, seq uint64) error {
	b, err := t.create(p)
	if err != nil {
		return err
	}
	return b.SetSequence(seq)
}

func (t boltTx) dump(fn func(r rawRecord) error) error {
	var walk func(p bucketPath, b *bolt.Bucket) error
	walk = func(p bucketPath, b *bolt.Bucket) error {
		if seq := b.Sequence(); seq > 0 {
			if err := fn(rawRecord{Path: p, Seq: seq}); err != nil {
				return err
			}
		}
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var err error
			if v == nil {
				err = walk(append(slices.Clone(p), slices.Clone(k)), b.Bucket(k))
			} else {
				err = fn(rawRecord{Path: p, Key: slices.Clone(k), Value: slices.Clone(v)})
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	return t.tx.ForEach(func(name []byte, b *bolt.Bucket) error {
		return walk(bucketPath{slices.Clone(name)}, b)
	})
}

// String names a bucket path for messages.
func (p bucketPath) String() string {
	s := string(p[0])
	for _, n := range p[1:] {
		s += fmt.Sprintf("/%x", n)
	}
	return s
}
