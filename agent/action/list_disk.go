package action

import (
	"context"

	"github.com/compleat/compleat/agent/protocol"
)

// listDisk lists the mounted persistent disks.
func (a *Actions) listDisk(context.Context) (protocol.ListDiskResult, error) {
	disks, err := a.d.Disks.List()
	return protocol.ListDiskResult{Disks: disks}, err
}
