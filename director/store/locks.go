package store

import (
	"fmt"
	"time"
)

// Lock is a lease on a name (e.g. "deployment:web"): held by Owner until
// Expires unless renewed. An expired lease is free for anyone to take, so an
// owner that died never blocks the next one forever.
type Lock struct {
	Name       string    `json:"name"`
	Owner      string    `json:"owner"` // e.g. "task 12"
	TaskID     uint64    `json:"task_id,omitempty"`
	AcquiredAt time.Time `json:"acquired_at"`
	Expires    time.Time `json:"expires"`
}

// AcquireLock takes or renews the lease on name for owner until now+ttl. It
// fails with ErrLeaseHeld when another owner holds an unexpired lease.
func (t *Tx) AcquireLock(name, owner string, taskID uint64, ttl time.Duration) (Lock, error) {
	now := t.now().UTC()
	var cur Lock
	err := t.get(bucketLocks, []byte(name), &cur)
	switch {
	case err == nil && cur.Owner != owner && now.Before(cur.Expires):
		return cur, fmt.Errorf("%s is held by %s until %s: %w", name, cur.Owner, cur.Expires.Format(time.RFC3339), ErrLeaseHeld)
	case err == nil && cur.Owner == owner:
		cur.Expires = now.Add(ttl)
		return cur, t.put(bucketLocks, []byte(name), cur)
	case err != nil && err != ErrNotFound:
		return cur, err
	}
	l := Lock{Name: name, Owner: owner, TaskID: taskID, AcquiredAt: now, Expires: now.Add(ttl)}
	return l, t.put(bucketLocks, []byte(name), l)
}

// ReleaseLock gives up owner's lease on name; releasing a lease one does not
// hold is a no-op.
func (t *Tx) ReleaseLock(name, owner string) error {
	var cur Lock
	if err := t.get(bucketLocks, []byte(name), &cur); err != nil {
		if err == ErrNotFound {
			return nil
		}
		return err
	}
	if cur.Owner != owner {
		return nil
	}
	return t.del(bucketLocks, []byte(name))
}

// Locks lists the unexpired leases.
func (t *Tx) Locks() ([]Lock, error) {
	all, err := list[Lock](t, bucketLocks, "")
	now := t.now()
	return filter(all, func(l Lock) bool { return now.Before(l.Expires) }), err
}
