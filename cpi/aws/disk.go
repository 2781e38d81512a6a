package aws

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/compleat/compleat/cpi"
)

// attachDevices are the device names persistent disks are attached at, in
// the order they are tried (BOSH's range).
var attachDevices = func() []string {
	var d []string
	for c := 'f'; c <= 'p'; c++ {
		d = append(d, "/dev/sd"+string(c))
	}
	return d
}()

// CreateDisk creates an EBS volume of the size (rounded up to whole GiB) in
// the availability zone of req.VMCID, else in the region's first zone.
func (c *CPI) CreateDisk(ctx context.Context, req cpi.CreateDiskRequest) (string, error) {
	p, err := parseDiskProperties(req.CloudProperties)
	if err != nil {
		return "", err
	}
	if req.SizeMB <= 0 {
		return "", fmt.Errorf("create disk: size must be positive, got %d MB", req.SizeMB)
	}
	var az string
	if req.VMCID != "" {
		i, err := c.liveInstance(ctx, "create disk near vm "+req.VMCID, req.VMCID)
		if err != nil {
			return "", err
		}
		if i.Placement != nil {
			az = aws.ToString(i.Placement.AvailabilityZone)
		}
	}
	if az == "" {
		if az, err = c.firstZone(ctx); err != nil {
			return "", err
		}
	}
	in := &ec2.CreateVolumeInput{
		AvailabilityZone: aws.String(az),
		Size:             aws.Int32(gib(req.SizeMB)),
		VolumeType:       types.VolumeType(p.Type),
		Iops:             p.IOPS,
		Throughput:       p.Throughput,
		Encrypted:        p.Encrypted,
		ClientToken:      aws.String(randomHex(16)),
		TagSpecifications: []types.TagSpecification{{
			ResourceType: types.ResourceTypeVolume,
			Tags:         diskTags(req.Tags),
		}},
	}
	if p.KMSKeyARN != "" {
		in.KmsKeyId = aws.String(p.KMSKeyARN)
		in.Encrypted = aws.Bool(true)
	}
	out, err := c.ec2.CreateVolume(ctx, in)
	if err != nil {
		return "", classify(fmt.Sprintf("create disk of %d GiB in %s", gib(req.SizeMB), az), err, nil)
	}
	id := aws.ToString(out.VolumeId)
	err = c.wait(ctx, "volume "+id+" available", func(ctx context.Context) (bool, error) {
		v, err := c.volume(ctx, id)
		if isNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if v.State == types.VolumeStateError {
			return false, fmt.Errorf("volume %s failed", id)
		}
		return v.State == types.VolumeStateAvailable, nil
	})
	if err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if _, derr := c.ec2.DeleteVolume(cctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(id)}); derr != nil && !isNotFound(derr) {
			c.logger.Error("delete the volume of a failed create", "disk", id, "error", derr)
		}
		return "", classify("create disk "+id, err, nil)
	}
	c.logger.Info("disk created", "disk", id, "availability_zone", az, "size_gib", gib(req.SizeMB))
	return id, nil
}

// firstZone is the region's first available availability zone.
func (c *CPI) firstZone(ctx context.Context) (string, error) {
	out, err := c.ec2.DescribeAvailabilityZones(ctx, &ec2.DescribeAvailabilityZonesInput{
		Filters: []types.Filter{{Name: aws.String("state"), Values: []string{"available"}}},
	})
	if err != nil {
		return "", classify("describe availability zones", err, nil)
	}
	var zones []string
	for _, z := range out.AvailabilityZones {
		zones = append(zones, aws.ToString(z.ZoneName))
	}
	slices.Sort(zones)
	if len(zones) == 0 {
		return "", fmt.Errorf("region %s has no available availability zone", c.region)
	}
	return zones[0], nil
}

// volume returns the EBS volume; a malformed id, or a volume being deleted,
// answers EC2's not-found code.
func (c *CPI) volume(ctx context.Context, id string) (types.Volume, error) {
	if !strings.HasPrefix(id, "vol-") {
		return types.Volume{}, notFoundError("InvalidVolumeID.Malformed", "volume "+id)
	}
	out, err := c.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{id}})
	if err != nil {
		return types.Volume{}, err
	}
	for _, v := range out.Volumes {
		if aws.ToString(v.VolumeId) == id && v.State != types.VolumeStateDeleting && v.State != types.VolumeStateDeleted {
			return v, nil
		}
	}
	return types.Volume{}, notFoundError("InvalidVolume.NotFound", "volume "+id)
}

