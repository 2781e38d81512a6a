package machine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Volume is a cloud volume to show a VM.
type Volume struct {
	// ID is the cloud's id for the volume.
	ID string
	// Image is the file holding the volume's data (see CreateImage).
	Image string
	// Links are the names, relative to /dev/disk, at which the VM sees the
	// volume's device (AWSVolumeLinks, OpenStackVolumeLinks,
	// AzureLUNLinks).
	Links []string
}

// AWSVolumeLinks are the names under /dev/disk of an EBS volume on a Nitro
// instance: the NVMe controller's serial is the volume id without its dash.
func AWSVolumeLinks(volumeID string) []string {
	return []string{"by-id/nvme-Amazon_Elastic_Block_Store_" + strings.ReplaceAll(volumeID, "-", "")}
}

// OpenStackVolumeLinks are the names under /dev/disk of a Cinder volume on
// a KVM instance: the virtio serial is the volume id's first 20 characters.
func OpenStackVolumeLinks(volumeID string) []string {
	serial := volumeID
	if len(serial) > 20 {
		serial = serial[:20]
	}
	return []string{"by-id/virtio-" + serial}
}

// AzureLUNLinks are the names under /dev/disk of an Azure data disk at a
// LUN, as the Azure Linux agent's udev rules make them.
func AzureLUNLinks(lun int) []string {
	n := strconv.Itoa(lun)
	return []string{"azure/scsi1/lun" + n, "azure/data/by-lun/" + n}
}

// CreateImage makes a sparse volume image of size bytes at path unless one
// is there; an existing image keeps its data and grows to size when
// smaller (a resize).
func CreateImage(path string, size int64) error {
	if size <= 0 {
		return fmt.Errorf("volume image %s: size %d must be positive", path, size)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("volume image: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() < size {
		if err := f.Truncate(size); err != nil {
			return fmt.Errorf("volume image %s: %w", path, err)
		}
	}
	return f.Close()
}

// AttachVolume shows the VM the volume: its image is attached to a loop
// device (with partition scanning, so the agent's partition appears as
// /dev/loopNpM) and the device is linked at each of the volume's names
// under the VM's /dev/disk. Attaching an attached volume does nothing.
func (h *Host) AttachVolume(ctx context.Context, id string, vol Volume) error {
	v, err := h.lookup(id)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	if err := h.attach(v, vol); err != nil {
		return fmt.Errorf("attach volume %s to vm %s: %w", vol.ID, id, err)
	}
	h.logger.InfoContext(ctx, "attached volume", "vm", id, "volume", vol.ID, "device", v.rec.Volumes[vol.ID].Loop)
	return nil
}

func (h *Host) attach(v *vm, vol Volume) error {
	if !v.rec.Isolated {
		return ErrNoVolumes
	}
	if _, ok := v.rec.Volumes[vol.ID]; ok {
		return nil
	}
	if vol.ID == "" || len(vol.Links) == 0 {
		return errors.New("a volume needs an id and at least one link")
	}
	for _, l := range vol.Links {
		if !filepath.IsLocal(l) {
			return fmt.Errorf("link %q: not a relative path under %s", l, DevDisk)
		}
	}
	if fi, err := os.Stat(vol.Image); err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("image %s: not a regular file (see CreateImage)", vol.Image)
	}
	h.loop.Lock()
	dev, err := attachLoop(vol.Image)
	h.loop.Unlock()
	if err != nil {
		return err
	}
	rec := volumeRecord{Image: vol.Image, Loop: dev, Links: vol.Links}
	for _, l := range vol.Links {
		p := filepath.Join(v.dir, devDiskDir, l)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
			_ = os.Remove(p)
			err = os.Symlink(dev, p)
		}
		if err != nil {
			_ = releaseVolume(v.dir, rec)
			return fmt.Errorf("link %s: %w", l, err)
		}
	}
	if v.rec.Volumes == nil {
		v.rec.Volumes = map[string]volumeRecord{}
	}
	v.rec.Volumes[vol.ID] = rec
	if err := h.save(v); err != nil {
		delete(v.rec.Volumes, vol.ID)
		_ = releaseVolume(v.dir, rec)
		return err
	}
	return nil
}

