package disk_test

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/compleat/compleat/agent/disk"
	"github.com/compleat/compleat/agent/layout"
	"github.com/compleat/compleat/cpi"
)

func exercise(t *testing.T, root bool) {
	ctx := context.Background()
	l := layout.Layout{Base: t.TempDir()}
	if err := l.Ensure(); err != nil {
		t.Fatal(err)
	}
	m := disk.New(l, nil)
	m.Root = root
	t.Cleanup(func() {
		unix.Unmount(l.StoreMigrationTarget(), unix.MNT_DETACH)
		unix.Unmount(l.Store(), unix.MNT_DETACH)
	})
	d1, d2 := t.TempDir(), t.TempDir()

	if err := m.MountDisk(ctx, "disk-1", cpi.DiskHint{Path: d1}); err != nil {
		if root && os.IsPermission(err) {
			t.Skipf("cannot mount here: %v", err)
		}
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(l.Store(), "data.txt"), []byte("precious"), 0o640); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(l.Store(), "sub"), 0o700)
	os.Symlink("../data.txt", filepath.Join(l.Store(), "sub", "link"))
	if b, _ := os.ReadFile(filepath.Join(d1, "data.txt")); string(b) != "precious" {
		t.Fatal("store does not reach the disk")
	}
	// Mounting again is a no-op.
	if err := m.MountDisk(ctx, "disk-1", cpi.DiskHint{Path: d1}); err != nil {
		t.Fatal(err)
	}
	// A second disk goes to the migration target.
	if err := m.MountDisk(ctx, "disk-2", cpi.DiskHint{Path: d2}); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.List(); !reflect.DeepEqual(got, []string{"disk-1", "disk-2"}) {
		t.Fatalf("list %v", got)
	}
	if err := m.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.List(); !reflect.DeepEqual(got, []string{"disk-2"}) {
		t.Fatalf("list after migrate %v", got)
	}
	if b, _ := os.ReadFile(filepath.Join(d2, "data.txt")); string(b) != "precious" {
		t.Fatal("data not copied to the new disk")
	}
	if b, _ := os.ReadFile(filepath.Join(l.Store(), "sub", "link")); string(b) != "precious" {
		t.Fatal("store does not show the new disk's data through the copied link")
	}
	if fi, _ := os.Stat(filepath.Join(d2, "sub")); fi == nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("mode not kept: %v", fi)
	}
	if err := m.UnmountDisk(ctx, "disk-2"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(l.Store(), "data.txt")); !os.IsNotExist(err) {
		t.Fatal("store still shows the disk after unmount")
	}
	if got, _ := m.List(); len(got) != 0 {
		t.Fatalf("list after unmount %v", got)
	}
	// Unmounting an unknown disk is fine.
	if err := m.UnmountDisk(ctx, "disk-9"); err != nil {
		t.Fatal(err)
	}
}

func TestSymlinkDiskWithoutRoot(t *testing.T) { exercise(t, false) }

func TestBindMountedDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("bind mounts need root")
	}
	exercise(t, true)
}

func TestHintLocatingNothing(t *testing.T) {
	l := layout.Layout{Base: t.TempDir()}
	l.Ensure()
	m := disk.New(l, nil)
	m.Root = true
	if err := m.MountDisk(context.Background(), "d", cpi.DiskHint{}); err == nil {
		t.Fatal("empty hint mounted")
	}
}
