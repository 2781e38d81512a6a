package action

import (
	"context"

	"github.com/compleat/compleat/agent/protocol"
)

// updateSettings records changes to the settings (disk hints, blobstore CA,
// env, heartbeat interval); they apply at once and survive restarts.
// A certificate without a key is for the key of the last request_identity.
func (a *Actions) updateSettings(_ context.Context, req protocol.UpdateSettingsRequest) (struct{}, error) {
	if err := a.withPendingKey(&req); err != nil {
		return struct{}{}, err
	}
	return struct{}{}, a.d.Settings.Update(req)
}
