package azure

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/compleat/compleat/cpi"
)

// vmSizes are general-purpose sizes, smallest first, that
// CalculateVMCloudProperties picks from.
var vmSizes = []struct {
	name  string
	cpu   int
	ramMB int64
}{
	{"Standard_B1s", 1, 1024},
	{"Standard_B1ms", 1, 2048},
	{"Standard_B2s", 2, 4096},
	{"Standard_D2s_v5", 2, 8192},
	{"Standard_D4s_v5", 4, 16384},
	{"Standard_D8s_v5", 8, 32768},
	{"Standard_D16s_v5", 16, 65536},
	{"Standard_D32s_v5", 32, 131072},
	{"Standard_D48s_v5", 48, 196608},
	{"Standard_D64s_v5", 64, 262144},
}

// CalculateVMCloudProperties answers the smallest general-purpose size with
// the CPUs and memory, and an ephemeral disk of the size asked (at least
// 1 GiB).
func (c *CPI) CalculateVMCloudProperties(_ context.Context, req cpi.VMResources) (json.RawMessage, error) {
	for _, s := range vmSizes {
		if s.cpu >= req.CPU && s.ramMB >= req.RAMMB {
			size := max(req.EphemeralDiskSize, 1024)
			return json.Marshal(map[string]any{"instance_type": s.name, "ephemeral_disk": map[string]any{"size": size}})
		}
	}
	return nil, fmt.Errorf("calculate vm cloud properties: no size has %d CPUs and %d MB", req.CPU, req.RAMMB)
}
