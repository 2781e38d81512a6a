package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/compleat/compleat/director/apiv1"
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
			var es []apiv1.ErrandInfo
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
	var req apiv1.ErrandRequest
	var logsDir string
	cmd := &cobra.Command{
		Use:   "run-errand NAME",
		Short: "Run an errand; shows its output and exits 0 when it exits 0, 1 otherwise",
		Args:  args(cobra.ExactArgs(1)),
		RunE: run(func(cmd *cobra.Command, argv []string) error {
			name, c, err := a.deploymentClient()
			if err != nil {
				return err
			}
			if logsDir != "" {
				if st, err := os.Stat(logsDir); err != nil || !st.IsDir() {
					return Usage(fmt.Errorf("--download-logs %s: not a directory", logsDir))
				}
				req.DownloadLogs = true
			}
			var t apiv1.Task
			path := "/v1/deployments/" + url.PathEscape(name) + "/errands/" + url.PathEscape(argv[0]) + "/runs"
			if err := c.do(cmd.Context(), "POST", path, req, &t); err != nil {
				return err
			}
			err = a.follow(cmd.Context(), c, t.ID)
			if logsDir != "" {
				// The logs were fetched whatever the errand's exit code.
				if lerr := a.downloadErrandLogs(cmd.Context(), c, t.ID, logsDir); lerr != nil && err == nil {
					err = lerr
				}
			}
			return err
		}),
	}
	cmd.Flags().BoolVar(&req.KeepAlive, "keep-alive", false, "keep the errand's VMs after the run (the next run reuses them)")
	cmd.Flags().BoolVar(&req.WhenChanged, "when-changed", false, "run only when the deployment changed since the errand's last successful run")
	cmd.Flags().StringVar(&logsDir, "download-logs", "", "save each errand instance's logs (fetched before its VM is deleted) into `DIR`")
	cmd.Flags().StringArrayVar(&req.Instances, "instance", nil, "run only on `GROUP[/ID]` (id or index); repeatable")
	return cmd
}

// downloadErrandLogs saves the logs a run-errand task fetched (its events
// of stage apiv1.ErrandLogsStage) into dir.
func (a *app) downloadErrandLogs(ctx context.Context, c *client, id uint64, dir string) error {
	var found []apiv1.LogsResult
	err := c.lines(ctx, fmt.Sprintf("/v1/tasks/%d/events", id), func(line []byte) error {
		var e apiv1.Event
		if err := json.Unmarshal(line, &e); err != nil || e.Stage != apiv1.ErrandLogsStage {
			return nil
		}
		var d struct {
			Logs apiv1.LogsResult `json:"logs"`
		}
		if json.Unmarshal(e.Data, &d) == nil && d.Logs.BlobID != "" {
			found = append(found, d.Logs)
		}
		return nil
	})
	if err != nil {
		return err
	}
	when := time.Now().UTC().Format("20060102-150405")
	for _, res := range found {
		file := filepath.Join(dir, fmt.Sprintf("%s.%s.%s.%s.tgz", res.Deployment, res.Group, res.ID, when))
		if err := download(ctx, c, "/v1/logs/"+url.PathEscape(res.BlobID), file, res.SHA256); err != nil {
			return Failed(fmt.Errorf("errand logs of %s/%s: %w", res.Group, res.ID, err))
		}
		if !a.g.JSON {
			fmt.Fprintf(a.d.Stdout, "Logs of %s/%s (%s) saved to %s\n", res.Group, res.ID, size(res.Size), file)
		}
	}
	return nil
}
