// Package cpi is the Cloud Provider Interface of Compleat: the contract between
// the director and the plugins that create VMs and disks in a cloud.
//
// A plugin author implements [CPI] (embedding [Unimplemented] for what the
// cloud cannot do), decodes properties and cloud properties with
// [DecodeCloudProperties], and calls [Main] from main, which builds the
// plugin from its properties and serves it ([Serve]), logging with
// [Logger]. The
// director launches the plugin binary once and keeps it running (cpi/host);
// every method is a gRPC call (see cpi/v1/cpi.proto) under the caller's
// context and deadline. Errors raised in the plugin cross the process
// boundary as codes, so that errors.Is(err, cpi.ErrVMNotFound) holds in the
// director.
//
// The method set follows BOSH CPI API v2. Delete methods are idempotent: deleting
// an object that does not exist succeeds. The conformance suite in cpi/cpitest is
// the definition of a working CPI.
//
// A binary built with Serve also speaks BOSH's own protocol when run with the
// single argument "json": one JSON request on stdin, one answer on stdout, one
// process per call ([ServeJSON]). docs/cpi-authoring.md is the guide.
package cpi

import (
	"context"
	"encoding/json"
)

// APIVersion is the version of the CPI contract implemented by this SDK.
const APIVersion = 2

// CPI is what every plugin implements. Every method takes the caller's context
// and must return promptly once it is cancelled.
type CPI interface {
	Info(ctx context.Context) (Info, error)

	CreateStemcell(ctx context.Context, req CreateStemcellRequest) (stemcellCID string, err error)
	DeleteStemcell(ctx context.Context, stemcellCID string) error

	CreateVM(ctx context.Context, req CreateVMRequest) (CreateVMResult, error)
	DeleteVM(ctx context.Context, vmCID string) error
	HasVM(ctx context.Context, vmCID string) (bool, error)
	RebootVM(ctx context.Context, vmCID string) error
	SetVMMetadata(ctx context.Context, vmCID string, metadata map[string]string) error
	CalculateVMCloudProperties(ctx context.Context, req VMResources) (json.RawMessage, error)

	CreateDisk(ctx context.Context, req CreateDiskRequest) (diskCID string, err error)
	DeleteDisk(ctx context.Context, diskCID string) error
	ResizeDisk(ctx context.Context, diskCID string, sizeMB int64) error
	AttachDisk(ctx context.Context, vmCID, diskCID string) (DiskHint, error)
	DetachDisk(ctx context.Context, vmCID, diskCID string) error
	HasDisk(ctx context.Context, diskCID string) (bool, error)
	GetDisks(ctx context.Context, vmCID string) ([]string, error)
	SetDiskMetadata(ctx context.Context, diskCID string, metadata map[string]string) error
	SnapshotDisk(ctx context.Context, diskCID string, metadata map[string]string) (snapshotCID string, err error)
	DeleteSnapshot(ctx context.Context, snapshotCID string) error

	// ListVMs lists the VMs this plugin created, found in the cloud by the
	// tags given at creation (CreateVMRequest.Tags), never from a private
	// list that can lag. Behind Capabilities.ListVMs.
	ListVMs(ctx context.Context, filter ListFilter) ([]VMInfo, error)
	// ListDisks lists the persistent disks this plugin created, found by
	// their tags (CreateDiskRequest.Tags). Behind Capabilities.ListDisks.
	ListDisks(ctx context.Context, filter ListFilter) ([]DiskInfo, error)
}

// Info describes a plugin: the contract version it speaks, the stemcell formats
// it accepts and what it can do, so that the director never guesses.
type Info struct {
	Name            string       `json:"name"` // e.g. "local", "aws"
	APIVersion      int          `json:"api_version"`
	StemcellFormats []string     `json:"stemcell_formats"` // e.g. "local-tgz", "aws-light"
	Capabilities    Capabilities `json:"capabilities"`
}

// Capabilities are the optional parts of the contract a plugin supports. A
// method behind a false flag answers ErrNotImplemented.
type Capabilities struct {
	Snapshots  bool `json:"snapshots"`
	ResizeDisk bool `json:"resize_disk"`
	// DiskHints is true when AttachDisk returns a hint that locates the device
	// (path, LUN or volume id) for the agent.
	DiskHints bool `json:"disk_hints"`
	// DynamicNetworks is true when the plugin assigns addresses on networks of
	// type "dynamic" and reports them in CreateVMResult.Networks.
	DynamicNetworks bool `json:"dynamic_networks"`
	// ListVMs is true when ListVMs lists the VMs the plugin created by
	// their tags.
	ListVMs bool `json:"list_vms"`
	// ListDisks is true when ListDisks lists the disks the plugin created
	// by their tags.
	ListDisks bool `json:"list_disks"`
}

// The standard tag keys. The director puts them in CreateVMRequest.Tags and
// CreateDiskRequest.Tags; a plugin applies every tag of the request to the
// object at creation, in the same call that creates it (EC2
// TagSpecifications, Azure tags, OpenStack metadata), so that an object whose
// creation outcome is unknown can still be found by ListVMs/ListDisks.
const (
	// TagDirector holds the id of the director that created the object.
	// ListVMs and ListDisks list exactly the objects carrying this tag.
	TagDirector = "compleat_director"
	// TagDeployment holds the deployment name.
	TagDeployment = "deployment"
	// TagInstanceGroup holds the instance group name.
	TagInstanceGroup = "instance_group"
	// TagInstanceID holds the instance's id within the deployment.
	TagInstanceID = "instance_id"
	// TagAgentID holds the agent id of the VM (for a disk: of the VM it was
	// created for).
	TagAgentID = "agent_id"
)

