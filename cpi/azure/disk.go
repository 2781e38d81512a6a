package azure

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v6"

	"github.com/compleat/compleat/cpi"
)

// maxLUN is the highest LUN the plugin attaches at (Azure's largest sizes
// take 64 data disks; a size with fewer refuses the attach).
const maxLUN = 63

// CreateDisk creates an empty managed disk of the size (rounded up to
// whole GiB) in the plugin's resource group, in the location and zone of
// req.VMCID when given, tagged with the request's tags and its caching.
func (c *CPI) CreateDisk(ctx context.Context, req cpi.CreateDiskRequest) (string, error) {
	p, err := parseDiskProperties(req.CloudProperties)
	if err != nil {
		return "", err
	}
	if req.SizeMB <= 0 {
		return "", fmt.Errorf("create disk: size must be positive, got %d MB", req.SizeMB)
	}
	location := c.props.Location
	var zones []*string
	if req.VMCID != "" {
		_, vm, err := c.vm(ctx, "create disk near vm "+req.VMCID, req.VMCID)
		if err != nil {
			return "", err
		}
		location, zones = deref(vm.Location), vm.Zones
	}
	tags := maps.Clone(req.Tags)
	if tags == nil {
		tags = map[string]string{}
	}
	tags[tagPersistent] = "true"
	tags[tagCaching] = p.Caching
	name := diskPrefix + randomID()
	poller, err := c.disks.BeginCreateOrUpdate(ctx, c.rg, name, armcompute.Disk{
		Location: to.Ptr(location),
		Zones:    zones,
		Tags:     azureTags(tags),
		SKU:      &armcompute.DiskSKU{Name: to.Ptr(armcompute.DiskStorageAccountTypes(p.StorageAccountType))},
		Properties: &armcompute.DiskProperties{
			CreationData: &armcompute.CreationData{CreateOption: to.Ptr(armcompute.DiskCreateOptionEmpty)},
			DiskSizeGB:   to.Ptr(gib(req.SizeMB)),
		},
	}, nil)
	if err == nil {
		_, err = poll(ctx, c, poller)
	}
	if err != nil {
		return "", classify(fmt.Sprintf("create disk of %d GiB in %s", gib(req.SizeMB), location), err, nil)
	}
	id := c.resourceID(c.rg, typeDisk, name)
	c.logger.Info("disk created", "disk", id, "size_gib", gib(req.SizeMB), "type", p.StorageAccountType)
	return id, nil
}

// disk reads a managed disk, answering cpi.ErrDiskNotFound for a missing
// one.
func (c *CPI) disk(ctx context.Context, what, cid string) (resource, armcompute.Disk, error) {
	r, ok := parseID(cid, typeDisk)
	if !ok {
		return r, armcompute.Disk{}, cpi.Errorf(cpi.CodeDiskNotFound, "%s: %q is not a managed disk id", what, cid)
	}
	out, err := c.disks.Get(ctx, r.group, r.name, nil)
	if err != nil {
		return r, armcompute.Disk{}, classify(what, err, cpi.ErrDiskNotFound)
	}
	return r, out.Disk, nil
}

// DeleteDisk deletes the managed disk. A missing disk is success; an
// attached one is an error (Azure refuses).
func (c *CPI) DeleteDisk(ctx context.Context, cid string) error {
	r, ok := parseID(cid, typeDisk)
	if !ok {
		return nil
	}
	return c.deleteResource(ctx, "disk "+cid, func() (waiter, error) {
		p, err := c.disks.BeginDelete(ctx, r.group, r.name, nil)
		return pollerOf(p), err
	})
}

// HasDisk reports whether the managed disk exists.
func (c *CPI) HasDisk(ctx context.Context, cid string) (bool, error) {
	r, ok := parseID(cid, typeDisk)
	if !ok {
		return false, nil
	}
	_, err := c.disks.Get(ctx, r.group, r.name, nil)
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, classify("has disk "+cid, err, nil)
	}
	return true, nil
}

// ResizeDisk grows the disk to sizeMB (rounded up to whole GiB). A size
// that rounds to the current one does nothing; managed disks cannot
// shrink.
func (c *CPI) ResizeDisk(ctx context.Context, cid string, sizeMB int64) error {
	what := "resize disk " + cid
	r, d, err := c.disk(ctx, what, cid)
	if err != nil {
		return err
	}
	want, have := gib(sizeMB), int32(0)
	if d.Properties != nil && d.Properties.DiskSizeGB != nil {
		have = *d.Properties.DiskSizeGB
	}
	switch {
	case want == have:
		return nil
	case want < have:
		return fmt.Errorf("%s: managed disks cannot shrink (%d GiB to %d GiB)", what, have, want)
	}
	p, err := c.disks.BeginUpdate(ctx, r.group, r.name, armcompute.DiskUpdate{Properties: &armcompute.DiskUpdateProperties{DiskSizeGB: to.Ptr(want)}}, nil)
	if err == nil {
		_, err = poll(ctx, c, p)
	}
	return classify(what, err, cpi.ErrDiskNotFound)
}

