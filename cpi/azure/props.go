package azure

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"

	"github.com/compleat/compleat/cpi"
)

// Disk defaults: the ephemeral disk is a data disk at LUN 0 (as BOSH's
// Azure CPI), 10 GiB unless the vm_type says otherwise.
const (
	ephemeralLUN        = 0
	defaultEphemeralMB  = 10 * 1024
	defaultStorageType  = "StandardSSD_LRS"
	defaultDataCaching  = "None"
	defaultOSCaching    = "ReadWrite"
	maxTagValueLen      = 256
	maxTagKeyLen        = 512
	maxTags             = 50
	maxCustomDataBytes  = 64 * 1024 * 3 / 4 // 64 KiB once base64-encoded
	ephemeralDevicePath = "/dev/disk/azure/scsi1/lun0"
)

var (
	storageTypes = map[string]bool{"Standard_LRS": true, "StandardSSD_LRS": true, "Premium_LRS": true, "PremiumV2_LRS": true, "UltraSSD_LRS": true, "StandardSSD_ZRS": true, "Premium_ZRS": true}
	cachings     = map[string]bool{"None": true, "ReadOnly": true, "ReadWrite": true}
	// A VM size: "Standard_D2s_v5", "Basic_A1".
	vmSize = regexp.MustCompile(`^(Standard|Basic)_[A-Za-z0-9_]+$`)
	// Azure resource names the plugin accepts in cloud properties.
	resourceName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.()-]{0,88}[A-Za-z0-9_)]?$`)
)

// VMProperties are a VM's cloud properties (the vm_type's and
// vm_extensions' cloud_properties merged by the director).
type VMProperties struct {
	InstanceType     string         `json:"instance_type" cpi:"required"`
	AvailabilityZone string         `json:"availability_zone,omitempty"`
	RootDisk         *RootDisk      `json:"root_disk,omitempty"`
	EphemeralDisk    *EphemeralDisk `json:"ephemeral_disk,omitempty"`
	Caching          string         `json:"caching,omitempty"`
	SecurityGroup    string         `json:"security_group,omitempty"`
	// LoadBalancerSpec is load_balancer as written: a name or an object
	// (see LoadBalancer, which parseVMProperties fills).
	LoadBalancerSpec      json.RawMessage   `json:"load_balancer,omitempty"`
	LoadBalancer          *LoadBalancer     `json:"-"`
	AssignDynamicPublicIP bool              `json:"assign_dynamic_public_ip,omitempty"`
	AcceleratedNetworking bool              `json:"accelerated_networking,omitempty"`
	ManagedIdentity       *ManagedIdentity  `json:"managed_identity,omitempty"`
	ResourceGroupName     string            `json:"resource_group_name,omitempty"`
	Tags                  map[string]string `json:"tags,omitempty"`
}

// RootDisk is the OS disk: size in MB (default the image's) and storage
// account type.
type RootDisk struct {
	Size *int64 `json:"size,omitempty"`
	Type string `json:"type,omitempty"`
}

// EphemeralDisk is the data disk at LUN 0 that the agent uses for
// /var/vcap/data, unless UseRootDisk puts that on the OS disk.
type EphemeralDisk struct {
	UseRootDisk bool   `json:"use_root_disk,omitempty"`
	Size        *int64 `json:"size,omitempty"`
	Type        string `json:"type,omitempty"`
	Caching     string `json:"caching,omitempty"`
}

// LoadBalancer puts the VM's primary NIC in a backend pool: a name (the
// load balancer in the VM's resource group, its first pool) or an object.
type LoadBalancer struct {
	Name              string `json:"name"`
	ResourceGroupName string `json:"resource_group_name,omitempty"`
	BackendPoolName   string `json:"backend_pool_name,omitempty"`
}

// parseLoadBalancer reads load_balancer: a name or {name,
// resource_group_name, backend_pool_name}.
func parseLoadBalancer(b json.RawMessage) (*LoadBalancer, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || string(b) == "null" {
		return nil, nil
	}
	var l LoadBalancer
	if b[0] == '"' {
		if err := json.Unmarshal(b, &l.Name); err != nil {
			return nil, cpi.InvalidCloudProperty("load_balancer", "%v", err)
		}
		return &l, nil
	}
	if b[0] != '{' {
		return nil, cpi.InvalidCloudProperty("load_balancer", "must be a name or {name, resource_group_name, backend_pool_name}")
	}
	if err := cpi.DecodeCloudProperties(b, &l); err != nil {
		return nil, prefixField("load_balancer", err)
	}
	return &l, nil
}

// ManagedIdentity is the identity the VM gets: SystemAssigned, or
// UserAssigned with the identity's name (in the VM's resource group) or
// resource id.
type ManagedIdentity struct {
	Type                     string `json:"type"`
	UserAssignedIdentityName string `json:"user_assigned_identity_name,omitempty"`
}

// NetworkProperties are a network's cloud properties.
type NetworkProperties struct {
	VirtualNetworkName    string `json:"virtual_network_name" cpi:"required"`
	SubnetName            string `json:"subnet_name" cpi:"required"`
	ResourceGroupName     string `json:"resource_group_name,omitempty"`
	SecurityGroup         string `json:"security_group,omitempty"`
	AcceleratedNetworking bool   `json:"accelerated_networking,omitempty"`
}

// DiskProperties are a persistent disk's cloud properties.
type DiskProperties struct {
	StorageAccountType string `json:"storage_account_type,omitempty"`
	Caching            string `json:"caching,omitempty"`
}

func parseVMProperties(raw json.RawMessage) (VMProperties, error) {
	var p VMProperties
	if err := cpi.DecodeCloudProperties(raw, &p); err != nil {
		return VMProperties{}, err
	}
	if !vmSize.MatchString(p.InstanceType) {
		return VMProperties{}, cpi.InvalidCloudProperty("instance_type", "%q is not an Azure VM size such as \"Standard_D2s_v5\"", p.InstanceType)
	}
	switch p.AvailabilityZone {
	case "", "1", "2", "3":
	default:
		return VMProperties{}, cpi.InvalidCloudProperty("availability_zone", "%q is not a zone (\"1\", \"2\" or \"3\")", p.AvailabilityZone)
	}
	if r := p.RootDisk; r != nil {
		if r.Size != nil && *r.Size <= 0 {
			return VMProperties{}, cpi.InvalidCloudProperty("root_disk.size", "must be positive MB, got %d", *r.Size)
		}
		if r.Type != "" && !storageTypes[r.Type] {
			return VMProperties{}, cpi.InvalidCloudProperty("root_disk.type", "%q is not a storage account type (Standard_LRS, StandardSSD_LRS, Premium_LRS, ...)", r.Type)
		}
	}
	if e := p.EphemeralDisk; e != nil {
		if e.Size != nil && *e.Size <= 0 {
			return VMProperties{}, cpi.InvalidCloudProperty("ephemeral_disk.size", "must be positive MB, got %d", *e.Size)
		}
		if e.Type != "" && !storageTypes[e.Type] {
			return VMProperties{}, cpi.InvalidCloudProperty("ephemeral_disk.type", "%q is not a storage account type", e.Type)
		}
		if e.Caching != "" && !cachings[e.Caching] {
			return VMProperties{}, cpi.InvalidCloudProperty("ephemeral_disk.caching", "%q is not None, ReadOnly or ReadWrite", e.Caching)
		}
		if e.UseRootDisk && (e.Size != nil || e.Type != "") {
			return VMProperties{}, cpi.InvalidCloudProperty("ephemeral_disk.use_root_disk", "takes no size or type: the OS disk holds the ephemeral data")
		}
	}
	if p.Caching != "" && p.Caching != "ReadOnly" && p.Caching != "ReadWrite" {
		return VMProperties{}, cpi.InvalidCloudProperty("caching", "%q is not ReadOnly or ReadWrite (the OS disk's caching)", p.Caching)
	}
	lb, err := parseLoadBalancer(p.LoadBalancerSpec)
	if err != nil {
		return VMProperties{}, err
	}
	p.LoadBalancer = lb
	if p.LoadBalancer != nil && !resourceName.MatchString(p.LoadBalancer.Name) {
		return VMProperties{}, cpi.InvalidCloudProperty("load_balancer.name", "%q is not a load balancer name", p.LoadBalancer.Name)
	}
	if m := p.ManagedIdentity; m != nil {
		switch {
		case m.Type == "SystemAssigned" && m.UserAssignedIdentityName == "":
		case m.Type == "UserAssigned" && m.UserAssignedIdentityName != "":
		default:
			return VMProperties{}, cpi.InvalidCloudProperty("managed_identity", "want {type: SystemAssigned} or {type: UserAssigned, user_assigned_identity_name: NAME}")
		}
	}
	for k, v := range map[string]string{"security_group": p.SecurityGroup, "resource_group_name": p.ResourceGroupName} {
		if v != "" && !resourceName.MatchString(v) {
			return VMProperties{}, cpi.InvalidCloudProperty(k, "%q is not an Azure resource name", v)
		}
	}
	if err := checkTags("tags", p.Tags); err != nil {
		return VMProperties{}, err
	}
	return p, nil
}

// checkTags checks tags against Azure's limits.
func checkTags(field string, tags map[string]string) error {
	if len(tags) > maxTags-10 {
		return cpi.InvalidCloudProperty(field, "%d tags: Azure allows %d per resource and the plugin needs 10", len(tags), maxTags)
	}
	for k, v := range tags {
		if k == "" || len(k) > maxTagKeyLen || strings.ContainsAny(k, "<>%&\\?/") {
			return cpi.InvalidCloudProperty(field, "tag key %q must have 1 to %d characters and none of <>%%&\\?/", k, maxTagKeyLen)
		}
		if len(v) > maxTagValueLen {
			return cpi.InvalidCloudProperty(field+"."+k, "value longer than %d characters", maxTagValueLen)
		}
	}
	return nil
}

// parseNetworkProperties reads the cloud properties of the network called
// name; errors name the field as networks.<name>.<key>.
func parseNetworkProperties(name string, raw json.RawMessage) (NetworkProperties, error) {
	var p NetworkProperties
	if err := cpi.DecodeCloudProperties(raw, &p); err != nil {
		return NetworkProperties{}, prefixField("networks."+name, err)
	}
	for k, v := range map[string]string{"virtual_network_name": p.VirtualNetworkName, "subnet_name": p.SubnetName, "resource_group_name": p.ResourceGroupName, "security_group": p.SecurityGroup} {
		if v != "" && !resourceName.MatchString(v) {
			return NetworkProperties{}, cpi.InvalidCloudProperty("networks."+name+"."+k, "%q is not an Azure resource name", v)
		}
	}
	return p, nil
}

func parseDiskProperties(raw json.RawMessage) (DiskProperties, error) {
	var p DiskProperties
	if err := cpi.DecodeCloudProperties(raw, &p); err != nil {
		return DiskProperties{}, err
	}
	if p.StorageAccountType == "" {
		p.StorageAccountType = defaultStorageType
	}
	if !storageTypes[p.StorageAccountType] {
		return DiskProperties{}, cpi.InvalidCloudProperty("storage_account_type", "%q is not Standard_LRS, StandardSSD_LRS, Premium_LRS, PremiumV2_LRS, UltraSSD_LRS, StandardSSD_ZRS or Premium_ZRS", p.StorageAccountType)
	}
	if p.Caching == "" {
		p.Caching = defaultDataCaching
	}
	if !cachings[p.Caching] {
		return DiskProperties{}, cpi.InvalidCloudProperty("caching", "%q is not None, ReadOnly or ReadWrite", p.Caching)
	}
	if p.StorageAccountType == "PremiumV2_LRS" || p.StorageAccountType == "UltraSSD_LRS" {
		if p.Caching != "None" {
			return DiskProperties{}, cpi.InvalidCloudProperty("caching", "%s disks take only caching None", p.StorageAccountType)
		}
	}
	return p, nil
}

// prefixField puts prefix before the field an InvalidCloudProperties error
// names.
func prefixField(prefix string, err error) error {
	if e, ok := err.(*cpi.Error); ok && e.Code == cpi.CodeInvalidCloudProperties {
		e2 := *e
		if e2.Field == "" {
			e2.Field = prefix
		} else {
			e2.Field = prefix + "." + e2.Field
		}
		return &e2
	}
	return err
}

// gib converts MB to whole GiB, rounding up, at least 1.
func gib(mb int64) int32 {
	g := (mb + 1023) / 1024
	if g < 1 {
		g = 1
	}
	return int32(g)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
