package cli

// Rollout control: pause a deployment's rollout after the batches in
// flight, and resume it.

import (
	"encoding/json"
	"fmt"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/compleat/compleat/director/apiv1"
)

func (a *app) rolloutCmds() []*cobra.Command {
	return []*cobra.Command{a.pauseCmd(), a.resumeCmd()}
}

func (a *app) pauseCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "pause",
		Short: "Stop the deployment's rollout (-d) after the batches in flight; resume continues it",
		Args:  args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			name, c, err := a.deploymentClient()
			if err != nil {
				return err
			}
			var res json.RawMessage
			if err := c.do(cmd.Context(), "POST", "/v1/deployments/"+url.PathEscape(name)+"/pause", struct{}{}, &res); err != nil {
				return err
			}
			if a.g.JSON {
				return printJSON(a.d.Stdout, res)
			}
			fmt.Fprintf(a.d.Stdout, "Rollout of %s pauses after the batches in flight; `director resume -d %s` continues it.\n", name, name)
			return nil
		}),
	}
}

func (a *app) resumeCmd() *cobra.Command {
	var skipDrain bool
	cmd := &cobra.Command{
		Use:   "resume",
		Short: "Continue the deployment's (-d) paused rollout: deploy its newest manifest again",
		Args:  args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			name, c, err := a.deploymentClient()
			if err != nil {
				return err
			}
			path := "/v1/deployments/" + url.PathEscape(name) + "/resume"
			if skipDrain {
				path += "?skip_drain=true"
			}
			var t apiv1.Task
			if err := c.do(cmd.Context(), "POST", path, struct{}{}, &t); err != nil {
				return err
			}
			return a.follow(cmd.Context(), c, t.ID)
		}),
	}
	cmd.Flags().BoolVar(&skipDrain, "skip-drain", false, "do not run drain scripts")
	return cmd
}
