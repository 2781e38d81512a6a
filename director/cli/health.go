package cli

// The health commands: events (the audit log), health (what the health
// monitor sees), update-resurrection and cloud-check.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/compleat/compleat/director/apiv1"
)

func (a *app) healthCmds() []*cobra.Command {
	return []*cobra.Command{a.eventsCmd(), a.healthCmd(), a.updateResurrectionCmd(), a.cloudCheckCmd()}
}

// parseSince reads --since: a duration back from now ("90m", "2h", "3d")
// or a time (RFC 3339, or "2006-01-02 15:04:05" in UTC, or a date).
func parseSince(s string, now time.Time) (time.Time, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if days, err := strconv.Atoi(n); err == nil && days >= 0 {
			return now.Add(-time.Duration(days) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("--since %q: a duration back from now must be positive", s)
		}
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05", "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("--since %q: want a duration (30m, 2h, 7d) or a time (2026-01-02T15:04:05Z, 2026-01-02)", s)
}

func (a *app) eventsCmd() *cobra.Command {
	var since, instance, action string
	var limit int
	cmd := &cobra.Command{
		Use:   "events",
		Short: "List the audit log: who did what, to which deployment, instance and object, and how it went",
		Long: `List the audit log, newest first: operators' deploys and changes, the health
monitor's findings (unresponsive, recovered, job-failing, alert), the
resurrector's actions (resurrect, meltdown) and cloud-check's.

--since takes a duration back from now (30m, 2h, 7d) or a time
(2026-01-02T15:04:05Z, 2026-01-02).`,
		Args: args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			if a.g.Deployment != "" {
				q.Set("deployment", a.g.Deployment)
			}
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return Usage(err)
				}
				q.Set("since", t.UTC().Format(time.RFC3339Nano))
			}
			if instance != "" {
				q.Set("instance", instance)
			}
			if action != "" {
				q.Set("action", action)
			}
			q.Set("limit", strconv.Itoa(limit))
			c, err := a.client()
			if err != nil {
				return err
			}
			var evs []apiv1.AuditEvent
			return a.list(cmd.Context(), c, "/v1/events?"+q.Encode(), &evs, func(w io.Writer) {
				tw := table(w, "ID", "Time", "User", "Action", "Object", "Task", "Deployment", "Instance", "Result", "Context")
				for _, e := range evs {
					obj := e.Object
					if e.ObjectType != "" {
						obj = e.ObjectType + " " + e.Object
					}
					task := ""
					if e.TaskID > 0 {
						task = strconv.FormatUint(e.TaskID, 10)
					}
					result := e.Result
					if e.Error != "" {
						result += ": " + oneLine(e.Error)
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, e.Time.UTC().Format("2006-01-02 15:04:05"), dash(e.User), e.Action,
						dash(obj), dash(task), dash(e.Deployment), dash(e.Instance), dash(result), dash(contextLine(e.Context)))
				}
				tw.Flush()
				fmt.Fprintf(w, "\n%d events\n", len(evs))
			})
		}),
	}
	cmd.Flags().StringVar(&since, "since", "", "only events since a duration back (2h) or a time")
	cmd.Flags().StringVar(&instance, "instance", "", "only events of an instance (GROUP or GROUP/ID)")
	cmd.Flags().StringVar(&action, "action", "", "only events of an action (deploy, unresponsive, resurrect, meltdown, ...)")
	cmd.Flags().IntVar(&limit, "limit", 200, "at most this many events")
	return cmd
}

// contextLine renders an event's context as "k=v, k=v" in key order.
func contextLine(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+oneLine(m[k]))
	}
	return strings.Join(parts, ", ")
}

func (a *app) healthCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "health",
		Short: "Show the health monitor's view of the deployment's instances (status, heartbeat age, failing processes)",
		Args:  args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			name, c, err := a.deploymentClient()
			if err != nil {
				return err
			}
			var hs []apiv1.HealthInstance
			return a.list(cmd.Context(), c, "/v1/deployments/"+url.PathEscape(name)+"/health", &hs, func(w io.Writer) {
				tw := table(w, "Instance", "Status", "Since", "Heartbeat", "VM CID", "Load", "Mem", "Processes")
				for _, h := range hs {
					load, mem := "-", "-"
					if h.Vitals != nil {
						load = fmt.Sprintf("%.2f %.2f %.2f", h.Vitals.Load[0], h.Vitals.Load[1], h.Vitals.Load[2])
						mem = fmt.Sprintf("%.0f%%", h.Vitals.Mem.Percent)
					}
					status := h.Status
					if h.Reason != "" {
						status += " (" + h.Reason + ")"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s ago\t%s\t%s\t%s\t%s\n", h.Name(), status, stamp(h.Since),
						(time.Duration(h.HeartbeatAge * float64(time.Second))).Round(100*time.Millisecond), h.VMCID, load, mem, dash(processes(h)))
				}
				tw.Flush()
				fmt.Fprintf(w, "\n%d instances\n", len(hs))
			})
		}),
	}
}

