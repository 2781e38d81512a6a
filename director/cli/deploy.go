package cli

// The deploy pipeline's commands: thin clients of the API routes the
// Deployer (director/deploy) serves.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/compleat/compleat/director/apiv1"
)

func (a *app) deployCmd() *cobra.Command {
	var o InterpolateOptions
	var dryRun, recreate, skipDrain, freshDisk, fix bool
	var planHash string
	cmd := &cobra.Command{
		Use:   "deploy MANIFEST",
		Short: "Deploy a manifest (ops files and -v/-l variables applied here; director variables on the director)",
		Args:  args(cobra.ExactArgs(1)),
		RunE: run(func(cmd *cobra.Command, argv []string) error {
			manifest, err := a.d.Tools.Interpolate(cmd.Context(), argv[0], a.warned(o))
			if err != nil {
				return Usage(err)
			}
			name, err := a.d.Tools.DeploymentName(argv[0], manifest)
			if err != nil {
				return Usage(err)
			}
			if a.g.Deployment != "" && a.g.Deployment != name {
				return Usage(fmt.Errorf("-d %s but the manifest deploys %q", a.g.Deployment, name))
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			req := map[string]any{"deployment": name, "manifest": string(manifest), "dry_run": dryRun, "recreate": recreate, "skip_drain": skipDrain}
			if freshDisk {
				req["fresh_disk_on_cpi_move"] = true
			}
			if fix {
				req["fix"] = true
			}
			if planHash != "" {
				req["plan_hash"] = planHash
			}
			if p, ok := a.d.Tools.(Preparer); ok {
				// -v/-l values travel beside the manifest, which keeps
				// its ((name)) references: the director seals them.
				prepared, vars, sourceMap, err := p.Prepare(cmd.Context(), argv[0], o)
				if err != nil {
					return Usage(err)
				}
				req["manifest"] = string(prepared)
				req["manifest_file"] = argv[0]
				if len(sourceMap) > 0 {
					req["source_map"] = sourceMap
				}
				if len(vars) > 0 {
					req["vars"] = vars
				}
			}
			var shown map[string]string
			if !a.g.NonInter && !dryRun && !a.g.JSON {
				// Show what the deploy would do, then ask: the manifest
				// diff and the plan of a dry run of the same request.
				if shown, err = a.preview(cmd.Context(), c, name, req); err != nil {
					return err
				}
				// The plan shown is the plan applied: the deploy refuses
				// if it changed before the answer.
				if h := shown["Plan hash"]; h != "" && planHash == "" {
					req["plan_hash"] = h
				}
				ok, err := a.confirm(fmt.Sprintf("Deploy %q?", name))
				if err != nil || !ok {
					return err
				}
			}
			var t apiv1.Task
			if err := c.do(cmd.Context(), "POST", "/v1/deployments", req, &t); err != nil {
				return err
			}
			return a.followSkipping(cmd.Context(), c, t.ID, shown)
		}),
	}
	addInterpolateFlags(cmd, &o)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "plan and show the changes, change nothing")
	cmd.Flags().BoolVar(&recreate, "recreate", false, "recreate every VM")
	cmd.Flags().BoolVar(&skipDrain, "skip-drain", false, "do not run drain scripts")
	cmd.Flags().StringVar(&planHash, "plan-hash", "", "apply only the plan of this hash (from deploy --dry-run): refused if the plan changed since")
	cmd.Flags().BoolVar(&fix, "fix", false, "recreate instances whose agent does not answer instead of failing on them")
	cmd.Flags().BoolVar(&freshDisk, "fresh-disk-on-cpi-move", false, "an instance whose AZ is now served by another CPI gets a new, empty persistent disk there (the old one is orphaned) instead of the deploy being refused")
	return cmd
}

