package action

import (
	"context"

	"github.com/compleat/compleat/agent/applyspec"
)

// prepare fetches and verifies the spec's blobs ahead of apply, so that the
// apply during the update window downloads nothing.
func (a *Actions) prepare(ctx context.Context, spec applyspec.Spec) (struct{}, error) {
	return struct{}{}, a.d.Installer.Prepare(ctx, spec)
}
