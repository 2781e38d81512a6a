package disk

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi"
)

// TestFindDeviceFromHints lays out /dev/disk as AWS (NVMe serials), OpenStack
// (virtio serials) and Azure (LUN links) document it, and resolves hints.
func TestFindDeviceFromHints(t *testing.T) {
	root := t.TempDir()
	dev := func(name string) string {
		p := filepath.Join(root, "dev", name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, nil, 0o600)
		return p
	}
	link := func(at, target string) {
		p := filepath.Join(root, at)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	nvme := dev("nvme1n1")
	link("dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0", nvme)
	link("dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0-part1", nvme+"p1")
	vdb := dev("vdb")
	link("dev/disk/by-id/virtio-5a3f6c2e-8b1d-4e7a-9", vdb)
	sdc := dev("sdc")
	link("dev/disk/azure/scsi1/lun2", sdc)

	m := &Manager{DevRoot: root, DeviceWait: 300 * time.Millisecond}
	ctx := context.Background()
	for name, tc := range map[string]struct {
		hint cpi.DiskHint
		want string
	}{
		"aws volume id":       {cpi.DiskHint{VolumeID: "vol-0123456789abcdef0"}, nvme},
		"openstack volume id": {cpi.DiskHint{VolumeID: "5a3f6c2e-8b1d-4e7a-9f00-123456789abc"}, vdb},
		"azure lun":           {cpi.DiskHint{LUN: "2"}, sdc},
		"device id":           {cpi.DiskHint{ID: "vol0123456789abcdef0"}, nvme},
		"path":                {cpi.DiskHint{Path: sdc}, sdc},
		// Nova attached the volume elsewhere than the path it reported.
		"openstack volume id before a wrong path": {cpi.DiskHint{Path: sdc, VolumeID: "5a3f6c2e-8b1d-4e7a-9f00-123456789abc"}, vdb},
		// No by-id link shows up: the path is the fallback.
		"path fallback": {cpi.DiskHint{Path: sdc, VolumeID: "99999999-8b1d-4e7a-9f00-123456789abc"}, sdc},
	} {
		got, err := m.findDevice(ctx, tc.hint)
		if err != nil || got != tc.want {
			t.Errorf("%s: %q %v, want %q", name, got, err, tc.want)
		}
	}
	if _, err := m.findDevice(ctx, cpi.DiskHint{LUN: "7"}); err == nil {
		t.Error("found a device for a LUN that is not attached")
	}
	if _, err := m.findDevice(ctx, cpi.DiskHint{ID: "../../../etc/*"}); err == nil {
		t.Error("an id with path characters matched something")
	}
}

func TestPartitionTable(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk")
	os.WriteFile(img, nil, 0o600)
	os.Truncate(img, 64<<20)
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := writeMBROnce(f); err != nil {
		t.Fatal(err)
	}
	sector := make([]byte, 512)
	f.ReadAt(sector, 0)
	e := sector[446:462]
	if sector[510] != 0x55 || sector[511] != 0xaa || e[4] != 0x83 {
		t.Fatalf("no Linux partition entry: % x", e)
	}
	if start, n := binary.LittleEndian.Uint32(e[8:]), binary.LittleEndian.Uint32(e[12:]); start != 2048 || int64(start+n)*512 != 64<<20 {
		t.Fatalf("partition %d+%d sectors", start, n)
	}
	// A disk with a table keeps it: formatting happens once.
	copy(sector[0:4], "keep")
	f.WriteAt(sector, 0)
	if err := writeMBROnce(f); err != nil {
		t.Fatal(err)
	}
	again := make([]byte, 512)
	f.ReadAt(again, 0)
	if !bytes.Equal(again, sector) {
		t.Fatal("existing partition table overwritten")
	}
	if _, err := partitionTable(3 << 40); err == nil {
		t.Fatal("3 TiB disk accepted in an MBR")
	}
	if partitionName("/dev/nvme1n1") != "/dev/nvme1n1p1" || partitionName("/dev/sdc") != "/dev/sdc1" {
		t.Fatal("partition names")
	}
}