// preview runs the deploy request as a dry run (a task that changes
// nothing and reserves nothing) and prints its manifest diff (redacted by
// the director) and its plan. It returns the texts shown by stage
// ("Manifest diff", "Plan"), so that following the deploy itself does
// not print them again unless they changed in between.
func (a *app) preview(ctx context.Context, c *client, name string, req map[string]any) (map[string]string, error) {
	dry := maps.Clone(req)
	dry["dry_run"] = true
	var t apiv1.Task
	if err := c.do(ctx, "POST", "/v1/deployments", dry, &t); err != nil {
		return nil, err
	}
	shown := map[string]string{}
	err := c.lines(ctx, fmt.Sprintf("/v1/tasks/%d/events?follow=true", t.ID), func(line []byte) error {
		var e apiv1.Event
		if err := json.Unmarshal(line, &e); err != nil {
			return fmt.Errorf("task %d: bad event: %w", t.ID, err)
		}
		if text := noteText(e); text != "" && e.Step == "" {
			shown[e.Stage] = text
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := c.do(ctx, "GET", fmt.Sprintf("/v1/tasks/%d", t.ID), nil, &t); err != nil {
		return nil, err
	}
	if t.State != apiv1.TaskDone {
		err := fmt.Errorf("planning %s (task %d) %s: %s", name, t.ID, t.State, t.Error)
		if t.BadInput {
			return nil, Usage(err)
		}
		return nil, Failed(err)
	}
	out := a.d.Stdout
	fmt.Fprintf(out, "Using deployment %q (planned in task %d)\n\n", name, t.ID)
	if diff := shown["Manifest diff"]; diff != "" {
		fmt.Fprintf(out, "Manifest diff (values under properties, env and options redacted):\n%s\n", indent(diff, "  "))
	} else {
		fmt.Fprintf(out, "Manifest: no change since the last successful deploy\n\n")
	}
	fmt.Fprintf(out, "Plan:\n%s\n", indent(shown["Plan"], "  "))
	return shown, nil
}

// confirm asks a yes/no question on stdin.
// warned is o with warnings printed on stderr.
func (a *app) warned(o InterpolateOptions) InterpolateOptions {
	o.Warn = func(w string) { fmt.Fprintf(a.d.Stderr, "warning: %s\n", w) }
	return o
}

func (a *app) confirm(q string) (bool, error) {
	fmt.Fprintf(a.d.Stderr, "%s [yN]: ", q)
	line, err := bufio.NewReader(a.d.Stdin).ReadString('\n')
	if err != nil && err != io.EOF {
		return false, err
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true, nil
	}
	return false, Failed(errors.New("stopped: not confirmed (pass -n to skip the question)"))
}

func (a *app) deleteDeploymentCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "delete-deployment",
		Short: "Delete the deployment (-d): its VMs, disks and IP reservations",
		Args:  args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			name, c, err := a.deploymentClient()
			if err != nil {
				return err
			}
			if !a.g.NonInter && !a.g.JSON {
				if ok, err := a.confirm(fmt.Sprintf("Delete deployment %q?", name)); err != nil || !ok {
					return err
				}
			}
			path := "/v1/deployments/" + url.PathEscape(name)
			if force {
				path += "?force=true"
			}
			var t apiv1.Task
			if err := c.do(cmd.Context(), "DELETE", path, nil, &t); err != nil {
				return err
			}
			return a.follow(cmd.Context(), c, t.ID)
		}),
	}
	cmd.Flags().BoolVar(&force, "force", false, "continue past CPI errors")
	return cmd
}

// instanceView is the API's InstanceView as the CLI reads it.
type instanceView struct {
	apiv1.Instance
	IPs        []string `json:"ips"`
	AgentError string   `json:"agent_error"`
	AgentState *struct {
		JobState string `json:"job_state"`
		Jobs     []struct {
			Name      string `json:"name"`
			Processes []struct {
				Name     string `json:"name"`
				State    string `json:"state"`
				Restarts int    `json:"restarts"`
				Error    string `json:"error"`
			} `json:"processes"`
		} `json:"jobs"`
	} `json:"agent_state"`
}

