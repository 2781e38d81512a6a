package aws

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/compleat/compleat/cpi"
)

// Ephemeral disks: the device every VM's ephemeral EBS volume appears at, and
// its defaults (as BOSH's AWS CPI: 10 GiB gp3).
const (
	ephemeralDevice    = "/dev/sdb"
	defaultEphemeralMB = 10 * 1024
	defaultVolumeType  = "gp3"
	maxUserDataBytes   = 16 * 1024
	maxTagValueLen     = 256
	maxTagKeyLen       = 128
)

// VMProperties are a VM's cloud properties (the vm_type's and
// vm_extensions' cloud_properties merged by the director).
type VMProperties struct {
	InstanceType       string          `json:"instance_type"`
	AvailabilityZone   string          `json:"availability_zone,omitempty"`
	SecurityGroups     []string        `json:"security_groups,omitempty"`
	KeyName            string          `json:"key_name,omitempty"`
	IAMInstanceProfile string          `json:"iam_instance_profile,omitempty"`
	EphemeralDisk      *DiskProperties `json:"ephemeral_disk,omitempty"`
	RootDisk           *DiskProperties `json:"root_disk,omitempty"`
	SpotBidPrice       *float64        `json:"spot_bid_price,omitempty"`
	// SpotOnDemandFallback runs an on-demand instance when EC2 has no spot
	// capacity at the bid.
	SpotOnDemandFallback bool              `json:"spot_ondemand_fallback,omitempty"`
	Tags                 map[string]string `json:"tags,omitempty"`
}

// DiskProperties describe an EBS volume: a persistent disk's cloud
// properties, or a VM's ephemeral_disk and root_disk (with Size in MB).
type DiskProperties struct {
	// Size in MB (ephemeral_disk and root_disk only; a persistent disk's
	// size is the director's).
	Size       *int64 `json:"size,omitempty"`
	Type       string `json:"type,omitempty"`
	IOPS       *int32 `json:"iops,omitempty"`
	Throughput *int32 `json:"throughput,omitempty"`
	Encrypted  *bool  `json:"encrypted,omitempty"`
	KMSKeyARN  string `json:"kms_key_arn,omitempty"`
}

// NetworkProperties are a network's cloud properties.
type NetworkProperties struct {
	// Subnet is the subnet id (BOSH's name); SubnetID is accepted too.
	Subnet         string   `json:"subnet,omitempty"`
	SubnetID       string   `json:"subnet_id,omitempty"`
	SecurityGroups []string `json:"security_groups,omitempty"`
}

var volumeTypes = map[string]bool{"gp3": true, "gp2": true, "io1": true, "io2": true, "st1": true, "sc1": true, "standard": true}

func parseVMProperties(raw json.RawMessage) (VMProperties, error) {
	var p VMProperties
	if err := decodeObject(orEmpty(raw), &p, false); err != nil {
		return VMProperties{}, err
	}
	if p.InstanceType == "" {
		return VMProperties{}, cpi.InvalidCloudProperty("instance_type", "required (e.g. \"t3.small\")")
	}
	if !strings.Contains(p.InstanceType, ".") {
		return VMProperties{}, cpi.InvalidCloudProperty("instance_type", "%q is not an EC2 instance type such as \"t3.small\"", p.InstanceType)
	}
	for i, g := range p.SecurityGroups {
		if strings.TrimSpace(g) == "" {
			return VMProperties{}, cpi.InvalidCloudProperty(fmt.Sprintf("security_groups.%d", i), "empty security group")
		}
	}
	for name, d := range map[string]*DiskProperties{"ephemeral_disk": p.EphemeralDisk, "root_disk": p.RootDisk} {
		if d == nil {
			continue
		}
		if d.Size != nil && *d.Size < 0 {
			return VMProperties{}, cpi.InvalidCloudProperty(name+".size", "must not be negative, got %d", *d.Size)
		}
		if d.Size != nil && *d.Size == 0 && name == "root_disk" {
			return VMProperties{}, cpi.InvalidCloudProperty(name+".size", "must be positive")
		}
		if err := d.validate(name + "."); err != nil {
			return VMProperties{}, err
		}
	}
	if p.SpotOnDemandFallback && p.SpotBidPrice == nil {
		return VMProperties{}, cpi.InvalidCloudProperty("spot_ondemand_fallback", "needs spot_bid_price")
	}
	if p.SpotBidPrice != nil && *p.SpotBidPrice <= 0 {
		return VMProperties{}, cpi.InvalidCloudProperty("spot_bid_price", "must be a positive price in USD per hour, got %v", *p.SpotBidPrice)
	}
	for k, v := range p.Tags {
		if k == "" || len(k) > maxTagKeyLen || strings.HasPrefix(strings.ToLower(k), "aws:") {
			return VMProperties{}, cpi.InvalidCloudProperty("tags", "tag key %q must have 1 to %d characters and not start with aws:", k, maxTagKeyLen)
		}
		if len(v) > maxTagValueLen {
			return VMProperties{}, cpi.InvalidCloudProperty("tags."+k, "value longer than %d characters", maxTagValueLen)
		}
	}
	return p, nil
}

