package openstack

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/snapshots"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/volumeattach"
	"github.com/gophercloud/gophercloud/v2/pagination"

	"github.com/compleat/compleat/cpi"
)

// diskPrefix names the plugin's volumes: volume-<uuid>.
const diskPrefix = "volume-"

// CreateDisk creates a Cinder volume of the size (rounded up to whole
// GiB) and type (the disk type's, else default_volume_type, else the
// cloud's default), in the zone of req.VMCID unless
// ignore_server_availability_zone, and waits until it is available.
func (c *CPI) CreateDisk(ctx context.Context, req cpi.CreateDiskRequest) (string, error) {
	p, err := parseDiskProperties(req.CloudProperties)
	if err != nil {
		return "", err
	}
	if req.SizeMB <= 0 {
		return "", fmt.Errorf("create disk: size must be positive, got %d MB", req.SizeMB)
	}
	cl, err := c.session(ctx)
	if err != nil {
		return "", err
	}
	var az string
	if req.VMCID != "" {
		s, err := c.liveServer(ctx, cl, "create disk near vm "+req.VMCID, req.VMCID)
		if err != nil {
			return "", err
		}
		if !c.props.IgnoreServerAvailabilityZone {
			az = s.AvailabilityZone
		}
	}
	vtype := cmpOr(p.Type, c.props.DefaultVolumeType)
	size := gib(req.SizeMB)
	v, err := volumes.Create(ctx, cl.volume, volumes.CreateOpts{
		Size: size, Name: diskPrefix + newUUID(), VolumeType: vtype, AvailabilityZone: az,
		Description: "Compleat persistent disk", Metadata: diskTags(req.Tags),
	}, nil).Extract()
	if err != nil {
		if isNotFound(err) && vtype != "" {
			return "", cpi.InvalidCloudProperty(cmpOr(fieldIf(p.Type != "", "type"), "default_volume_type"), "volume type %q does not exist", vtype)
		}
		return "", classify(fmt.Sprintf("create disk of %d GiB", size), err, nil)
	}
	if err := c.waitVolume(ctx, cl, v.ID, "available"); err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if derr := ignoreNotFound(volumes.Delete(cctx, cl.volume, v.ID, volumes.DeleteOpts{}).ExtractErr()); derr != nil {
			c.logger.Error("delete the volume of a failed create", "disk", v.ID, "error", shortError(derr))
		}
		return "", fmt.Errorf("create disk %s: %w", v.ID, err)
	}
	c.logger.Info("disk created", "disk", v.ID, "size_gib", size, "type", vtype, "availability_zone", v.AvailabilityZone)
	return v.ID, nil
}

// waitVolume waits until the volume has status want; error states fail.
func (c *CPI) waitVolume(ctx context.Context, cl *clients, id, want string) error {
	return c.wait(ctx, "volume "+id+" "+want, func(ctx context.Context) (bool, error) {
		v, err := volumes.Get(ctx, cl.volume, id).Extract()
		if err != nil {
			return false, classify("get volume "+id, err, nil)
		}
		if strings.HasPrefix(v.Status, "error") {
			return false, fmt.Errorf("volume %s is %s", id, v.Status)
		}
		return v.Status == want, nil
	})
}

// volume returns the volume, or cpi.ErrDiskNotFound.
func (c *CPI) volume(ctx context.Context, cl *clients, what, id string) (*volumes.Volume, error) {
	if !looksLikeID(id) {
		return nil, fmt.Errorf("%s: %w", what, cpi.ErrDiskNotFound)
	}
	v, err := volumes.Get(ctx, cl.volume, id).Extract()
	if err != nil {
		return nil, classify(what, err, cpi.ErrDiskNotFound)
	}
	if v.Status == "deleting" {
		return nil, fmt.Errorf("%s: volume is being deleted: %w", what, cpi.ErrDiskNotFound)
	}
	return v, nil
}

