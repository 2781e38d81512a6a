package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/director/plan"
	"github.com/compleat/compleat/director/task"
)

// vmCloudProperties asks each CPI's CalculateVMCloudProperties, once per
// distinct vm_resources block, for the cloud properties of a VM that has
// the resources, as BOSH does; the plan puts them where a vm_type's cloud
// properties would go. A CPI that cannot calculate them (NotImplemented)
// or refuses the resources is bad input: the manifest must name a vm_type.
func (d *Deployer) vmCloudProperties(ctx context.Context, needed []plan.VMResourcesKey) (map[plan.VMResourcesKey]map[string]any, error) {
	if len(needed) == 0 {
		return nil, nil
	}
	out := make(map[plan.VMResourcesKey]map[string]any, len(needed))
	for _, k := range needed {
		c, err := d.cpi(ctx, k.CPI)
		if err != nil {
			return nil, err
		}
		r := k.Resources
		raw, err := c.CalculateVMCloudProperties(ctx, cpi.VMResources{CPU: r.CPU, RAMMB: int64(r.RAM), EphemeralDiskSize: int64(r.EphemeralDiskSize)})
		switch {
		case errors.Is(err, cpi.ErrNotImplemented):
			return nil, task.BadInput(fmt.Errorf("vm_resources (cpu %d, ram %d, ephemeral_disk_size %d): cpi %s cannot calculate cloud properties for them: use a vm_type", r.CPU, r.RAM, r.EphemeralDiskSize, k.CPI))
		case errors.Is(err, cpi.ErrInvalidCloudProperties):
			return nil, task.BadInput(fmt.Errorf("vm_resources (cpu %d, ram %d, ephemeral_disk_size %d) in cpi %s: %w", r.CPU, r.RAM, r.EphemeralDiskSize, k.CPI, err))
		case err != nil:
			return nil, fmt.Errorf("calculate vm cloud properties in cpi %s: %w", k.CPI, err)
		}
		props := map[string]any{}
		if err := json.Unmarshal(raw, &props); err != nil {
			return nil, fmt.Errorf("cpi %s: calculated cloud properties are not a JSON object: %w", k.CPI, err)
		}
		d.c.Logger.Info("vm_resources", "cpi", k.CPI, "cpu", r.CPU, "ram", r.RAM, "ephemeral_disk_size", r.EphemeralDiskSize, "cloud_properties", string(raw))
		out[k] = props
	}
	return out, nil
}
