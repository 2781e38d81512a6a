package cli

import (
	"github.com/spf13/cobra"

	"github.com/compleat/compleat/director/apiv1"
)

// rotateAgentCertsCmd gives agents new bus identities.
func (a *app) rotateAgentCertsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rotate-agent-certs",
		Short: "Give the agents of the deployment (-d; every deployment's without it) new bus certificates, for keys they make; the bus refuses the old ones",
		Args:  args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			var t apiv1.Task
			if err := c.do(cmd.Context(), "POST", "/v1/agents/rotate-certs", apiv1.RotateRequest{Deployment: a.g.Deployment}, &t); err != nil {
				return err
			}
			return a.follow(cmd.Context(), c, t.ID)
		}),
	}
}