// SetDiskMetadata merges the metadata into the disk's tags.
func (c *CPI) SetDiskMetadata(ctx context.Context, cid string, md map[string]string) error {
	what := "set disk metadata " + cid
	r, d, err := c.disk(ctx, what, cid)
	if err != nil {
		return err
	}
	tags := plainTags(d.Tags)
	for k, v := range md {
		if _, ours := tags[k]; ours && (k == tagPersistent || k == tagCaching || k == cpi.TagDirector) {
			continue
		}
		if k != "" && len(k) <= maxTagKeyLen && !strings.ContainsAny(k, "<>%&\\?/") {
			tags[k] = v
		}
	}
	if len(tags) > maxTags {
		return fmt.Errorf("%s: %d tags, Azure allows %d", what, len(tags), maxTags)
	}
	p, err := c.disks.BeginUpdate(ctx, r.group, r.name, armcompute.DiskUpdate{Tags: azureTags(tags)}, nil)
	if err == nil {
		_, err = poll(ctx, c, p)
	}
	return classify(what, err, cpi.ErrDiskNotFound)
}

// dataDisk finds a persistent disk among the VM's data disks.
func dataDisk(vm armcompute.VirtualMachine, disk resource) (*armcompute.DataDisk, bool) {
	if vm.Properties == nil || vm.Properties.StorageProfile == nil {
		return nil, false
	}
	for _, d := range vm.Properties.StorageProfile.DataDisks {
		if isDisk(d, disk) {
			return d, true
		}
	}
	return nil, false
}

// isDisk reports whether the data disk is the managed disk.
func isDisk(d *armcompute.DataDisk, disk resource) bool {
	if d.ManagedDisk == nil || d.ManagedDisk.ID == nil {
		return false
	}
	r, ok := parseID(*d.ManagedDisk.ID, typeDisk)
	return ok && strings.EqualFold(r.group, disk.group) && strings.EqualFold(r.name, disk.name)
}

// AttachDisk attaches the disk at the VM's lowest free LUN (LUN 0 is the
// ephemeral disk's) by updating the VM's data disk list, and hands the
// agent the LUN. A disk already attached to the VM answers its LUN again.
func (c *CPI) AttachDisk(ctx context.Context, vmCID, diskCID string) (cpi.DiskHint, error) {
	what := fmt.Sprintf("attach disk %s to vm %s", diskCID, vmCID)
	dr, d, err := c.disk(ctx, what, diskCID)
	if err != nil {
		return cpi.DiskHint{}, err
	}
	unlock := c.lockVM(vmCID)
	defer unlock()
	vr, vm, err := c.vm(ctx, what, vmCID)
	if err != nil {
		return cpi.DiskHint{}, err
	}
	if dd, ok := dataDisk(vm, dr); ok {
		return cpi.DiskHint{LUN: strconv.Itoa(int(deref(dd.Lun)))}, nil
	}
	if other := deref(d.ManagedBy); other != "" && !strings.EqualFold(other, vmCID) {
		return cpi.DiskHint{}, fmt.Errorf("%s: the disk is attached to vm %s; detach it there first", what, other)
	}
	used := map[int32]bool{ephemeralLUN: true}
	var disks []*armcompute.DataDisk
	if vm.Properties != nil && vm.Properties.StorageProfile != nil {
		disks = vm.Properties.StorageProfile.DataDisks
	}
	for _, dd := range disks {
		used[deref(dd.Lun)] = true
	}
	lun := int32(-1)
	for l := int32(0); l <= maxLUN; l++ {
		if !used[l] {
			lun = l
			break
		}
	}
	if lun < 0 {
		return cpi.DiskHint{}, fmt.Errorf("%s: every LUN up to %d is taken", what, maxLUN)
	}
	caching := cmpOr(plainTags(d.Tags)[tagCaching], defaultDataCaching)
	disks = append(disks, &armcompute.DataDisk{
		Lun:          to.Ptr(lun),
		Name:         to.Ptr(dr.name),
		CreateOption: to.Ptr(armcompute.DiskCreateOptionTypesAttach),
		Caching:      to.Ptr(armcompute.CachingTypes(caching)),
		DeleteOption: to.Ptr(armcompute.DiskDeleteOptionTypesDetach),
		ManagedDisk:  &armcompute.ManagedDiskParameters{ID: to.Ptr(diskCID)},
	})
	if err := c.setDataDisks(ctx, vr, vm, disks); err != nil {
		return cpi.DiskHint{}, classify(what, err, cpi.ErrVMNotFound)
	}
	c.logger.Info("disk attached", "vm", vmCID, "disk", diskCID, "lun", lun)
	return cpi.DiskHint{LUN: strconv.Itoa(int(lun))}, nil
}

