package action

import (
	"context"
	"fmt"

	"github.com/compleat/compleat/agent/applyspec"
)

// apply installs the spec's jobs and packages and forgets the processes of
// jobs the spec no longer names (they are stopped first). It starts
// nothing: start does.
func (a *Actions) apply(ctx context.Context, spec applyspec.Spec) (struct{}, error) {
	if err := a.d.Installer.Apply(ctx, spec); err != nil {
		return struct{}{}, err
	}
	for _, js := range a.d.Processes.Status() {
		if _, ok := spec.Job(js.Name); ok {
			continue
		}
		if err := a.d.Processes.Remove(ctx, js.Name); err != nil {
			return struct{}{}, fmt.Errorf("remove job %s: %w", js.Name, err)
		}
	}
	return struct{}{}, nil
}
