package action

import (
	"context"
	"errors"
	"fmt"

	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/agent/supervisor"
)

// start supervises every job's processes as its config/processes.yml,
// config/bpm.yml or monit file declares them (see supervisor.LoadJob) and
// returns once they are launched. The director watches get_state for running.
func (a *Actions) start(ctx context.Context) (protocol.StartResult, error) {
	spec, err := a.d.Installer.Current()
	if err != nil {
		return protocol.StartResult{}, err
	}
	if spec == nil {
		return protocol.StartResult{}, errors.New("start: nothing applied yet")
	}
	for _, j := range spec.Jobs {
		procs, err := supervisor.LoadJob(a.d.Layout.Base, j.Name, a.d.Layout.Job(j.Name))
		if err != nil {
			return protocol.StartResult{}, fmt.Errorf("start job %s: %w", j.Name, err)
		}
		if err := a.d.Processes.Start(ctx, j.Name, procs); err != nil {
			return protocol.StartResult{}, fmt.Errorf("start job %s: %w", j.Name, err)
		}
	}
	if err := a.setDesired(desiredStarted); err != nil {
		return protocol.StartResult{}, fmt.Errorf("start: record desired state: %w", err)
	}
	st, err := a.State()
	return protocol.StartResult{JobState: st.JobState}, err
}
