package plan

import (
	"sort"

	"github.com/compleat/compleat/director/manifest"
)

// VMResourcesKey is one distinct vm_resources block in one CPI: the
// director asks that CPI's CalculateVMCloudProperties once per key and
// hands the answers to Compute (Desired.VMCloudProperties).
type VMResourcesKey struct {
	CPI       string
	Resources manifest.VMResources
}

// VMResourcesNeeded lists the distinct (CPI, vm_resources) pairs the
// desired deployment's instance groups (errands included) and the cloud
// config's compilation block ask for, each group in the CPI of each of its
// AZs (Desired.AZCPIs; "" for a group without AZs), in a stable order.
func VMResourcesNeeded(d Desired) []VMResourcesKey {
	seen := map[VMResourcesKey]bool{}
	var out []VMResourcesKey
	add := func(az string, r *manifest.VMResources) {
		if r == nil {
			return
		}
		k := VMResourcesKey{CPI: d.AZCPIs[az], Resources: *r}
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	if d.Manifest != nil {
		for _, ig := range d.Manifest.InstanceGroups {
			if len(ig.AZs) == 0 {
				add("", ig.VMResources)
			}
			for _, az := range ig.AZs {
				add(az, ig.VMResources)
			}
		}
	}
	if d.CloudConfig != nil {
		add(d.CloudConfig.Compilation.AZ, d.CloudConfig.Compilation.VMResources)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.CPI != b.CPI {
			return a.CPI < b.CPI
		}
		ra, rb := a.Resources, b.Resources
		if ra.CPU != rb.CPU {
			return ra.CPU < rb.CPU
		}
		if ra.RAM != rb.RAM {
			return ra.RAM < rb.RAM
		}
		return ra.EphemeralDiskSize < rb.EphemeralDiskSize
	})
	return out
}

// vmResourcesProps is the cloud properties the CPI of az calculated for r;
// false when the director did not provide them.
func (c *computer) vmResourcesProps(az string, r manifest.VMResources) (map[string]any, bool) {
	p, ok := c.d.VMCloudProperties[VMResourcesKey{CPI: c.d.AZCPIs[az], Resources: r}]
	return p, ok
}
