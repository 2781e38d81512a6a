package action

import (
	"context"

	"github.com/compleat/compleat/agent/protocol"
)

// updateSettings records changes to the settings (disk hints, blobstore CA,
// env, heartbeat interval); they apply at once and survive restarts.
func (a *Actions) updateSettings(_ context.Context, req protocol.UpdateSettingsRequest) (struct{}, error) {
	return struct{}{}, a.d.Settings.Update(req)
}
