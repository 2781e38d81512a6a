package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/proctree"
)

// The files of a disk directory, <data_dir>/disks/<cid>/, and of a snapshot
// directory, <data_dir>/snapshots/<cid>/.
const (
	diskRecordFile     = "disk.json"
	snapshotRecordFile = "snapshot.json"
	dataDirName        = "data"     // a directory disk's contents
	imageFileName      = "disk.img" // an image disk's contents
)

// The types of disk (the "type" disk cloud property).
const (
	diskTypeDirectory = "directory"
	diskTypeImage     = "image"
)

// diskRecord is what the local CPI knows about a persistent disk.
type diskRecord struct {
	CID    string `json:"cid"`
	Type   string `json:"type"` // directory or image
	SizeMB int64  `json:"size_mb"`
	// VMCID is the VM the disk is attached to, or "".
	VMCID     string            `json:"vm_cid,omitempty"`
	Metadata  map[string]string `json:"metadata,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	// Tags are the create request's tags, by which ListDisks finds the disk.
	Tags map[string]string `json:"tags,omitempty"`
}

// snapshotRecord describes a snapshot: a copy of a disk's contents.
type snapshotRecord struct {
	CID       string            `json:"cid"`
	DiskCID   string            `json:"disk_cid"`
	Type      string            `json:"type"`
	SizeMB    int64             `json:"size_mb"`
	Metadata  map[string]string `json:"metadata,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
}

func (c *CPI) diskDir(cid string) string { return c.path(kindDisk, cid) }

// contents is where the disk's contents live: the path the attach hint
// gives the agent.
func (c *CPI) contents(rec diskRecord) string {
	if rec.Type == diskTypeImage {
		return filepath.Join(c.diskDir(rec.CID), imageFileName)
	}
	return filepath.Join(c.diskDir(rec.CID), dataDirName)
}

// readDisk returns the disk's record, or cpi.ErrDiskNotFound.
func (c *CPI) readDisk(cid string) (diskRecord, error) {
	var rec diskRecord
	if !validCID(kindDisk, cid) {
		return rec, fmt.Errorf("disk %q: %w", cid, cpi.ErrDiskNotFound)
	}
	if err := readJSON(filepath.Join(c.diskDir(cid), diskRecordFile), &rec); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return rec, fmt.Errorf("disk %s: %w", cid, cpi.ErrDiskNotFound)
		}
		return rec, fmt.Errorf("disk %s: %w", cid, err)
	}
	if rec.Type == "" {
		rec.Type = diskTypeDirectory
	}
	return rec, nil
}

func (c *CPI) writeDisk(rec diskRecord) error {
	return writeJSON(filepath.Join(c.diskDir(rec.CID), diskRecordFile), rec, 0o644)
}

// attachedTo returns the VM the disk is attached to, ignoring an attachment
// to a VM that no longer exists.
func (c *CPI) attachedTo(rec diskRecord) string {
	if rec.VMCID == "" {
		return ""
	}
	if _, err := os.Stat(filepath.Join(c.vmDir(rec.VMCID), vmRecordFile)); err != nil {
		return ""
	}
	return rec.VMCID
}

// CreateDisk makes an empty disk of the given size. The cloud property
// "type" chooses a directory (the default; the size is recorded, not
// enforced) or an image file (a sparse file of the size, which the agent
// formats and loop-mounts, so the size is real).
func (c *CPI) CreateDisk(ctx context.Context, req cpi.CreateDiskRequest) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("create disk: %w", err)
	}
	fields, err := objectFields(req.CloudProperties)
	if err != nil {
		return "", err
	}
	typ := diskTypeDirectory
	for k, v := range fields {
		if k != "type" {
			return "", cpi.InvalidCloudProperty(k, "unknown disk cloud property (the local cpi knows type)")
		}
		if err := json.Unmarshal(v, &typ); err != nil || (typ != diskTypeDirectory && typ != diskTypeImage) {
			return "", cpi.InvalidCloudProperty("type", "must be \"directory\" or \"image\", not %s", v)
		}
	}
	if req.SizeMB <= 0 {
		return "", fmt.Errorf("create disk: size must be positive, not %d MB", req.SizeMB)
	}
	if req.VMCID != "" {
		// Every local disk is near every VM, but only an existing VM.
		if _, err := c.readVM(req.VMCID); err != nil {
			return "", fmt.Errorf("create disk near vm %s: %w", req.VMCID, err)
		}
	}
	cid := newCID(kindDisk)
	stage, err := c.stage(cid)
	if err != nil {
		return "", fmt.Errorf("create disk: %w", err)
	}
	defer os.RemoveAll(stage)
	if typ == diskTypeImage {
		err = makeImage(filepath.Join(stage, imageFileName), req.SizeMB)
	} else {
		err = os.Mkdir(filepath.Join(stage, dataDirName), 0o755)
	}
	if err != nil {
		return "", fmt.Errorf("create disk: %w", err)
	}
	rec := diskRecord{CID: cid, Type: typ, SizeMB: req.SizeMB, CreatedAt: time.Now().UTC(), Tags: req.Tags}
	if err := writeJSON(filepath.Join(stage, diskRecordFile), rec, 0o644); err != nil {
		return "", fmt.Errorf("create disk: %w", err)
	}
	if err := os.Rename(stage, c.diskDir(cid)); err != nil {
		return "", fmt.Errorf("create disk: %w", err)
	}
	c.logger.InfoContext(ctx, "created disk", "disk", cid, "type", typ, "size_mb", req.SizeMB)
	return cid, nil
}

