// Package cloudcheck compares what the director's state says a deployment
// has with what the cloud and the agents report, lists the differences as
// problems, and resolves them the way BOSH's cloud-check does.
//
// Finding problems is pure: [Detect] takes an [Observed] — the state's
// instances and disks plus the answers of the CPI (HasVM, HasDisk, GetDisks),
// of the agents (ping, list_disk) and, where the cloud can list its VMs, that
// list — and returns the problems. [Checker] gathers those inputs through
// small interfaces and applies resolutions.
//
// Problems and their resolutions (the first is the default that --auto
// applies):
//
//	missing_vm          the instance's VM is gone:        recreate_vm, delete_vm_reference, ignore
//	unresponsive_agent  the VM exists, its agent is mute: recreate_vm, reboot_vm, ignore
//	missing_disk        a persistent disk is gone:        ignore, delete_disk_reference
//	unattached_disk     the disk is not attached to the instance's VM: reattach_disk, ignore
//	mount_mismatch      attached, but the agent has not mounted it:      reattach_disk, ignore
//	unknown_vm          a VM tagged with this director and deployment that
//	                    the state does not know:          ignore, delete_vm
//	unknown_disk        a persistent disk tagged with this director and
//	                    deployment that the state does not know (a creation
//	                    interrupted before its cid was recorded):
//	                                                      ignore, orphan_disk
//
// Instances marked to be ignored (Instance.IgnoreFix) are not checked.
package cloudcheck

import (
	"fmt"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/director/apiv1"
	"slices"
	"sort"

	"github.com/compleat/compleat/director/store"
)

// Problem types.
const (
	MissingVM         = "missing_vm"
	UnresponsiveAgent = "unresponsive_agent"
	MissingDisk       = "missing_disk"
	UnattachedDisk    = "unattached_disk"
	MountMismatch     = "mount_mismatch"
	UnknownVM         = "unknown_vm"
	UnknownDisk       = "unknown_disk"
)

// Resolutions (apiv1).
const (
	Ignore              = apiv1.Ignore
	RebootVM            = apiv1.RebootVM
	RecreateVM          = apiv1.RecreateVM
	DeleteVMReference   = apiv1.DeleteVMReference
	DeleteDiskReference = apiv1.DeleteDiskReference
	ReattachDisk        = apiv1.ReattachDisk
	DeleteVM            = apiv1.DeleteVM
	OrphanDisk          = apiv1.OrphanDisk
)

// Descriptions of the resolutions, for prompts (apiv1.Descriptions).
var Descriptions = apiv1.Descriptions

// Problem is apiv1.Problem: one difference between the state and the cloud.
type Problem = apiv1.Problem

