package store

import (
	"bytes"
	"fmt"
)

// ErrNotEmpty: the target of a copy already holds records.
var ErrNotEmpty = fmt.Errorf("target state is not empty")

// CopyResult counts what Copy copied.
type CopyResult struct {
	Records, Sequences int
}

// Copy copies every record and bucket sequence of src into dst, byte for
// byte: sealed values stay sealed, so both stores must be opened with the
// same variables key (Copy checks that dst can read what src sealed by
// comparing the two after the copy, record by record). dst must hold no
// records unless force is set; then they are removed first. Nobody may
// write to either store meanwhile (stop the directors): the copy into etcd
// runs in transactions of at most the cluster's max_txn_ops, so an
// interrupted copy leaves a partial target, to be copied again with force.
func Copy(dst, src *Store, force bool) (CopyResult, error) {
	var res CopyResult
	if !bytes.Equal(dst.key, src.key) {
		return res, fmt.Errorf("copy state: the two stores were opened with different variables keys")
	}
	var recs []rawRecord
	if err := src.db.view(func(tx kvTx) error { return tx.dump(func(r rawRecord) error { recs = append(recs, r); return nil }) }); err != nil {
		return res, fmt.Errorf("read %s: %w", src.Path(), err)
	}
	existing, err := records(dst)
	if err != nil {
		return res, err
	}
	if len(existing) > 0 {
		if !force {
			return res, fmt.Errorf("%w: %s holds %d records (copy over them with --force)", ErrNotEmpty, dst.Path(), len(existing))
		}
		tops := map[string]bool{}
		for _, r := range existing {
			tops[string(r.Path[0])] = true
		}
		// A bucket per transaction: with etcd, a transaction of all of
		// them could pass the cluster's limit.
		for top := range tops {
			if err := dst.db.update(func(tx kvTx) error { return tx.deleteBucket(path([]byte(top))) }); err != nil {
				return res, fmt.Errorf("empty %s: %w", dst.Path(), err)
			}
		}
		if err := dst.db.update(migrations[0]); err != nil { // the empty buckets of the schema
			return res, fmt.Errorf("empty %s: %w", dst.Path(), err)
		}
	}
	chunk := dst.db.maxWrites()
	if chunk <= 0 {
		chunk = len(recs)
	}
	for start := 0; start < len(recs); start += chunk {
		end := min(start+chunk, len(recs))
		err := dst.db.update(func(tx kvTx) error {
			for _, r := range recs[start:end] {
				var err error
				if r.Key == nil {
					err = tx.setSequence(r.Path, r.Seq)
				} else {
					err = tx.put(r.Path, r.Key, r.Value)
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return res, fmt.Errorf("write %s: %w", dst.Path(), err)
		}
	}
	for _, r := range recs {
		if isSchemaVersion(r) {
			continue
		}
		if r.Key == nil {
			res.Sequences++
		} else {
			res.Records++
		}
	}
	copied, err := records(dst)
	if err != nil {
		return res, err
	}
	if err := sameRecords(recs, copied); err != nil {
		return res, fmt.Errorf("verify %s: %w", dst.Path(), err)
	}
	// Reading through the typed layer unseals every sealed value: a key
	// mismatch or a damaged record shows here, not at the first deploy.
	if err := dst.View(func(tx *Tx) error { return tx.readAll() }); err != nil {
		return res, fmt.Errorf("verify %s: %w", dst.Path(), err)
	}
	return res, nil
}

// records lists the records and sequences of s; the schema version of a
// freshly opened store does not count as a record.
func records(s *Store) ([]rawRecord, error) {
	var out []rawRecord
	err := s.db.view(func(tx kvTx) error {
		return tx.dump(func(r rawRecord) error {
			if isSchemaVersion(r) {
				return nil
			}
			out = append(out, r)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", s.Path(), err)
	}
	return out, nil
}

func isSchemaVersion(r rawRecord) bool {
	return len(r.Path) == 1 && string(r.Path[0]) == string(bucketMeta) && string(r.Key) == string(keySchemaVersion)
}

func sameRecords(want, have []rawRecord) error {
	key := func(r rawRecord) string {
		return fmt.Sprintf("%s|%x|%t", r.Path, r.Key, r.Key == nil)
	}
	got := map[string]rawRecord{}
	for _, r := range have {
		got[key(r)] = r
	}
	n := 0
	for _, w := range want {
		if isSchemaVersion(w) {
			continue
		}
		n++
		h, ok := got[key(w)]
		if !ok {
			return fmt.Errorf("record %s/%x missing", w.Path, w.Key)
		}
		if !bytes.Equal(h.Value, w.Value) || h.Seq != w.Seq {
			return fmt.Errorf("record %s/%x differs", w.Path, w.Key)
		}
	}
	if n != len(have) {
		return fmt.Errorf("%d records, want %d", len(have), n)
	}
	return nil
}

// readAll reads every record through its typed accessor, unsealing what is
// sealed.
func (t *Tx) readAll() error {
	if _, err := t.Deployments(); err != nil {
		return err
	}
	if _, err := t.Configs("", false); err != nil {
		return err
	}
	if _, err := t.Tasks(0, nil); err != nil {
		return err
	}
	vars, err := t.VariableNames()
	if err != nil {
		return err
	}
	for _, v := range vars {
		if _, err := t.Variable(v.Name); err != nil {
			return err
		}
	}
	return nil
}
