package store

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// EtcdOptions choose the etcd cluster that holds the state and how to reach
// it.
type EtcdOptions struct {
	// Endpoints are the client URLs of the cluster's members.
	Endpoints []string
	// CAFile is the CA bundle that signed the members' certificates;
	// CertFile and KeyFile are the director's client certificate. All
	// empty: plain http (tests, loopback only).
	CAFile, CertFile, KeyFile string
	// Prefix is put before every key; "/compleat/" when empty. Two
	// directors sharing a prefix share their state.
	Prefix string
	// MaxTxnOps is the cluster's --max-txn-ops: a transaction writing more
	// keys than this fails with an error naming the limit instead of
	// being sent. Zero means etcd's default, 128.
	MaxTxnOps int
	// DialTimeout bounds connecting, RequestTimeout each request; zero
	// means 5 s and 10 s.
	DialTimeout, RequestTimeout time.Duration
}

// DefaultEtcdPrefix is where the state lives in etcd unless told otherwise.
const DefaultEtcdPrefix = "/compleat/"

// ErrTxnTooLarge: a transaction writes more keys than the etcd cluster takes
// in one transaction.
var ErrTxnTooLarge = errors.New("transaction too large for etcd")

// OpenEtcd opens the state held in an etcd cluster under eo.Prefix,
// creating the schema when the prefix is empty and upgrading an older one.
// opts.KeyPath is required: the variables key stays a local file (the same
// on every director sharing the state), never in etcd.
func OpenEtcd(eo EtcdOptions, opts Options) (*Store, error) {
	if len(eo.Endpoints) == 0 {
		return nil, fmt.Errorf("etcd state: no endpoints")
	}
	if opts.KeyPath == "" {
		return nil, fmt.Errorf("etcd state: the variables key file is not set")
	}
	if eo.Prefix == "" {
		eo.Prefix = DefaultEtcdPrefix
	}
	if eo.MaxTxnOps == 0 {
		eo.MaxTxnOps = 128
	}
	if eo.DialTimeout == 0 {
		eo.DialTimeout = 5 * time.Second
	}
	if eo.RequestTimeout == 0 {
		eo.RequestTimeout = 10 * time.Second
	}
	c, err := EtcdClient(eo)
	if err != nil {
		return nil, err
	}
	b := &etcdBackend{c: c, opts: eo}
	// Fail now, not at the first request, when the cluster is unreachable.
	ctx, cancel := context.WithTimeout(context.Background(), eo.DialTimeout)
	defer cancel()
	if _, err := c.Get(ctx, b.guard()); err != nil {
		c.Close()
		return nil, fmt.Errorf("etcd state %s: %w", b.name(), err)
	}
	return open(b, opts)
}

// EtcdClient connects to the cluster eo names (its endpoints and TLS; a
// zero DialTimeout means 5 s). The director's leader election uses one of
// its own beside the store's.
func EtcdClient(eo EtcdOptions) (*clientv3.Client, error) {
	if eo.DialTimeout == 0 {
		eo.DialTimeout = 5 * time.Second
	}
	// Errors reach the caller; the client's own log would only repeat them.
	cfg := clientv3.Config{Endpoints: eo.Endpoints, DialTimeout: eo.DialTimeout, Logger: zap.NewNop()}
	if eo.CAFile != "" || eo.CertFile != "" || eo.KeyFile != "" {
		tlsInfo := transport.TLSInfo{CertFile: eo.CertFile, KeyFile: eo.KeyFile, TrustedCAFile: eo.CAFile}
		tc, err := tlsInfo.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd state: tls: %w", err)
		}
		cfg.TLS = tc
	}
	c, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd state %s: %w", strings.Join(eo.Endpoints, ","), err)
	}
	return c, nil
}

// etcdBackend keeps the state in etcd. A bucket path maps to a key prefix:
// the top-level bucket's name, then ".<hex name>" per nested bucket; a record
// is "<bucket>/<key>" and the bucket's sequence "<bucket>#seq", all under
// the store's prefix ("/compleat/tasks/<8 bytes>", "/compleat/manifests.6162/
// <8 bytes>", "/compleat/meta/schema_version").
//
// A transaction reads at one revision (a snapshot, like a bbolt transaction),
// buffers its writes and commits them in one etcd transaction guarded by
// the mod revision of the commit key ("<prefix>#commit"), which every commit
// rewrites: when another writer committed since the snapshot, nothing is
// written and the transaction runs again. Writers are thus serialized as
// bbolt serializes them. Comparing the revisions of the keys read instead
// would miss keys that appear in or vanish from a range read.
type etcdBackend struct {
	c    *clientv3.Client
	opts EtcdOptions
}

