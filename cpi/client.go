package cpi

import (
	"context"
	"encoding/json"

	cpiv1 "github.com/compleat/compleat/cpi/v1"
	"google.golang.org/grpc"
)

// NewGRPCClient returns a CPI that calls the cpi/v1 service on conn. Errors
// the plugin raised come back as *Error (errors.Is works with the
// sentinels); transport failures come back as gRPC status errors, which
// cpi/host turns into ErrOutcomeUnknown when the plugin died. Most callers
// want cpi/host, which launches the plugin and keeps it up.
func NewGRPCClient(conn grpc.ClientConnInterface) CPI {
	return &grpcClient{c: cpiv1.NewCPIClient(conn)}
}

type grpcClient struct {
	c cpiv1.CPIClient
}

var _ CPI = (*grpcClient)(nil)

func (g *grpcClient) Info(ctx context.Context) (Info, error) {
	r, err := g.c.Info(ctx, &cpiv1.InfoRequest{})
	if err != nil {
		return Info{}, fromStatus("Info", err)
	}
	return infoFromWire(r), nil
}

func (g *grpcClient) CreateStemcell(ctx context.Context, req CreateStemcellRequest) (string, error) {
	r, err := g.c.CreateStemcell(ctx, &cpiv1.CreateStemcellRequest{ImagePath: req.ImagePath, CloudProperties: rawToBytes(req.CloudProperties)})
	if err != nil {
		return "", fromStatus("CreateStemcell", err)
	}
	return r.GetStemcellCid(), nil
}

func (g *grpcClient) DeleteStemcell(ctx context.Context, cid string) error {
	_, err := g.c.DeleteStemcell(ctx, &cpiv1.DeleteStemcellRequest{StemcellCid: cid})
	return fromStatus("DeleteStemcell", err)
}

func (g *grpcClient) CreateVM(ctx context.Context, req CreateVMRequest) (CreateVMResult, error) {
	r, err := g.c.CreateVM(ctx, &cpiv1.CreateVMRequest{
		AgentId:         req.AgentID,
		StemcellCid:     req.StemcellCID,
		CloudProperties: rawToBytes(req.CloudProperties),
		Networks:        networksToWire(req.Networks),
		DiskCids:        req.DiskCIDs,
		Env:             rawToBytes(req.Env),
		AgentSettings:   rawToBytes(req.AgentSettings),
		Tags:            req.Tags,
	})
	if err != nil {
		return CreateVMResult{}, fromStatus("CreateVM", err)
	}
	return CreateVMResult{CID: r.GetVmCid(), Networks: networksFromWire(r.GetNetworks())}, nil
}

func (g *grpcClient) DeleteVM(ctx context.Context, cid string) error {
	_, err := g.c.DeleteVM(ctx, &cpiv1.DeleteVMRequest{VmCid: cid})
	return fromStatus("DeleteVM", err)
}

func (g *grpcClient) HasVM(ctx context.Context, cid string) (bool, error) {
	r, err := g.c.HasVM(ctx, &cpiv1.HasVMRequest{VmCid: cid})
	if err != nil {
		return false, fromStatus("HasVM", err)
	}
	return r.GetExists(), nil
}

func (g *grpcClient) RebootVM(ctx context.Context, cid string) error {
	_, err := g.c.RebootVM(ctx, &cpiv1.RebootVMRequest{VmCid: cid})
	return fromStatus("RebootVM", err)
}

func (g *grpcClient) SetVMMetadata(ctx context.Context, cid string, md map[string]string) error {
	_, err := g.c.SetVMMetadata(ctx, &cpiv1.SetVMMetadataRequest{VmCid: cid, Metadata: md})
	return fromStatus("SetVMMetadata", err)
}

func (g *grpcClient) CalculateVMCloudProperties(ctx context.Context, req VMResources) (json.RawMessage, error) {
	r, err := g.c.CalculateVMCloudProperties(ctx, &cpiv1.CalculateVMCloudPropertiesRequest{
		Cpu: int32(req.CPU), RamMb: req.RAMMB, EphemeralDiskSizeMb: req.EphemeralDiskSize,
	})
	if err != nil {
		return nil, fromStatus("CalculateVMCloudProperties", err)
	}
	return bytesToRaw(r.GetCloudProperties()), nil
}