// CloudVM is a VM the cloud lists, with its metadata tags.
type CloudVM struct {
	CID      string            `json:"cid"`
	CPI      string            `json:"cpi,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// CloudDisk is a persistent disk the cloud lists, with its tags.
type CloudDisk struct {
	CID      string            `json:"cid"`
	CPI      string            `json:"cpi,omitempty"`
	VMCID    string            `json:"vm_cid,omitempty"`
	SizeMB   int64             `json:"size_mb,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// Observed is everything Detect looks at. Maps answer by cid or agent id; a
// key that is absent means "not asked" (e.g. no ping for a VM that is gone),
// never "false".
type Observed struct {
	Deployment string
	// Director is the director's name in VM metadata ("director" tag).
	Director  string
	Instances []store.Instance
	// Disks are the deployment's persistent disks in the state (not
	// orphaned).
	Disks []store.Disk
	// CPIOf names each VM's CPI (from the state's VM records).
	CPIOf map[string]string
	// KnownVMs holds every VM cid the state knows, of any deployment.
	KnownVMs map[string]bool
	// HasVM, HasDisk: the CPI's answers.
	HasVM   map[string]bool
	HasDisk map[string]bool
	// Attached: GetDisks of each VM.
	Attached map[string][]string
	// Responsive: whether each agent answered a ping.
	Responsive map[string]bool
	// Mounted: the agent's list_disk, by agent id.
	Mounted map[string][]string
	// CloudVMs is the cloud's own list of VMs; nil when the cloud cannot
	// list them (the CPI contract has no such call; see Lister).
	CloudVMs []CloudVM
	// KnownDisks holds every disk cid the state knows, orphaned or not,
	// of any deployment.
	KnownDisks map[string]bool
	// CloudDisks is the clouds' own list of persistent disks; nil when no
	// cloud can list them.
	CloudDisks []CloudDisk
}

// Detect lists the problems in o, ordered by type then object.
func Detect(o Observed) []Problem {
	var out []Problem
	disksOf := map[string][]string{}
	for _, d := range o.Disks {
		if d.InstanceID != "" && !d.Orphaned {
			disksOf[d.InstanceID] = append(disksOf[d.InstanceID], d.CID)
		}
	}
	for _, in := range o.Instances {
		if in.IgnoreFix {
			continue
		}
		name := in.Group + "/" + in.ID
		base := Problem{Deployment: o.Deployment, Instance: name, InstanceID: in.ID, VMCID: in.VMCID, AgentID: in.AgentID, CPI: o.CPIOf[in.VMCID]}
		disks := slices.Clone(in.DiskCIDs)
		for _, d := range disksOf[in.ID] {
			if !slices.Contains(disks, d) {
				disks = append(disks, d)
			}
		}
		sort.Strings(disks)
		vmOK := false
		if in.VMCID != "" {
			has, asked := o.HasVM[in.VMCID]
			switch {
			case asked && !has:
				p := base
				p.ID, p.Type = MissingVM+":"+in.VMCID, MissingVM
				p.Description = fmt.Sprintf("VM %s of %s is missing from the cloud", in.VMCID, name)
				p.Resolutions = []string{RecreateVM, DeleteVMReference, Ignore}
				out = append(out, p)
			case asked:
				vmOK = true
				if resp, pinged := o.Responsive[in.AgentID]; pinged && !resp {
					p := base
					p.ID, p.Type = UnresponsiveAgent+":"+in.VMCID, UnresponsiveAgent
					p.Description = fmt.Sprintf("agent %s on VM %s of %s does not answer", in.AgentID, in.VMCID, name)
					p.Resolutions = []string{RecreateVM, RebootVM, Ignore}
					out = append(out, p)
					vmOK = false // the agent cannot tell its mounts
				}
			}
		}
		for _, d := range disks {
			p := base
			p.DiskCID = d
			if has, asked := o.HasDisk[d]; asked && !has {
				p.ID, p.Type = MissingDisk+":"+d, MissingDisk
				p.Description = fmt.Sprintf("persistent disk %s of %s is missing from the cloud", d, name)
				p.Resolutions = []string{Ignore, DeleteDiskReference}
				out = append(out, p)
				continue
			}
			if in.VMCID == "" || !o.HasVM[in.VMCID] {
				continue
			}
			att, asked := o.Attached[in.VMCID]
			if !asked {
				continue
			}
			if !slices.Contains(att, d) {
				p.ID, p.Type = UnattachedDisk+":"+d, UnattachedDisk
				p.Description = fmt.Sprintf("persistent disk %s of %s is not attached to its VM %s", d, name, in.VMCID)
				p.Resolutions = []string{ReattachDisk, Ignore}
				out = append(out, p)
				continue
			}
			mounted, known := o.Mounted[in.AgentID]
			if vmOK && known && !slices.Contains(mounted, d) {
				p.ID, p.Type = MountMismatch+":"+d, MountMismatch
				p.Description = fmt.Sprintf("persistent disk %s is attached to VM %s of %s but its agent has not mounted it", d, in.VMCID, name)
				p.Resolutions = []string{ReattachDisk, Ignore}
				out = append(out, p)
			}
		}
	}
	for _, vm := range o.CloudVMs {
		if o.KnownVMs[vm.CID] || vm.Metadata[cpi.TagDeployment] != o.Deployment {
			continue
		}
		if o.Director != "" && vm.Metadata[cpi.TagDirector] != o.Director {
			continue // another director's: never touched
		}
		out = append(out, Problem{ID: UnknownVM + ":" + vm.CID, Type: UnknownVM, Deployment: o.Deployment, VMCID: vm.CID, CPI: vm.CPI,
			Description: fmt.Sprintf("VM %s is tagged with deployment %s but the director does not know it", vm.CID, o.Deployment),
			Resolutions: []string{Ignore, DeleteVM}})
	}
	for _, dk := range o.CloudDisks {
		if o.KnownDisks[dk.CID] || dk.Metadata[cpi.TagDeployment] != o.Deployment {
			continue
		}
		if o.Director != "" && dk.Metadata[cpi.TagDirector] != o.Director {
			continue
		}
		desc := fmt.Sprintf("persistent disk %s in cpi %s is tagged with deployment %s but the director does not know it", dk.CID, dk.CPI, o.Deployment)
		if id := dk.Metadata[cpi.TagInstanceID]; id != "" {
			desc += " (made for instance " + id + ")"
		}
		out = append(out, Problem{ID: UnknownDisk + ":" + dk.CID, Type: UnknownDisk, Deployment: o.Deployment, DiskCID: dk.CID, CPI: dk.CPI,
			InstanceID: dk.Metadata[cpi.TagInstanceID], Description: desc, Resolutions: []string{Ignore, OrphanDisk}})
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Type != out[j].Type {
			return typeOrder[out[i].Type] < typeOrder[out[j].Type]
		}
		return out[i].ID < out[j].ID
	})
	return out
}

var typeOrder = map[string]int{MissingVM: 0, UnresponsiveAgent: 1, MissingDisk: 2, UnattachedDisk: 3, MountMismatch: 4, UnknownVM: 5, UnknownDisk: 6}