const etcdMaxAttempts = 64

func (b *etcdBackend) guard() string { return b.opts.Prefix + "#commit" }

func (b *etcdBackend) name() string {
	return "etcd " + strings.Join(b.opts.Endpoints, ",") + " " + b.opts.Prefix
}

func (b *etcdBackend) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), b.opts.RequestTimeout)
}

func (b *etcdBackend) begin(writable bool) (*etcdTx, error) {
	ctx, cancel := b.ctx()
	defer cancel()
	r, err := b.c.Get(ctx, b.guard())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.name(), err)
	}
	tx := &etcdTx{b: b, rev: r.Header.Revision, writable: writable, writes: map[string]etcdWrite{}}
	if len(r.Kvs) == 1 {
		tx.guardRev = r.Kvs[0].ModRevision
	}
	return tx, nil
}

func (b *etcdBackend) view(fn func(kvTx) error) error {
	tx, err := b.begin(false)
	if err != nil {
		return err
	}
	return fn(tx)
}

func (b *etcdBackend) update(fn func(kvTx) error) error {
	for attempt := 1; ; attempt++ {
		tx, err := b.begin(true)
		if err != nil {
			return err
		}
		if err := fn(tx); err != nil {
			return err
		}
		ok, err := tx.commit()
		if err != nil || ok {
			return err
		}
		if attempt == etcdMaxAttempts {
			return fmt.Errorf("%s: transaction lost to other writers %d times", b.name(), attempt)
		}
		// Another writer committed first: back off a little, at random,
		// so that two losers do not collide again.
		time.Sleep(time.Duration(rand.IntN(attempt*2+1)) * time.Millisecond)
	}
}

func (b *etcdBackend) batch(fn func(kvTx) error) error { return b.update(fn) }

func (b *etcdBackend) backup(io.Writer) (int64, error) {
	return 0, fmt.Errorf("the etcd state backend has no backup through the director: take one with etcdctl snapshot save")
}

// check has nothing to verify: etcd checks its own consistency.
func (b *etcdBackend) check() error { return nil }

func (b *etcdBackend) close() error { return b.c.Close() }

// maxWrites leaves room for the commit key.
func (b *etcdBackend) maxWrites() int { return b.opts.MaxTxnOps - 1 }

// bucketKey is the key prefix of a bucket, without the separator.
func (b *etcdBackend) bucketKey(p bucketPath) string {
	var s strings.Builder
	s.WriteString(b.opts.Prefix)
	s.Write(p[0])
	for _, n := range p[1:] {
		s.WriteByte('.')
		s.WriteString(hex.EncodeToString(n))
	}
	return s.String()
}

type etcdWrite struct {
	value []byte
	del   bool
}

type etcdTx struct {
	b        *etcdBackend
	rev      int64 // the snapshot read
	guardRev int64 // the commit key's mod revision at rev (0: none yet)
	writable bool
	writes   map[string]etcdWrite
	// dropped are key prefixes deleted whole (buckets), in order.
	dropped []string
}

var errReadOnly = errors.New("write in a read-only transaction")

func (t *etcdTx) droppedKey(k string) bool {
	for _, d := range t.dropped {
		if strings.HasPrefix(k, d) {
			return true
		}
	}
	return false
}

func (t *etcdTx) read(k string) ([]byte, error) {
	if w, ok := t.writes[k]; ok {
		if w.del {
			return nil, nil
		}
		return w.value, nil
	}
	if t.droppedKey(k) {
		return nil, nil
	}
	ctx, cancel := t.b.ctx()
	defer cancel()
	r, err := t.b.c.Get(ctx, k, clientv3.WithRev(t.rev))
	if err != nil {
		return nil, err
	}
	if len(r.Kvs) == 0 {
		return nil, nil
	}
	return r.Kvs[0].Value, nil
}

func (t *etcdTx) write(k string, w etcdWrite) error {
	if !t.writable {
		return errReadOnly
	}
	t.writes[k] = w
	return nil
}

func (t *etcdTx) get(p bucketPath, key []byte) ([]byte, error) {
	return t.read(t.b.bucketKey(p) + "/" + string(key))
}