// DeleteDisk deletes the volume and waits until it is gone. A missing
// volume is success; an attached one is an error.
func (c *CPI) DeleteDisk(ctx context.Context, id string) error {
	cl, err := c.session(ctx)
	if err != nil {
		return err
	}
	if !looksLikeID(id) {
		return nil
	}
	what := "delete disk " + id
	v, err := volumes.Get(ctx, cl.volume, id).Extract()
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return classify(what, err, nil)
	}
	if v.Status != "deleting" {
		if v.Status != "available" && !strings.HasPrefix(v.Status, "error") {
			return fmt.Errorf("%s: volume is %s, not available (detach it first)", what, v.Status)
		}
		if err := volumes.Delete(ctx, cl.volume, id, volumes.DeleteOpts{}).ExtractErr(); err != nil && !isNotFound(err) {
			return classify(what, err, nil)
		}
	}
	return c.wait(ctx, "volume "+id+" deleted", func(ctx context.Context) (bool, error) {
		_, err := volumes.Get(ctx, cl.volume, id).Extract()
		if isNotFound(err) {
			return true, nil
		}
		return false, classify("get volume "+id, err, nil)
	})
}

// HasDisk reports whether the volume exists (and is not being deleted).
func (c *CPI) HasDisk(ctx context.Context, id string) (bool, error) {
	cl, err := c.session(ctx)
	if err != nil {
		return false, err
	}
	_, err = c.volume(ctx, cl, "has disk "+id, id)
	if errorsIsNotFound(err, cpi.ErrDiskNotFound) {
		return false, nil
	}
	return err == nil, err
}

// ResizeDisk grows the detached volume to sizeMB (rounded up to whole
// GiB) with os-extend and waits until Cinder has. A size that rounds to
// the current one does nothing; volumes cannot shrink.
func (c *CPI) ResizeDisk(ctx context.Context, id string, sizeMB int64) error {
	cl, err := c.session(ctx)
	if err != nil {
		return err
	}
	what := "resize disk " + id
	v, err := c.volume(ctx, cl, what, id)
	if err != nil {
		return err
	}
	want := gib(sizeMB)
	switch {
	case want == v.Size:
		return nil
	case want < v.Size:
		return fmt.Errorf("%s: Cinder volumes cannot shrink (%d GiB to %d GiB)", what, v.Size, want)
	case v.Status != "available":
		return fmt.Errorf("%s: volume is %s: detach it before resizing", what, v.Status)
	}
	if err := volumes.ExtendSize(ctx, cl.volume, id, volumes.ExtendSizeOpts{NewSize: want}).ExtractErr(); err != nil {
		return classify(what, err, cpi.ErrDiskNotFound)
	}
	return c.wait(ctx, "volume "+id+" extended", func(ctx context.Context) (bool, error) {
		v, err := volumes.Get(ctx, cl.volume, id).Extract()
		if err != nil {
			return false, classify(what, err, cpi.ErrDiskNotFound)
		}
		if strings.HasPrefix(v.Status, "error") {
			return false, fmt.Errorf("%s: volume is %s", what, v.Status)
		}
		return v.Status == "available" && v.Size == want, nil
	})
}

// serverLock serialises attachments to one server.
func (c *CPI) serverLock(id string) *sync.Mutex {
	c.attachMu.Lock()
	defer c.attachMu.Unlock()
	m, ok := c.attach[id]
	if !ok {
		m = &sync.Mutex{}
		c.attach[id] = m
	}
	return m
}