// makeImage makes a sparse file of sizeMB megabytes.
func makeImage(path string, sizeMB int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(sizeMB << 20); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// DeleteDisk removes the disk and its contents. Like a cloud volume in use,
// a disk attached to an existing VM is not deleted: detach it first.
// Deleting a missing disk succeeds.
func (c *CPI) DeleteDisk(ctx context.Context, cid string) error {
	if !validCID(kindDisk, cid) {
		return nil
	}
	unlock, err := c.lock(ctx)
	if err != nil {
		return fmt.Errorf("delete disk %s: %w", cid, err)
	}
	var gone string
	rec, err := c.readDisk(cid)
	switch {
	case errors.Is(err, cpi.ErrDiskNotFound):
		gone, err = c.hide(c.diskDir(cid)) // debris of a failed create, if any
	case err != nil:
	case c.attachedTo(rec) != "":
		err = fmt.Errorf("disk is attached to vm %s: detach it first", rec.VMCID)
	default:
		if rec.Type == diskTypeImage {
			err = proctree.ReleaseLoops(c.contents(rec))
		}
		if err == nil {
			gone, err = c.hide(c.diskDir(cid))
		}
	}
	unlock()
	if err == nil && gone != "" {
		err = os.RemoveAll(gone)
	}
	if err != nil {
		return fmt.Errorf("delete disk %s: %w", cid, err)
	}
	return nil
}

// ResizeDisk records the disk's new size, and grows an image disk's file to
// it. Disks only grow, as in BOSH's clouds: a smaller size is refused.
func (c *CPI) ResizeDisk(ctx context.Context, cid string, sizeMB int64) error {
	if c.noResize {
		return fmt.Errorf("resize disk %s: this cpi is configured with resize_disk: false: %w", cid, cpi.ErrNotImplemented)
	}
	unlock, err := c.lock(ctx)
	if err != nil {
		return fmt.Errorf("resize disk %s: %w", cid, err)
	}
	defer unlock()
	rec, err := c.readDisk(cid)
	if err != nil {
		return fmt.Errorf("resize disk: %w", err)
	}
	if sizeMB < rec.SizeMB {
		return fmt.Errorf("resize disk %s: cannot shrink from %d MB to %d MB", cid, rec.SizeMB, sizeMB)
	}
	if rec.Type == diskTypeImage {
		// The file grows; the agent grows the file system in it.
		if err := os.Truncate(c.contents(rec), sizeMB<<20); err != nil {
			return fmt.Errorf("resize disk %s: %w", cid, err)
		}
	}
	rec.SizeMB = sizeMB
	if err := c.writeDisk(rec); err != nil {
		return fmt.Errorf("resize disk %s: %w", cid, err)
	}
	return nil
}

// AttachDisk records that the disk is attached to the VM, adds it to the
// agent's settings (disks.persistent, read again when the agent restarts)
// and returns the path of the disk's directory or image file, which the agent
// bind-mounts, or loop-mounts, at its store path. Attaching a disk again to the same VM succeeds.
func (c *CPI) AttachDisk(ctx context.Context, vmCID, diskCID string) (cpi.DiskHint, error) {
	unlock, err := c.lock(ctx)
	if err != nil {
		return cpi.DiskHint{}, fmt.Errorf("attach disk %s to vm %s: %w", diskCID, vmCID, err)
	}
	defer unlock()
	if _, err := c.readVM(vmCID); err != nil {
		return cpi.DiskHint{}, fmt.Errorf("attach disk %s: %w", diskCID, err)
	}
	rec, err := c.readDisk(diskCID)
	if err != nil {
		return cpi.DiskHint{}, fmt.Errorf("attach to vm %s: %w", vmCID, err)
	}
	if other := c.attachedTo(rec); other != "" && other != vmCID {
		return cpi.DiskHint{}, fmt.Errorf("attach disk %s to vm %s: already attached to vm %s", diskCID, vmCID, other)
	}
	hint := cpi.DiskHint{Path: c.contents(rec)}
	rec.VMCID = vmCID
	if err := c.writeDisk(rec); err != nil {
		return cpi.DiskHint{}, fmt.Errorf("attach disk %s to vm %s: %w", diskCID, vmCID, err)
	}
	if err := c.setPersistentDisk(vmCID, diskCID, &hint); err != nil {
		return cpi.DiskHint{}, fmt.Errorf("attach disk %s to vm %s: %w", diskCID, vmCID, err)
	}
	c.logger.InfoContext(ctx, "attached disk", "disk", diskCID, "vm", vmCID)
	return hint, nil
}

// DetachDisk records that the disk is no longer attached to the VM.
// Detaching a disk that is attached to no VM succeeds; a disk attached to
// another VM is not this VM's to detach (cpi.ErrDiskNotFound).
func (c *CPI) DetachDisk(ctx context.Context, vmCID, diskCID string) error {
	unlock, err := c.lock(ctx)
	if err != nil {
		return fmt.Errorf("detach disk %s from vm %s: %w", diskCID, vmCID, err)
	}
	defer unlock()
	if _, err := c.readVM(vmCID); err != nil {
		return fmt.Errorf("detach disk %s: %w", diskCID, err)
	}
	rec, err := c.readDisk(diskCID)
	if err != nil {
		return fmt.Errorf("detach from vm %s: %w", vmCID, err)
	}
	if other := c.attachedTo(rec); other != "" && other != vmCID {
		return fmt.Errorf("detach disk %s from vm %s: attached to vm %s: %w", diskCID, vmCID, other, cpi.ErrDiskNotFound)
	}
	if rec.VMCID == vmCID {
		rec.VMCID = ""
		if err := c.writeDisk(rec); err != nil {
			return fmt.Errorf("detach disk %s from vm %s: %w", diskCID, vmCID, err)
		}
	}
	if err := c.setPersistentDisk(vmCID, diskCID, nil); err != nil {
		return fmt.Errorf("detach disk %s from vm %s: %w", diskCID, vmCID, err)
	}
	c.logger.InfoContext(ctx, "detached disk", "disk", diskCID, "vm", vmCID)
	return nil
}

// detachAll detaches every disk attached to the VM, which is being deleted
// and whose processes are gone: loop devices its agent left on image disks
// are released too. The caller holds the lock.
func (c *CPI) detachAll(vmCID string) error {
	disks, err := c.disksOf(vmCID)
	if err != nil {
		return err
	}
	for _, rec := range disks {
		if rec.Type == diskTypeImage {
			if err := proctree.ReleaseLoops(c.contents(rec)); err != nil {
				return fmt.Errorf("disk %s: %w", rec.CID, err)
			}
		}
		rec.VMCID = ""
		if err := c.writeDisk(rec); err != nil {
			return fmt.Errorf("detach disk %s: %w", rec.CID, err)
		}
	}
	return nil
}

func (c *CPI) disksOf(vmCID string) ([]diskRecord, error) {
	entries, err := os.ReadDir(c.dir(kindDisk))
	if err != nil {
		return nil, fmt.Errorf("list disks: %w", err)
	}
	var out []diskRecord
	for _, e := range entries {
		if !validCID(kindDisk, e.Name()) {
			continue
		}
		rec, err := c.readDisk(e.Name())
		if errors.Is(err, cpi.ErrDiskNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if rec.VMCID == vmCID {
			out = append(out, rec)
		}
	}
	return out, nil
}

// setPersistentDisk sets (hint != nil) or removes the disk in the agent
// settings' disks.persistent, keeping every other key. The caller holds the
// lock.
func (c *CPI) setPersistentDisk(vmCID, diskCID string, hint *cpi.DiskHint) error {
	path := filepath.Join(c.vmDir(vmCID), settingsFile)
	var settings map[string]json.RawMessage
	if err := readJSON(path, &settings); err != nil {
		return err
	}
	if settings == nil {
		settings = map[string]json.RawMessage{}
	}
	var disks map[string]json.RawMessage
	var persistent map[string]json.RawMessage
	if raw, ok := settings["disks"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &disks); err != nil {
			return fmt.Errorf("agent settings: disks: %w", err)
		}
	}
	if disks == nil {
		disks = map[string]json.RawMessage{}
	}
	if raw, ok := disks["persistent"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &persistent); err != nil {
			return fmt.Errorf("agent settings: disks.persistent: %w", err)
		}
	}
	if persistent == nil {
		persistent = map[string]json.RawMessage{}
	}
	if hint != nil {
		persistent[diskCID], _ = json.Marshal(hint)
	} else {
		if _, ok := persistent[diskCID]; !ok {
			return nil
		}
		delete(persistent, diskCID)
	}
	disks["persistent"], _ = json.Marshal(persistent)
	settings["disks"], _ = json.Marshal(disks)
	return writeJSON(path, settings, 0o600)
}

