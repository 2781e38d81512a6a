package disk_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
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

func TestRestoreAfterReboot(t *testing.T) {
	for _, root := range []bool{false, true} {
		t.Run(map[bool]string{false: "symlink", true: "bind"}[root], func(t *testing.T) {
			if root && os.Geteuid() != 0 {
				t.Skip("bind mounts need root")
			}
			ctx := context.Background()
			l := layout.Layout{Base: t.TempDir()}
			l.Ensure()
			m := disk.New(l, nil)
			m.Root = root
			t.Cleanup(func() { unix.Unmount(l.Store(), unix.MNT_DETACH) })
			d := t.TempDir()
			os.WriteFile(filepath.Join(d, "kept"), []byte("yes"), 0o644)
			if err := m.MountDisk(ctx, "disk-1", cpi.DiskHint{Path: d}); err != nil {
				t.Fatal(err)
			}
			// The reboot: the mount (or link) is gone, the record stays.
			if root {
				if err := unix.Unmount(l.Store(), 0); err != nil {
					t.Fatal(err)
				}
			} else {
				os.Remove(l.Store())
				os.Mkdir(l.Store(), 0o755)
			}
			if _, err := os.Stat(filepath.Join(l.Store(), "kept")); err == nil {
				t.Fatal("store still shows the disk")
			}
			again := disk.New(l, nil)
			again.Root = root
			if err := again.Restore(ctx); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(filepath.Join(l.Store(), "kept")); string(b) != "yes" {
				t.Fatal("disk not mounted again")
			}
			// Restoring what is mounted changes nothing.
			if err := again.Restore(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestImageDisk attaches an image file through a loop device: it is
// formatted the first time only, so data survives an unmount and mount.
func TestImageDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("no mkfs.ext4")
	}
	ctx := context.Background()
	l := layout.Layout{Base: t.TempDir()}
	l.Ensure()
	m := disk.New(l, nil)
	t.Cleanup(func() { m.UnmountDisk(ctx, "img-1") })
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 16<<20); err != nil {
		t.Fatal(err)
	}
	if err := m.MountDisk(ctx, "img-1", cpi.DiskHint{Path: img}); err != nil {
		if strings.Contains(err.Error(), "losetup") {
			t.Skipf("no loop devices here: %v", err)
		}
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(l.Store(), "lost+found")); err != nil {
		t.Fatal("store is not the formatted image")
	}
	os.WriteFile(filepath.Join(l.Store(), "db"), []byte("rows"), 0o600)
	if err := m.UnmountDisk(ctx, "img-1"); err != nil {
		t.Fatal(err)
	}
	if err := m.MountDisk(ctx, "img-1", cpi.DiskHint{Path: img}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(l.Store(), "db")); string(b) != "rows" {
		t.Fatal("image formatted again: data lost")
	}
}