// AttachDisk attaches the volume to the server and waits until it is
// in-use. The hint carries the device Nova reports and the volume id: Nova
// often attaches under another name than requested, so the agent finds
// the disk by id (/dev/disk/by-id/virtio-<id[:20]>) and falls back to the
// path. Attaching a volume that is attached to the server already returns
// its hint again.
func (c *CPI) AttachDisk(ctx context.Context, vmCID, diskCID string) (cpi.DiskHint, error) {
	cl, err := c.session(ctx)
	if err != nil {
		return cpi.DiskHint{}, err
	}
	what := fmt.Sprintf("attach disk %s to vm %s", diskCID, vmCID)
	if _, err := c.liveServer(ctx, cl, what, vmCID); err != nil {
		return cpi.DiskHint{}, err
	}
	v, err := c.volume(ctx, cl, what, diskCID)
	if err != nil {
		return cpi.DiskHint{}, err
	}
	if len(v.Attachments) > 0 {
		a := v.Attachments[0]
		if a.ServerID == vmCID {
			return cpi.DiskHint{Path: a.Device, VolumeID: v.ID}, nil
		}
		return cpi.DiskHint{}, fmt.Errorf("%s: the volume is attached to server %s", what, a.ServerID)
	}
	mu := c.serverLock(vmCID)
	mu.Lock()
	defer mu.Unlock()
	att, err := volumeattach.Create(ctx, cl.compute, vmCID, volumeattach.CreateOpts{VolumeID: diskCID}).Extract()
	if err != nil {
		return cpi.DiskHint{}, classify(what, err, cpi.ErrVMNotFound)
	}
	if err := c.waitVolume(ctx, cl, diskCID, "in-use"); err != nil {
		return cpi.DiskHint{}, fmt.Errorf("%s: %w", what, err)
	}
	c.logger.Info("disk attached", "disk", diskCID, "vm", vmCID, "device", att.Device)
	return cpi.DiskHint{Path: att.Device, VolumeID: diskCID}, nil
}

// DetachDisk detaches the volume and waits until it is available. A
// volume that is missing, or not attached to the server, answers
// cpi.ErrDiskNotFound and nothing is detached.
func (c *CPI) DetachDisk(ctx context.Context, vmCID, diskCID string) error {
	cl, err := c.session(ctx)
	if err != nil {
		return err
	}
	what := fmt.Sprintf("detach disk %s from vm %s", diskCID, vmCID)
	if _, err := c.liveServer(ctx, cl, what, vmCID); err != nil {
		return err
	}
	v, err := c.volume(ctx, cl, what, diskCID)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(v.Attachments, func(a volumes.Attachment) bool { return a.ServerID == vmCID }) {
		return fmt.Errorf("%s: the volume is not attached to the server: %w", what, cpi.ErrDiskNotFound)
	}
	err = volumeattach.Delete(ctx, cl.compute, vmCID, diskCID).ExtractErr()
	if err != nil {
		return classify(what, err, cpi.ErrDiskNotFound)
	}
	return c.wait(ctx, "volume "+diskCID+" detached", func(ctx context.Context) (bool, error) {
		v, err := volumes.Get(ctx, cl.volume, diskCID).Extract()
		if isNotFound(err) {
			return true, nil
		}
		if err != nil {
			return false, classify("get volume "+diskCID, err, nil)
		}
		return v.Status == "available", nil
	})
}

// GetDisks lists the volumes attached to the server (its boot volume
// aside).
func (c *CPI) GetDisks(ctx context.Context, vmCID string) ([]string, error) {
	cl, err := c.session(ctx)
	if err != nil {
		return nil, err
	}
	what := "get disks of vm " + vmCID
	if _, err := c.liveServer(ctx, cl, what, vmCID); err != nil {
		return nil, err
	}
	pages, err := volumeattach.List(cl.compute, vmCID).AllPages(ctx)
	if err != nil {
		return nil, classify(what, err, cpi.ErrVMNotFound)
	}
	atts, err := volumeattach.ExtractVolumeAttachments(pages)
	if err != nil {
		return nil, err
	}
	ids := []string{}
	for _, a := range atts {
		if a.Device != systemDevice {
			ids = append(ids, a.VolumeID)
		}
	}
	return ids, nil
}

