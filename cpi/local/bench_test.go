package local

import (
	"context"
	"testing"
)

// BenchmarkCreateDeleteVM measures a VM's whole life: directory, address,
// agent process (in its own mount namespace as root), then stopping the
// process tree and removing the files.
func BenchmarkCreateDeleteVM(b *testing.B) {
	ctx := context.Background()
	c := newTestCPI(b)
	sc := createStemcell(b, c)
	for b.Loop() {
		res, err := c.CreateVM(ctx, vmRequest(sc, "", nil))
		if err != nil {
			b.Fatal(err)
		}
		if err := c.DeleteVM(ctx, res.CID); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHasVM measures the cheapest call, in-process (no gRPC).
func BenchmarkHasVM(b *testing.B) {
	ctx := context.Background()
	c := newTestCPI(b)
	sc := createStemcell(b, c)
	res, err := c.CreateVM(ctx, vmRequest(sc, "", nil))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if ok, err := c.HasVM(ctx, res.CID); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
}

// BenchmarkAttachDetachDisk measures an attachment round trip, which
// rewrites the disk record and the agent's settings under the lock.
func BenchmarkAttachDetachDisk(b *testing.B) {
	ctx := context.Background()
	c := newTestCPI(b)
	sc := createStemcell(b, c)
	res, err := c.CreateVM(ctx, vmRequest(sc, "", nil))
	if err != nil {
		b.Fatal(err)
	}
	disk, err := c.CreateDisk(ctx, diskRequest())
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := c.AttachDisk(ctx, res.CID, disk); err != nil {
			b.Fatal(err)
		}
		if err := c.DetachDisk(ctx, res.CID, disk); err != nil {
			b.Fatal(err)
		}
	}
}
