package cpi

import (
	"encoding/json"

	cpiv1 "github.com/compleat/compleat/cpi/v1"
)

// Conversions between the SDK's types and the wire types of cpi/v1. JSON
// documents travel as bytes; empty bytes and a nil json.RawMessage are the
// same "no document".

func rawToBytes(r json.RawMessage) []byte { return []byte(r) }

func bytesToRaw(b []byte) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	return json.RawMessage(b)
}

func networkToWire(n Network) *cpiv1.Network {
	return &cpiv1.Network{
		Type: n.Type, Ip: n.IP, Netmask: n.Netmask, Gateway: n.Gateway,
		Dns: n.DNS, Default: n.Default, CloudProperties: rawToBytes(n.CloudProperties),
	}
}

func networkFromWire(n *cpiv1.Network) Network {
	return Network{
		Type: n.GetType(), IP: n.GetIp(), Netmask: n.GetNetmask(), Gateway: n.GetGateway(),
		DNS: n.GetDns(), Default: n.GetDefault(), CloudProperties: bytesToRaw(n.GetCloudProperties()),
	}
}

func networksToWire(m map[string]Network) map[string]*cpiv1.Network {
	if m == nil {
		return nil
	}
	out := make(map[string]*cpiv1.Network, len(m))
	for k, v := range m {
		out[k] = networkToWire(v)
	}
	return out
}

func networksFromWire(m map[string]*cpiv1.Network) map[string]Network {
	if m == nil {
		return nil
	}
	out := make(map[string]Network, len(m))
	for k, v := range m {
		out[k] = networkFromWire(v)
	}
	return out
}

func infoToWire(i Info) *cpiv1.InfoResponse {
	return &cpiv1.InfoResponse{
		Name: i.Name, ApiVersion: int32(i.APIVersion), StemcellFormats: i.StemcellFormats,
		Capabilities: &cpiv1.Capabilities{
			Snapshots: i.Capabilities.Snapshots, ResizeDisk: i.Capabilities.ResizeDisk,
			DiskHints: i.Capabilities.DiskHints, DynamicNetworks: i.Capabilities.DynamicNetworks,
			ListVms: i.Capabilities.ListVMs, ListDisks: i.Capabilities.ListDisks,
		},
	}
}

func infoFromWire(r *cpiv1.InfoResponse) Info {
	c := r.GetCapabilities()
	return Info{
		Name: r.GetName(), APIVersion: int(r.GetApiVersion()), StemcellFormats: r.GetStemcellFormats(),
		Capabilities: Capabilities{
			Snapshots: c.GetSnapshots(), ResizeDisk: c.GetResizeDisk(),
			DiskHints: c.GetDiskHints(), DynamicNetworks: c.GetDynamicNetworks(),
			ListVMs: c.GetListVms(), ListDisks: c.GetListDisks(),
		},
	}
}

func hintToWire(h DiskHint) *cpiv1.DiskHint {
	return &cpiv1.DiskHint{Path: h.Path, Lun: h.LUN, Id: h.ID, VolumeId: h.VolumeID}
}

func hintFromWire(h *cpiv1.DiskHint) DiskHint {
	return DiskHint{Path: h.GetPath(), LUN: h.GetLun(), ID: h.GetId(), VolumeID: h.GetVolumeId()}
}

func filterToWire(f ListFilter) *cpiv1.ListFilter {
	return &cpiv1.ListFilter{DirectorId: f.DirectorID}
}

func filterFromWire(f *cpiv1.ListFilter) ListFilter {
	return ListFilter{DirectorID: f.GetDirectorId()}
}

// Lists are never nil on the SDK side: an empty list is []VMInfo{}.

func vmsToWire(vms []VMInfo) []*cpiv1.VM {
	out := make([]*cpiv1.VM, 0, len(vms))
	for _, v := range vms {
		out = append(out, &cpiv1.VM{Cid: v.CID, AgentId: v.AgentID, Tags: v.Tags})
	}
	return out
}

func vmsFromWire(vms []*cpiv1.VM) []VMInfo {
	out := make([]VMInfo, 0, len(vms))
	for _, v := range vms {
		out = append(out, VMInfo{CID: v.GetCid(), AgentID: v.GetAgentId(), Tags: v.GetTags()})
	}
	return out
}

func disksToWire(disks []DiskInfo) []*cpiv1.Disk {
	out := make([]*cpiv1.Disk, 0, len(disks))
	for _, d := range disks {
		out = append(out, &cpiv1.Disk{Cid: d.CID, VmCid: d.VMCID, Tags: d.Tags, SizeMb: d.SizeMB})
	}
	return out
}

func disksFromWire(disks []*cpiv1.Disk) []DiskInfo {
	out := make([]DiskInfo, 0, len(disks))
	for _, d := range disks {
		out = append(out, DiskInfo{CID: d.GetCid(), VMCID: d.GetVmCid(), Tags: d.GetTags(), SizeMB: d.GetSizeMb()})
	}
	return out
}
