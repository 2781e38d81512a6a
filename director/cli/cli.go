// Package cli is the director's command line (cobra): the server command
// (`serve`), local tools (create-release, create-stemcell, interpolate, ...)
// and thin clients of the director's HTTPS API for everything else.
//
// The package knows nothing of how the server is built or how releases and
// manifests are read: the composition root (director/app) hands it a [Deps]
// with a Serve function and the [Tools]. Commands of the deploy pipeline that
// have no server support yet are added by the composition root through
// Deps.Extra.
//
// Exit status: 0 on success, 1 when an operation failed (a task ended in
// error, the director refused), 2 on bad usage or bad input (unknown flag,
// missing argument, a manifest or config the director rejects as invalid).
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// Exit codes.
const (
	ExitOK     = 0
	ExitFailed = 1
	ExitUsage  = 2
)

// ExitError carries the exit status an error calls for.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// Usage marks err as bad usage or bad input (exit 2).
func Usage(err error) error { return &ExitError{Code: ExitUsage, Err: err} }

// Failed marks err as a failed operation (exit 1).
func Failed(err error) error { return &ExitError{Code: ExitFailed, Err: err} }

// ExitCode is the process exit status for err: 0 for nil, the code of an
// ExitError, else 2 (errors cobra raises itself are usage errors).
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var e *ExitError
	if errors.As(err, &e) {
		return e.Code
	}
	return ExitUsage
}

// ServeOptions are `director serve`'s flags.
type ServeOptions struct {
	Dev    bool
	Data   string
	Listen string
	Config string
}

// CreateReleaseOptions are `create-release`'s flags.
type CreateReleaseOptions struct {
	Name, Version, Tarball string
}

// CreateStemcellOptions are the flags of create-stemcell.
type CreateStemcellOptions struct {
	Agent, Tarball, Name, Version, OS string
	// Light writes a light stemcell (no image, no agent).
	Light bool
	// Formats are stemcell formats besides local-tgz (the only ones of a
	// light stemcell).
	Formats []string
	// CloudProperties are key=value pairs for stemcell.MF's
	// cloud_properties; a dotted key nests (ami.us-east-1=ami-…).
	CloudProperties []string
}

// InterpolateOptions are the -v, -l and -o flags of interpolate and deploy.
type InterpolateOptions struct {
	Vars      []string // name=value
	VarsFiles []string
	OpsFiles  []string
	Strict    bool
	// VarsStore is a YAML file that resolves variables and receives the
	// ones the document declares and it lacks (interpolate --vars-store).
	VarsStore string
	// Warn receives each warning (an ops file's ignored keys); the CLI
	// prints them on stderr.
	Warn func(string) `json:"-"`
}

// Preparer is implemented by Tools that can keep -v/-l values out of the
// manifest a deploy sends: Prepare returns the manifest with ops files
// applied and ((name)) references kept, the values -v/-l give for them,
// which the director stores sealed, and the source map of the manifest's
// nodes to the files the operator wrote them in (JSON), with which the
// director's errors name those files and lines.
type Preparer interface {
	Prepare(ctx context.Context, file string, o InterpolateOptions) (manifest []byte, vars map[string]any, sourceMap json.RawMessage, err error)
}

// Tools are the local operations the CLI performs without a director.
type Tools interface {
	// CreateRelease builds a release tarball from a source directory.
	CreateRelease(dir string, opts CreateReleaseOptions) (name, version, tarball string, err error)
	// InspectRelease verifies a release tarball and prints its summary.
	InspectRelease(w io.Writer, file string, asJSON bool) error
	// CreateStemcell writes a stemcell: the local one holding the agent
	// binary, or a light one naming a cloud's image.
	CreateStemcell(opts CreateStemcellOptions) error
	// Interpolate applies ops files and variables to a YAML file.
	Interpolate(ctx context.Context, file string, opts InterpolateOptions) ([]byte, error)
	// DeploymentName reads the name of a (interpolated) deployment manifest.
	DeploymentName(file string, manifest []byte) (string, error)
}

// Deps are what the commands need from the outside.
type Deps struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// Serve runs the director server until ctx ends.
	Serve func(ctx context.Context, opts ServeOptions) error
	Tools Tools
	// IsTerminal reports whether w is a terminal (progress bars, prompts).
	IsTerminal func(w io.Writer) bool
	// Extra commands are added to the root: the place for the deploy
	// pipeline's commands that have no API route here (cloud-check, events,
	// logs, ssh, ...).
	Extra []*cobra.Command
}

