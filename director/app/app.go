// Package app is the director's composition root: the one place that builds
// the parts (state store, task manager, PKI, message bus, blobstore, CPI
// manager, API) and hands them to each other, and that connects the command
// line to the server and to the local tools (releases, stemcells, manifests).
//
// The deploy pipeline: [newDeployer] receives the running [Director]
// (store, tasks, CPIs, bus, CA, blobstore and signer, metrics) and returns
// the *deploy.Deployer that POST /v1/deployments and friends call, and that
// the resurrector recreates through. Every command is a client of an API route (logs and ssh of
// the remote routes, built from api.Remote); [extraCommands] is where a
// command with no route would go.
package app

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/compleat/compleat/director/cli"
)

// Run runs the director command line with args (without the program name).
// It prints an error to stderr before returning it; ExitCode gives the
// process's exit status for it.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := cli.Run(ctx, cli.Deps{
		Stdin:  os.Stdin,
		Stdout: stdout,
		Stderr: stderr,
		Getenv: os.Getenv,
		Serve: func(ctx context.Context, o cli.ServeOptions) error {
			return serve(ctx, o, stdout, stderr)
		},
		Tools:      tools{},
		IsTerminal: isTerminal,
		Extra:      extraCommands(),
	}, args)
	if err != nil {
		fmt.Fprintf(stderr, "Error: %v\n", err)
	}
	return err
}

// ExitCode is the exit status for an error Run returned: 0, 1 (a failed
// operation) or 2 (bad usage or input).
func ExitCode(err error) int { return cli.ExitCode(err) }

// extraCommands are commands with no API route in this build: none (logs
// and ssh are clients of the API's remote routes).
func extraCommands() []*cobra.Command { return nil }

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