// validate checks a volume's type against its iops and throughput; prefix
// is the path of the object in the cloud properties ("" or "root_disk.").
func (d *DiskProperties) validate(prefix string) error {
	if d.Type == "" {
		d.Type = defaultVolumeType
	}
	if !volumeTypes[d.Type] {
		return cpi.InvalidCloudProperty(prefix+"type", "%q is not an EBS volume type (gp3, gp2, io1, io2, st1, sc1, standard)", d.Type)
	}
	if d.IOPS != nil {
		if d.Type != "gp3" && d.Type != "io1" && d.Type != "io2" {
			return cpi.InvalidCloudProperty(prefix+"iops", "only gp3, io1 and io2 volumes take iops, not %s", d.Type)
		}
		if *d.IOPS <= 0 {
			return cpi.InvalidCloudProperty(prefix+"iops", "must be positive, got %d", *d.IOPS)
		}
	} else if d.Type == "io1" || d.Type == "io2" {
		return cpi.InvalidCloudProperty(prefix+"iops", "required for %s volumes", d.Type)
	}
	if d.Throughput != nil {
		if d.Type != "gp3" {
			return cpi.InvalidCloudProperty(prefix+"throughput", "only gp3 volumes take throughput, not %s", d.Type)
		}
		if *d.Throughput <= 0 {
			return cpi.InvalidCloudProperty(prefix+"throughput", "must be positive MiB/s, got %d", *d.Throughput)
		}
	}
	if d.KMSKeyARN != "" && (d.Encrypted != nil && !*d.Encrypted) {
		return cpi.InvalidCloudProperty(prefix+"kms_key_arn", "a KMS key needs encrypted: true")
	}
	return nil
}

func parseDiskProperties(raw json.RawMessage) (DiskProperties, error) {
	var p DiskProperties
	if err := decodeObject(orEmpty(raw), &p, false); err != nil {
		return DiskProperties{}, err
	}
	if p.Size != nil {
		return DiskProperties{}, cpi.InvalidCloudProperty("size", "a persistent disk's size is the disk type's disk_size, not a cloud property")
	}
	if err := p.validate(""); err != nil {
		return DiskProperties{}, err
	}
	return p, nil
}

// parseNetworkProperties reads the cloud properties of the network called
// name; errors name the field as networks.<name>.<key>.
func parseNetworkProperties(name string, raw json.RawMessage) (NetworkProperties, error) {
	var p NetworkProperties
	if len(raw) == 0 || string(raw) == "null" {
		return p, nil
	}
	if err := decodeObject(raw, &p, false); err != nil {
		if e, ok := err.(*cpi.Error); ok {
			e.Field = strings.TrimSuffix("networks."+name+"."+e.Field, ".")
		}
		return NetworkProperties{}, err
	}
	if p.Subnet != "" && p.SubnetID != "" && p.Subnet != p.SubnetID {
		return NetworkProperties{}, cpi.InvalidCloudProperty("networks."+name+".subnet", "subnet %q and subnet_id %q differ", p.Subnet, p.SubnetID)
	}
	if p.Subnet == "" {
		p.Subnet = p.SubnetID
	}
	if p.Subnet != "" && !strings.HasPrefix(p.Subnet, "subnet-") {
		return NetworkProperties{}, cpi.InvalidCloudProperty("networks."+name+".subnet", "%q is not a subnet id (subnet-...)", p.Subnet)
	}
	return p, nil
}

// gib converts MB to whole GiB, rounding up, at least 1.
func gib(mb int64) int32 {
	g := (mb + 1023) / 1024
	if g < 1 {
		g = 1
	}
	return int32(g)
}

func formatPrice(p float64) string { return strconv.FormatFloat(p, 'f', -1, 64) }
