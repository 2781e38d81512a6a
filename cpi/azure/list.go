package azure

import (
	"context"
	"strings"

	"github.com/compleat/compleat/cpi"
)

// ListVMs lists the subscription's VMs whose tags pass the filter (the
// director's tag, given at creation), leaving out VMs being deleted.
func (c *CPI) ListVMs(ctx context.Context, filter cpi.ListFilter) ([]cpi.VMInfo, error) {
	out := []cpi.VMInfo{}
	pager := c.vms.NewListAllPager(nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, classify("list vms", err, nil)
		}
		for _, vm := range page.Value {
			tags := plainTags(vm.Tags)
			if !filter.Match(tags) || vm.ID == nil {
				continue
			}
			if p := vm.Properties; p != nil && strings.EqualFold(deref(p.ProvisioningState), "Deleting") {
				continue
			}
			r, ok := parseID(*vm.ID, typeVM)
			if !ok {
				continue
			}
			out = append(out, cpi.VMInfo{CID: c.canonical(r, typeVM), AgentID: cmpOr(tags[cpi.TagAgentID], tags[tagAgentID]), Tags: tags})
		}
	}
	return out, nil
}

// ListDisks lists the subscription's persistent disks whose tags pass the
// filter, with the VM each is attached to.
func (c *CPI) ListDisks(ctx context.Context, filter cpi.ListFilter) ([]cpi.DiskInfo, error) {
	out := []cpi.DiskInfo{}
	pager := c.disks.NewListPager(nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, classify("list disks", err, nil)
		}
		for _, d := range page.Value {
			tags := plainTags(d.Tags)
			if !filter.Match(tags) || tags[tagPersistent] != "true" || d.ID == nil {
				continue
			}
			r, ok := parseID(*d.ID, typeDisk)
			if !ok {
				continue
			}
			info := cpi.DiskInfo{CID: c.canonical(r, typeDisk), Tags: tags}
			if d.Properties != nil && d.Properties.DiskSizeGB != nil {
				info.SizeMB = int64(*d.Properties.DiskSizeGB) * 1024
			}
			if vm, ok := parseID(deref(d.ManagedBy), typeVM); ok {
				info.VMCID = c.canonical(vm, typeVM)
			}
			out = append(out, info)
		}
	}
	return out, nil
}
