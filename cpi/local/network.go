package local

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/compleat/compleat/cpi"
)

var loopback = netip.MustParsePrefix("127.0.0.0/8")

// configureNetworks returns the networks as configured for a new VM: a manual
// network keeps the address the director chose, a dynamic one gets the first
// free address of the dynamic range, a vip network is passed through. taken
// maps the addresses other VMs hold to those VMs; it is updated. The caller
// holds the data directory's lock.
func (c *CPI) configureNetworks(req map[string]cpi.Network, taken map[netip.Addr]string) (map[string]cpi.Network, error) {
	names := make([]string, 0, len(req))
	for name := range req {
		names = append(names, name)
	}
	slices.Sort(names)
	out := make(map[string]cpi.Network, len(req))
	for _, name := range names {
		n := req[name]
		field := "networks." + name
		switch n.Type {
		case "manual", "":
			ip, err := netip.ParseAddr(n.IP)
			if err != nil || !ip.Is4() || !loopback.Contains(ip) {
				return nil, cpi.InvalidCloudProperty(field+".ip", "%q is not an IPv4 address in 127.0.0.0/8", n.IP)
			}
			if vm, ok := taken[ip]; ok {
				return nil, fmt.Errorf("network %s: address %s is held by vm %s", name, ip, vm)
			}
			taken[ip] = "new vm"
			n.Type = "manual"
		case "dynamic":
			ip, ok := c.freeAddress(taken)
			if !ok {
				return nil, cpi.Retryable(cpi.CodeVMCreationFailed, fmt.Errorf("network %s: no free address left in dynamic range %s", name, c.dynamic))
			}
			taken[ip] = "new vm"
			n.IP = ip.String()
			n.Netmask = netmask(c.dynamic.Bits())
		case "vip":
		default:
			return nil, cpi.InvalidCloudProperty(field+".type", "%q is not one of manual, dynamic, vip", n.Type)
		}
		out[name] = n
	}
	return out, nil
}

// freeAddress returns the highest address of the dynamic range that no VM
// holds, skipping the range's network and broadcast addresses. Taking from
// the top keeps dynamic addresses away from the bottom of a range, where a
// director allocating manual addresses from a shared subnet starts.
func (c *CPI) freeAddress(taken map[netip.Addr]string) (netip.Addr, bool) {
	a := c.dynamic.Addr().As4()
	n := binary.BigEndian.Uint32(a[:]) | ^uint32(0)>>c.dynamic.Bits()
	binary.BigEndian.PutUint32(a[:], n)
	network := c.dynamic.Addr()
	for ip := netip.AddrFrom4(a).Prev(); ip.IsValid() && ip != network; ip = ip.Prev() {
		if _, ok := taken[ip]; !ok {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

func netmask(bits int) string {
	m := ^uint32(0) << (32 - bits)
	return strconv.Itoa(int(m>>24)) + "." + strconv.Itoa(int(m>>16&0xff)) + "." + strconv.Itoa(int(m>>8&0xff)) + "." + strconv.Itoa(int(m&0xff))
}

// takenAddresses maps every address held by an existing VM to that VM. The
// caller holds the data directory's lock.
func (c *CPI) takenAddresses() (map[netip.Addr]string, error) {
	entries, err := os.ReadDir(c.dir(kindVM))
	if err != nil {
		return nil, fmt.Errorf("list vms: %w", err)
	}
	taken := map[netip.Addr]string{}
	for _, e := range entries {
		if !validCID(kindVM, e.Name()) {
			continue
		}
		var rec vmRecord
		if err := readJSON(filepath.Join(c.dir(kindVM), e.Name(), vmRecordFile), &rec); err != nil {
			if os.IsNotExist(err) {
				continue // being deleted
			}
			return nil, fmt.Errorf("read vm %s: %w", e.Name(), err)
		}
		for _, n := range rec.Networks {
			if n.Type == "vip" {
				continue
			}
			if ip, err := netip.ParseAddr(n.IP); err == nil {
				taken[ip] = rec.CID
			}
		}
	}
	return taken, nil
}
