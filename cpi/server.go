package cpi

import (
	"context"
	"fmt"
	"runtime/debug"
	"slices"

	cpiv1 "github.com/compleat/compleat/cpi/v1"
	"google.golang.org/grpc"
)

// RegisterGRPCServer serves impl as the cpi/v1 CPI service on s. Serve does
// this inside a plugin; tests use it to run a CPI over real gRPC in-process
// (see cpitest.RunInProcess).
//
// A panic in a method of impl does not take the plugin down: the call
// answers an Unknown error naming the method and the panic (with its stack
// in the plugin's log), and the other calls go on.
func RegisterGRPCServer(s grpc.ServiceRegistrar, impl CPI) {
	desc := cpiv1.CPI_ServiceDesc
	desc.Methods = slices.Clone(desc.Methods)
	for i, m := range desc.Methods {
		h := m.Handler
		desc.Methods[i].Handler = func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (resp any, err error) {
			defer func() {
				if r := recover(); r != nil {
					err = toStatus(panicError(m.MethodName, r))
				}
			}()
			return h(srv, ctx, dec, ic)
		}
	}
	s.RegisterService(&desc, &grpcServer{impl: impl})
}

// panicError is the error a call answers when the plugin's method panicked;
// the stack goes to the plugin's log.
func panicError(method string, r any) *Error {
	Logger().Error("panic in a CPI method", "method", method, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	return Errorf(CodeUnknown, "%s: the plugin panicked: %v", method, r)
}

// grpcServer adapts a CPI to the generated server interface. Every error
// leaves through toStatus.
type grpcServer struct {
	cpiv1.UnimplementedCPIServer
	impl CPI
}

func (s *grpcServer) Info(ctx context.Context, _ *cpiv1.InfoRequest) (*cpiv1.InfoResponse, error) {
	info, err := s.impl.Info(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return infoToWire(info), nil
}

func (s *grpcServer) CreateStemcell(ctx context.Context, r *cpiv1.CreateStemcellRequest) (*cpiv1.CreateStemcellResponse, error) {
	cid, err := s.impl.CreateStemcell(ctx, CreateStemcellRequest{ImagePath: r.GetImagePath(), CloudProperties: bytesToRaw(r.GetCloudProperties())})
	if err != nil {
		return nil, toStatus(err)
	}
	return &cpiv1.CreateStemcellResponse{StemcellCid: cid}, nil
}

func (s *grpcServer) DeleteStemcell(ctx context.Context, r *cpiv1.DeleteStemcellRequest) (*cpiv1.DeleteStemcellResponse, error) {
	if err := s.impl.DeleteStemcell(ctx, r.GetStemcellCid()); err != nil {
		return nil, toStatus(err)
	}
	return &cpiv1.DeleteStemcellResponse{}, nil
}

func (s *grpcServer) CreateVM(ctx context.Context, r *cpiv1.CreateVMRequest) (*cpiv1.CreateVMResponse, error) {
	res, err := s.impl.CreateVM(ctx, CreateVMRequest{
		AgentID:         r.GetAgentId(),
		StemcellCID:     r.GetStemcellCid(),
		CloudProperties: bytesToRaw(r.GetCloudProperties()),
		Networks:        networksFromWire(r.GetNetworks()),
		DiskCIDs:        r.GetDiskCids(),
		Env:             bytesToRaw(r.GetEnv()),
		AgentSettings:   bytesToRaw(r.GetAgentSettings()),
		Tags:            r.GetTags(),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &cpiv1.CreateVMResponse{VmCid: res.CID, Networks: networksToWire(res.Networks)}, nil
}

func (s *grpcServer) DeleteVM(ctx context.Context, r *cpiv1.DeleteVMRequest) (*cpiv1.DeleteVMResponse, error) {
	if err := s.impl.DeleteVM(ctx, r.GetVmCid()); err != nil {
		return nil, toStatus(err)
	}
	return &cpiv1.DeleteVMResponse{}, nil
}

func (s *grpcServer) HasVM(ctx context.Context, r *cpiv1.HasVMRequest) (*cpiv1.HasVMResponse, error) {
	ok, err := s.impl.HasVM(ctx, r.GetVmCid())
	if err != nil {
		return nil, toStatus(err)
	}
	return &cpiv1.HasVMResponse{Exists: ok}, nil
}

func (s *grpcServer) RebootVM(ctx context.Context, r *cpiv1.RebootVMRequest) (*cpiv1.RebootVMResponse, error) {
	if err := s.impl.RebootVM(ctx, r.GetVmCid()); err != nil {
		return nil, toStatus(err)
	}
	return &cpiv1.RebootVMResponse{}, nil
}

func (s *grpcServer) SetVMMetadata(ctx context.Context, r *cpiv1.SetVMMetadataRequest) (*cpiv1.SetVMMetadataResponse, error) {
	if err := s.impl.SetVMMetadata(ctx, r.GetVmCid(), r.GetMetadata()); err != nil {
		return nil, toStatus(err)
	}
	return &cpiv1.SetVMMetadataResponse{}, nil
}

func (s *grpcServer) CalculateVMCloudProperties(ctx context.Context, r *cpiv1.CalculateVMCloudPropertiesRequest) (*cpiv1.CalculateVMCloudPropertiesResponse, error) {
	props, err := s.impl.CalculateVMCloudProperties(ctx, VMResources{CPU: int(r.GetCpu()), RAMMB: r.GetRamMb(), EphemeralDiskSize: r.GetEphemeralDiskSizeMb()})
	if err != nil {
		return nil, toStatus(err)
	}
	return &cpiv1.CalculateVMCloudPropertiesResponse{CloudProperties: rawToBytes(props)}, nil
}

func (s *grpcServer) CreateDisk(ctx context.Context, r *cpiv1.CreateDiskRequest) (*cpiv1.CreateDiskResponse, error) {
	cid, err := s.impl.CreateDisk(ctx, CreateDiskRequest{SizeMB: r.GetSizeMb(), CloudProperties: bytesToRaw(r.GetCloudProperties()), VMCID: r.GetVmLocality(), Tags: r.GetTags()})
	if err != nil {
		return nil, toStatus(err)
	}
	return &cpiv1.CreateDiskResponse{DiskCid: cid}, nil
}

func (s *grpcServer) DeleteDisk(ctx context.Context, r *cpiv1.DeleteDiskRequest) (*cpiv1.DeleteDiskResponse, error) {
	if err := s.impl.DeleteDisk(ctx, r.GetDiskCid()); err != nil {
		return nil, toStatus(err)
	}
	return &cpiv1.DeleteDiskResponse{}, nil
}

func (s *grpcServer) ResizeDisk(ctx context.Context, r *cpiv1.ResizeDiskRequest) (*cpiv1.ResizeDiskResponse, error) {
	if err := s.impl.ResizeDisk(ctx, r.GetDiskCid(), r.GetSizeMb()); err != nil {
		return nil, toStatus(err)
	}
	return &cpiv1.ResizeDiskResponse{}, nil
}

func (s *grpcServer) AttachDisk(ctx context.Context, r *cpiv1.AttachDiskRequest) (*cpiv1.AttachDiskResponse, error) {
	hint, err := s.impl.AttachDisk(ctx, r.GetVmCid(), r.GetDiskCid())
	if err != nil {
		return nil, toStatus(err)
	}
	return &cpiv1.AttachDiskResponse{Hint: hintToWire(hint)}, nil
}

func (s *grpcServer) DetachDisk(ctx context.Context, r *cpiv1.DetachDiskRequest) (*cpiv1.DetachDiskResponse, error) {
	if err := s.impl.DetachDisk(ctx, r.GetVmCid(), r.GetDiskCid()); err != nil {
		return nil, toStatus(err)
	}
	return &cpiv1.DetachDiskResponse{}, nil
}

func (s *grpcServer) HasDisk(ctx context.Context, r *cpiv1.HasDiskRequest) (*cpiv1.HasDiskResponse, error) {
	ok, err := s.impl.HasDisk(ctx, r.GetDiskCid())
	if err != nil {
		return nil, toStatus(err)
	}
	return &cpiv1.HasDiskResponse{Exists: ok}, nil
}

func (s *grpcServer) GetDisks(ctx context.Context, r *cpiv1.GetDisksRequest) (*cpiv1.GetDisksResponse, error) {
	disks, err := s.impl.GetDisks(ctx, r.GetVmCid())
	if err != nil {
		return nil, toStatus(err)
	}
	return &cpiv1.GetDisksResponse{DiskCids: disks}, nil
}

func (s *grpcServer) SetDiskMetadata(ctx context.Context, r *cpiv1.SetDiskMetadataRequest) (*cpiv1.SetDiskMetadataResponse, error) {
	if err := s.impl.SetDiskMetadata(ctx, r.GetDiskCid(), r.GetMetadata()); err != nil {
		return nil, toStatus(err)
	}
	return &cpiv1.SetDiskMetadataResponse{}, nil
}

func (s *grpcServer) SnapshotDisk(ctx context.Context, r *cpiv1.SnapshotDiskRequest) (*cpiv1.SnapshotDiskResponse, error) {
	cid, err := s.impl.SnapshotDisk(ctx, r.GetDiskCid(), r.GetMetadata())
	if err != nil {
		return nil, toStatus(err)
	}
	return &cpiv1.SnapshotDiskResponse{SnapshotCid: cid}, nil
}

func (s *grpcServer) DeleteSnapshot(ctx context.Context, r *cpiv1.DeleteSnapshotRequest) (*cpiv1.DeleteSnapshotResponse, error) {
	if err := s.impl.DeleteSnapshot(ctx, r.GetSnapshotCid()); err != nil {
		return nil, toStatus(err)
	}
	return &cpiv1.DeleteSnapshotResponse{}, nil
}

func (s *grpcServer) ListVMs(ctx context.Context, r *cpiv1.ListVMsRequest) (*cpiv1.ListVMsResponse, error) {
	vms, err := s.impl.ListVMs(ctx, filterFromWire(r.GetFilter()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &cpiv1.ListVMsResponse{Vms: vmsToWire(vms)}, nil
}

func (s *grpcServer) ListDisks(ctx context.Context, r *cpiv1.ListDisksRequest) (*cpiv1.ListDisksResponse, error) {
	disks, err := s.impl.ListDisks(ctx, filterFromWire(r.GetFilter()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &cpiv1.ListDisksResponse{Disks: disksToWire(disks)}, nil
}
