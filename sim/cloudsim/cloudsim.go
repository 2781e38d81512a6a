// Package cloudsim is the cloudsim command: one subcommand per simulated
// cloud, each running until it is interrupted (SIGINT or SIGTERM), when it
// deletes every VM it booted and stops what it started.
//
//	cloudsim aws --data DIR [--env-file FILE] [--agent BIN] ...
//	cloudsim openstack --data DIR [--env-file FILE] [--agent BIN] [--listen ADDR] ...
//
// Every subcommand writes, once its cloud answers, a shell file (--env-file,
// default DIR/cloud.env) holding the cloud's standard client variables,
// so that `. cloud.env && aws ec2 describe-instances` (or the cloud's other
// clients) show the simulated cloud. A cloud is added by adding an entry to
// clouds, in a file of its own.
package cloudsim

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// cloud is one subcommand.
type cloud struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// clouds are the subcommands, by name.
var clouds = map[string]cloud{
	"aws":       {"moto's EC2 server, with a VM booted for every running instance", runAWS},
	"azure":     {"Resource Manager and Entra ID over HTTPS, with a VM booted for every VM created", runAzure},
	"openstack": {"Keystone v3, Nova, Neutron, Cinder and Glance, with a VM booted for every server", runOpenStack},
}

// UsageError is a bad command line (exit status 2).
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Main runs the command and returns its exit status: 0, 1 on failure, 2 on
// bad usage.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := Run(ctx, args, stdout, stderr)
	var usage *UsageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &usage):
		fmt.Fprintf(stderr, "cloudsim: %v\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "cloudsim: %v\n", err)
		return 1
	}
}

// Run runs the subcommand args[0].
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return &UsageError{errors.New("name a cloud")}
		}
		return nil
	}
	c, ok := clouds[args[0]]
	if !ok {
		usage(stderr)
		return &UsageError{fmt.Errorf("unknown cloud %q", args[0])}
	}
	return c.run(ctx, args[1:], stdout, stderr)
}

func usage(w io.Writer) {
	names := make([]string, 0, len(clouds))
	for n := range clouds {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(w, "usage: cloudsim CLOUD --data DIR [flags]   (cloudsim CLOUD -h for its flags)")
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, clouds[n].summary)
	}
}

// common are the flags every cloud takes.
type common struct {
	data, envFile, agent, logLevel string
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.data, "data", "", "directory for the cloud's VMs, volumes and logs (required)")
	fs.StringVar(&c.envFile, "env-file", "", "shell file of the cloud's client variables (default DATA/cloud.env)")
	fs.StringVar(&c.agent, "agent", "", "agent binary the VMs boot (default: agent next to cloudsim)")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
}

// check validates the common flags and fills in defaults.
func (c *common) check() error {
	if c.data == "" {
		return &UsageError{errors.New("--data is required")}
	}
	abs, err := filepath.Abs(c.data)
	if err != nil {
		return err
	}
	c.data = abs
	if c.envFile == "" {
		c.envFile = filepath.Join(c.data, "cloud.env")
	}
	if c.agent == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		c.agent = filepath.Join(filepath.Dir(exe), "agent")
	}
	if c.agent, err = filepath.Abs(c.agent); err != nil {
		return err
	}
	if fi, err := os.Stat(c.agent); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return &UsageError{fmt.Errorf("--agent %s: not an executable file (build it with make build)", c.agent)}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return &UsageError{fmt.Errorf("--log-level: %w", err)}
	}
	return os.MkdirAll(c.data, 0o755)
}

func (c *common) logger(stderr io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.logLevel))
	return slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
}

// parse parses a cloud's flags; no positional arguments are taken.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &UsageError{err}
	}
	if fs.NArg() > 0 {
		return &UsageError{fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))}
	}
	return nil
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// writeEnv writes a shell file of exported variables (mode 0600: it may
// hold credentials), atomically, with a comment on top.
func writeEnv(path, comment string, vars [][2]string) error {
	var b strings.Builder
	for _, line := range strings.Split(comment, "\n") {
		b.WriteString("# " + line + "\n")
	}
	for _, kv := range vars {
		fmt.Fprintf(&b, "export %s=%s\n", kv[0], shellQuote(kv[1]))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
