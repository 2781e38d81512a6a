package cli

import (
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/compleat/compleat/director/api"
	"github.com/compleat/compleat/director/store"
)

func (a *app) errandsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "errands",
		Short: "List the deployment's errands (errand groups and colocated jobs with a bin/run)",
		Args:  args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			name, c, err := a.deploymentClient()
			if err != nil {
				return err
			}
			var es []api.ErrandInfo
			return a.list(cmd.Context(), c, "/v1/deployments/"+url.PathEscape(name)+"/errands", &es, func(w io.Writer) {
				tw := table(w, "Name", "Runs on", "Jobs")
				for _, e := range es {
					where := "VMs of group " + e.Group + " (created for the run)"
					if e.Colocated {
						where = "deployed instances (colocated)"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\n", e.Name, where, strings.Join(e.Runs, ", "))
				}
				tw.Flush()
				fmt.Fprintf(w, "\n%d errands\n", len(es))
			})
		}),
	}
}

func (a *app) runErrandCmd() *cobra.Command {
	var req api.ErrandRequest
	cmd := &cobra.Command{
		Use:   "run-errand NAME",
		Short: "Run an errand; shows its output and exits 0 when it exits 0, 1 otherwise",
		Args:  args(cobra.ExactArgs(1)),
		RunE: run(func(cmd *cobra.Command, argv []string) error {
			name, c, err := a.deploymentClient()
			if err != nil {
				return err
			}
			var t store.Task
			path := "/v1/deployments/" + url.PathEscape(name) + "/errands/" + url.PathEscape(argv[0]) + "/runs"
			if err := c.do(cmd.Context(), "POST", path, req, &t); err != nil {
				return err
			}
			return a.follow(cmd.Context(), c, t.ID)
		}),
	}
	cmd.Flags().BoolVar(&req.KeepAlive, "keep-alive", false, "keep the errand's VMs after the run (the next run reuses them)")
	cmd.Flags().BoolVar(&req.WhenChanged, "when-changed", false, "run only when the deployment changed since the errand's last successful run")
	cmd.Flags().StringArrayVar(&req.Instances, "instance", nil, "run only on `GROUP[/ID]` (id or index); repeatable")
	return cmd
}