func (a *app) instancesCmd() *cobra.Command {
	var ps bool
	cmd := &cobra.Command{
		Use:   "instances",
		Short: "List the deployment's instances, or every deployment's without -d (--ps: with their processes, asked of the agents)",
		Args:  args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			path := func(name string) string {
				path := "/v1/deployments/" + url.PathEscape(name) + "/instances"
				if ps {
					path += "?ps=true"
				}
				return path
			}
			var is []instanceView
			return a.listEach(cmd.Context(), c, path, &is, func(w io.Writer) {
				headers := []string{"Instance", "State", "AZ", "IPs", "VM CID"}
				if ps {
					headers = []string{"Instance", "Process", "State", "AZ", "IPs", "VM CID"}
				}
				tw := table(w, headers...)
				for _, i := range is {
					id := i.Group + "/" + i.ID
					if i.Bootstrap {
						id += "*"
					}
					ips := dash(strings.Join(i.IPs, ", "))
					ignored := ""
					if i.IgnoreFix {
						ignored = " (ignored)"
					}
					if !ps {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", id, i.State+ignored, dash(i.AZ), ips, dash(i.VMCID))
						continue
					}
					state := i.State
					switch {
					case i.AgentState != nil:
						state = i.AgentState.JobState
					case i.AgentError != "":
						state = "unresponsive agent"
					}
					fmt.Fprintf(tw, "%s\t-\t%s\t%s\t%s\t%s\n", id, state+ignored, dash(i.AZ), ips, dash(i.VMCID))
					if i.AgentState == nil {
						continue
					}
					for _, j := range i.AgentState.Jobs {
						for _, p := range j.Processes {
							st := p.State
							if p.Error != "" {
								st += " (" + oneLine(p.Error) + ")"
							}
							fmt.Fprintf(tw, "~\t%s/%s\t%s\t\t\t\n", j.Name, p.Name, st)
						}
					}
				}
				tw.Flush()
				fmt.Fprintf(w, "\n%d instances\n", len(is))
			})
		}),
	}
	cmd.Flags().BoolVar(&ps, "ps", false, "show each instance's processes and their states")
	return cmd
}

// vmView is the API's VMView as the CLI reads it.
type vmView struct {
	apiv1.VM
	Instance   string  `json:"instance"`
	JobState   string  `json:"job_state"`
	Vitals     *vitals `json:"vitals"`
	AgentError string  `json:"agent_error"`
}

// vitals are an agent's protocol.Vitals as the CLI reads them.
type vitals struct {
	CPU struct {
		User   float64 `json:"user"`
		System float64 `json:"sys"`
		Wait   float64 `json:"wait"`
	} `json:"cpu"`
	Mem, Swap struct {
		KB      uint64  `json:"kb"`
		Percent float64 `json:"percent"`
	}
	Load []float64 `json:"load"`
	Disk map[string]struct {
		Percent      float64 `json:"percent"`
		InodePercent float64 `json:"inode_percent"`
	} `json:"disk"`
	Uptime int64 `json:"uptime_s"`
}

