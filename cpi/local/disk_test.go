package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/compleat/compleat/cpi"
)

func TestDiskLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newTestCPI(t)
	sc := createStemcell(t, c)
	vm, err := c.CreateVM(ctx, vmRequest(sc, "", nil))
	if err != nil {
		t.Fatal(err)
	}
	disk, err := c.CreateDisk(ctx, cpi.CreateDiskRequest{SizeMB: 1024, CloudProperties: json.RawMessage(`{"type":"directory"}`), VMCID: vm.CID})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := c.HasDisk(ctx, disk); !ok || err != nil {
		t.Fatalf("HasDisk = %v, %v", ok, err)
	}

	hint, err := c.AttachDisk(ctx, vm.CID, disk)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(hint.Path); err != nil || !st.IsDir() || !filepath.IsAbs(hint.Path) {
		t.Fatalf("hint path %q: %v", hint.Path, err)
	}
	if again, err := c.AttachDisk(ctx, vm.CID, disk); err != nil || again != hint {
		t.Fatalf("attaching again = %v, %v", again, err)
	}
	// The agent learns of the disk from its settings too, as after a
	// reboot.
	var settings struct {
		Disks struct {
			Persistent map[string]cpi.DiskHint `json:"persistent"`
		} `json:"disks"`
	}
	if err := readJSON(filepath.Join(c.vmDir(vm.CID), settingsFile), &settings); err != nil || settings.Disks.Persistent[disk] != hint {
		t.Fatalf("settings disks = %+v, %v", settings.Disks, err)
	}
	if got, err := c.GetDisks(ctx, vm.CID); err != nil || !slices.Equal(got, []string{disk}) {
		t.Fatalf("GetDisks = %v, %v", got, err)
	}

	// Another VM cannot take it; an attached disk cannot be deleted.
	other, err := c.CreateVM(ctx, vmRequest(sc, "", nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AttachDisk(ctx, other.CID, disk); err == nil {
		t.Fatal("a disk attached to one vm was attached to another")
	}
	if err := c.DeleteDisk(ctx, disk); err == nil {
		t.Fatal("an attached disk was deleted")
	}

	if err := os.WriteFile(filepath.Join(hint.Path, "data.txt"), []byte("payload"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("data.txt", filepath.Join(hint.Path, "link")); err != nil {
		t.Fatal(err)
	}
	snap, err := c.SnapshotDisk(ctx, disk, map[string]string{"director": "d"})
	if err != nil {
		t.Fatal(err)
	}
	snapData := filepath.Join(c.path(kindSnapshot, snap), dataDirName)
	if b, err := os.ReadFile(filepath.Join(snapData, "link")); err != nil || string(b) != "payload" {
		t.Fatalf("snapshot content %q, %v", b, err)
	}
	if st, _ := os.Stat(filepath.Join(snapData, "data.txt")); st.Mode().Perm() != 0o600 {
		t.Errorf("snapshot lost the file mode: %v", st.Mode())
	}

	if err := c.DetachDisk(ctx, vm.CID, disk); err != nil {
		t.Fatal(err)
	}
	if err := c.DetachDisk(ctx, vm.CID, disk); err != nil {
		t.Fatalf("second detach: %v", err)
	}
	if got, err := c.GetDisks(ctx, vm.CID); err != nil || len(got) != 0 {
		t.Fatalf("GetDisks after detach = %v, %v", got, err)
	}
	settings.Disks.Persistent = nil
	if err := readJSON(filepath.Join(c.vmDir(vm.CID), settingsFile), &settings); err != nil || len(settings.Disks.Persistent) != 0 {
		t.Fatalf("settings disks after detach = %+v, %v", settings.Disks, err)
	}

	if err := c.ResizeDisk(ctx, disk, 2048); err != nil {
		t.Fatal(err)
	}
	if rec, _ := c.readDisk(disk); rec.SizeMB != 2048 {
		t.Fatalf("size after resize %d", rec.SizeMB)
	}
	if err := c.ResizeDisk(ctx, disk, 10); err == nil {
		t.Fatal("a disk shrank")
	}
	if err := c.SetDiskMetadata(ctx, disk, map[string]string{"instance": "web/0"}); err != nil {
		t.Fatal(err)
	}
	if rec, _ := c.readDisk(disk); rec.Metadata["instance"] != "web/0" {
		t.Fatalf("metadata %v", rec.Metadata)
	}

	if err := c.DeleteDisk(ctx, disk); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.HasDisk(ctx, disk); ok || err != nil {
		t.Fatalf("HasDisk after delete = %v, %v", ok, err)
	}
	// The snapshot outlives its disk, until deleted.
	if _, err := os.Stat(snapData); err != nil {
		t.Fatalf("snapshot gone with its disk: %v", err)
	}
	for range 2 {
		if err := c.DeleteSnapshot(ctx, snap); err != nil {
			t.Fatal(err)
		}
		if err := c.DeleteDisk(ctx, disk); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(snapData); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("snapshot left after delete: %v", err)
	}
}

func TestDeleteVMDetachesDisks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newTestCPI(t)
	sc := createStemcell(t, c)
	vm, err := c.CreateVM(ctx, vmRequest(sc, "", nil))
	if err != nil {
		t.Fatal(err)
	}
	disk, err := c.CreateDisk(ctx, cpi.CreateDiskRequest{SizeMB: 10})
	if err != nil {
		t.Fatal(err)
	}
	hint, err := c.AttachDisk(ctx, vm.CID, disk)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hint.Path, "kept"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteVM(ctx, vm.CID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(hint.Path, "kept")); err != nil {
		t.Fatalf("deleting the vm lost the disk's contents: %v", err)
	}
	next, err := c.CreateVM(ctx, vmRequest(sc, "", nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AttachDisk(ctx, next.CID, disk); err != nil {
		t.Fatalf("the disk of a deleted vm cannot move on: %v", err)
	}
}

func TestDiskNotFound(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newTestCPI(t)
	sc := createStemcell(t, c)
	vm, err := c.CreateVM(ctx, vmRequest(sc, "", nil))
	if err != nil {
		t.Fatal(err)
	}
	disk, err := c.CreateDisk(ctx, cpi.CreateDiskRequest{SizeMB: 10})
	if err != nil {
		t.Fatal(err)
	}
	for _, cid := range []string{"disk-0123456789abcdef", "../vms", ""} {
		if ok, err := c.HasDisk(ctx, cid); ok || err != nil {
			t.Errorf("HasDisk(%q) = %v, %v", cid, ok, err)
		}
		if err := c.DeleteDisk(ctx, cid); err != nil {
			t.Errorf("DeleteDisk(%q) = %v", cid, err)
		}
		if _, err := c.AttachDisk(ctx, vm.CID, cid); !errors.Is(err, cpi.ErrDiskNotFound) {
			t.Errorf("AttachDisk(%q) = %v", cid, err)
		}
		if err := c.DetachDisk(ctx, vm.CID, cid); !errors.Is(err, cpi.ErrDiskNotFound) {
			t.Errorf("DetachDisk(%q) = %v", cid, err)
		}
		if err := c.ResizeDisk(ctx, cid, 20); !errors.Is(err, cpi.ErrDiskNotFound) {
			t.Errorf("ResizeDisk(%q) = %v", cid, err)
		}
		if err := c.SetDiskMetadata(ctx, cid, nil); !errors.Is(err, cpi.ErrDiskNotFound) {
			t.Errorf("SetDiskMetadata(%q) = %v", cid, err)
		}
		if _, err := c.SnapshotDisk(ctx, cid, nil); !errors.Is(err, cpi.ErrDiskNotFound) {
			t.Errorf("SnapshotDisk(%q) = %v", cid, err)
		}
		if err := c.DeleteSnapshot(ctx, "snap-0123456789abcdef"); err != nil {
			t.Errorf("DeleteSnapshot = %v", err)
		}
	}
	if _, err := c.AttachDisk(ctx, "vm-0123456789abcdef", disk); !errors.Is(err, cpi.ErrVMNotFound) {
		t.Errorf("AttachDisk to a missing vm = %v", err)
	}
	if err := c.DetachDisk(ctx, "vm-0123456789abcdef", disk); !errors.Is(err, cpi.ErrVMNotFound) {
		t.Errorf("DetachDisk from a missing vm = %v", err)
	}
	for _, cp := range []string{`{"type":"floppy"}`, `{"iops":3000}`, `[]`} {
		_, err := c.CreateDisk(ctx, cpi.CreateDiskRequest{SizeMB: 10, CloudProperties: json.RawMessage(cp)})
		if !errors.Is(err, cpi.ErrInvalidCloudProperties) {
			t.Errorf("CreateDisk(%s) = %v, want ErrInvalidCloudProperties", cp, err)
		}
	}
}

// TestNoResizeDisk: with resize_disk: false the plugin is a cloud that
// cannot resize disks, as Info says.
func TestNoResizeDisk(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, err := New(json.RawMessage(fmt.Sprintf(`{"data_dir": %q, "resize_disk": false}`, t.TempDir())), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil || info.Capabilities.ResizeDisk {
		t.Fatalf("Info = %+v, %v; want no ResizeDisk capability", info.Capabilities, err)
	}
	disk, err := c.CreateDisk(ctx, cpi.CreateDiskRequest{SizeMB: 1024, CloudProperties: json.RawMessage(`{"type":"directory"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ResizeDisk(ctx, disk, 2048); !errors.Is(err, cpi.ErrNotImplemented) {
		t.Fatalf("ResizeDisk = %v, want ErrNotImplemented", err)
	}
	if rec, _ := c.readDisk(disk); rec.SizeMB != 1024 {
		t.Fatalf("size after a refused resize %d", rec.SizeMB)
	}
	if _, err := New(json.RawMessage(fmt.Sprintf(`{"data_dir": %q, "resize_disk": "no"}`, t.TempDir()))); !errors.Is(err, cpi.ErrInvalidCloudProperties) {
		t.Fatalf("resize_disk: \"no\" = %v, want invalid cloud properties", err)
	}
}
