package cli

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/compleat/compleat/director/apiv1"
)

// ignoreCmd is `director ignore GROUP/ID` (ignore true) and `director
// unignore GROUP/ID` (ignore false): an ignored instance is left alone by
// deploys, by recreate|restart|stop|start unless named, by cloud-check and
// by the resurrector.
func (a *app) ignoreCmd(ignore bool) *cobra.Command {
	verb, short := "ignore", "Leave an instance alone: deploys, the lifecycle verbs (unless they name it) and the resurrector skip it"
	if !ignore {
		verb, short = "unignore", "Stop ignoring an instance: the next deploy updates it again"
	}
	return &cobra.Command{
		Use:   verb + " GROUP/ID",
		Short: short,
		Args:  args(cobra.ExactArgs(1)),
		RunE: run(func(cmd *cobra.Command, argv []string) error {
			group, id, ok := strings.Cut(argv[0], "/")
			if !ok || group == "" || id == "" || strings.Contains(id, "/") {
				return Usage(fmt.Errorf("%s: %q is not GROUP/ID (an instance id or index)", verb, argv[0]))
			}
			name, c, err := a.deploymentClient()
			if err != nil {
				return err
			}
			var raw json.RawMessage
			path := "/v1/deployments/" + url.PathEscape(name) + "/instances/" + url.PathEscape(group) + "/" + url.PathEscape(id) + "/ignore"
			if err := c.do(cmd.Context(), "PUT", path, map[string]bool{"ignore": ignore}, &raw); err != nil {
				return err
			}
			if a.g.JSON {
				return printJSON(a.d.Stdout, raw)
			}
			var in apiv1.Instance
			if err := json.Unmarshal(raw, &in); err != nil {
				return err
			}
			state := "no longer ignored"
			if in.IgnoreFix {
				state = "ignored"
			}
			fmt.Fprintf(a.d.Stdout, "Instance %s/%s of %s is %s\n", in.Group, in.ID, name, state)
			return nil
		}),
	}
}
