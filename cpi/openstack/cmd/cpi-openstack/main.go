// Command cpi-openstack is the OpenStack CPI plugin: VMs on Nova, disks on
// Cinder, stemcells in Glance, networks on Neutron. The director starts it
// and passes its properties in COMPLEAT_CPI_PROPERTIES (see
// docs/cpi/openstack.md).
package main

import (
	"encoding/json"
	"log/slog"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/openstack"
)

func main() {
	cpi.Main(func(props json.RawMessage, logger *slog.Logger) (cpi.CPI, error) {
		return openstack.New(props, openstack.WithLogger(logger))
	})
}
