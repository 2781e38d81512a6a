package apiv1

import (
	"slices"
	"time"

	"github.com/compleat/compleat/agent/protocol"
)

// HealthInstance is one instance of GET /v1/deployments/{name}/health:
// the health monitor's view of it.
type HealthInstance struct {
	Deployment string `json:"deployment"`
	Group      string `json:"group"`
	ID         string `json:"id"`
	Index      int    `json:"index"`
	AgentID    string `json:"agent_id"`
	VMCID      string `json:"vm_cid"`
	CPI        string `json:"cpi,omitempty"`
	// State is the desired state ("started", "stopped").
	State  string `json:"state,omitempty"`
	Ignore bool   `json:"ignore,omitempty"`
	// Status: unknown, running, starting, failing, stopped, late,
	// unresponsive.
	Status        string    `json:"status"`
	Since         time.Time `json:"since"`
	LastHeartbeat time.Time `json:"last_heartbeat,omitzero"`
	// HeartbeatAge is the time since the last heartbeat, in seconds.
	HeartbeatAge float64             `json:"heartbeat_age_s"`
	JobState     string              `json:"job_state,omitempty"`
	Jobs         []protocol.JobState `json:"jobs,omitempty"`
	Vitals       *protocol.Vitals    `json:"vitals,omitempty"`
	// Reason says why an instance is unresponsive.
	Reason string `json:"reason,omitempty"`
}

// Name is "group/id".
func (h HealthInstance) Name() string { return h.Group + "/" + h.ID }

// Resolutions.
const (
	Ignore              = "ignore"
	RebootVM            = "reboot_vm"
	RecreateVM          = "recreate_vm"
	DeleteVMReference   = "delete_vm_reference"
	DeleteDiskReference = "delete_disk_reference"
	ReattachDisk        = "reattach_disk"
	DeleteVM            = "delete_vm"
	OrphanDisk          = "orphan_disk"
)

// Descriptions of the resolutions, for prompts.
var Descriptions = map[string]string{
	Ignore:              "Skip for now",
	RebootVM:            "Reboot the VM",
	RecreateVM:          "Recreate the VM (with its persistent disk) and wait for its jobs",
	DeleteVMReference:   "Delete the VM reference (the state forgets the VM)",
	DeleteDiskReference: "Delete the disk reference (the state forgets the disk)",
	ReattachDisk:        "Attach the disk to the instance's VM again and mount it",
	DeleteVM:            "Delete the VM from the cloud",
	OrphanDisk:          "Record the disk as an orphaned disk of the deployment (its data kept; delete-disk or clean-up removes it)",
}

// Problem is one difference between the state and the cloud.
type Problem struct {
	// ID is stable across scans: "<type>:<cid>".
	ID          string `json:"id"`
	Type        string `json:"type"`
	Deployment  string `json:"deployment"`
	Instance    string `json:"instance,omitempty"` // "group/id"
	InstanceID  string `json:"instance_id,omitempty"`
	VMCID       string `json:"vm_cid,omitempty"`
	DiskCID     string `json:"disk_cid,omitempty"`
	AgentID     string `json:"agent_id,omitempty"`
	CPI         string `json:"cpi,omitempty"`
	Description string `json:"description"`
	// Resolutions are the allowed resolutions, the default first.
	Resolutions []string `json:"resolutions"`
}

// Default is the resolution --auto applies.
func (p Problem) Default() string { return p.Resolutions[0] }

// Allows reports whether r resolves p.
func (p Problem) Allows(r string) bool { return slices.Contains(p.Resolutions, r) }