// setDataDisks replaces the VM's data disk list (a PATCH of the VM, only
// if it is unchanged since it was read).
func (c *CPI) setDataDisks(ctx context.Context, r resource, vm armcompute.VirtualMachine, disks []*armcompute.DataDisk) error {
	if disks == nil {
		disks = []*armcompute.DataDisk{}
	}
	p, err := c.vms.BeginUpdate(ctx, r.group, r.name, armcompute.VirtualMachineUpdate{
		Properties: &armcompute.VirtualMachineProperties{StorageProfile: &armcompute.StorageProfile{DataDisks: disks}},
	}, &armcompute.VirtualMachinesClientBeginUpdateOptions{IfMatch: vm.Etag})
	if err == nil {
		_, err = poll(ctx, c, p)
	}
	return err
}

// DetachDisk removes the disk from the VM's data disks. A disk that is not
// attached to the VM is cpi.ErrDiskNotFound saying so.
func (c *CPI) DetachDisk(ctx context.Context, vmCID, diskCID string) error {
	what := fmt.Sprintf("detach disk %s from vm %s", diskCID, vmCID)
	dr, ok := parseID(diskCID, typeDisk)
	if !ok {
		return cpi.Errorf(cpi.CodeDiskNotFound, "%s: %q is not a managed disk id", what, diskCID)
	}
	unlock := c.lockVM(vmCID)
	defer unlock()
	vr, vm, err := c.vm(ctx, what, vmCID)
	if err != nil {
		return err
	}
	if _, ok := dataDisk(vm, dr); !ok {
		return cpi.Errorf(cpi.CodeDiskNotFound, "%s: the disk is not attached to the vm", what)
	}
	var keep []*armcompute.DataDisk
	for _, dd := range vm.Properties.StorageProfile.DataDisks {
		if !isDisk(dd, dr) {
			keep = append(keep, dd)
		}
	}
	if err := c.setDataDisks(ctx, vr, vm, keep); err != nil {
		return classify(what, err, cpi.ErrVMNotFound)
	}
	c.logger.Info("disk detached", "vm", vmCID, "disk", diskCID)
	return nil
}

// GetDisks lists the persistent disks attached to the VM (not its
// ephemeral disk).
func (c *CPI) GetDisks(ctx context.Context, vmCID string) ([]string, error) {
	_, vm, err := c.vm(ctx, "get disks of vm "+vmCID, vmCID)
	if err != nil {
		return nil, err
	}
	out := []string{}
	if vm.Properties == nil || vm.Properties.StorageProfile == nil {
		return out, nil
	}
	for _, dd := range vm.Properties.StorageProfile.DataDisks {
		if deref(dd.Lun) == ephemeralLUN || dd.ManagedDisk == nil || dd.ManagedDisk.ID == nil {
			continue
		}
		if r, ok := parseID(*dd.ManagedDisk.ID, typeDisk); ok {
			out = append(out, c.canonical(r, typeDisk))
		}
	}
	return out, nil
}

// canonical is the cid of a resource as the plugin spells it (Azure may
// answer a resource group's name in other case).
func (c *CPI) canonical(r resource, typ string) string {
	group := r.group
	if strings.EqualFold(group, c.rg) {
		group = c.rg
	}
	return c.resourceID(group, typ, r.name)
}

// SnapshotDisk takes an incremental snapshot of the disk, tagged with the
// metadata.
func (c *CPI) SnapshotDisk(ctx context.Context, cid string, md map[string]string) (string, error) {
	what := "snapshot disk " + cid
	r, d, err := c.disk(ctx, what, cid)
	if err != nil {
		return "", err
	}
	name := snapshotPrefix + randomID()
	tags := maps.Clone(md)
	if tags == nil {
		tags = map[string]string{}
	}
	tags["source_disk"] = r.name
	p, err := c.snapshots.BeginCreateOrUpdate(ctx, r.group, name, armcompute.Snapshot{
		Location: d.Location,
		Tags:     azureTags(tags),
		Properties: &armcompute.SnapshotProperties{
			CreationData: &armcompute.CreationData{CreateOption: to.Ptr(armcompute.DiskCreateOptionCopy), SourceResourceID: to.Ptr(cid)},
			Incremental:  to.Ptr(true),
		},
	}, nil)
	if err == nil {
		_, err = poll(ctx, c, p)
	}
	if err != nil {
		return "", classify(what, err, cpi.ErrDiskNotFound)
	}
	return c.resourceID(r.group, typeSnapshot, name), nil
}

// DeleteSnapshot deletes the snapshot. A missing snapshot is success.
func (c *CPI) DeleteSnapshot(ctx context.Context, cid string) error {
	r, ok := parseID(cid, typeSnapshot)
	if !ok {
		return nil
	}
	return c.deleteResource(ctx, "snapshot "+cid, func() (waiter, error) {
		p, err := c.snapshots.BeginDelete(ctx, r.group, r.name, nil)
		return pollerOf(p), err
	})
}
