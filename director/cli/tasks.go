package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/compleat/compleat/director/apiv1"
)

func (a *app) tasksCmd() *cobra.Command {
	var recent int
	var all bool
	cmd := &cobra.Command{
		Use:   "tasks",
		Short: "List running tasks (--recent for finished ones too)",
		Args:  args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			q := "/v1/tasks?state=running&limit=0"
			if cmd.Flags().Changed("recent") || all {
				q = "/v1/tasks?limit=" + strconv.Itoa(recent)
			}
			if a.g.Deployment != "" {
				q += "&deployment=" + a.g.Deployment
			}
			var tasks []apiv1.Task
			return a.list(cmd.Context(), c, q, &tasks, func(w io.Writer) {
				tw := table(w, "ID", "State", "Started", "Finished", "Deployment", "Description", "Result")
				for _, t := range tasks {
					res := t.Result
					if t.Error != "" {
						res = t.Error
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.State, stamp(t.StartedAt), stamp(t.FinishedAt), dash(t.Deployment), t.Description, oneLine(res))
				}
				tw.Flush()
				fmt.Fprintf(w, "\n%d tasks\n", len(tasks))
			})
		}),
	}
	cmd.Flags().IntVarP(&recent, "recent", "r", 30, "show the last N tasks, finished or not")
	cmd.Flags().Lookup("recent").NoOptDefVal = "30"
	cmd.Flags().BoolVarP(&all, "all", "a", false, "same as --recent")
	return cmd
}

func (a *app) taskCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "task N",
		Short: "Show a task's events, following it live until it ends",
		Args:  args(cobra.ExactArgs(1)),
		RunE: run(func(cmd *cobra.Command, argv []string) error {
			id, c, err := a.taskClient(argv[0])
			if err != nil {
				return err
			}
			return a.follow(cmd.Context(), c, id)
		}),
	}
}

func (a *app) cancelTaskCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel-task N",
		Short: "Ask a running task to stop at its next safe point; a queued task is cancelled before it runs",
		Args:  args(cobra.ExactArgs(1)),
		RunE: run(func(cmd *cobra.Command, argv []string) error {
			id, c, err := a.taskClient(argv[0])
			if err != nil {
				return err
			}
			var t json.RawMessage
			if err := c.do(cmd.Context(), "POST", fmt.Sprintf("/v1/tasks/%d/cancel", id), struct{}{}, &t); err != nil {
				return err
			}
			if a.g.JSON {
				return printJSON(a.d.Stdout, t)
			}
			var rec apiv1.Task
			if json.Unmarshal(t, &rec) == nil && rec.State == apiv1.TaskCancelled {
				fmt.Fprintf(a.d.Stdout, "Task %d cancelled before it started\n", id)
				return nil
			}
			fmt.Fprintf(a.d.Stdout, "Task %d is cancelling\n", id)
			return nil
		}),
	}
}

func (a *app) locksCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "locks",
		Short: "List the locks held (leases with owner and expiry)",
		Args:  args(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			var locks []apiv1.Lock
			return a.list(cmd.Context(), c, "/v1/locks", &locks, func(w io.Writer) {
				tw := table(w, "Lock", "Owner", "Acquired", "Expires")
				for _, l := range locks {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", l.Name, l.Owner, stamp(l.AcquiredAt), stamp(l.Expires))
				}
				tw.Flush()
				fmt.Fprintf(w, "\n%d locks\n", len(locks))
			})
		}),
	}
}

// follow streams a task's events until it ends, then reports how it ended:
// an error (exit 1) unless the task is done.
func (a *app) follow(ctx context.Context, c *client, id uint64) error {
	return a.followSkipping(ctx, c, id, nil)
}

// followSkipping is follow, without printing in full a stage's note (the
// manifest diff, the plan) whose text is the one skip holds for that stage:
// it was shown already.
func (a *app) followSkipping(ctx context.Context, c *client, id uint64, skip map[string]string) error {
	out := a.d.Stdout
	if !a.g.JSON {
		fmt.Fprintf(out, "Task %d\n\n", id)
		var t apiv1.Task
		if raw, err := c.getRaw(ctx, fmt.Sprintf("/v1/tasks/%d", id)); err == nil && json.Unmarshal(raw, &t) == nil && t.State == apiv1.TaskQueued {
			fmt.Fprintf(out, "Task %d | queued: deployment %s is busy; it starts when the tasks before it end (director tasks)\n", id, t.Deployment)
		}
	}
	started := map[string]time.Time{}
	err := c.lines(ctx, fmt.Sprintf("/v1/tasks/%d/events?follow=true", id), func(line []byte) error {
		if a.g.JSON {
			_, err := fmt.Fprintf(out, "%s\n", line)
			return err
		}
		var e apiv1.Event
		if err := json.Unmarshal(line, &e); err != nil {
			return fmt.Errorf("task %d: bad event: %w", id, err)
		}
		if text, ok := skip[e.Stage]; ok && e.Step == "" && sameNote(text, noteText(e)) {
			fmt.Fprintf(out, "Task %d | %s | %s: as shown above\n", id, e.Time.UTC().Format("15:04:05"), e.Stage)
			return nil
		}
		if s := formatEvent(id, e, started); s != "" {
			fmt.Fprintln(out, s)
		}
		return nil
	})
	if err != nil {
		return err
	}
	var t apiv1.Task
	raw, err := c.getRaw(ctx, fmt.Sprintf("/v1/tasks/%d", id))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, &t); err != nil {
		return err
	}
	if a.g.JSON {
		fmt.Fprintf(out, "%s\n", compact(raw))
	} else {
		fmt.Fprintf(out, "\nTask %d %s\n", id, t.State)
		if !t.StartedAt.IsZero() && !t.FinishedAt.IsZero() {
			fmt.Fprintf(out, "\nStarted   %s\nFinished  %s\nDuration  %s\n", t.StartedAt.UTC().Format(time.RFC1123), t.FinishedAt.UTC().Format(time.RFC1123), clock(t.FinishedAt.Sub(t.StartedAt)))
		}
		if t.Result != "" {
			fmt.Fprintf(out, "\n%s\n", t.Result)
		}
	}
	switch t.State {
	case apiv1.TaskDone:
		return nil
	case apiv1.TaskQueued, apiv1.TaskProcessing, apiv1.TaskCancelling:
		return Failed(fmt.Errorf("task %d is still %s but its event stream ended (director stopping?): run `director task %d` to follow it again", id, t.State, id))
	case apiv1.TaskCancelled:
		return Failed(fmt.Errorf("task %d was cancelled", id))
	case apiv1.TaskError:
		if t.BadInput {
			return Usage(fmt.Errorf("task %d %s: %s", id, t.State, t.Error))
		}
		return Failed(fmt.Errorf("task %d %s: %s", id, t.State, t.Error))
	default:
		return Failed(fmt.Errorf("task %d %s: %s", id, t.State, t.Error))
	}
}

