// Package disk mounts the VM's persistent disk at <base>/store and moves
// data between disks (migrate_disk).
//
// Where a disk comes from depends on the CPI's hint (cpi.DiskHint):
//
//   - a directory (local CPI): bind-mounted at the store when the agent is
//     root, else the store becomes a symlink to it;
//   - an image file (local CPI): attached to a loop device, formatted ext4
//     the first time, mounted (root only);
//   - a device on a cloud: found from the hint (a device path, an id under
//     /dev/disk/by-id, an Azure LUN, an OpenStack volume id), given one
//     partition and an ext4 file system the first time, and mounted.
//
// A disk mounted while another is the store goes to the migration target
// (<base>/store_migration_target); Migrate copies the store there and makes
// the new disk the store. What is mounted is recorded in <base>/bosh/disks.json
// so that a restarted agent knows it.
package disk

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/compleat/compleat/agent/layout"
	"github.com/compleat/compleat/cpi"
)

// Mount kinds.
const (
	KindBind    = "bind"
	KindSymlink = "symlink"
	KindDevice  = "device"
)

// Mount is one mounted disk.
type Mount struct {
	CID    string `json:"cid"`
	Kind   string `json:"kind"`
	Source string `json:"source"` // directory, image, or partition device
	Target string `json:"target"` // the store or the migration target
	Loop   string `json:"loop,omitempty"`
}

// Manager mounts disks. Root says whether it may mount (default: whether
// the agent runs as root).
type Manager struct {
	Layout layout.Layout
	Root   bool
	Logger *slog.Logger
	// DeviceWait bounds the wait for a cloud device to appear (default 2m).
	DeviceWait time.Duration
	// DevRoot is where /dev is looked for when a hint names a device by id,
	// volume id or LUN (default "/"; tests lay out a tree elsewhere).
	DevRoot string

	mu sync.Mutex
}

// New returns a manager for l.
func New(l layout.Layout, logger *slog.Logger) *Manager {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{Layout: l, Root: os.Geteuid() == 0, Logger: logger}
}

func (m *Manager) stateFile() string { return filepath.Join(m.Layout.Bosh(), "disks.json") }

func (m *Manager) load() (map[string]Mount, error) {
	b, err := os.ReadFile(m.stateFile())
	if errors.Is(err, os.ErrNotExist) {
		return map[string]Mount{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read disk state: %w", err)
	}
	mounts := map[string]Mount{}
	if err := json.Unmarshal(b, &mounts); err != nil {
		return nil, fmt.Errorf("disk state %s: %w", m.stateFile(), err)
	}
	return mounts, nil
}

func (m *Manager) save(mounts map[string]Mount) error {
	b, err := json.MarshalIndent(mounts, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(m.Layout.Bosh(), 0o700); err != nil {
		return err
	}
	tmp := m.stateFile() + ".new"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write disk state: %w", err)
	}
	return os.Rename(tmp, m.stateFile())
}

// List returns the cids of the mounted disks, sorted.
func (m *Manager) List() ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mounts, err := m.load()
	if err != nil {
		return nil, err
	}
	cids := []string{}
	for cid := range mounts {
		cids = append(cids, cid)
	}
	sort.Strings(cids)
	return cids, nil
}

// Mounts returns what is mounted, by cid.
func (m *Manager) Mounts() (map[string]Mount, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.load()
}

// MountDisk mounts the disk cid located by hint at the store, or at the
// migration target when another disk is the store. Mounting a disk that is
// mounted already does nothing.
func (m *Manager) MountDisk(ctx context.Context, cid string, hint cpi.DiskHint) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	mounts, err := m.load()
	if err != nil {
		return err
	}
	if _, ok := mounts[cid]; ok {
		return nil
	}
	target := m.Layout.Store()
	for _, mt := range mounts {
		if mt.Target == target {
			target = m.Layout.StoreMigrationTarget()
		}
	}
	for _, mt := range mounts {
		if mt.Target == target {
			return fmt.Errorf("mount disk %s: %s already holds disk %s", cid, target, mt.CID)
		}
	}
	mt, err := m.mount(ctx, cid, hint, target)
	if err != nil {
		return fmt.Errorf("mount disk %s: %w", cid, err)
	}
	mounts[cid] = mt
	if err := m.save(mounts); err != nil {
		return err
	}
	m.Logger.Info("disk mounted", "disk", cid, "kind", mt.Kind, "target", mt.Target)
	return nil
}