// DeleteDisk deletes the volume. A missing disk is success; an attached one
// is an error.
func (c *CPI) DeleteDisk(ctx context.Context, id string) error {
	if !strings.HasPrefix(id, "vol-") {
		return nil
	}
	_, err := c.ec2.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(id)})
	if err != nil && !isNotFound(err) {
		return classify("delete disk "+id, err, nil)
	}
	return nil
}

// HasDisk reports whether the volume exists (and is not being deleted).
func (c *CPI) HasDisk(ctx context.Context, id string) (bool, error) {
	_, err := c.volume(ctx, id)
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, classify("has disk "+id, err, nil)
	}
	return true, nil
}

// ResizeDisk grows the volume to sizeMB (rounded up to whole GiB) through
// ModifyVolume and waits until EC2 has applied the new size (the
// modification is optimizing or completed). A size that rounds to the
// current one does nothing; EBS volumes cannot shrink.
func (c *CPI) ResizeDisk(ctx context.Context, id string, sizeMB int64) error {
	what := "resize disk " + id
	v, err := c.volume(ctx, id)
	if err != nil {
		return classify(what, err, cpi.ErrDiskNotFound)
	}
	want, have := gib(sizeMB), aws.ToInt32(v.Size)
	switch {
	case want == have:
		return nil
	case want < have:
		return fmt.Errorf("%s: EBS volumes cannot shrink (%d GiB to %d GiB)", what, have, want)
	}
	if _, err := c.ec2.ModifyVolume(ctx, &ec2.ModifyVolumeInput{VolumeId: aws.String(id), Size: aws.Int32(want)}); err != nil {
		return classify(what, err, cpi.ErrDiskNotFound)
	}
	return c.wait(ctx, "volume "+id+" modified", func(ctx context.Context) (bool, error) {
		out, err := c.ec2.DescribeVolumesModifications(ctx, &ec2.DescribeVolumesModificationsInput{VolumeIds: []string{id}})
		if err != nil {
			return false, classify(what, err, cpi.ErrDiskNotFound)
		}
		for _, m := range out.VolumesModifications {
			if aws.ToInt32(m.TargetSize) != want {
				continue
			}
			switch m.ModificationState {
			case types.VolumeModificationStateOptimizing, types.VolumeModificationStateCompleted, "":
				return true, nil
			case types.VolumeModificationStateFailed:
				return false, fmt.Errorf("%s: modification failed: %s", what, aws.ToString(m.StatusMessage))
			}
			return false, nil
		}
		// No modification on record: look at the size itself.
		v, err := c.volume(ctx, id)
		if err != nil {
			return false, classify(what, err, cpi.ErrDiskNotFound)
		}
		return aws.ToInt32(v.Size) == want, nil
	})
}

// attachment is the volume's attachment to the instance, if any.
func attachment(v types.Volume, instance string) (types.VolumeAttachment, bool) {
	for _, a := range v.Attachments {
		if aws.ToString(a.InstanceId) == instance {
			return a, true
		}
	}
	return types.VolumeAttachment{}, false
}

// lockInstance serialises device selection for one instance; the returned
// function unlocks.
func (c *CPI) lockInstance(id string) func() {
	c.attachMu.Lock()
	l, ok := c.attaching[id]
	if !ok {
		l = &instanceLock{}
		c.attaching[id] = l
	}
	l.users++
	c.attachMu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		c.attachMu.Lock()
		if l.users--; l.users == 0 {
			delete(c.attaching, id)
		}
		c.attachMu.Unlock()
	}
}

