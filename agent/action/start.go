package action

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/agent/supervisor"
)

// start supervises every job's processes as its config/processes.yml
// declares them (a job without the file runs none) and returns once they
// are launched. The director watches get_state for running.
func (a *Actions) start(ctx context.Context) (protocol.StartResult, error) {
	spec, err := a.d.Installer.Current()
	if err != nil {
		return protocol.StartResult{}, err
	}
	if spec == nil {
		return protocol.StartResult{}, errors.New("start: nothing applied yet")
	}
	for _, j := range spec.Jobs {
		pf, err := supervisor.LoadProcessFile(filepath.Join(a.d.Layout.Job(j.Name), "config", "processes.yml"))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return protocol.StartResult{}, fmt.Errorf("start job %s: %w", j.Name, err)
		}
		if err := a.d.Processes.Start(ctx, j.Name, pf.Processes); err != nil {
			return protocol.StartResult{}, fmt.Errorf("start job %s: %w", j.Name, err)
		}
	}
	if err := a.setDesired(desiredStarted); err != nil {
		return protocol.StartResult{}, fmt.Errorf("start: record desired state: %w", err)
	}
	st, err := a.State()
	return protocol.StartResult{JobState: st.JobState}, err
}
