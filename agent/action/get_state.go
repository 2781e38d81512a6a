package action

import (
	"context"

	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/agent/supervisor"
)

// getState reports the jobs, their processes, the vitals and the applied
// spec.
func (a *Actions) getState(context.Context) (protocol.State, error) {
	st, err := a.State()
	if err != nil {
		return st, err
	}
	st.Spec, err = a.d.Installer.Current()
	return st, err
}

// State is the agent's state without the spec: the body of heartbeats.
func (a *Actions) State() (protocol.State, error) {
	s := a.d.Settings.Current()
	st := protocol.State{AgentID: s.AgentID, VMCID: s.VM.CID, Jobs: []protocol.JobState{}}
	spec, err := a.d.Installer.Current()
	if err != nil {
		return st, err
	}
	supervised := map[string]supervisor.JobStatus{}
	for _, js := range a.d.Processes.Status() {
		supervised[js.Name] = js
	}
	var states []supervisor.State
	if spec != nil {
		st.Deployment, st.Name, st.ID, st.Index = spec.Deployment, spec.Name, spec.ID, spec.Index
		st.ConfigHash = spec.ConfigHash()
		for _, j := range spec.Jobs {
			js, ok := supervised[j.Name]
			if !ok {
				js = supervisor.JobStatus{Name: j.Name, State: supervisor.StateStopped}
			}
			st.Jobs = append(st.Jobs, jobState(js))
			states = append(states, js.State)
		}
	}
	st.JobState = string(supervisor.Aggregate(states))
	if spec == nil || len(spec.Jobs) == 0 {
		st.JobState = protocol.StateRunning // nothing to run: BOSH reports running
	}
	st.Vitals = a.d.Vitals.Sample()
	if disks, err := a.d.Disks.List(); err == nil {
		st.Disks = disks
	}
	if len(st.Disks) == 0 {
		delete(st.Vitals.Disk, "persistent") // the store is just a directory
	}
	return st, nil
}

func jobState(js supervisor.JobStatus) protocol.JobState {
	out := protocol.JobState{Name: js.Name, State: string(js.State), Processes: []protocol.ProcessState{}}
	for _, p := range js.Processes {
		out.Processes = append(out.Processes, protocol.ProcessState{
			Name: p.Name, State: string(p.State), PID: p.PID, Restarts: p.Restarts, Error: p.LastError,
		})
	}
	return out
}
