// Command zdt proves zero-downtime rollouts under load, as an operator would
// see them: it starts a local director (`director serve --dev`) on a
// temporary data directory, deploys the sample web release (4 web instances
// behind 2 load balancers) and drives constant HTTP load through the load
// balancers while it rolls out, phase after phase:
//
//   - v2: a property and package change, updated in place;
//   - stemcell: a new stemcell version, every VM recreated
//     (vm_strategy: create-swap-delete; the load balancers, which hold
//     static IPs, fall back to delete-create);
//   - scale-up and scale-down: 4 → 6 → 4 web instances;
//   - canary: v3, whose health check never passes: the deploy halts (or
//     rolls back with update.auto_rollback) and v2 keeps answering;
//   - skip-drain: an in-place update with --skip-drain, for comparison; its
//     failures are reported on their own line and not counted in the summary.
//
// For each phase it prints the requests, failures (a non-2xx answer, a
// connection error, or after the phase an answer from another version),
// p50/p99 latency, the deploy's wall time and the schedule's lower bound
// computed from the task's events (see bound.go). The last line is
//
//	zdt: phases=<n> requests=<n> failures=<n> worst_ratio=<wall/lower bound>
//
// and the exit status is 1 when failures > 0. `make zdt` runs it after
// `make build stemcell`; docs/zero-downtime.md explains the figures.
// Every address it uses is on loopback (127.x.y.z).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "zdt:", err)
		os.Exit(1)
	}
}
