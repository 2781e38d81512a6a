package action

import (
	"context"
	"errors"

	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/cpi"
)

// mountDisk mounts a persistent disk at the store (or, when the store holds
// another disk, at the migration target). Without a hint in the request the
// hint from the settings (update_settings) is used.
func (a *Actions) mountDisk(ctx context.Context, req protocol.MountDiskRequest) (struct{}, error) {
	if req.DiskCID == "" {
		return struct{}{}, &protocol.Exception{Code: protocol.CodeBadArguments, Message: "mount_disk: disk_cid is empty"}
	}
	hint := req.Hint
	if hint == (cpi.DiskHint{}) {
		h, ok := a.d.Settings.Current().Disks.Persistent[req.DiskCID]
		if !ok {
			return struct{}{}, errors.New("mount_disk " + req.DiskCID + ": no hint in the request or the settings")
		}
		hint = h
	}
	return struct{}{}, a.d.Disks.MountDisk(ctx, req.DiskCID, hint)
}