func (g *grpcClient) CreateDisk(ctx context.Context, req CreateDiskRequest) (string, error) {
	r, err := g.c.CreateDisk(ctx, &cpiv1.CreateDiskRequest{SizeMb: req.SizeMB, CloudProperties: rawToBytes(req.CloudProperties), VmLocality: req.VMCID, Tags: req.Tags})
	if err != nil {
		return "", fromStatus("CreateDisk", err)
	}
	return r.GetDiskCid(), nil
}

func (g *grpcClient) DeleteDisk(ctx context.Context, cid string) error {
	_, err := g.c.DeleteDisk(ctx, &cpiv1.DeleteDiskRequest{DiskCid: cid})
	return fromStatus("DeleteDisk", err)
}

func (g *grpcClient) ResizeDisk(ctx context.Context, cid string, sizeMB int64) error {
	_, err := g.c.ResizeDisk(ctx, &cpiv1.ResizeDiskRequest{DiskCid: cid, SizeMb: sizeMB})
	return fromStatus("ResizeDisk", err)
}

func (g *grpcClient) AttachDisk(ctx context.Context, vmCID, diskCID string) (DiskHint, error) {
	r, err := g.c.AttachDisk(ctx, &cpiv1.AttachDiskRequest{VmCid: vmCID, DiskCid: diskCID})
	if err != nil {
		return DiskHint{}, fromStatus("AttachDisk", err)
	}
	return hintFromWire(r.GetHint()), nil
}

func (g *grpcClient) DetachDisk(ctx context.Context, vmCID, diskCID string) error {
	_, err := g.c.DetachDisk(ctx, &cpiv1.DetachDiskRequest{VmCid: vmCID, DiskCid: diskCID})
	return fromStatus("DetachDisk", err)
}

func (g *grpcClient) HasDisk(ctx context.Context, cid string) (bool, error) {
	r, err := g.c.HasDisk(ctx, &cpiv1.HasDiskRequest{DiskCid: cid})
	if err != nil {
		return false, fromStatus("HasDisk", err)
	}
	return r.GetExists(), nil
}

func (g *grpcClient) GetDisks(ctx context.Context, vmCID string) ([]string, error) {
	r, err := g.c.GetDisks(ctx, &cpiv1.GetDisksRequest{VmCid: vmCID})
	if err != nil {
		return nil, fromStatus("GetDisks", err)
	}
	return r.GetDiskCids(), nil
}

func (g *grpcClient) SetDiskMetadata(ctx context.Context, cid string, md map[string]string) error {
	_, err := g.c.SetDiskMetadata(ctx, &cpiv1.SetDiskMetadataRequest{DiskCid: cid, Metadata: md})
	return fromStatus("SetDiskMetadata", err)
}

func (g *grpcClient) SnapshotDisk(ctx context.Context, cid string, md map[string]string) (string, error) {
	r, err := g.c.SnapshotDisk(ctx, &cpiv1.SnapshotDiskRequest{DiskCid: cid, Metadata: md})
	if err != nil {
		return "", fromStatus("SnapshotDisk", err)
	}
	return r.GetSnapshotCid(), nil
}

func (g *grpcClient) DeleteSnapshot(ctx context.Context, cid string) error {
	_, err := g.c.DeleteSnapshot(ctx, &cpiv1.DeleteSnapshotRequest{SnapshotCid: cid})
	return fromStatus("DeleteSnapshot", err)
}

func (g *grpcClient) ListVMs(ctx context.Context, f ListFilter) ([]VMInfo, error) {
	r, err := g.c.ListVMs(ctx, &cpiv1.ListVMsRequest{Filter: filterToWire(f)})
	if err != nil {
		return nil, fromStatus("ListVMs", err)
	}
	return vmsFromWire(r.GetVms()), nil
}

func (g *grpcClient) ListDisks(ctx context.Context, f ListFilter) ([]DiskInfo, error) {
	r, err := g.c.ListDisks(ctx, &cpiv1.ListDisksRequest{Filter: filterToWire(f)})
	if err != nil {
		return nil, fromStatus("ListDisks", err)
	}
	return disksFromWire(r.GetDisks()), nil
}