// HasDisk reports whether the disk exists.
func (c *CPI) HasDisk(ctx context.Context, cid string) (bool, error) {
	_, err := c.readDisk(cid)
	if errors.Is(err, cpi.ErrDiskNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("has disk: %w", err)
	}
	return true, nil
}

// GetDisks lists the disks attached to the VM, sorted.
func (c *CPI) GetDisks(ctx context.Context, vmCID string) ([]string, error) {
	if _, err := c.readVM(vmCID); err != nil {
		return nil, fmt.Errorf("get disks: %w", err)
	}
	disks, err := c.disksOf(vmCID)
	if err != nil {
		return nil, fmt.Errorf("get disks of vm %s: %w", vmCID, err)
	}
	out := []string{}
	for _, d := range disks {
		out = append(out, d.CID)
	}
	slices.Sort(out)
	return out, nil
}

// SetDiskMetadata replaces the disk's metadata.
func (c *CPI) SetDiskMetadata(ctx context.Context, cid string, metadata map[string]string) error {
	unlock, err := c.lock(ctx)
	if err != nil {
		return fmt.Errorf("set disk metadata of %s: %w", cid, err)
	}
	defer unlock()
	rec, err := c.readDisk(cid)
	if err != nil {
		return fmt.Errorf("set disk metadata: %w", err)
	}
	rec.Metadata = metadata
	if err := c.writeDisk(rec); err != nil {
		return fmt.Errorf("set disk metadata of %s: %w", cid, err)
	}
	return nil
}

