package local

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/proctree"
)

// inVM runs a shell command inside the VM's mount namespace, as its agent
// would.
func inVM(t *testing.T, agentPID int, script string) string {
	t.Helper()
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(agentPID), "-m", "sh", "-ec", script).CombinedOutput()
	if err != nil {
		t.Fatalf("in vm: %s: %v\n%s", script, err, out)
	}
	return strings.TrimSpace(string(out))
}

// loopsOf lists the loop devices backed by the file.
func loopsOf(t *testing.T, file string) string {
	t.Helper()
	out, err := exec.Command("losetup", "-j", file).Output()
	if err != nil {
		t.Fatalf("losetup -j %s: %v", file, err)
	}
	return strings.TrimSpace(string(out))
}

// An image disk is a sparse file of its size that the agent loop-mounts in
// the VM's namespace. Its data survives the VM, the loop device the killed
// agent left behind is released, snapshots stay sparse, and resize grows the
// file.
func TestImageDisk(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	for _, tool := range []string{"nsenter", "losetup", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("needs loop devices")
	}
	ctx := context.Background()
	c := newTestCPI(t)
	sc := createStemcell(t, c)
	disk, err := c.CreateDisk(ctx, cpi.CreateDiskRequest{SizeMB: 64, CloudProperties: json.RawMessage(`{"type":"image"}`)})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := c.readDisk(disk)
	if err != nil {
		t.Fatal(err)
	}
	image := c.contents(rec)
	t.Cleanup(func() { _ = proctree.ReleaseLoops(image) })
	var st syscall.Stat_t
	if err := syscall.Stat(image, &st); err != nil || st.Size != 64<<20 || st.Blocks > 8 {
		t.Fatalf("image %s: size %d, %d blocks (%v); want 64 MiB, sparse", image, st.Size, st.Blocks, err)
	}

	vm, err := c.CreateVM(ctx, vmRequest(sc, "", nil))
	if err != nil {
		t.Fatal(err)
	}
	hint, err := c.AttachDisk(ctx, vm.CID, disk)
	if err != nil {
		t.Fatal(err)
	}
	if hint.Path != image {
		t.Fatalf("hint %q, want the image %s", hint.Path, image)
	}
	pid := waitPID(t, filepath.Join(c.vmDir(vm.CID), pidFile))
	waitFile(t, filepath.Join(c.agentFiles(vm.CID), "addr"))
	// What the agent does with an image hint, inside the VM.
	inVM(t, pid, `l=$(losetup --find --show `+hint.Path+`); mkfs.ext4 -q $l; mkdir -p /var/vcap/store; mount $l /var/vcap/store; echo kept > /var/vcap/store/f`)
	if loopsOf(t, image) == "" {
		t.Fatal("no loop device on the image")
	}
	if _, err := os.Stat(filepath.Join(c.vmDir(vm.CID), rootDirName, "store", "f")); err == nil {
		t.Fatal("the vm's mount is visible on the host")
	}

	snap, err := c.SnapshotDisk(ctx, disk, nil)
	if err != nil {
		t.Fatal(err)
	}
	var snapStat syscall.Stat_t
	if err := syscall.Stat(filepath.Join(c.path(kindSnapshot, snap), imageFileName), &snapStat); err != nil || snapStat.Size != 64<<20 || snapStat.Blocks*512 > 32<<20 {
		t.Fatalf("snapshot image: size %d, %d blocks (%v); want 64 MiB, sparse", snapStat.Size, snapStat.Blocks, err)
	}

	// The agent is killed with its disk mounted: DeleteVM releases the loop
	// device.
	if err := c.DeleteVM(ctx, vm.CID); err != nil {
		t.Fatal(err)
	}
	if l := loopsOf(t, image); l != "" {
		t.Fatalf("loop device left after DeleteVM: %s", l)
	}

	// The data is on the disk, for the next VM.
	next, err := c.CreateVM(ctx, vmRequest(sc, "", nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AttachDisk(ctx, next.CID, disk); err != nil {
		t.Fatal(err)
	}
	pid = waitPID(t, filepath.Join(c.vmDir(next.CID), pidFile))
	waitFile(t, filepath.Join(c.agentFiles(next.CID), "addr"))
	got := inVM(t, pid, `l=$(losetup --find --show `+hint.Path+`); mkdir -p /var/vcap/store; mount $l /var/vcap/store; cat /var/vcap/store/f; umount /var/vcap/store; losetup -d $l`)
	if got != "kept" {
		t.Fatalf("the next vm reads %q from the disk, want kept", got)
	}
	if err := c.DetachDisk(ctx, next.CID, disk); err != nil {
		t.Fatal(err)
	}
	if err := c.ResizeDisk(ctx, disk, 128); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(image, &st); err != nil || st.Size != 128<<20 {
		t.Fatalf("after resize the image is %d bytes (%v), want 128 MiB", st.Size, err)
	}
	if err := c.DeleteDisk(ctx, disk); err != nil {
		t.Fatal(err)
	}
}
