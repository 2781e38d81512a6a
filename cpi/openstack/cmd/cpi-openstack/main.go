// Command cpi-openstack is the OpenStack CPI plugin: VMs on Nova, disks on
// Cinder, stemcells in Glance, networks on Neutron. The director starts it
// and passes its properties in COMPLEAT_CPI_PROPERTIES (see
// docs/cpi/openstack.md).
package main

import (
	"os"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/openstack"
)

func main() {
	impl, err := openstack.New(cpi.Properties(), openstack.WithLogger(cpi.Logger()))
	if err != nil {
		cpi.Logger().Error("cpi-openstack: bad properties", "error", err)
		os.Exit(1)
	}
	cpi.Serve(impl)
}
