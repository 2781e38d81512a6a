package action

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
)

// The desired state of the jobs is recorded in <base>/bosh/desired_state
// ("started" or "stopped") by start and stop, so that an agent restarted
// while its jobs should run (a crash, a reboot) starts them again.
const (
	desiredStarted = "started"
	desiredStopped = "stopped"
)

func (a *Actions) desiredFile() string { return filepath.Join(a.d.Layout.Bosh(), "desired_state") }

func (a *Actions) setDesired(state string) error {
	if err := os.MkdirAll(a.d.Layout.Bosh(), 0o700); err != nil {
		return err
	}
	return os.WriteFile(a.desiredFile(), []byte(state+"\n"), 0o600)
}

// Resume starts the jobs if they were started when the agent last ran.
func (a *Actions) Resume(ctx context.Context) error {
	b, err := os.ReadFile(a.desiredFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(b)) != desiredStarted {
		return nil
	}
	a.d.Logger.Info("starting the jobs that ran before the agent restarted")
	a.exclusive <- struct{}{}
	defer func() { <-a.exclusive }()
	_, err = a.start(ctx)
	return err
}
