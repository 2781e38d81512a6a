// Command cpi-azure is the Azure CPI plugin: VMs, managed disks and
// snapshots through Azure Resource Manager. The director starts it and
// passes its properties in COMPLEAT_CPI_PROPERTIES (see docs/cpi/azure.md).
package main

import (
	"context"
	"os"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/azure"
)

func main() {
	impl, err := azure.New(context.Background(), cpi.Properties(), azure.WithLogger(cpi.Logger()))
	if err != nil {
		cpi.Logger().Error("cpi-azure: bad properties", "error", err)
		os.Exit(1)
	}
	cpi.Serve(impl)
}