// DetachVolume takes the volume away from the VM: its links go and its
// loop device is released (at once, or when the VM last unmounts it).
// Detaching a volume that is not attached does nothing.
func (h *Host) DetachVolume(ctx context.Context, id, volumeID string) error {
	v, err := h.lookup(id)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	rec, ok := v.rec.Volumes[volumeID]
	if !ok {
		return nil
	}
	if err := releaseVolume(v.dir, rec); err != nil {
		return fmt.Errorf("detach volume %s from vm %s: %w", volumeID, id, err)
	}
	delete(v.rec.Volumes, volumeID)
	if err := h.save(v); err != nil {
		return fmt.Errorf("detach volume %s from vm %s: %w", volumeID, id, err)
	}
	h.logger.InfoContext(ctx, "detached volume", "vm", id, "volume", volumeID)
	return nil
}

// releaseVolume removes a volume's links and releases its loop device.
// Only that device: the volume may be attached to another VM already,
// through a device of its own.
func releaseVolume(vmDir string, rec volumeRecord) error {
	for _, l := range rec.Links {
		if err := os.Remove(filepath.Join(vmDir, devDiskDir, l)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return releaseLoop(rec.Loop, rec.Image)
}

// releaseLoop detaches the loop device dev if the image still backs it. A
// device still mounted (in a VM's namespace) is marked to detach itself when
// it is last unmounted.
func releaseLoop(dev, image string) error {
	var img unix.Stat_t
	if err := unix.Stat(image, &img); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("release %s: %w", dev, err)
	}
	defer unix.Close(fd)
	info, err := unix.IoctlLoopGetStatus64(fd)
	if err != nil || info.Device != uint64(img.Dev) || info.Inode != img.Ino {
		return nil // free already, or backed by something else now
	}
	if err := unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0); err != nil && !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("release %s (backed by %s): %w", dev, image, err)
	}
	return nil
}

// attachLoop attaches image to a free loop device with partition scanning
// and returns the device's path. Another process may take the free device
// first; then it tries the next.
func attachLoop(image string) (string, error) {
	ctl, err := unix.Open("/dev/loop-control", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("loop devices: %w", err)
	}
	defer unix.Close(ctl)
	img, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		return "", err
	}
	defer img.Close()
	for attempt := 0; ; attempt++ {
		n, err := unix.IoctlRetInt(ctl, unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", fmt.Errorf("find a free loop device: %w", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		fd, err := openDevice(dev)
		if err != nil {
			return "", err
		}
		err = unix.IoctlSetInt(fd, unix.LOOP_SET_FD, int(img.Fd()))
		if errors.Is(err, unix.EBUSY) && attempt < 20 {
			unix.Close(fd)
			continue
		}
		if err != nil {
			unix.Close(fd)
			return "", fmt.Errorf("attach %s to %s: %w", image, dev, err)
		}
		info := unix.LoopInfo64{Flags: unix.LO_FLAGS_PARTSCAN}
		copy(info.File_name[:], image)
		if err := unix.IoctlLoopSetStatus64(fd, &info); err != nil {
			_ = unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0)
			unix.Close(fd)
			return "", fmt.Errorf("set up %s: %w", dev, err)
		}
		unix.Close(fd)
		return dev, nil
	}
}

// openDevice opens a loop device, waiting briefly for its node to appear
// after LOOP_CTL_GET_FREE made it.
func openDevice(dev string) (int, error) {
	for i := 0; ; i++ {
		fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err == nil {
			return fd, nil
		}
		if !errors.Is(err, unix.ENOENT) || i == 50 {
			return -1, fmt.Errorf("open %s: %w", dev, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
