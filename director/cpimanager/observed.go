package cpimanager

import (
	"context"
	"encoding/json"
	"time"

	"github.com/compleat/compleat/cpi"
)

// observed times every call of a CPI for the Observer.
type observed struct {
	cpi.CPI
	name string
	obs  Observer
}

var _ cpi.CPI = (*observed)(nil)

func (o *observed) done(method string, start time.Time, err error) {
	if o.obs != nil {
		o.obs(o.name, method, time.Since(start), err)
	}
}

func (o *observed) Info(ctx context.Context) (i cpi.Info, err error) {
	defer func(t time.Time) { o.done("Info", t, err) }(time.Now())
	return o.CPI.Info(ctx)
}

func (o *observed) CreateStemcell(ctx context.Context, req cpi.CreateStemcellRequest) (cid string, err error) {
	defer func(t time.Time) { o.done("CreateStemcell", t, err) }(time.Now())
	return o.CPI.CreateStemcell(ctx, req)
}

func (o *observed) DeleteStemcell(ctx context.Context, cid string) (err error) {
	defer func(t time.Time) { o.done("DeleteStemcell", t, err) }(time.Now())
	return o.CPI.DeleteStemcell(ctx, cid)
}

func (o *observed) CreateVM(ctx context.Context, req cpi.CreateVMRequest) (r cpi.CreateVMResult, err error) {
	defer func(t time.Time) { o.done("CreateVM", t, err) }(time.Now())
	return o.CPI.CreateVM(ctx, req)
}

func (o *observed) DeleteVM(ctx context.Context, cid string) (err error) {
	defer func(t time.Time) { o.done("DeleteVM", t, err) }(time.Now())
	return o.CPI.DeleteVM(ctx, cid)
}

func (o *observed) HasVM(ctx context.Context, cid string) (ok bool, err error) {
	defer func(t time.Time) { o.done("HasVM", t, err) }(time.Now())
	return o.CPI.HasVM(ctx, cid)
}

func (o *observed) RebootVM(ctx context.Context, cid string) (err error) {
	defer func(t time.Time) { o.done("RebootVM", t, err) }(time.Now())
	return o.CPI.RebootVM(ctx, cid)
}

func (o *observed) SetVMMetadata(ctx context.Context, cid string, md map[string]string) (err error) {
	defer func(t time.Time) { o.done("SetVMMetadata", t, err) }(time.Now())
	return o.CPI.SetVMMetadata(ctx, cid, md)
}

func (o *observed) CalculateVMCloudProperties(ctx context.Context, req cpi.VMResources) (r json.RawMessage, err error) {
	defer func(t time.Time) { o.done("CalculateVMCloudProperties", t, err) }(time.Now())
	return o.CPI.CalculateVMCloudProperties(ctx, req)
}

func (o *observed) CreateDisk(ctx context.Context, req cpi.CreateDiskRequest) (cid string, err error) {
	defer func(t time.Time) { o.done("CreateDisk", t, err) }(time.Now())
	return o.CPI.CreateDisk(ctx, req)
}

func (o *observed) DeleteDisk(ctx context.Context, cid string) (err error) {
	defer func(t time.Time) { o.done("DeleteDisk", t, err) }(time.Now())
	return o.CPI.DeleteDisk(ctx, cid)
}

func (o *observed) ResizeDisk(ctx context.Context, cid string, sizeMB int64) (err error) {
	defer func(t time.Time) { o.done("ResizeDisk", t, err) }(time.Now())
	return o.CPI.ResizeDisk(ctx, cid, sizeMB)
}

func (o *observed) AttachDisk(ctx context.Context, vm, disk string) (h cpi.DiskHint, err error) {
	defer func(t time.Time) { o.done("AttachDisk", t, err) }(time.Now())
	return o.CPI.AttachDisk(ctx, vm, disk)
}

func (o *observed) DetachDisk(ctx context.Context, vm, disk string) (err error) {
	defer func(t time.Time) { o.done("DetachDisk", t, err) }(time.Now())
	return o.CPI.DetachDisk(ctx, vm, disk)
}

func (o *observed) HasDisk(ctx context.Context, cid string) (ok bool, err error) {
	defer func(t time.Time) { o.done("HasDisk", t, err) }(time.Now())
	return o.CPI.HasDisk(ctx, cid)
}

func (o *observed) GetDisks(ctx context.Context, vm string) (ds []string, err error) {
	defer func(t time.Time) { o.done("GetDisks", t, err) }(time.Now())
	return o.CPI.GetDisks(ctx, vm)
}

func (o *observed) SetDiskMetadata(ctx context.Context, cid string, md map[string]string) (err error) {
	defer func(t time.Time) { o.done("SetDiskMetadata", t, err) }(time.Now())
	return o.CPI.SetDiskMetadata(ctx, cid, md)
}

func (o *observed) SnapshotDisk(ctx context.Context, cid string, md map[string]string) (s string, err error) {
	defer func(t time.Time) { o.done("SnapshotDisk", t, err) }(time.Now())
	return o.CPI.SnapshotDisk(ctx, cid, md)
}

func (o *observed) DeleteSnapshot(ctx context.Context, cid string) (err error) {
	defer func(t time.Time) { o.done("DeleteSnapshot", t, err) }(time.Now())
	return o.CPI.DeleteSnapshot(ctx, cid)
}

func (o *observed) ListVMs(ctx context.Context, f cpi.ListFilter) (vms []cpi.VMInfo, err error) {
	defer func(t time.Time) { o.done("ListVMs", t, err) }(time.Now())
	return o.CPI.ListVMs(ctx, f)
}

func (o *observed) ListDisks(ctx context.Context, f cpi.ListFilter) (disks []cpi.DiskInfo, err error) {
	defer func(t time.Time) { o.done("ListDisks", t, err) }(time.Now())
	return o.CPI.ListDisks(ctx, f)
}
