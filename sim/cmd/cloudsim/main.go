// Command cloudsim runs a simulated cloud on this machine: the cloud's API,
// a real local VM booted for every instance it creates, and a shell file of
// the cloud's standard client variables. See docs/clouds.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/compleat/compleat/sim/cloudsim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(cloudsim.Main(ctx, os.Args[1:], os.Stdout, os.Stderr))
}