// formatEvent renders an event as BOSH's CLI does:
//
//	Task 12 | 12:00:01 | Updating instance web/2 (canary) ... done (00:00:04)
//
// Started steps print nothing; their line appears when they end, stamped with
// their start time. A note (state "info", its text in data.text) prints on
// its line when it is one line, else as an indented block under a heading:
//
//	Task 12 | 12:00:01 | Manifest diff
//	    instance_groups:
//	    - name: web
//	  -   instances: 2
//	  +   instances: 3
func formatEvent(id uint64, e apiv1.Event, started map[string]time.Time) string {
	key := fmt.Sprintf("%s\x00%s\x00%d", e.Stage, e.Step, e.Index)
	name := e.Stage
	if e.Step != "" {
		name += " " + e.Step
	}
	if len(e.Tags) > 0 {
		name += " (" + strings.Join(e.Tags, ", ") + ")"
	}
	switch e.State {
	case "info":
		text := strings.TrimRight(noteText(e), "\n")
		if text == "" {
			return ""
		}
		head := fmt.Sprintf("Task %d | %s | %s", id, e.Time.UTC().Format("15:04:05"), name)
		if !strings.Contains(text, "\n") {
			return head + ": " + strings.TrimSpace(text)
		}
		return head + "\n" + strings.TrimRight(indent(text, "  "), "\n")
	case "started":
		started[key] = e.Time
		if e.Step == "" {
			return fmt.Sprintf("Task %d | %s | %s", id, e.Time.UTC().Format("15:04:05"), name)
		}
		return ""
	case "finished", "failed":
		begin, ok := started[key]
		if !ok {
			begin = e.Time
		}
		status := "done"
		if e.State == "failed" {
			status = "failed"
		}
		line := fmt.Sprintf("Task %d | %s | %s ... %s (%s)", id, begin.UTC().Format("15:04:05"), name, status, clock(e.Time.Sub(begin)))
		if e.Error != "" {
			line += ": " + e.Error
		}
		return line
	default:
		return ""
	}
}

// generated matches what differs between two plans of the same request:
// the ids of new instances (uuids drawn for each plan) and the short hashes
// of files rendered from them.
var generated = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|rendered [0-9a-f]{12}`)

// sameNote reports whether two notes say the same, ids drawn for new
// instances aside.
func sameNote(shown, now string) bool {
	return shown == now || generated.ReplaceAllString(shown, "") == generated.ReplaceAllString(now, "")
}

// noteText is the text a note event carries in data.text ("" for none).
func noteText(e apiv1.Event) string {
	if e.State != "info" || len(e.Data) == 0 {
		return ""
	}
	var d struct {
		Text string `json:"text"`
	}
	if json.Unmarshal(e.Data, &d) != nil {
		return ""
	}
	return d.Text
}

// indent prefixes every non-empty line of s.
func indent(s, prefix string) string {
	lines := strings.SplitAfter(s, "\n")
	var b strings.Builder
	for _, l := range lines {
		if strings.TrimSpace(l) != "" {
			b.WriteString(prefix)
		}
		b.WriteString(l)
	}
	out := b.String()
	if out != "" && !strings.HasSuffix(out, "\n") {
		out += "\n"
	}
	return out
}

func clock(d time.Duration) string {
	d = d.Round(time.Second)
	return fmt.Sprintf("%02d:%02d:%02d", int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60)
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 100 {
		s = s[:97] + "..."
	}
	return s
}

func table(w io.Writer, headers ...string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(headers, "\t"))
	return tw
}

// taskClient is what the commands taking a task id start with: the id, read
// from arg, and a client of the director.
func (a *app) taskClient(arg string) (uint64, *client, error) {
	id, err := strconv.ParseUint(arg, 10, 64)
	if err != nil {
		return 0, nil, Usage(fmt.Errorf("task id %q is not a number", arg))
	}
	c, err := a.client()
	if err != nil {
		return 0, nil, err
	}
	return id, c, nil
}
