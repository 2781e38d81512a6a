package cli

// director logs: fetch an instance's job logs as a tarball (a task), or
// follow them as they are written.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/compleat/compleat/director/apiv1"
)

// LogsOutput is what `logs --json` prints (without --follow).
type LogsOutput struct {
	Path       string `json:"path"`
	SHA256     string `json:"sha256"`
	Size       int64  `json:"size"`
	Deployment string `json:"deployment"`
	Instance   string `json:"instance"` // GROUP/ID
	TaskID     uint64 `json:"task_id"`
}

func (a *app) logsCmd() *cobra.Command {
	var jobs []string
	var follow bool
	var dir string
	var num int
	cmd := &cobra.Command{
		Use:   "logs GROUP/ID [--job NAME]... [--follow [--num N]] [--dir DIR]",
		Short: "Download an instance's job logs (-d) as a tarball, or follow them",
		Long: `Without --follow, a task asks the instance's agent for a tar.gz of its
sys/log (only the --job directories when given) and the CLI saves it in DIR
(default .) as <deployment>.<group>.<id>.<YYYYMMDD-HHMMSS>.tgz, printing the
path (--json: {path, sha256, size, deployment, instance, task_id}).

With --follow, the last --num lines (default 10) of each job log file
(sys/log/<job>/*.log) are printed, then every line written to them, each
prefixed with its file, until interrupted (--json: one {instance, file, line}
per line).

GROUP alone names the group's instance when it has only one. ID is the
instance's id or index.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: run(func(cmd *cobra.Command, argv []string) error {
			name, err := a.deployment()
			if err != nil {
				return err
			}
			if num < 0 {
				return Usage(errors.New("logs: --num must not be negative"))
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			if follow {
				return a.followLogs(cmd.Context(), c, name, argv[0], jobs, num)
			}
			return a.fetchLogs(cmd.Context(), c, name, argv[0], jobs, dir)
		}),
	}
	cmd.Flags().StringArrayVar(&jobs, "job", nil, "only this job's logs (repeatable)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "print lines as they are written, until interrupted")
	cmd.Flags().StringVar(&dir, "dir", ".", "directory to save the tarball in")
	cmd.Flags().IntVar(&num, "num", 10, "with --follow: lines of each file to print first")
	return cmd
}

func (a *app) fetchLogs(ctx context.Context, c *client, deployment, target string, jobs []string, dir string) error {
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return Usage(fmt.Errorf("logs: --dir %s is not a directory", dir))
	}
	var t apiv1.Task
	path := "/v1/deployments/" + url.PathEscape(deployment) + "/logs"
	if err := c.do(ctx, "POST", path, apiv1.LogsRequest{Instance: target, Jobs: jobs}, &t); err != nil {
		return err
	}
	t, err := a.awaitTask(ctx, c, t.ID)
	if err != nil {
		return err
	}
	var res apiv1.LogsResult
	if err := json.Unmarshal([]byte(t.Result), &res); err != nil {
		return fmt.Errorf("task %d: result %q: %w", t.ID, t.Result, err)
	}
	when := time.Now().UTC().Format("20060102-150405")
	file := filepath.Join(dir, fmt.Sprintf("%s.%s.%s.%s.tgz", deployment, res.Group, res.ID, when))
	if err := download(ctx, c, "/v1/logs/"+url.PathEscape(res.BlobID), file, res.SHA256); err != nil {
		return err
	}
	instance := res.Group + "/" + res.ID
	if a.g.JSON {
		return json.NewEncoder(a.d.Stdout).Encode(LogsOutput{Path: file, SHA256: res.SHA256, Size: res.Size,
			Deployment: deployment, Instance: instance, TaskID: t.ID})
	}
	fmt.Fprintf(a.d.Stdout, "\nLogs of %s (%s, sha256 %s) saved to\n%s\n", instance, size(res.Size), res.SHA256, file)
	return nil
}

// awaitTask waits for a task to end, printing its events unless --json,
// and returns its record; a task that did not end done is an error.
func (a *app) awaitTask(ctx context.Context, c *client, id uint64) (apiv1.Task, error) {
	out := a.d.Stdout
	if !a.g.JSON {
		fmt.Fprintf(out, "Task %d\n\n", id)
	}
	started := map[string]time.Time{}
	err := c.lines(ctx, fmt.Sprintf("/v1/tasks/%d/events?follow=true", id), func(line []byte) error {
		if a.g.JSON {
			return nil
		}
		var e apiv1.Event
		if err := json.Unmarshal(line, &e); err != nil {
			return fmt.Errorf("task %d: bad event: %w", id, err)
		}
		if s := formatEvent(id, e, started); s != "" {
			fmt.Fprintln(out, s)
		}
		return nil
	})
	if err != nil {
		return apiv1.Task{}, err
	}
	var t apiv1.Task
	if err := c.do(ctx, "GET", fmt.Sprintf("/v1/tasks/%d", id), nil, &t); err != nil {
		return t, err
	}
	if !a.g.JSON {
		fmt.Fprintf(out, "\nTask %d %s\n", id, t.State)
	}
	switch t.State {
	case apiv1.TaskDone:
		return t, nil
	case apiv1.TaskCancelled:
		return t, Failed(fmt.Errorf("task %d was cancelled", id))
	case apiv1.TaskError:
		return t, Failed(fmt.Errorf("task %d error: %s", id, t.Error))
	default:
		return t, Failed(fmt.Errorf("task %d is still %s but its event stream ended: run `director task %d` to follow it", id, t.State, id))
	}
}

// download saves the answer to GET path in file, through a temporary file
// beside it, and checks its sha256.
func download(ctx context.Context, c *client, path, file, want string) error {
	resp, err := c.send(ctx, "GET", path, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	tmp, err := os.CreateTemp(filepath.Dir(file), ".logs-*.tgz.part")
	if err != nil {
		return fmt.Errorf("save logs: %w", err)
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(tmp, h), resp.Body)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("save logs to %s: %w", file, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("logs archive: sha256 %s, the agent sent %s", got, want)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return fmt.Errorf("save logs: %w", err)
	}
	return nil
}

// followLogs prints the instance's log lines as the director streams them
// until ctx ends (Ctrl-C), which is a normal end.
func (a *app) followLogs(ctx context.Context, c *client, deployment, target string, jobs []string, num int) error {
	q := url.Values{"instance": {target}, "lines": {strconv.Itoa(num)}}
	for _, j := range jobs {
		q.Add("job", j)
	}
	path := "/v1/deployments/" + url.PathEscape(deployment) + "/logs/follow?" + q.Encode()
	err := c.lines(ctx, path, func(raw []byte) error {
		if a.g.JSON {
			_, err := fmt.Fprintf(a.d.Stdout, "%s\n", raw)
			return err
		}
		var l apiv1.LogLine
		if err := json.Unmarshal(raw, &l); err != nil {
			return fmt.Errorf("log stream: %w", err)
		}
		if l.Error != "" {
			fmt.Fprintf(a.d.Stderr, "%s: %s\n", l.Instance, l.Error)
			return nil
		}
		_, err := fmt.Fprintf(a.d.Stdout, "%s: %s\n", l.File, l.Line)
		return err
	})
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return err
	}
	return Failed(errors.New("the director ended the log stream (stopping?)"))
}
