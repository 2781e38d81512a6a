package action

import (
	"context"

	"github.com/compleat/compleat/agent/protocol"
)

// unmountDisk unmounts a persistent disk; an unknown disk is not an error.
func (a *Actions) unmountDisk(ctx context.Context, req protocol.UnmountDiskRequest) (struct{}, error) {
	return struct{}{}, a.d.Disks.UnmountDisk(ctx, req.DiskCID)
}