// processes summarises the processes: "web/nginx running, web/app failing".
func processes(h apiv1.HealthInstance) string {
	var parts []string
	for _, j := range h.Jobs {
		for _, p := range j.Processes {
			s := j.Name + "/" + p.Name + " " + p.State
			if p.Error != "" {
				s += " (" + oneLine(p.Error) + ")"
			}
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, ", ")
}

func (a *app) updateResurrectionCmd() *cobra.Command {
	var group string
	cmd := &cobra.Command{
		Use:   "update-resurrection on|off",
		Short: "Turn the resurrector on or off for a deployment (-d) or one of its instance groups (--instance-group)",
		Args:  args(cobra.ExactArgs(1)),
		RunE: run(func(cmd *cobra.Command, argv []string) error {
			var on bool
			switch argv[0] {
			case "on":
				on = true
			case "off":
			default:
				return Usage(fmt.Errorf("update-resurrection: %q is neither on nor off", argv[0]))
			}
			name, c, err := a.deploymentClient()
			if err != nil {
				return err
			}
			var sw []apiv1.ResurrectionSwitch
			if err := c.do(cmd.Context(), "PUT", "/v1/deployments/"+url.PathEscape(name)+"/resurrection", map[string]any{"group": group, "enabled": on}, &sw); err != nil {
				return err
			}
			if a.g.JSON {
				return json.NewEncoder(a.d.Stdout).Encode(sw)
			}
			target := "deployment " + name
			if group != "" {
				target = "instance group " + group + " of " + name
			}
			fmt.Fprintf(a.d.Stdout, "Resurrection %s for %s\n", argv[0], target)
			return nil
		}),
	}
	cmd.Flags().StringVar(&group, "instance-group", "", "only this instance group")
	return cmd
}

func (a *app) cloudCheckCmd() *cobra.Command {
	var auto, report bool
	var given []string
	cmd := &cobra.Command{
		Use:   "cloud-check",
		Short: "Compare the deployment with the cloud and the agents; resolve the problems found",
		Long: `Compare the deployment's state with the cloud and its agents and list the
problems: missing VMs, unresponsive agents, missing disks, disks not attached
or not mounted, VMs of the deployment the director does not know.

Without flags each problem is shown with its resolutions and you choose one.
--auto applies every problem's default resolution (the first listed);
--report only lists; --resolution ID=RESOLUTION picks one for a problem.`,
		Args: args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			if auto && report {
				return Usage(errors.New("cloud-check: --auto and --report exclude each other"))
			}
			name, err := a.deployment()
			if err != nil {
				return err
			}
			chosen := map[string]string{}
			for _, g := range given {
				id, res, ok := strings.Cut(g, "=")
				if !ok || id == "" || res == "" {
					return Usage(fmt.Errorf("--resolution %q: want PROBLEM-ID=RESOLUTION", g))
				}
				chosen[id] = res
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			path := "/v1/deployments/" + url.PathEscape(name) + "/problems"
			var ps []apiv1.Problem
			raw, err := c.getRaw(cmd.Context(), path)
			if err != nil {
				return err
			}
			if err := json.Unmarshal(raw, &ps); err != nil {
				return fmt.Errorf("decode problems: %w", err)
			}
			if report && a.g.JSON {
				return printJSON(a.d.Stdout, raw)
			}
			out := a.d.Stdout
			if a.g.JSON {
				out = a.d.Stderr
			}
			fmt.Fprintf(out, "Scanning deployment %s: %d problems\n", name, len(ps))
			for i, p := range ps {
				fmt.Fprintf(out, "  %d. [%s] %s\n     id: %s\n", i+1, p.Type, p.Description, p.ID)
			}
			if len(ps) == 0 || report {
				if len(ps) > 0 {
					return Failed(fmt.Errorf("%d problems found", len(ps)))
				}
				return nil
			}
			switch {
			case auto:
			case len(chosen) > 0:
			case a.g.NonInter:
				return Usage(errors.New("cloud-check -n: choose with --auto or --resolution ID=RESOLUTION"))
			default:
				in := bufio.NewReader(a.d.Stdin)
				for i, p := range ps {
					r, err := a.ask(in, out, i+1, p)
					if err != nil {
						return err
					}
					chosen[p.ID] = r
				}
			}
			var t apiv1.Task
			if err := c.do(cmd.Context(), "POST", path, map[string]any{"resolutions": chosen, "auto": auto}, &t); err != nil {
				return err
			}
			return a.follow(cmd.Context(), c, t.ID)
		}),
	}
	cmd.Flags().BoolVar(&auto, "auto", false, "apply every problem's default resolution")
	cmd.Flags().BoolVar(&report, "report", false, "only list the problems (exit 1 when there are any)")
	cmd.Flags().StringArrayVar(&given, "resolution", nil, "PROBLEM-ID=RESOLUTION (repeatable)")
	return cmd
}

// ask shows a problem's resolutions and reads the choice (empty: the
// default).
func (a *app) ask(in *bufio.Reader, out io.Writer, n int, p apiv1.Problem) (string, error) {
	for {
		fmt.Fprintf(out, "\nProblem %d: %s\n", n, p.Description)
		for i, r := range p.Resolutions {
			def := ""
			if i == 0 {
				def = " (default)"
			}
			fmt.Fprintf(out, "  %d. %s%s\n", i+1, describe(r), def)
		}
		fmt.Fprint(out, "Choose [1]: ")
		line, err := in.ReadString('\n')
		if err != nil && (err != io.EOF || line == "") {
			if err == io.EOF {
				return "", Failed(errors.New("stopped: no answer (use --auto or --resolution)"))
			}
			return "", err
		}
		line = strings.TrimSpace(line)
		if line == "" {
			return p.Resolutions[0], nil
		}
		if k, err := strconv.Atoi(line); err == nil && k >= 1 && k <= len(p.Resolutions) {
			return p.Resolutions[k-1], nil
		}
		if p.Allows(line) {
			return line, nil
		}
		fmt.Fprintf(out, "%q is not a choice\n", line)
	}
}

func describe(r string) string {
	if d, ok := apiv1.Descriptions[r]; ok {
		return d + " [" + r + "]"
	}
	return r
}
