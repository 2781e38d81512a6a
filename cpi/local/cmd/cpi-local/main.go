// Command cpi-local is the local CPI plugin: VMs as process trees on this
// machine. The director starts it and passes its properties in
// COMPLEAT_CPI_PROPERTIES (see docs/cpi/local.md).
package main

import (
	"os"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/local"
)

func main() {
	impl, err := local.New(cpi.Properties(), local.WithLogger(cpi.Logger()))
	if err != nil {
		cpi.Logger().Error("cpi-local: bad properties", "error", err)
		os.Exit(1)
	}
	cpi.Serve(impl)
}