func (m *Manager) mount(ctx context.Context, cid string, hint cpi.DiskHint, target string) (Mount, error) {
	if hint.Path != "" {
		fi, err := os.Stat(hint.Path)
		switch {
		case err == nil && fi.IsDir():
			return m.mountDir(cid, hint.Path, target)
		case err == nil && fi.Mode().IsRegular():
			return m.mountImage(ctx, cid, hint.Path, target)
		}
	}
	return m.mountDevice(ctx, cid, hint, target)
}

func (m *Manager) mountDir(cid, dir, target string) (Mount, error) {
	if !m.Root {
		if err := replaceWithSymlink(dir, target); err != nil {
			return Mount{}, err
		}
		return Mount{CID: cid, Kind: KindSymlink, Source: dir, Target: target}, nil
	}
	if err := ensureMountpoint(target); err != nil {
		return Mount{}, err
	}
	if err := unix.Mount(dir, target, "", unix.MS_BIND, ""); err != nil {
		return Mount{}, fmt.Errorf("bind %s at %s: %w", dir, target, err)
	}
	return Mount{CID: cid, Kind: KindBind, Source: dir, Target: target}, nil
}

func (m *Manager) mountImage(ctx context.Context, cid, image, target string) (Mount, error) {
	if !m.Root {
		return Mount{}, fmt.Errorf("disk image %s needs root to mount", image)
	}
	out, err := run(ctx, "losetup", "--find", "--show", image)
	if err != nil {
		return Mount{}, err
	}
	loop := strings.TrimSpace(out)
	if err := formatOnce(ctx, loop); err != nil {
		run(context.WithoutCancel(ctx), "losetup", "-d", loop)
		return Mount{}, err
	}
	if err := ensureMountpoint(target); err != nil {
		return Mount{}, err
	}
	if _, err := run(ctx, "mount", loop, target); err != nil {
		run(context.WithoutCancel(ctx), "losetup", "-d", loop)
		return Mount{}, err
	}
	return Mount{CID: cid, Kind: KindDevice, Source: image, Target: target, Loop: loop}, nil
}

// mountDevice finds a cloud device, partitions and formats it once, and
// mounts its first partition.
func (m *Manager) mountDevice(ctx context.Context, cid string, hint cpi.DiskHint, target string) (Mount, error) {
	if !m.Root {
		return Mount{}, errors.New("mounting a device needs root")
	}
	dev, err := m.findDevice(ctx, hint)
	if err != nil {
		return Mount{}, err
	}
	part, err := partitionOnce(ctx, dev)
	if err != nil {
		return Mount{}, err
	}
	if err := formatOnce(ctx, part); err != nil {
		return Mount{}, err
	}
	if err := ensureMountpoint(target); err != nil {
		return Mount{}, err
	}
	if _, err := run(ctx, "mount", part, target); err != nil {
		return Mount{}, err
	}
	return Mount{CID: cid, Kind: KindDevice, Source: part, Target: target}, nil
}

