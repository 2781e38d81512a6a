package app

import (
	"context"
	"fmt"

	"github.com/compleat/compleat/director/api"
	"github.com/compleat/compleat/director/cpimanager"
)

// diskDeleter deletes disks through the CPI manager (delete-disk).
// A disk is deleted only once its tags show it is this director's
// (cpimanager.CheckDisk).
type diskDeleter struct {
	cpis       *cpimanager.Manager
	directorID string
}

var _ api.DiskDeleter = diskDeleter{}

func (d diskDeleter) DeleteDisk(ctx context.Context, cpiName, cid string) error {
	name, err := d.cpis.Resolve(cpiName)
	if err != nil {
		return err
	}
	c, err := d.cpis.Get(ctx, name)
	if err != nil {
		return err
	}
	info, err := d.cpis.Info(ctx, name)
	if err != nil {
		return err
	}
	if _, err := cpimanager.CheckDisk(ctx, c, info, cid, d.directorID); err != nil {
		return fmt.Errorf("delete disk %s in cpi %s: %w", cid, name, err)
	}
	if err := c.DeleteDisk(ctx, cid); err != nil {
		return fmt.Errorf("delete disk %s in cpi %s: %w", cid, name, err)
	}
	return nil
}
