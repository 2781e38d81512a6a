package cli

// director ssh: run a command on instances through their agents, or a
// line-based session of such commands.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/compleat/compleat/director/apiv1"
)

func (a *app) sshCmd() *cobra.Command {
	var command string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "ssh GROUP[/ID] [-c CMD] [--timeout D]",
		Short: "Run a command on an instance's VM (-d), or on every instance of a group",
		Long: `Runs CMD with /bin/sh -c on the VM of GROUP/ID (ID: the instance's id or
index), or on every instance of GROUP in parallel, through the instance's
agent: in /var/vcap, as the agent's user, stdin empty, killed with what it
started after --timeout (default 1m). Each line of output is printed prefixed
with the instance (stdout to stdout, stderr to stderr); each stream is cut
after 1 MiB. Exit status 1 when the command failed anywhere.

Without -c the session is line-based, NOT a terminal: each line you type runs
as one command (no state such as the working directory carries over), its
output is printed, and "exit" or end of input ends the session. Programs that
need a TTY (editors, pagers, top) do not work.

Needs an admin token. Every command is recorded in the audit log (director
events) with the user and its exit code, never its output.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: run(func(cmd *cobra.Command, argv []string) error {
			name, err := a.deployment()
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("command") && strings.TrimSpace(command) == "" {
				return Usage(errors.New("ssh: -c needs a command"))
			}
			if timeout < 0 {
				return Usage(errors.New("ssh: --timeout must not be negative"))
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			if command != "" {
				res, err := a.runCommand(cmd.Context(), c, name, argv[0], command, timeout)
				if err != nil {
					return err
				}
				return a.printCommand(res)
			}
			return a.session(cmd.Context(), c, name, argv[0], timeout)
		}),
	}
	cmd.Flags().StringVarP(&command, "command", "c", "", "command to run (/bin/sh -c)")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "longest run of the command (default 1m, at most 1h)")
	return cmd
}

func (a *app) runCommand(ctx context.Context, c *client, deployment, target, command string, timeout time.Duration) (apiv1.SSHResult, error) {
	req := apiv1.SSHRequest{Target: target, Command: command}
	if timeout > 0 {
		req.Timeout = timeout.String()
	}
	var res apiv1.SSHResult
	err := c.do(ctx, "POST", "/v1/deployments/"+url.PathEscape(deployment)+"/ssh", req, &res)
	return res, err
}

// printCommand prints each instance's output prefixed with its name, and
// returns an exit-1 error naming the instances where the command failed.
func (a *app) printCommand(res apiv1.SSHResult) error {
	var failed []string
	if a.g.JSON {
		if err := json.NewEncoder(a.d.Stdout).Encode(res); err != nil {
			return err
		}
	}
	for _, r := range res.Results {
		if !r.OK() {
			failed = append(failed, r.Instance)
		}
		if a.g.JSON {
			continue
		}
		prefixLines(a.d.Stdout, r.Instance, r.Stdout)
		prefixLines(a.d.Stderr, r.Instance, r.Stderr)
		if n := int64(len(r.Stdout)); r.StdoutBytes > n {
			fmt.Fprintf(a.d.Stderr, "%s: stdout cut: %s of %s shown\n", r.Instance, size(n), size(r.StdoutBytes))
		}
		if n := int64(len(r.Stderr)); r.StderrBytes > n {
			fmt.Fprintf(a.d.Stderr, "%s: stderr cut: %s of %s shown\n", r.Instance, size(n), size(r.StderrBytes))
		}
		switch {
		case r.Error != "":
			fmt.Fprintf(a.d.Stderr, "%s: could not run: %s\n", r.Instance, r.Error)
		case r.TimedOut:
			fmt.Fprintf(a.d.Stderr, "%s: timed out (killed)\n", r.Instance)
		case r.ExitCode != 0:
			fmt.Fprintf(a.d.Stderr, "%s: exit status %d\n", r.Instance, r.ExitCode)
		}
	}
	if len(failed) > 0 {
		return Failed(fmt.Errorf("the command failed on %d of %d instances: %s", len(failed), len(res.Results), strings.Join(failed, ", ")))
	}
	return nil
}

func prefixLines(w io.Writer, prefix, text string) {
	if text == "" {
		return
	}
	for _, l := range strings.SplitAfter(text, "\n") {
		if l == "" {
			continue
		}
		fmt.Fprintf(w, "%s: %s", prefix, l)
		if !strings.HasSuffix(l, "\n") {
			fmt.Fprintln(w)
		}
	}
}

// session runs each line read from stdin as one command until "exit" or
// the end of input. A failed command is reported and the session goes on;
// the director refusing (a bad token, an unknown instance) ends it.
func (a *app) session(ctx context.Context, c *client, deployment, target string, timeout time.Duration) error {
	in := bufio.NewScanner(a.d.Stdin)
	in.Buffer(make([]byte, 64<<10), 1<<20)
	fmt.Fprintf(a.d.Stderr, "Line-based session on %s of %s (not a terminal): each line runs as one /bin/sh -c command; \"exit\" ends it.\n", target, deployment)
	prompt := a.d.IsTerminal(a.d.Stderr)
	for {
		if prompt {
			fmt.Fprintf(a.d.Stderr, "%s$ ", target)
		}
		if !in.Scan() {
			if prompt {
				fmt.Fprintln(a.d.Stderr)
			}
			return in.Err()
		}
		line := strings.TrimSpace(in.Text())
		switch line {
		case "":
			continue
		case "exit", "logout":
			return nil
		}
		res, err := a.runCommand(ctx, c, deployment, target, line, timeout)
		if err != nil {
			return err
		}
		if err := a.printCommand(res); err != nil {
			fmt.Fprintf(a.d.Stderr, "%v\n", err)
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}