// Run parses args and runs the command.
func Run(ctx context.Context, d Deps, args []string) error {
	root := New(d)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

// Globals are the flags every command takes.
type Globals struct {
	Target     string
	Token      string
	CACert     string
	JSON       bool
	NonInter   bool
	Deployment string
}

type app struct {
	d Deps
	g Globals
}

// New builds the command tree.
func New(d Deps) *cobra.Command {
	if d.Getenv == nil {
		d.Getenv = os.Getenv
	}
	if d.Stdin == nil {
		d.Stdin = os.Stdin
	}
	if d.IsTerminal == nil {
		d.IsTerminal = func(io.Writer) bool { return false }
	}
	a := &app{d: d}
	root := &cobra.Command{
		Use:           "director",
		Short:         "Compleat director: deploy releases onto VMs from a manifest",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(d.Stdout)
	root.SetErr(d.Stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return Usage(err) })
	pf := root.PersistentFlags()
	pf.StringVarP(&a.g.Target, "target", "e", d.Getenv("DIRECTOR_TARGET"), "director URL ($DIRECTOR_TARGET)")
	pf.StringVar(&a.g.Token, "token", "", "API token ($DIRECTOR_TOKEN)")
	pf.StringVar(&a.g.CACert, "ca-cert", d.Getenv("DIRECTOR_CA_CERT"), "CA certificate file of the director ($DIRECTOR_CA_CERT)")
	pf.BoolVar(&a.g.JSON, "json", false, "print JSON only (one document, or one per line for streams)")
	pf.BoolVarP(&a.g.NonInter, "non-interactive", "n", false, "do not ask for confirmation")
	pf.StringVarP(&a.g.Deployment, "deployment", "d", d.Getenv("DIRECTOR_DEPLOYMENT"), "deployment name ($DIRECTOR_DEPLOYMENT)")

	root.AddCommand(
		a.serveCmd(),
		a.createReleaseCmd(), a.inspectReleaseCmd(), a.createStemcellCmd(), a.interpolateCmd(),
		a.uploadReleaseCmd(), a.releasesCmd(),
		a.uploadStemcellCmd(), a.stemcellsCmd(),
		a.updateConfigCmd("cloud"), a.showConfigCmd("cloud"),
		a.updateConfigCmd("runtime"), a.showConfigCmd("runtime"),
		a.updateConfigCmd("cpi"), a.showConfigCmd("cpi"),
		a.configsCmd(),
		a.deploymentsCmd(), a.tasksCmd(), a.taskCmd(), a.cancelTaskCmd(), a.locksCmd(), a.backupCmd(),
		a.infoCmd(), a.variablesCmd(), a.disksCmd(), a.deleteDiskCmd(),
		a.errandsCmd(), a.runErrandCmd(),
		// The deploy pipeline: clients of the routes director/deploy serves.
		a.deployCmd(), a.deleteDeploymentCmd(), a.instancesCmd(), a.vmsCmd(),
		a.stateCmd("recreate"), a.stateCmd("restart"), a.stateCmd("stop"), a.stateCmd("start"),
		a.ignoreCmd(true), a.ignoreCmd(false),
	)
	root.AddCommand(a.healthCmds()...) // health.go
	// pause, resume: rollout.go
	root.AddCommand(a.rolloutCmds()...)
	root.AddCommand(a.logsCmd(), a.sshCmd()) // logs.go, ssh.go
	// upgrade-stemcell, delete-release, delete-stemcell, clean-up: fleet.go
	root.AddCommand(a.fleetCmds()...)
	root.AddCommand(a.rotateAgentCertsCmd()) // agents.go
	root.AddCommand(a.migrateStateCmd())     // migratestate.go
	root.AddCommand(d.Extra...)
	return root
}

// args wraps a cobra.PositionalArgs so that its error is a usage error.
func args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		if err := check(cmd, a); err != nil {
			return Usage(fmt.Errorf("%s: %w", cmd.CommandPath(), err))
		}
		return nil
	}
}

// run wraps a command body: an error that is not already an ExitError is a
// failed operation.
func run(fn func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, a []string) error {
		err := fn(cmd, a)
		var e *ExitError
		if err != nil && !errors.As(err, &e) {
			return Failed(err)
		}
		return err
	}
}

func (a *app) deployment() (string, error) {
	if a.g.Deployment == "" {
		return "", Usage(errors.New("no deployment: pass -d NAME or set DIRECTOR_DEPLOYMENT"))
	}
	return a.g.Deployment, nil
}

// deploymentClient is what most deployment commands start with: the -d
// deployment and a client of the director.
func (a *app) deploymentClient() (string, *client, error) {
	name, err := a.deployment()
	if err != nil {
		return "", nil, err
	}
	c, err := a.client()
	if err != nil {
		return "", nil, err
	}
	return name, c, nil
}
