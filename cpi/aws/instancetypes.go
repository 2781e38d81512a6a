package aws

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/compleat/compleat/cpi"
)

// instanceType is one row of the table CalculateVMCloudProperties picks
// from.
type instanceType struct {
	name  string
	cpu   int
	ramMB int64
	// cost ranks the types: the on-demand Linux price per hour in
	// us-east-1 (USD) when the table was written. It only orders the table;
	// it is never shown as a price.
	cost float64
}

// instanceTypes are current-generation general purpose (t3, m6i), compute
// (c6i) and memory (r6i) types.
var instanceTypes = []instanceType{
	{"t3.micro", 2, 1024, 0.0104},
	{"t3.small", 2, 2048, 0.0208},
	{"t3.medium", 2, 4096, 0.0416},
	{"t3.large", 2, 8192, 0.0832},
	{"c6i.large", 2, 4096, 0.085},
	{"m6i.large", 2, 8192, 0.096},
	{"r6i.large", 2, 16384, 0.126},
	{"t3.xlarge", 4, 16384, 0.1664},
	{"c6i.xlarge", 4, 8192, 0.17},
	{"m6i.xlarge", 4, 16384, 0.192},
	{"r6i.xlarge", 4, 32768, 0.252},
	{"t3.2xlarge", 8, 32768, 0.3328},
	{"c6i.2xlarge", 8, 16384, 0.34},
	{"m6i.2xlarge", 8, 32768, 0.384},
	{"r6i.2xlarge", 8, 65536, 0.504},
	{"c6i.4xlarge", 16, 32768, 0.68},
	{"m6i.4xlarge", 16, 65536, 0.768},
	{"r6i.4xlarge", 16, 131072, 1.008},
	{"c6i.8xlarge", 32, 65536, 1.36},
	{"m6i.8xlarge", 32, 131072, 1.536},
	{"r6i.8xlarge", 32, 262144, 2.016},
	{"c6i.12xlarge", 48, 98304, 2.04},
	{"m6i.12xlarge", 48, 196608, 2.304},
	{"c6i.16xlarge", 64, 131072, 2.72},
	{"r6i.12xlarge", 48, 393216, 3.024},
	{"m6i.16xlarge", 64, 262144, 3.072},
	{"r6i.16xlarge", 64, 524288, 4.032},
	{"c6i.24xlarge", 96, 196608, 4.08},
	{"m6i.24xlarge", 96, 393216, 4.608},
	{"r6i.24xlarge", 96, 786432, 6.048},
	{"m6i.32xlarge", 128, 524288, 6.144},
	{"r6i.32xlarge", 128, 1048576, 8.064},
}

// CalculateVMCloudProperties returns the cheapest instance type of the
// table with at least the CPUs and RAM asked for, and an ephemeral disk of
// the size asked for (at least 1 GiB, in gp3).
func (c *CPI) CalculateVMCloudProperties(_ context.Context, r cpi.VMResources) (json.RawMessage, error) {
	switch {
	case r.CPU < 0:
		return nil, cpi.InvalidCloudProperty("cpu", "must not be negative, got %d", r.CPU)
	case r.RAMMB < 0:
		return nil, cpi.InvalidCloudProperty("ram", "must not be negative, got %d", r.RAMMB)
	case r.EphemeralDiskSize < 0:
		return nil, cpi.InvalidCloudProperty("ephemeral_disk_size", "must not be negative, got %d", r.EphemeralDiskSize)
	}
	var best *instanceType
	for i := range instanceTypes {
		t := &instanceTypes[i]
		if t.cpu >= r.CPU && t.ramMB >= r.RAMMB && (best == nil || t.cost < best.cost) {
			best = t
		}
	}
	if best == nil {
		return nil, cpi.InvalidCloudProperty("ram", "no instance type has %d CPUs and %d MB of RAM", r.CPU, r.RAMMB)
	}
	size := int64(gib(r.EphemeralDiskSize)) * 1024
	b, err := json.Marshal(map[string]any{
		"instance_type":  best.name,
		"ephemeral_disk": map[string]any{"size": size, "type": defaultVolumeType},
	})
	if err != nil {
		return nil, fmt.Errorf("calculate vm cloud properties: %w", err)
	}
	return b, nil
}