// findDevice waits for the device the hint names to appear.
func (m *Manager) findDevice(ctx context.Context, hint cpi.DiskHint) (string, error) {
	root := m.DevRoot
	if root == "" {
		root = "/"
	}
	byID := filepath.Join(root, "dev", "disk", "by-id")
	// Ids first: a device path is only what the cloud asked for, and Nova
	// (among others) often attaches under another name (another disk may
	// hold the path); the path is the fallback when no id shows up.
	var candidates []string
	if hint.ID != "" {
		candidates = append(candidates, filepath.Join(byID, "*"+globEscape(hint.ID)+"*"))
	}
	if hint.VolumeID != "" {
		v := globEscape(hint.VolumeID)
		// AWS NVMe: the serial is the volume id without its dash.
		candidates = append(candidates, filepath.Join(byID, "nvme-*"+strings.ReplaceAll(v, "-", "")+"*"))
		// OpenStack virtio: the serial is the volume id's first 20 characters.
		if len(v) > 20 {
			v = v[:20]
		}
		candidates = append(candidates, filepath.Join(byID, "virtio-"+v+"*"), filepath.Join(byID, "scsi-*"+v+"*"))
	}
	if hint.LUN != "" {
		lun := globEscape(hint.LUN)
		candidates = append(candidates,
			filepath.Join(root, "dev", "disk", "azure", "scsi1", "lun"+lun),
			filepath.Join(root, "dev", "disk", "azure", "data", "by-lun", lun))
	}
	if len(candidates) == 0 && hint.Path == "" {
		return "", errors.New("disk hint locates nothing (no path, id, volume id or lun)")
	}
	wait := m.DeviceWait
	if wait <= 0 {
		wait = 2 * time.Minute
	}
	start := time.Now()
	deadline := start.Add(wait)
	// With an id to look for, the path is tried only once the id has had
	// time to appear (udev links a new disk within a second or two).
	pathAfter := min(wait/2, 15*time.Second)
	if len(candidates) == 0 {
		pathAfter = 0
	}
	for {
		for _, pattern := range candidates {
			matches, _ := filepath.Glob(pattern)
			for _, p := range matches {
				if strings.Contains(filepath.Base(p), "-part") {
					continue
				}
				if real, err := filepath.EvalSymlinks(p); err == nil {
					return real, nil
				}
			}
		}
		if hint.Path != "" && time.Since(start) >= pathAfter {
			if real, err := filepath.EvalSymlinks(hint.Path); err == nil {
				if len(candidates) > 0 && m.Logger != nil {
					m.Logger.Warn("no device by id for the disk hint; using its path", "hint_path", hint.Path, "volume_id", hint.VolumeID)
				}
				return real, nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no device for hint %+v after %v", hint, wait)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(min(time.Second, wait/4)):
		}
	}
}

func globEscape(s string) string {
	r := strings.NewReplacer(`*`, `\*`, `?`, `\?`, `[`, `\[`, `\`, `\\`, "/", "_")
	return r.Replace(s)
}

// partitionName is the device of dev's first partition.
func partitionName(dev string) string {
	if last := dev[len(dev)-1]; last >= '0' && last <= '9' {
		return dev + "p1" // nvme0n1 → nvme0n1p1
	}
	return dev + "1"
}

// partitionOnce gives dev one Linux partition spanning it unless it has a
// partition table, asks the kernel to read the table, and returns the
// partition's device.
func partitionOnce(ctx context.Context, dev string) (string, error) {
	part := partitionName(dev)
	if _, err := os.Stat(part); err == nil {
		return part, nil
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return "", fmt.Errorf("partition %s: %w", dev, err)
	}
	defer f.Close()
	if err := writeMBROnce(f); err != nil {
		return "", fmt.Errorf("partition %s: %w", dev, err)
	}
	if err := unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0); err != nil {
		return "", fmt.Errorf("partition %s: re-read partition table: %w", dev, err)
	}
	for i := 0; i < 50; i++ {
		if _, err := os.Stat(part); err == nil {
			return part, nil
		}
		if i == 10 {
			// Some kernels (loop devices in microVMs among them) answer
			// BLKRRPART without adding the partition: add it as partx -a
			// does, from the table on the disk.
			if err := addPartition(f); err != nil {
				return "", fmt.Errorf("partition %s: %s did not appear, and adding it failed: %w", dev, part, err)
			}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return "", fmt.Errorf("partition %s: %s did not appear", dev, part)
}

// addPartition tells the kernel about the first partition of the table
// on f (BLKPG_ADD_PARTITION); a partition it knows already is no error.
func addPartition(f *os.File) error {
	sector := make([]byte, sectorSize)
	if _, err := f.ReadAt(sector, 0); err != nil {
		return fmt.Errorf("read first sector: %w", err)
	}
	e := sector[mbrEntryOffset : mbrEntryOffset+16]
	start := int64(binary.LittleEndian.Uint32(e[8:12])) * sectorSize
	length := int64(binary.LittleEndian.Uint32(e[12:16])) * sectorSize
	if sector[510] != 0x55 || sector[511] != 0xaa || length == 0 {
		return errors.New("no partition table on the disk")
	}
	p := unix.BlkpgPartition{Start: start, Length: length, Pno: 1}
	arg := unix.BlkpgIoctlArg{Op: unix.BLKPG_ADD_PARTITION, Datalen: int32(unsafe.Sizeof(p)), Data: (*byte)(unsafe.Pointer(&p))}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKPG, uintptr(unsafe.Pointer(&arg)))
	if errno != 0 && errno != unix.EBUSY {
		return fmt.Errorf("BLKPG_ADD_PARTITION: %w", errno)
	}
	return nil
}

// Partition table layout (MBR): one primary Linux partition (type 0x83)
// from sector 2048 (1 MiB, aligned) to the end of the disk.
const (
	sectorSize     = 512
	firstSector    = 2048
	maxMBRSectors  = 1<<32 - 1
	mbrEntryOffset = 446
)

// writeMBROnce writes a partition table to the device or file f unless its
// first sector already holds one (a boot signature and a used entry).
func writeMBROnce(f *os.File) error {
	sector := make([]byte, sectorSize)
	if _, err := f.ReadAt(sector, 0); err != nil {
		return fmt.Errorf("read first sector: %w", err)
	}
	if sector[510] == 0x55 && sector[511] == 0xaa && sector[mbrEntryOffset+4] != 0 {
		return nil
	}
	size, err := deviceSize(f)
	if err != nil {
		return err
	}
	mbr, err := partitionTable(size)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(mbr, 0); err != nil {
		return fmt.Errorf("write partition table: %w", err)
	}
	return f.Sync()
}

func deviceSize(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if fi.Mode().IsRegular() {
		return fi.Size(), nil
	}
	var size uint64
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size)))
	if errno != 0 {
		return 0, fmt.Errorf("device size: %w", errno)
	}
	return int64(size), nil
}

// partitionTable returns a first sector holding an MBR with one Linux
// partition over a disk of size bytes. Disks beyond the MBR's 2 TiB need
// GPT, which is not supported.
func partitionTable(size int64) ([]byte, error) {
	sectors := size / sectorSize
	if sectors <= firstSector+1 {
		return nil, fmt.Errorf("disk of %d bytes is too small to partition", size)
	}
	if sectors > maxMBRSectors {
		return nil, fmt.Errorf("disk of %d bytes is larger than an MBR partition table can describe (GPT is not supported)", size)
	}
	mbr := make([]byte, sectorSize)
	e := mbr[mbrEntryOffset : mbrEntryOffset+16]
	e[0] = 0x00                            // not bootable
	copy(e[1:4], []byte{0xfe, 0xff, 0xff}) // CHS start: use LBA
	e[4] = 0x83                            // Linux
	copy(e[5:8], []byte{0xfe, 0xff, 0xff}) // CHS end: use LBA
	binary.LittleEndian.PutUint32(e[8:12], firstSector)
	binary.LittleEndian.PutUint32(e[12:16], uint32(sectors-firstSector))
	mbr[510], mbr[511] = 0x55, 0xaa
	return mbr, nil
}

// formatOnce makes an ext4 file system on dev unless it has one.
func formatOnce(ctx context.Context, dev string) error {
	out, _ := run(ctx, "blkid", "-o", "value", "-s", "TYPE", dev)
	if strings.TrimSpace(out) != "" {
		return nil
	}
	_, err := run(ctx, "mkfs.ext4", "-q", "-F", dev)
	return err
}

func run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// ensureMountpoint makes target an empty directory (replacing a symlink
// left by a non-root mount).
func ensureMountpoint(target string) error {
	if fi, err := os.Lstat(target); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		if err := os.Remove(target); err != nil {
			return err
		}
	}
	return os.MkdirAll(target, 0o755)
}

func replaceWithSymlink(dir, target string) error {
	if fi, err := os.Lstat(target); err == nil {
		if fi.Mode()&fs.ModeSymlink != 0 || fi.IsDir() {
			if err := os.Remove(target); err != nil {
				return fmt.Errorf("replace %s with a link: %w (is it empty?)", target, err)
			}
		}
	}
	return os.Symlink(dir, target)
}

// UnmountDisk unmounts the disk cid; unknown disks are not an error.
func (m *Manager) UnmountDisk(ctx context.Context, cid string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	mounts, err := m.load()
	if err != nil {
		return err
	}
	mt, ok := mounts[cid]
	if !ok {
		return nil
	}
	if err := m.unmount(ctx, mt); err != nil {
		return fmt.Errorf("unmount disk %s: %w", cid, err)
	}
	delete(mounts, cid)
	if err := m.save(mounts); err != nil {
		return err
	}
	m.Logger.Info("disk unmounted", "disk", cid, "target", mt.Target)
	return nil
}

func (m *Manager) unmount(ctx context.Context, mt Mount) error {
	switch mt.Kind {
	case KindSymlink:
		if err := os.Remove(mt.Target); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return os.MkdirAll(mt.Target, 0o755)
	default:
		if err := unmountRetry(ctx, mt.Target); err != nil {
			return err
		}
		if mt.Loop != "" {
			if _, err := run(ctx, "losetup", "-d", mt.Loop); err != nil {
				m.Logger.Warn("detach loop device", "loop", mt.Loop, "err", err)
			}
		}
		return nil
	}
}

func unmountRetry(ctx context.Context, target string) error {
	var err error
	for i := 0; i < 20; i++ {
		if err = unix.Unmount(target, 0); err == nil || errors.Is(err, unix.EINVAL) {
			return nil // EINVAL: not mounted
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return fmt.Errorf("unmount %s: %w", target, err)
}

// Migrate copies the store onto the disk mounted at the migration target,
// unmounts the old disk and mounts the new one at the store.
func (m *Manager) Migrate(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	mounts, err := m.load()
	if err != nil {
		return err
	}
	var from, to *Mount
	for _, mt := range mounts {
		switch mt.Target {
		case m.Layout.Store():
			from = &mt
		case m.Layout.StoreMigrationTarget():
			to = &mt
		}
	}
	if from == nil || to == nil {
		return errors.New("migrate disk: need a disk at the store and one at the migration target")
	}
	if err := copyTree(ctx, m.Layout.Store(), m.Layout.StoreMigrationTarget()); err != nil {
		return fmt.Errorf("migrate disk %s to %s: %w", from.CID, to.CID, err)
	}
	if err := m.unmount(ctx, *from); err != nil {
		return fmt.Errorf("migrate disk: unmount old disk %s: %w", from.CID, err)
	}
	delete(mounts, from.CID)
	if err := m.unmount(ctx, *to); err != nil {
		return fmt.Errorf("migrate disk: unmount new disk %s from the migration target: %w", to.CID, err)
	}
	moved, err := m.remount(ctx, *to, m.Layout.Store())
	if err != nil {
		delete(mounts, to.CID)
		m.save(mounts)
		return fmt.Errorf("migrate disk: mount new disk %s at the store: %w", to.CID, err)
	}
	mounts[to.CID] = moved
	if err := m.save(mounts); err != nil {
		return err
	}
	m.Logger.Info("disk migrated", "from", from.CID, "to", to.CID)
	return nil
}

func (m *Manager) remount(ctx context.Context, mt Mount, target string) (Mount, error) {
	switch mt.Kind {
	case KindSymlink:
		if err := replaceWithSymlink(mt.Source, target); err != nil {
			return Mount{}, err
		}
	case KindBind:
		if err := ensureMountpoint(target); err != nil {
			return Mount{}, err
		}
		if err := unix.Mount(mt.Source, target, "", unix.MS_BIND, ""); err != nil {
			return Mount{}, err
		}
	default:
		if fi, err := os.Stat(mt.Source); err == nil && fi.Mode().IsRegular() {
			return m.mountImage(ctx, mt.CID, mt.Source, target)
		}
		if err := ensureMountpoint(target); err != nil {
			return Mount{}, err
		}
		if _, err := run(ctx, "mount", mt.Source, target); err != nil {
			return Mount{}, err
		}
	}
	mt.Target = target
	return mt, nil
}

// copyTree copies src's contents into dst, keeping modes, owners (when
// root), symlinks and modification times.
func copyTree(ctx context.Context, src, dst string) error {
	src, err := filepath.EvalSymlinks(src)
	if err != nil {
		return err
	}
	dst, err = filepath.EvalSymlinks(dst)
	if err != nil {
		return err
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if rel == "lost+found" && d.IsDir() {
			return filepath.SkipDir
		}
		out := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if err := os.MkdirAll(out, info.Mode().Perm()); err != nil {
				return err
			}
			os.Chmod(out, info.Mode().Perm())
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			os.Remove(out)
			if err := os.Symlink(link, out); err != nil {
				return err
			}
		case info.Mode().IsRegular():
			if err := copyFile(p, out, info.Mode().Perm()); err != nil {
				return err
			}
		default:
			return nil
		}
		if st, ok := info.Sys().(*unix.Stat_t); ok && os.Geteuid() == 0 {
			os.Lchown(out, int(st.Uid), int(st.Gid))
		}
		if info.Mode()&fs.ModeSymlink == 0 {
			os.Chtimes(out, info.ModTime(), info.ModTime())
		}
		return nil
	})
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Restore mounts again the disks recorded as mounted whose mount is gone
// (the VM rebooted, or a new mount namespace): the agent calls it at start.
func (m *Manager) Restore(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	mounts, err := m.load()
	if err != nil {
		return err
	}
	var errs []error
	for _, mt := range mounts {
		if m.isMounted(mt) {
			continue
		}
		if mt.Kind != KindSymlink && !m.Root {
			errs = append(errs, fmt.Errorf("restore disk %s: mounting needs root", mt.CID))
			continue
		}
		restored, err := m.remount(ctx, mt, mt.Target)
		if err != nil {
			errs = append(errs, fmt.Errorf("restore disk %s at %s: %w", mt.CID, mt.Target, err))
			continue
		}
		mounts[mt.CID] = restored
		m.Logger.Info("disk mounted again", "disk", mt.CID, "target", mt.Target)
	}
	if err := m.save(mounts); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (m *Manager) isMounted(mt Mount) bool {
	if mt.Kind == KindSymlink {
		link, err := os.Readlink(mt.Target)
		return err == nil && link == mt.Source
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	target, err := filepath.EvalSymlinks(mt.Target)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && unescapeMountPath(f[4]) == target {
			return true
		}
	}
	return false
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