func (t *etcdTx) put(p bucketPath, key, value []byte) error {
	return t.write(t.b.bucketKey(p)+"/"+string(key), etcdWrite{value: slices.Clone(value)})
}

func (t *etcdTx) del(p bucketPath, key []byte) error {
	return t.write(t.b.bucketKey(p)+"/"+string(key), etcdWrite{del: true})
}

func (t *etcdTx) createBucket(bucketPath) error { return nil }

func (t *etcdTx) deleteBucket(p bucketPath) error {
	if !t.writable {
		return errReadOnly
	}
	bk := t.b.bucketKey(p)
	for _, d := range []string{bk + "/", bk + "."} {
		for k := range t.writes {
			if strings.HasPrefix(k, d) {
				delete(t.writes, k)
			}
		}
		t.dropped = append(t.dropped, d)
	}
	return t.write(bk+"#seq", etcdWrite{del: true})
}

func (t *etcdTx) nextSequence(p bucketPath) (uint64, error) {
	k := t.b.bucketKey(p) + "#seq"
	raw, err := t.read(k)
	if err != nil {
		return 0, err
	}
	var seq uint64
	if raw != nil {
		if seq, err = strconv.ParseUint(string(raw), 10, 64); err != nil {
			return 0, fmt.Errorf("sequence of %s: %w", p, err)
		}
	}
	seq++
	return seq, t.write(k, etcdWrite{value: []byte(strconv.FormatUint(seq, 10))})
}

// scanPage is how many records a range read fetches at a time.
const scanPage = 256