// SetDiskMetadata merges the metadata into the volume's.
func (c *CPI) SetDiskMetadata(ctx context.Context, id string, md map[string]string) error {
	cl, err := c.session(ctx)
	if err != nil {
		return err
	}
	what := "set disk metadata " + id
	v, err := c.volume(ctx, cl, what, id)
	if err != nil {
		return err
	}
	merged := map[string]string{}
	for k, val := range v.Metadata {
		merged[k] = val
	}
	for k, val := range md {
		if k != "" {
			merged[truncate(k, 255)] = truncate(val, 255)
		}
	}
	if _, err := volumes.Update(ctx, cl.volume, id, volumes.UpdateOpts{Metadata: merged}).Extract(); err != nil {
		return classify(what, err, cpi.ErrDiskNotFound)
	}
	return nil
}

// SnapshotDisk snapshots the volume (also while attached: force) and
// waits until the snapshot is available.
func (c *CPI) SnapshotDisk(ctx context.Context, id string, md map[string]string) (string, error) {
	cl, err := c.session(ctx)
	if err != nil {
		return "", err
	}
	what := "snapshot disk " + id
	if _, err := c.volume(ctx, cl, what, id); err != nil {
		return "", err
	}
	meta := map[string]string{}
	for k, v := range md {
		if k != "" {
			meta[truncate(k, 255)] = truncate(v, 255)
		}
	}
	s, err := snapshots.Create(ctx, cl.volume, snapshots.CreateOpts{VolumeID: id, Force: true, Name: "snapshot-" + newUUID(), Metadata: meta}).Extract()
	if err != nil {
		return "", classify(what, err, cpi.ErrDiskNotFound)
	}
	err = c.wait(ctx, "snapshot "+s.ID+" available", func(ctx context.Context) (bool, error) {
		got, err := snapshots.Get(ctx, cl.volume, s.ID).Extract()
		if err != nil {
			return false, classify("get snapshot "+s.ID, err, nil)
		}
		if strings.HasPrefix(got.Status, "error") {
			return false, fmt.Errorf("snapshot %s is %s", s.ID, got.Status)
		}
		return got.Status == "available", nil
	})
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	return s.ID, nil
}

// DeleteSnapshot deletes the snapshot and waits until it is gone. A
// missing snapshot is success.
func (c *CPI) DeleteSnapshot(ctx context.Context, id string) error {
	cl, err := c.session(ctx)
	if err != nil {
		return err
	}
	if !looksLikeID(id) {
		return nil
	}
	err = snapshots.Delete(ctx, cl.volume, id).ExtractErr()
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return classify("delete snapshot "+id, err, nil)
	}
	return c.wait(ctx, "snapshot "+id+" deleted", func(ctx context.Context) (bool, error) {
		_, err := snapshots.Get(ctx, cl.volume, id).Extract()
		if isNotFound(err) {
			return true, nil
		}
		return false, classify("get snapshot "+id, err, nil)
	})
}

func diskTags(tags map[string]string) map[string]string {
	md := map[string]string{}
	for k, v := range tags {
		if k != "" {
			md[truncate(k, 255)] = truncate(v, 255)
		}
	}
	return md
}

// ListDisks lists the project's volumes whose metadata carries the
// director tag the filter selects.
func (c *CPI) ListDisks(ctx context.Context, filter cpi.ListFilter) ([]cpi.DiskInfo, error) {
	cl, err := c.session(ctx)
	if err != nil {
		return nil, err
	}
	out := []cpi.DiskInfo{}
	err = volumes.List(cl.volume, volumes.ListOpts{}).EachPage(ctx, func(ctx context.Context, p pagination.Page) (bool, error) {
		all, err := volumes.ExtractVolumes(p)
		if err != nil {
			return false, err
		}
		for _, v := range all {
			if !filter.Match(v.Metadata) || v.Status == "deleting" {
				continue
			}
			d := cpi.DiskInfo{CID: v.ID, SizeMB: int64(v.Size) * 1024, Tags: v.Metadata}
			if len(v.Attachments) > 0 {
				d.VMCID = v.Attachments[0].ServerID
			}
			out = append(out, d)
		}
		return true, nil
	})
	if err != nil {
		return nil, classify("list disks", err, nil)
	}
	return out, nil
}