func (a *app) vmsCmd() *cobra.Command {
	var withVitals bool
	cmd := &cobra.Command{
		Use:   "vms",
		Short: "List the deployment's VMs, or every deployment's without -d (--vitals: with CPU, memory, disk, load and uptime, asked of the agents)",
		Args:  args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			path := func(name string) string {
				path := "/v1/deployments/" + url.PathEscape(name) + "/vms"
				if withVitals {
					path += "?vitals=true"
				}
				return path
			}
			var vms []vmView
			return a.listEach(cmd.Context(), c, path, &vms, func(w io.Writer) {
				if !withVitals {
					tw := table(w, "VM CID", "CPI", "Instance", "Agent", "State")
					for _, v := range vms {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v.CID, v.CPI, dash(v.instance()), v.AgentID, dash(v.State))
					}
					tw.Flush()
					fmt.Fprintf(w, "\n%d vms\n", len(vms))
					return
				}
				tw := table(w, "VM CID", "Instance", "Process State", "Uptime", "Load (1m, 5m, 15m)", "CPU User", "CPU Sys", "CPU Wait", "Memory", "Swap", "System Disk", "Ephemeral Disk", "Persistent Disk")
				for _, v := range vms {
					if v.Vitals == nil {
						state := "unresponsive agent"
						if v.AgentError != "" {
							state += " (" + oneLine(v.AgentError) + ")"
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\n", v.CID, dash(v.instance()), state)
						continue
					}
					x := v.Vitals
					load := "-"
					if len(x.Load) == 3 {
						load = fmt.Sprintf("%.2f, %.2f, %.2f", x.Load[0], x.Load[1], x.Load[2])
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.1f%%\t%.1f%%\t%.1f%%\t%.0f%% (%s)\t%.0f%% (%s)\t%s\t%s\t%s\n",
						v.CID, dash(v.instance()), dash(v.JobState), uptime(x.Uptime), load,
						x.CPU.User, x.CPU.System, x.CPU.Wait,
						x.Mem.Percent, size(int64(x.Mem.KB)<<10), x.Swap.Percent, size(int64(x.Swap.KB)<<10),
						diskUse(x, "system"), diskUse(x, "ephemeral"), diskUse(x, "persistent"))
				}
				tw.Flush()
				fmt.Fprintf(w, "\n%d vms\n", len(vms))
			})
		}),
	}
	cmd.Flags().BoolVar(&withVitals, "vitals", false, "ask each VM's agent for its vitals")
	return cmd
}

// instance names what the VM serves: GROUP/ID, else the instance id
// (compilation for a compile VM).
func (v vmView) instance() string {
	if v.Instance != "" {
		return v.Instance
	}
	return v.InstanceID
}

// diskUse is a file system's use ("12% (3% inodes)"), "-" when the agent
// has none of that kind.
func diskUse(x *vitals, kind string) string {
	d, ok := x.Disk[kind]
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%.0f%% (%.0f%% inodes)", d.Percent, d.InodePercent)
}

// uptime is "3d 4h 5m" (or "42s" under a minute).
func uptime(s int64) string {
	if s < 60 {
		return fmt.Sprintf("%ds", s)
	}
	d, h, m := s/86400, s%86400/3600, s%3600/60
	switch {
	case d > 0:
		return fmt.Sprintf("%dd %dh %dm", d, h, m)
	case h > 0:
		return fmt.Sprintf("%dh %dm", h, m)
	}
	return fmt.Sprintf("%dm", m)
}

func (a *app) stateCmd(action string) *cobra.Command {
	var hard, skipDrain bool
	cmd := &cobra.Command{
		Use:   action + " [GROUP[/ID]]",
		Short: strings.ToUpper(action[:1]) + action[1:] + " the deployment's instances (all, a group, or one)",
		Args:  args(cobra.MaximumNArgs(1)),
		RunE: run(func(cmd *cobra.Command, argv []string) error {
			name, c, err := a.deploymentClient()
			if err != nil {
				return err
			}
			req := map[string]any{"action": action, "hard": hard, "skip_drain": skipDrain}
			if len(argv) == 1 {
				req["target"] = argv[0]
			}
			var t apiv1.Task
			if err := c.do(cmd.Context(), "POST", "/v1/deployments/"+url.PathEscape(name)+"/state", req, &t); err != nil {
				return err
			}
			return a.follow(cmd.Context(), c, t.ID)
		}),
	}
	if action == "stop" {
		cmd.Flags().BoolVar(&hard, "hard", false, "delete the VMs, keep the disks")
	}
	if action != "start" {
		cmd.Flags().BoolVar(&skipDrain, "skip-drain", false, "do not run drain scripts")
	}
	return cmd
}