func (t *etcdTx) scan(p bucketPath, prefix, from []byte, reverse bool, fn func(k, v []byte) (bool, error)) error {
	bk := t.b.bucketKey(p) + "/"
	start := bk + string(prefix)
	// The keys of the range: [lo, hi).
	lo, hi := start, clientv3.GetPrefixRangeEnd(start)
	if from != nil {
		if f := bk + string(from); !reverse && f > lo {
			lo = f
		} else if reverse && f+"\x00" < hi {
			hi = f + "\x00"
		}
	}
	if lo >= hi {
		return nil
	}
	if !t.touched(start) {
		return t.scanPages(bk, lo, hi, reverse, fn)
	}
	// The transaction wrote into the range: merge its writes into what
	// the snapshot holds.
	recs := map[string][]byte{}
	if !t.droppedKey(start) {
		ctx, cancel := t.b.ctx()
		r, err := t.b.c.Get(ctx, lo, clientv3.WithRange(hi), clientv3.WithRev(t.rev))
		cancel()
		if err != nil {
			return err
		}
		for _, kv := range r.Kvs {
			if !t.droppedKey(string(kv.Key)) {
				recs[string(kv.Key)] = kv.Value
			}
		}
	}
	for k, w := range t.writes {
		if k < lo || k >= hi {
			continue
		}
		if w.del {
			delete(recs, k)
		} else {
			recs[k] = w.value
		}
	}
	keys := make([]string, 0, len(recs))
	for k := range recs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if reverse {
		slices.Reverse(keys)
	}
	for _, k := range keys {
		more, err := fn([]byte(k[len(bk):]), recs[k])
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// touched reports whether the transaction wrote or deleted keys starting
// with start.
func (t *etcdTx) touched(start string) bool {
	for k := range t.writes {
		if strings.HasPrefix(k, start) {
			return true
		}
	}
	for _, d := range t.dropped {
		if strings.HasPrefix(d, start) || strings.HasPrefix(start, d) {
			return true
		}
	}
	return false
}

// scanPages reads [lo, hi) at the snapshot a page at a time, so that a
// caller that stops early (the newest tasks, the events after N) reads
// little of a long bucket.
func (t *etcdTx) scanPages(bk, lo, hi string, reverse bool, fn func(k, v []byte) (bool, error)) error {
	order := clientv3.SortAscend
	if reverse {
		order = clientv3.SortDescend
	}
	for {
		ctx, cancel := t.b.ctx()
		r, err := t.b.c.Get(ctx, lo, clientv3.WithRange(hi), clientv3.WithRev(t.rev),
			clientv3.WithLimit(scanPage), clientv3.WithSort(clientv3.SortByKey, order))
		cancel()
		if err != nil {
			return err
		}
		for _, kv := range r.Kvs {
			more, err := fn(kv.Key[len(bk):], kv.Value)
			if err != nil || !more {
				return err
			}
		}
		if !r.More || len(r.Kvs) == 0 {
			return nil
		}
		last := string(r.Kvs[len(r.Kvs)-1].Key)
		if reverse {
			hi = last
		} else {
			lo = last + "\x00"
		}
	}
}

func (t *etcdTx) setSequence(p bucketPath, seq uint64) error {
	return t.write(t.b.bucketKey(p)+"#seq", etcdWrite{value: []byte(strconv.FormatUint(seq, 10))})
}

// dump reads the whole prefix at the snapshot (buffered writes are not
// records yet: dump is for stores no one writes to).
func (t *etcdTx) dump(fn func(r rawRecord) error) error {
	ctx, cancel := t.b.ctx()
	r, err := t.b.c.Get(ctx, t.b.opts.Prefix, clientv3.WithPrefix(), clientv3.WithRev(t.rev))
	cancel()
	if err != nil {
		return err
	}
	for _, kv := range r.Kvs {
		k := string(kv.Key[len(t.b.opts.Prefix):])
		if k == "#commit" {
			continue
		}
		end := strings.IndexAny(k, "/#")
		if end <= 0 {
			return fmt.Errorf("%s: unexpected key %q under the prefix", t.b.name(), kv.Key)
		}
		var p bucketPath
		for i, part := range strings.Split(k[:end], ".") {
			if i == 0 {
				p = append(p, []byte(part))
				continue
			}
			n, err := hex.DecodeString(part)
			if err != nil {
				return fmt.Errorf("%s: unexpected key %q under the prefix", t.b.name(), kv.Key)
			}
			p = append(p, n)
		}
		rec := rawRecord{Path: p}
		switch rest := k[end:]; {
		case rest == "#seq":
			if rec.Seq, err = strconv.ParseUint(string(kv.Value), 10, 64); err != nil {
				return fmt.Errorf("%s: sequence %q: %w", t.b.name(), kv.Key, err)
			}
			if rec.Seq == 0 {
				continue
			}
		case rest[0] == '/':
			rec.Key, rec.Value = []byte(rest[1:]), kv.Value
		default:
			return fmt.Errorf("%s: unexpected key %q under the prefix", t.b.name(), kv.Key)
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
	return nil
}

// commit writes the buffered changes if no other writer committed since the
// snapshot; ok is false when one did.
func (t *etcdTx) commit() (ok bool, err error) {
	if len(t.writes) == 0 && len(t.dropped) == 0 {
		return true, nil
	}
	var ops []clientv3.Op
	for _, d := range t.dropped {
		// etcd refuses a key written inside a range deleted by the same
		// transaction: delete such a range key by key.
		overlap := false
		for k := range t.writes {
			if strings.HasPrefix(k, d) {
				overlap = true
				break
			}
		}
		if !overlap {
			ops = append(ops, clientv3.OpDelete(d, clientv3.WithPrefix()))
			continue
		}
		ctx, cancel := t.b.ctx()
		r, err := t.b.c.Get(ctx, d, clientv3.WithPrefix(), clientv3.WithRev(t.rev), clientv3.WithKeysOnly())
		cancel()
		if err != nil {
			return false, err
		}
		for _, kv := range r.Kvs {
			if _, ok := t.writes[string(kv.Key)]; !ok {
				ops = append(ops, clientv3.OpDelete(string(kv.Key)))
			}
		}
	}
	keys := make([]string, 0, len(t.writes))
	for k := range t.writes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if w := t.writes[k]; w.del {
			ops = append(ops, clientv3.OpDelete(k))
		} else {
			ops = append(ops, clientv3.OpPut(k, string(w.value)))
		}
	}
	ops = append(ops, clientv3.OpPut(t.b.guard(), strconv.FormatInt(t.rev, 10)))
	if len(ops) > t.b.opts.MaxTxnOps {
		return false, fmt.Errorf("%w: %d operations, the cluster takes %d (max_txn_ops, etcd's --max-txn-ops)", ErrTxnTooLarge, len(ops), t.b.opts.MaxTxnOps)
	}
	ctx, cancel := t.b.ctx()
	defer cancel()
	r, err := t.b.c.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(t.b.guard()), "=", t.guardRev)).
		Then(ops...).
		Commit()
	if err != nil {
		return false, fmt.Errorf("%s: commit: %w", t.b.name(), err)
	}
	return r.Succeeded, nil
}
