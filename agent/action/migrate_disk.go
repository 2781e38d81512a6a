package action

import "context"

// migrateDisk copies the store onto the disk at the migration target and
// makes it the store.
func (a *Actions) migrateDisk(ctx context.Context) (struct{}, error) {
	return struct{}{}, a.d.Disks.Migrate(ctx)
}