// ListFilter selects the objects ListVMs and ListDisks return. The zero
// filter selects every object carrying the TagDirector tag.
type ListFilter struct {
	// DirectorID, when not empty, selects only objects whose TagDirector
	// tag equals it.
	DirectorID string `json:"director_id,omitempty"`
}

// Match reports whether tags pass the filter: the TagDirector tag is present
// and, when the filter names a director, equal to it. Plugins that filter in
// memory use it; plugins that filter in the cloud's API apply the same rule.
func (f ListFilter) Match(tags map[string]string) bool {
	d, ok := tags[TagDirector]
	return ok && (f.DirectorID == "" || d == f.DirectorID)
}

// VMInfo is one VM as ListVMs found it.
type VMInfo struct {
	CID     string            `json:"cid"`
	AgentID string            `json:"agent_id"`
	Tags    map[string]string `json:"tags"`
}

// DiskInfo is one persistent disk as ListDisks found it.
type DiskInfo struct {
	CID string `json:"cid"`
	// VMCID is the VM the disk is attached to; empty when detached.
	VMCID  string            `json:"vm_cid,omitempty"`
	SizeMB int64             `json:"size"`
	Tags   map[string]string `json:"tags"`
}

// CreateStemcellRequest imports a stemcell image into the cloud.
type CreateStemcellRequest struct {
	// ImagePath is a file on the plugin's host: the stemcell's image (for a
	// light stemcell, an empty file).
	ImagePath string `json:"image_path"`
	// CloudProperties is stemcell.MF's cloud_properties (a JSON object), which
	// for light stemcells names the existing image (AMI per region, ...).
	CloudProperties json.RawMessage `json:"cloud_properties"`
}

// Network is one network a VM is placed on, as the director planned it and, in
// CreateVMResult, as the plugin configured it.
type Network struct {
	Type            string          `json:"type"` // "manual", "dynamic" or "vip"
	IP              string          `json:"ip,omitempty"`
	Netmask         string          `json:"netmask,omitempty"`
	Gateway         string          `json:"gateway,omitempty"`
	DNS             []string        `json:"dns,omitempty"`
	Default         []string        `json:"default,omitempty"` // "dns", "gateway"
	CloudProperties json.RawMessage `json:"cloud_properties,omitempty"`
}

// CreateVMRequest creates one VM running the agent.
type CreateVMRequest struct {
	AgentID         string             `json:"agent_id"`
	StemcellCID     string             `json:"stemcell_cid"`
	CloudProperties json.RawMessage    `json:"cloud_properties"`
	Networks        map[string]Network `json:"networks"`
	// DiskCIDs are persistent disks the VM will attach: a placement hint
	// (same AZ or host).
	DiskCIDs []string `json:"disk_cids,omitempty"`
	// Env is the instance group's env block (a JSON object).
	Env json.RawMessage `json:"env,omitempty"`
	// AgentSettings is the agent's settings document (a JSON object) that the
	// plugin delivers to the VM through the cloud's channel (a file for the
	// local CPI, user data on AWS, custom data on Azure, config drive on
	// OpenStack). The plugin delivers it unchanged except that it sets the
	// top-level "networks" key to the networks as configured (so dynamic
	// addresses are known to the agent) and "vm" to {"cid": <vm cid>}.
	AgentSettings json.RawMessage `json:"agent_settings"`
	// Tags are applied to the VM at creation (see TagDirector and the other
	// standard keys); ListVMs finds the VM by them.
	Tags map[string]string `json:"tags,omitempty"`
}

// CreateVMResult is the new VM's id and its networks as configured.
type CreateVMResult struct {
	CID      string             `json:"cid"`
	Networks map[string]Network `json:"networks"`
}

// VMResources asks CalculateVMCloudProperties for the smallest fitting VM type.
type VMResources struct {
	CPU               int   `json:"cpu"`
	RAMMB             int64 `json:"ram"`
	EphemeralDiskSize int64 `json:"ephemeral_disk_size"` // MB
}

// CreateDiskRequest creates a persistent disk.
type CreateDiskRequest struct {
	SizeMB          int64           `json:"size"`
	CloudProperties json.RawMessage `json:"cloud_properties"`
	// VMCID places the disk near the VM it will be attached to (same AZ); may
	// be empty.
	VMCID string `json:"vm_locality,omitempty"`
	// Tags are applied to the disk at creation (standard keys as for
	// CreateVMRequest.Tags); ListDisks finds the disk by them.
	Tags map[string]string `json:"tags,omitempty"`
}

// DiskHint tells the agent where an attached disk appears. Plugins fill the
// fields that make sense for their cloud.
type DiskHint struct {
	Path     string `json:"path,omitempty"`      // a device or, for the local CPI, a directory or image file
	LUN      string `json:"lun,omitempty"`       // Azure
	ID       string `json:"id,omitempty"`        // a device id (e.g. NVMe serial)
	VolumeID string `json:"volume_id,omitempty"` // the cloud's volume id
}
