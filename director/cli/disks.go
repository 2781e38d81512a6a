package cli

import (
	"fmt"
	"io"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/compleat/compleat/director/apiv1"
)

func (a *app) disksCmd() *cobra.Command {
	var orphaned bool
	cmd := &cobra.Command{
		Use:   "disks",
		Short: "List persistent disks attached to instances (--orphaned: the ones kept after a change)",
		Args:  args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			q := "/v1/disks"
			if orphaned {
				q += "?orphaned=true"
			}
			var ds []apiv1.Disk
			return a.list(cmd.Context(), c, q, &ds, func(w io.Writer) {
				tw := table(w, "Disk CID", "CPI", "Size", "Deployment", "Instance", "Orphaned")
				for _, d := range ds {
					if a.g.Deployment != "" && d.Deployment != a.g.Deployment {
						continue
					}
					fmt.Fprintf(tw, "%s\t%s\t%d MiB\t%s\t%s\t%s\n", d.CID, d.CPI, d.SizeMB, dash(d.Deployment), dash(d.InstanceID), stamp(d.OrphanedAt))
				}
				tw.Flush()
				fmt.Fprintf(w, "\n%d disks\n", len(ds))
			})
		}),
	}
	cmd.Flags().BoolVar(&orphaned, "orphaned", false, "orphaned disks only")
	return cmd
}

func (a *app) deleteDiskCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "delete-disk CID",
		Short: "Delete an orphaned disk (in its CPI, then from the director)",
		Args:  args(cobra.ExactArgs(1)),
		RunE: run(func(cmd *cobra.Command, argv []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if !a.g.NonInter && !a.g.JSON {
				if ok, err := a.confirm(fmt.Sprintf("Delete disk %s and its data?", argv[0])); err != nil || !ok {
					return err
				}
			}
			var t apiv1.Task
			if err := c.do(cmd.Context(), "DELETE", "/v1/disks/"+url.PathEscape(argv[0]), nil, &t); err != nil {
				return err
			}
			return a.follow(cmd.Context(), c, t.ID)
		}),
	}
}
