// Command cpi-aws is the AWS CPI plugin: VMs on EC2, disks on EBS. The
// director starts it and passes its properties in COMPLEAT_CPI_PROPERTIES
// (see docs/cpi/aws.md).
package main

import (
	"context"
	"os"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/aws"
)

func main() {
	impl, err := aws.New(context.Background(), cpi.Properties(), aws.WithLogger(cpi.Logger()))
	if err != nil {
		cpi.Logger().Error("cpi-aws: bad properties", "error", err)
		os.Exit(1)
	}
	cpi.Serve(impl)
}
