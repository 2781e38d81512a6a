package machine

import (
	"context"
	"encoding/binary"
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

// The partition every volume image holds: one Linux partition from sector
// 2048 (1 MiB) to the end, described by an MBR, as the agent lays a new
// disk out.
const (
	sectorSize      = 512
	partitionOffset = 2048 * sectorSize
)

// CreateImage makes a sparse volume image of size bytes at path unless one
// is there, with a partition table holding one Linux partition from 1 MiB
// to the end (the agent's layout). An existing image keeps its data and
// grows to size when smaller (a resize; its partition is not grown).
func CreateImage(path string, size int64) error {
	if size <= partitionOffset+sectorSize || size/sectorSize > 1<<32-1 {
		return fmt.Errorf("volume image %s: size %d must be over 1 MiB and within an MBR's 2 TiB", path, size)
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
	if fi.Size() == 0 {
		mbr := make([]byte, sectorSize)
		e := mbr[446:462]
		e[4] = 0x83 // Linux
		binary.LittleEndian.PutUint32(e[8:], partitionOffset/sectorSize)
		binary.LittleEndian.PutUint32(e[12:], uint32(size/sectorSize-partitionOffset/sectorSize))
		mbr[510], mbr[511] = 0x55, 0xaa
		if _, err := f.WriteAt(mbr, 0); err != nil {
			return fmt.Errorf("volume image %s: %w", path, err)
		}
	}
	if fi.Size() < size {
		if err := f.Truncate(size); err != nil {
			return fmt.Errorf("volume image %s: %w", path, err)
		}
	}
	return f.Close()
}

// AttachVolume shows the VM the volume as a disk and its partition, as a
// hypervisor and the guest's kernel show them: the image is attached to a
// loop device (the disk) and, from 1 MiB in, to a second one (the
// partition); both appear as device nodes in the VM's /dev/disk/devices/
// (diskN and diskNp1, the names the agent derives a partition's from), and
// the disk is linked at each of the volume's names under the VM's
// /dev/disk. The kernel's partition scanning is not relied on: some
// kernels (this project's CI) have no MBR support. Attaching an attached
// volume does nothing.
func (h *Host) AttachVolume(ctx context.Context, id string, vol Volume) error {
	v, err := h.lookup(id)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	if err := h.attach(v, vol); err != nil {
		return fmt.Errorf("attach volume %s to vm %s: %w", vol.ID, id, err)
	}
	rec := v.rec.Volumes[vol.ID]
	h.logger.InfoContext(ctx, "attached volume", "vm", id, "volume", vol.ID, "disk", rec.Loop, "partition", rec.PartLoop, "node", rec.Node)
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
		if !filepath.IsLocal(l) || strings.HasPrefix(l, "devices") {
			return fmt.Errorf("link %q: not a relative path under %s outside devices/", l, DevDisk)
		}
	}
	fi, err := os.Stat(vol.Image)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() <= partitionOffset {
		return fmt.Errorf("image %s: not a volume image (see CreateImage)", vol.Image)
	}
	rec := volumeRecord{Image: vol.Image, Links: vol.Links}
	h.loop.Lock()
	rec.Loop, err = attachLoop(vol.Image, 0, 0)
	if err == nil {
		rec.PartLoop, err = attachLoop(vol.Image, partitionOffset, uint64(fi.Size()-partitionOffset))
	}
	h.loop.Unlock()
	if err != nil {
		_ = releaseVolume(v.dir, rec)
		return err
	}
	devices := filepath.Join(v.dir, devDiskDir, "devices")
	if err := os.MkdirAll(devices, 0o755); err != nil {
		_ = releaseVolume(v.dir, rec)
		return err
	}
	for n := 0; ; n++ {
		name := fmt.Sprintf("disk%d", n)
		if _, err := os.Lstat(filepath.Join(devices, name)); err == nil {
			continue
		}
		rec.Node = name
		break
	}
	for _, node := range [][2]string{{rec.Node, rec.Loop}, {rec.Node + "p1", rec.PartLoop}} {
		if err := mknodLike(filepath.Join(devices, node[0]), node[1]); err != nil {
			_ = releaseVolume(v.dir, rec)
			return err
		}
	}
	target := filepath.Join(DevDisk, "devices", rec.Node)
	for _, l := range vol.Links {
		p := filepath.Join(v.dir, devDiskDir, l)
		err := os.MkdirAll(filepath.Dir(p), 0o755)
		if err == nil {
			_ = os.Remove(p)
			err = os.Symlink(target, p)
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

// mknodLike makes a block device node at path for the same device as dev.
func mknodLike(path, dev string) error {
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		return fmt.Errorf("device node for %s: %w", dev, err)
	}
	_ = os.Remove(path)
	if err := unix.Mknod(path, unix.S_IFBLK|0o600, int(st.Rdev)); err != nil {
		return fmt.Errorf("device node %s: %w (the data directory must allow device nodes)", path, err)
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

// releaseVolume removes a volume's links and device nodes and releases its
// loop devices. Only those: the volume may be attached to another VM
// already, through devices of its own.
func releaseVolume(vmDir string, rec volumeRecord) error {
	var paths []string
	for _, l := range rec.Links {
		paths = append(paths, filepath.Join(vmDir, devDiskDir, l))
	}
	if rec.Node != "" {
		paths = append(paths, filepath.Join(vmDir, devDiskDir, "devices", rec.Node), filepath.Join(vmDir, devDiskDir, "devices", rec.Node+"p1"))
	}
	for _, p := range paths {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	var errs []error
	for _, dev := range []string{rec.PartLoop, rec.Loop} {
		if dev != "" {
			errs = append(errs, releaseLoop(dev, rec.Image))
		}
	}
	return errors.Join(errs...)
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

// attachLoop attaches image from offset (sizelimit bytes of it, 0: to the
// end) to a free loop device and returns the device's path. Another process
// may take the free device first; then it tries the next.
func attachLoop(image string, offset, sizelimit uint64) (string, error) {
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
		info := unix.LoopInfo64{Offset: offset, Sizelimit: sizelimit}
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
