package host

import (
	"context"
	"encoding/json"

	"github.com/compleat/compleat/cpi"
)

// The methods of cpi.CPI, each a call through the running plugin.

// Info implements cpi.CPI.
func (p *Plugin) Info(ctx context.Context) (out cpi.Info, err error) {
	err = p.call(ctx, "Info", func(ctx context.Context, c cpi.CPI) (err error) {
		out, err = c.Info(ctx)
		return err
	})
	return out, err
}

// CreateStemcell implements cpi.CPI.
func (p *Plugin) CreateStemcell(ctx context.Context, req cpi.CreateStemcellRequest) (out string, err error) {
	err = p.call(ctx, "CreateStemcell", func(ctx context.Context, c cpi.CPI) (err error) {
		out, err = c.CreateStemcell(ctx, req)
		return err
	})
	return out, err
}

// DeleteStemcell implements cpi.CPI.
func (p *Plugin) DeleteStemcell(ctx context.Context, cid string) error {
	return p.call(ctx, "DeleteStemcell", func(ctx context.Context, c cpi.CPI) error {
		return c.DeleteStemcell(ctx, cid)
	})
}

// CreateVM implements cpi.CPI.
func (p *Plugin) CreateVM(ctx context.Context, req cpi.CreateVMRequest) (out cpi.CreateVMResult, err error) {
	err = p.call(ctx, "CreateVM", func(ctx context.Context, c cpi.CPI) (err error) {
		out, err = c.CreateVM(ctx, req)
		return err
	})
	return out, err
}

// DeleteVM implements cpi.CPI.
func (p *Plugin) DeleteVM(ctx context.Context, cid string) error {
	return p.call(ctx, "DeleteVM", func(ctx context.Context, c cpi.CPI) error {
		return c.DeleteVM(ctx, cid)
	})
}

// HasVM implements cpi.CPI.
func (p *Plugin) HasVM(ctx context.Context, cid string) (out bool, err error) {
	err = p.call(ctx, "HasVM", func(ctx context.Context, c cpi.CPI) (err error) {
		out, err = c.HasVM(ctx, cid)
		return err
	})
	return out, err
}

// RebootVM implements cpi.CPI.
func (p *Plugin) RebootVM(ctx context.Context, cid string) error {
	return p.call(ctx, "RebootVM", func(ctx context.Context, c cpi.CPI) error {
		return c.RebootVM(ctx, cid)
	})
}

// SetVMMetadata implements cpi.CPI.
func (p *Plugin) SetVMMetadata(ctx context.Context, cid string, md map[string]string) error {
	return p.call(ctx, "SetVMMetadata", func(ctx context.Context, c cpi.CPI) error {
		return c.SetVMMetadata(ctx, cid, md)
	})
}

// CalculateVMCloudProperties implements cpi.CPI.
func (p *Plugin) CalculateVMCloudProperties(ctx context.Context, req cpi.VMResources) (out json.RawMessage, err error) {
	err = p.call(ctx, "CalculateVMCloudProperties", func(ctx context.Context, c cpi.CPI) (err error) {
		out, err = c.CalculateVMCloudProperties(ctx, req)
		return err
	})
	return out, err
}

// CreateDisk implements cpi.CPI.
func (p *Plugin) CreateDisk(ctx context.Context, req cpi.CreateDiskRequest) (out string, err error) {
	err = p.call(ctx, "CreateDisk", func(ctx context.Context, c cpi.CPI) (err error) {
		out, err = c.CreateDisk(ctx, req)
		return err
	})
	return out, err
}

// DeleteDisk implements cpi.CPI.
func (p *Plugin) DeleteDisk(ctx context.Context, cid string) error {
	return p.call(ctx, "DeleteDisk", func(ctx context.Context, c cpi.CPI) error {
		return c.DeleteDisk(ctx, cid)
	})
}

// ResizeDisk implements cpi.CPI.
func (p *Plugin) ResizeDisk(ctx context.Context, cid string, sizeMB int64) error {
	return p.call(ctx, "ResizeDisk", func(ctx context.Context, c cpi.CPI) error {
		return c.ResizeDisk(ctx, cid, sizeMB)
	})
}

// AttachDisk implements cpi.CPI.
func (p *Plugin) AttachDisk(ctx context.Context, vmCID, diskCID string) (out cpi.DiskHint, err error) {
	err = p.call(ctx, "AttachDisk", func(ctx context.Context, c cpi.CPI) (err error) {
		out, err = c.AttachDisk(ctx, vmCID, diskCID)
		return err
	})
	return out, err
}

// DetachDisk implements cpi.CPI.
func (p *Plugin) DetachDisk(ctx context.Context, vmCID, diskCID string) error {
	return p.call(ctx, "DetachDisk", func(ctx context.Context, c cpi.CPI) error {
		return c.DetachDisk(ctx, vmCID, diskCID)
	})
}

// HasDisk implements cpi.CPI.
func (p *Plugin) HasDisk(ctx context.Context, cid string) (out bool, err error) {
	err = p.call(ctx, "HasDisk", func(ctx context.Context, c cpi.CPI) (err error) {
		out, err = c.HasDisk(ctx, cid)
		return err
	})
	return out, err
}

// GetDisks implements cpi.CPI.
func (p *Plugin) GetDisks(ctx context.Context, vmCID string) (out []string, err error) {
	err = p.call(ctx, "GetDisks", func(ctx context.Context, c cpi.CPI) (err error) {
		out, err = c.GetDisks(ctx, vmCID)
		return err
	})
	return out, err
}

// SetDiskMetadata implements cpi.CPI.
func (p *Plugin) SetDiskMetadata(ctx context.Context, cid string, md map[string]string) error {
	return p.call(ctx, "SetDiskMetadata", func(ctx context.Context, c cpi.CPI) error {
		return c.SetDiskMetadata(ctx, cid, md)
	})
}

// SnapshotDisk implements cpi.CPI.
func (p *Plugin) SnapshotDisk(ctx context.Context, cid string, md map[string]string) (out string, err error) {
	err = p.call(ctx, "SnapshotDisk", func(ctx context.Context, c cpi.CPI) (err error) {
		out, err = c.SnapshotDisk(ctx, cid, md)
		return err
	})
	return out, err
}

// DeleteSnapshot implements cpi.CPI.
func (p *Plugin) DeleteSnapshot(ctx context.Context, cid string) error {
	return p.call(ctx, "DeleteSnapshot", func(ctx context.Context, c cpi.CPI) error {
		return c.DeleteSnapshot(ctx, cid)
	})
}

// ListVMs implements cpi.CPI.
func (p *Plugin) ListVMs(ctx context.Context, f cpi.ListFilter) (out []cpi.VMInfo, err error) {
	err = p.call(ctx, "ListVMs", func(ctx context.Context, c cpi.CPI) (err error) {
		out, err = c.ListVMs(ctx, f)
		return err
	})
	return out, err
}

// ListDisks implements cpi.CPI.
func (p *Plugin) ListDisks(ctx context.Context, f cpi.ListFilter) (out []cpi.DiskInfo, err error) {
	err = p.call(ctx, "ListDisks", func(ctx context.Context, c cpi.CPI) (err error) {
		out, err = c.ListDisks(ctx, f)
		return err
	})
	return out, err
}