// AttachDisk attaches the volume at the first free device of /dev/sdf to
// /dev/sdp and waits until it is attached. The hint holds the device and
// the volume id (on Nitro instances the device is an NVMe disk whose
// serial is the volume id without its dash). Attaching a volume already
// attached to the VM answers its hint again.
func (c *CPI) AttachDisk(ctx context.Context, vmCID, diskCID string) (cpi.DiskHint, error) {
	what := fmt.Sprintf("attach disk %s to vm %s", diskCID, vmCID)
	inst, err := c.liveInstance(ctx, what, vmCID)
	if err != nil {
		return cpi.DiskHint{}, err
	}
	v, err := c.volume(ctx, diskCID)
	if err != nil {
		return cpi.DiskHint{}, classify(what, err, cpi.ErrDiskNotFound)
	}
	if a, ok := attachment(v, vmCID); ok {
		// Attached already (or on its way): answer the same hint.
		device := aws.ToString(a.Device)
		if err := c.waitAttached(ctx, what, vmCID, diskCID); err != nil {
			return cpi.DiskHint{}, err
		}
		return cpi.DiskHint{Path: device, VolumeID: diskCID}, nil
	}
	if len(v.Attachments) > 0 {
		return cpi.DiskHint{}, fmt.Errorf("%s: the disk is attached to %s", what, aws.ToString(v.Attachments[0].InstanceId))
	}
	if inst.Placement != nil && aws.ToString(inst.Placement.AvailabilityZone) != aws.ToString(v.AvailabilityZone) {
		return cpi.DiskHint{}, fmt.Errorf("%s: the disk is in %s, the vm in %s", what, aws.ToString(v.AvailabilityZone), aws.ToString(inst.Placement.AvailabilityZone))
	}

	unlock := c.lockInstance(vmCID)
	defer unlock()
	used, err := c.usedDevices(ctx, vmCID)
	if err != nil {
		return cpi.DiskHint{}, classify(what, err, cpi.ErrVMNotFound)
	}
	device := ""
	for _, d := range attachDevices {
		if !used[deviceLetter(d)] {
			device = d
			break
		}
	}
	if device == "" {
		return cpi.DiskHint{}, fmt.Errorf("%s: every device from %s to %s is in use", what, attachDevices[0], attachDevices[len(attachDevices)-1])
	}
	_, err = c.ec2.AttachVolume(ctx, &ec2.AttachVolumeInput{
		VolumeId: aws.String(diskCID), InstanceId: aws.String(vmCID), Device: aws.String(device),
	})
	if err != nil {
		return cpi.DiskHint{}, classify(what, err, nil)
	}
	if err := c.waitAttached(ctx, what, vmCID, diskCID); err != nil {
		return cpi.DiskHint{}, err
	}
	c.logger.Info("disk attached", "disk", diskCID, "vm", vmCID, "device", device)
	return cpi.DiskHint{Path: device, VolumeID: diskCID}, nil
}

// waitAttached waits until EC2 reports the volume attached to the instance.
func (c *CPI) waitAttached(ctx context.Context, what, vmCID, diskCID string) error {
	return c.wait(ctx, "volume "+diskCID+" attached", func(ctx context.Context) (bool, error) {
		v, err := c.volume(ctx, diskCID)
		if err != nil {
			return false, classify(what, err, cpi.ErrDiskNotFound)
		}
		a, ok := attachment(v, vmCID)
		if !ok {
			return false, fmt.Errorf("%s: the attachment went away", what)
		}
		return a.State == types.VolumeAttachmentStateAttached, nil
	})
}

// usedDevices are the device letters (the "f" of /dev/sdf or /dev/xvdf) of
// every volume attached, or being attached, to the instance.
func (c *CPI) usedDevices(ctx context.Context, id string) (map[string]bool, error) {
	used := map[string]bool{}
	i, err := c.describeInstance(ctx, id)
	if err != nil {
		return nil, err
	}
	for _, m := range i.BlockDeviceMappings {
		used[deviceLetter(aws.ToString(m.DeviceName))] = true
	}
	vols, err := c.attachedVolumes(ctx, id)
	if err != nil {
		return nil, err
	}
	for _, v := range vols {
		if a, ok := attachment(v, id); ok {
			used[deviceLetter(aws.ToString(a.Device))] = true
		}
	}
	return used, nil
}

// deviceLetter is the slot a device name takes: /dev/sdf, /dev/xvdf and
// /dev/xvdf1 are one.
func deviceLetter(d string) string {
	d = strings.TrimPrefix(d, "/dev/")
	for _, p := range []string{"xvd", "sd", "hd", "vd"} {
		if rest, ok := strings.CutPrefix(d, p); ok {
			return strings.TrimRight(rest, "0123456789")
		}
	}
	return d
}

func (c *CPI) attachedVolumes(ctx context.Context, id string) ([]types.Volume, error) {
	var vols []types.Volume
	pages := ec2.NewDescribeVolumesPaginator(c.ec2, &ec2.DescribeVolumesInput{
		Filters: []types.Filter{{Name: aws.String("attachment.instance-id"), Values: []string{id}}},
	})
	for pages.HasMorePages() {
		out, err := pages.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		vols = append(vols, out.Volumes...)
	}
	return vols, nil
}

