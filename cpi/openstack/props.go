package openstack

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/compleat/compleat/cpi"
)

// VMProperties are a VM's cloud properties (the vm_type's and
// vm_extensions' cloud_properties merged by the director).
type VMProperties struct {
	// InstanceType is the flavor, by name or id.
	InstanceType      string   `json:"instance_type"`
	AvailabilityZone  string   `json:"availability_zone,omitempty"`
	AvailabilityZones []string `json:"availability_zones,omitempty"`
	SecurityGroups    []string `json:"security_groups,omitempty"`
	KeyName           string   `json:"key_name,omitempty"`
	SchedulerHints    *struct {
		Group string `json:"group"`
	} `json:"scheduler_hints,omitempty"`
	BootFromVolume *bool `json:"boot_from_volume,omitempty"`
	RootDisk       *struct {
		// Size in GiB (as BOSH's OpenStack CPI).
		Size int `json:"size"`
	} `json:"root_disk,omitempty"`
}

// NetworkProperties are a network's cloud properties.
type NetworkProperties struct {
	NetID          string   `json:"net_id,omitempty"`
	SecurityGroups []string `json:"security_groups,omitempty"`
}

// DiskProperties are a persistent disk's cloud properties.
type DiskProperties struct {
	// Type is the Cinder volume type (default: default_volume_type, else
	// the cloud's default).
	Type string `json:"type,omitempty"`
}

func parseVMProperties(raw json.RawMessage) (VMProperties, error) {
	var p VMProperties
	if err := cpi.DecodeCloudProperties(raw, &p); err != nil {
		return VMProperties{}, err
	}
	if strings.TrimSpace(p.InstanceType) == "" {
		return VMProperties{}, cpi.InvalidCloudProperty("instance_type", "required: a flavor's name or id (e.g. \"m1.small\")")
	}
	if p.AvailabilityZone != "" && len(p.AvailabilityZones) > 0 {
		return VMProperties{}, cpi.InvalidCloudProperty("availability_zones", "set availability_zone or availability_zones, not both")
	}
	for i, z := range p.AvailabilityZones {
		if strings.TrimSpace(z) == "" {
			return VMProperties{}, cpi.InvalidCloudProperty(fmt.Sprintf("availability_zones.%d", i), "empty availability zone")
		}
	}
	for i, g := range p.SecurityGroups {
		if strings.TrimSpace(g) == "" {
			return VMProperties{}, cpi.InvalidCloudProperty(fmt.Sprintf("security_groups.%d", i), "empty security group")
		}
	}
	if p.SchedulerHints != nil && strings.TrimSpace(p.SchedulerHints.Group) == "" {
		return VMProperties{}, cpi.InvalidCloudProperty("scheduler_hints.group", "required in scheduler_hints: a server group's id")
	}
	if p.RootDisk != nil && p.RootDisk.Size <= 0 {
		return VMProperties{}, cpi.InvalidCloudProperty("root_disk.size", "must be a positive number of GiB, got %d", p.RootDisk.Size)
	}
	return p, nil
}

func parseDiskProperties(raw json.RawMessage) (DiskProperties, error) {
	var p DiskProperties
	if err := cpi.DecodeCloudProperties(raw, &p); err != nil {
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
	if err := cpi.DecodeCloudProperties(raw, &p); err != nil {
		var e *cpi.Error
		if errors.As(err, &e) {
			e.Field = strings.TrimSuffix("networks."+name+"."+e.Field, ".")
		}
		return NetworkProperties{}, err
	}
	return p, nil
}

// vmNetwork is one network of a CreateVM, checked.
type vmNetwork struct {
	name  string
	net   cpi.Network
	props NetworkProperties
	// portID and mac are the port made for a manual network.
	portID, mac string
}

// splitNetworks checks a VM's networks as BOSH's OpenStack CPI does (at
// least one manual or dynamic network, at most one dynamic and one vip, no
// net_id twice) and returns the private ones, the one that holds the
// default gateway first, and the vip.
func splitNetworks(nets map[string]cpi.Network) ([]*vmNetwork, *vmNetwork, error) {
	names := make([]string, 0, len(nets))
	for n := range nets {
		names = append(names, n)
	}
	sort.Strings(names)
	var private []*vmNetwork
	var vip *vmNetwork
	dynamic := 0
	seen := map[string]string{}
	for _, name := range names {
		n := nets[name]
		props, err := parseNetworkProperties(name, n.CloudProperties)
		if err != nil {
			return nil, nil, err
		}
		vn := &vmNetwork{name: name, net: n, props: props}
		switch n.Type {
		case "manual", "dynamic":
			if props.NetID == "" {
				return nil, nil, cpi.InvalidCloudProperty("networks."+name+".net_id", "required: the id of the Neutron network")
			}
			if other, ok := seen[props.NetID]; ok {
				return nil, nil, cpi.InvalidCloudProperty("networks."+name+".net_id", "network %s is also network %q's: each network needs its own net_id", props.NetID, other)
			}
			seen[props.NetID] = name
			if n.Type == "manual" {
				if _, err := netip.ParseAddr(n.IP); err != nil {
					return nil, nil, cpi.InvalidCloudProperty("networks."+name+".ip", "a manual network needs the VM's IPv4 address, got %q", n.IP)
				}
			} else if dynamic++; dynamic > 1 {
				return nil, nil, cpi.InvalidCloudProperty("networks."+name, "a VM has at most one dynamic network")
			}
			private = append(private, vn)
		case "vip":
			if vip != nil {
				return nil, nil, cpi.InvalidCloudProperty("networks."+name, "a VM has at most one vip network (%q is one)", vip.name)
			}
			if _, err := netip.ParseAddr(n.IP); err != nil {
				return nil, nil, cpi.InvalidCloudProperty("networks."+name+".ip", "a vip network needs the floating IP, got %q", n.IP)
			}
			vip = vn
		default:
			return nil, nil, cpi.InvalidCloudProperty("networks."+name+".type", "%q is not manual, dynamic or vip", n.Type)
		}
	}
	if len(private) == 0 {
		return nil, nil, cpi.InvalidCloudProperty("networks", "a VM needs at least one manual or dynamic network")
	}
	// The network holding the default gateway goes first (eth0).
	slices.SortStableFunc(private, func(a, b *vmNetwork) int {
		ga, gb := slices.Contains(a.net.Default, "gateway"), slices.Contains(b.net.Default, "gateway")
		switch {
		case ga && !gb:
			return -1
		case gb && !ga:
			return 1
		}
		return 0
	})
	return private, vip, nil
}

// gib converts MB to whole GiB, rounding up, at least 1.
func gib(mb int64) int {
	return int(max((mb+1023)/1024, 1))
}
