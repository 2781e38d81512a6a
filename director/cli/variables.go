package cli

import (
	"fmt"
	"io"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/compleat/compleat/director/apiv1"
)

func (a *app) variablesCmd() *cobra.Command {
	var reveal bool
	var regenerate string
	cmd := &cobra.Command{
		Use:   "variables",
		Short: "List the director's variables (of -d's deployment); values only with --reveal; --regenerate NAME makes a new value",
		Args:  args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			if regenerate != "" {
				name, c, err := a.deploymentClient()
				if err != nil {
					return err
				}
				var t apiv1.Task
				if err := c.do(cmd.Context(), "POST", "/v1/variables/regenerate", apiv1.RegenerateRequest{Deployment: name, Name: regenerate}, &t); err != nil {
					return err
				}
				return a.follow(cmd.Context(), c, t.ID)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			q := url.Values{}
			if a.g.Deployment != "" {
				q.Set("deployment", a.g.Deployment)
			}
			if reveal {
				q.Set("reveal", "true")
			}
			var vs []apiv1.Variable
			return a.list(cmd.Context(), c, "/v1/variables?"+q.Encode(), &vs, func(w io.Writer) {
				headers := []string{"Name", "Type", "Created"}
				if reveal {
					headers = append(headers, "Value")
				}
				tw := table(w, headers...)
				for _, v := range vs {
					fmt.Fprintf(tw, "%s\t%s\t%s", v.Name, v.Type, stamp(v.CreatedAt))
					if reveal {
						fmt.Fprintf(tw, "\t%s", oneLine(string(v.Value)))
					}
					fmt.Fprintln(tw)
				}
				tw.Flush()
				fmt.Fprintf(w, "\n%d variables\n", len(vs))
			})
		}),
	}
	cmd.Flags().BoolVar(&reveal, "reveal", false, "show the values (admin token)")
	cmd.Flags().StringVar(&regenerate, "regenerate", "", "make a new value for the declared variable `NAME` (and the certificates it signs); the next deploy rolls it out")
	return cmd
}
