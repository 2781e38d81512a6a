package deploy_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/director/store"
)

// TestDiskGrowsInPlaceOrMoves: a persistent disk that grows in a CPI whose
// Info reports ResizeDisk is resized and kept; when the CPI answers the
// call NotImplemented after all (its Info, read once, said otherwise), the
// deploy falls back to a new disk with the data moved and the old one
// orphaned.
func TestDiskGrowsInPlaceOrMoves(t *testing.T) {
	r := newRig(t)
	manifest := func(mb int) string {
		return strings.Replace(benchManifest(2, "v1", 0), "  vm_type: small\n", fmt.Sprintf("  vm_type: small\n  persistent_disk: %d\n", mb), 1)
	}
	attached := func() map[string]int64 {
		out := map[string]int64{}
		for _, d := range r.cloud.Disks() {
			if d.AttachedTo != "" {
				out[d.CID] = d.SizeMB
			}
		}
		return out
	}
	orphaned := func() []string {
		var cids []string
		r.store.View(func(tx *store.Tx) error {
			ds, err := tx.Disks(true)
			for _, d := range ds {
				cids = append(cids, d.CID)
			}
			return err
		})
		slices.Sort(cids)
		return cids
	}

	r.deploy(manifest(1024), false)
	first := attached()
	if len(first) != 2 {
		t.Fatalf("attached disks after the first deploy: %v", first)
	}

	res, _ := r.deploy(manifest(2048), false)
	grown := attached()
	for cid := range first {
		if grown[cid] != 2048 {
			t.Errorf("disk %s: %d MB attached after growing, want the same disk at 2048 MB (attached: %v; %s)", cid, grown[cid], grown, res)
		}
	}
	if o := orphaned(); len(o) != 0 {
		t.Errorf("disks orphaned by a resize: %v", o)
	}

	caps := cpi.Capabilities{DiskHints: true, DynamicNetworks: true, ListVMs: true, ListDisks: true}
	r.cloud.SetCapabilities(caps) // ResizeDisk now answers NotImplemented
	r.deploy(manifest(4096), false)
	moved := attached()
	for cid, size := range moved {
		if _, was := first[cid]; was || size != 4096 {
			t.Errorf("after a refused resize disk %s (%d MB) is attached, want new 4096 MB disks: %v", cid, size, moved)
		}
	}
	var old []string
	for cid := range first {
		old = append(old, cid)
	}
	slices.Sort(old)
	if o := orphaned(); !slices.Equal(o, old) {
		t.Errorf("orphaned disks %v, want the replaced ones %v", o, old)
	}
	// The next deploy finds the recorded disks as they are: nothing to do.
	if res, _ := r.deploy(manifest(4096), false); !strings.Contains(res, "No changes") {
		t.Errorf("a deploy after the move: %s", res)
	}
}