// SnapshotDisk copies the disk's contents into <data_dir>/snapshots/<cid>/
// (data/ for a directory, disk.img, kept sparse, for an image). A disk
// attached to a running VM is copied as it is at that moment, like a
// crash-consistent cloud snapshot.
func (c *CPI) SnapshotDisk(ctx context.Context, diskCID string, metadata map[string]string) (string, error) {
	disk, err := c.readDisk(diskCID)
	if err != nil {
		return "", fmt.Errorf("snapshot disk: %w", err)
	}
	cid := newCID(kindSnapshot)
	stage, err := c.stage(cid)
	if err != nil {
		return "", fmt.Errorf("snapshot disk %s: %w", diskCID, err)
	}
	defer os.RemoveAll(stage)
	if disk.Type == diskTypeImage {
		err = copySparse(ctx, c.contents(disk), filepath.Join(stage, imageFileName))
	} else {
		err = copyTree(ctx, c.contents(disk), filepath.Join(stage, dataDirName))
	}
	if err != nil {
		return "", fmt.Errorf("snapshot disk %s: %w", diskCID, err)
	}
	rec := snapshotRecord{CID: cid, DiskCID: diskCID, Type: disk.Type, SizeMB: disk.SizeMB, Metadata: metadata, CreatedAt: time.Now().UTC()}
	if err := writeJSON(filepath.Join(stage, snapshotRecordFile), rec, 0o644); err != nil {
		return "", fmt.Errorf("snapshot disk %s: %w", diskCID, err)
	}
	if err := os.Rename(stage, c.path(kindSnapshot, cid)); err != nil {
		return "", fmt.Errorf("snapshot disk %s: %w", diskCID, err)
	}
	c.logger.InfoContext(ctx, "snapshot disk", "disk", diskCID, "snapshot", cid)
	return cid, nil
}

// DeleteSnapshot removes the snapshot; deleting a missing one succeeds.
func (c *CPI) DeleteSnapshot(ctx context.Context, cid string) error {
	if !validCID(kindSnapshot, cid) {
		return nil
	}
	gone, err := c.hide(c.path(kindSnapshot, cid))
	if err == nil && gone != "" {
		err = os.RemoveAll(gone)
	}
	if err != nil {
		return fmt.Errorf("delete snapshot %s: %w", cid, err)
	}
	return nil
}

// copyTree copies the directory src to dst: directories, regular files and
// symbolic links (as links, never followed), with their permissions. Other
// kinds of files (sockets, fifos, devices) are skipped.
func copyTree(ctx context.Context, src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, info.Mode().Perm()|0o700)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case d.Type().IsRegular():
			return copyFile(p, target, info.Mode().Perm())
		default:
			return nil
		}
	})
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// copySparse copies the file src to dst, leaving holes where src has runs
// of zeros, so a mostly empty image stays small.
func copySparse(ctx context.Context, src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, st.Mode().Perm())
	if err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	var off int64
	for {
		if err := ctx.Err(); err != nil {
			out.Close()
			return err
		}
		n, rerr := io.ReadFull(in, buf)
		if n > 0 {
			if !allZero(buf[:n]) {
				if _, err := out.WriteAt(buf[:n], off); err != nil {
					out.Close()
					return err
				}
			}
			off += int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			out.Close()
			return rerr
		}
	}
	if err := out.Truncate(off); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