// DetachDisk detaches the volume from the instance and waits until it is
// detached. A disk not attached to the VM is cpi.ErrDiskNotFound.
func (c *CPI) DetachDisk(ctx context.Context, vmCID, diskCID string) error {
	what := fmt.Sprintf("detach disk %s from vm %s", diskCID, vmCID)
	if _, err := c.liveInstance(ctx, what, vmCID); err != nil {
		return err
	}
	v, err := c.volume(ctx, diskCID)
	if err != nil {
		return classify(what, err, cpi.ErrDiskNotFound)
	}
	if _, ok := attachment(v, vmCID); !ok {
		return fmt.Errorf("%s: the disk is not attached to the vm: %w", what, cpi.ErrDiskNotFound)
	}
	// InstanceId is always given: it names the attachment exactly.
	_, err = c.ec2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(diskCID), InstanceId: aws.String(vmCID)})
	if err != nil {
		return classify(what, err, cpi.ErrDiskNotFound)
	}
	return c.wait(ctx, "volume "+diskCID+" detached", func(ctx context.Context) (bool, error) {
		v, err := c.volume(ctx, diskCID)
		if isNotFound(err) {
			return true, nil
		}
		if err != nil {
			return false, classify(what, err, nil)
		}
		_, ok := attachment(v, vmCID)
		return !ok, nil
	})
}

// GetDisks lists the persistent disks attached to the instance: its
// volumes except the root and the ephemeral disk (and any volume EC2
// deletes with the instance).
func (c *CPI) GetDisks(ctx context.Context, vmCID string) ([]string, error) {
	what := "get disks of vm " + vmCID
	inst, err := c.liveInstance(ctx, what, vmCID)
	if err != nil {
		return nil, err
	}
	vols, err := c.attachedVolumes(ctx, vmCID)
	if err != nil {
		return nil, classify(what, err, nil)
	}
	root := deviceLetter(aws.ToString(inst.RootDeviceName))
	disks := []string{}
	for _, v := range vols {
		a, ok := attachment(v, vmCID)
		if !ok || a.State == types.VolumeAttachmentStateDetached || a.State == types.VolumeAttachmentStateDetaching {
			continue
		}
		l := deviceLetter(aws.ToString(a.Device))
		if l == root || l == deviceLetter(ephemeralDevice) || aws.ToBool(a.DeleteOnTermination) {
			continue
		}
		disks = append(disks, aws.ToString(v.VolumeId))
	}
	slices.Sort(disks)
	return disks, nil
}

// SetDiskMetadata tags the volume with the metadata.
func (c *CPI) SetDiskMetadata(ctx context.Context, id string, md map[string]string) error {
	what := "set disk metadata " + id
	if _, err := c.volume(ctx, id); err != nil {
		return classify(what, err, cpi.ErrDiskNotFound)
	}
	tags := metadataTags(md)
	if len(tags) == 0 {
		return nil
	}
	_, err := c.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: tags})
	return classify(what, err, cpi.ErrDiskNotFound)
}

// SnapshotDisk starts an EBS snapshot of the volume, tagged with the
// metadata, and returns its id without waiting for it to complete (EBS
// snapshots are point-in-time at creation).
func (c *CPI) SnapshotDisk(ctx context.Context, id string, md map[string]string) (string, error) {
	what := "snapshot disk " + id
	if _, err := c.volume(ctx, id); err != nil {
		return "", classify(what, err, cpi.ErrDiskNotFound)
	}
	in := &ec2.CreateSnapshotInput{VolumeId: aws.String(id)}
	desc := []string{}
	for _, k := range []string{"deployment", "job", "index"} {
		if md[k] != "" {
			desc = append(desc, md[k])
		}
	}
	if len(desc) > 0 {
		in.Description = aws.String(truncate(strings.Join(desc, "/"), 255))
	}
	tags := metadataTags(md)
	tags = append(tags, types.Tag{Key: aws.String("compleat:disk"), Value: aws.String(id)})
	in.TagSpecifications = []types.TagSpecification{{ResourceType: types.ResourceTypeSnapshot, Tags: tags}}
	out, err := c.ec2.CreateSnapshot(ctx, in)
	if err != nil {
		return "", classify(what, err, cpi.ErrDiskNotFound)
	}
	return aws.ToString(out.SnapshotId), nil
}

// DeleteSnapshot deletes the snapshot. A missing snapshot is success.
func (c *CPI) DeleteSnapshot(ctx context.Context, id string) error {
	if !strings.HasPrefix(id, "snap-") {
		return nil
	}
	_, err := c.ec2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(id)})
	if err != nil && !isNotFound(err) {
		return classify("delete snapshot "+id, err, nil)
	}
	return nil
}
