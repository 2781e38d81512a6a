package local

import (
	"net/netip"
	"testing"
)

func TestFreeAddress(t *testing.T) {
	t.Parallel()
	c := &CPI{dynamic: netip.MustParsePrefix("127.78.0.0/30")}
	taken := map[netip.Addr]string{}
	var got []string
	for {
		ip, ok := c.freeAddress(taken)
		if !ok {
			break
		}
		taken[ip] = "vm"
		got = append(got, ip.String())
	}
	// From the top, without the network and broadcast addresses.
	if len(got) != 2 || got[0] != "127.78.0.2" || got[1] != "127.78.0.1" {
		t.Fatalf("allocated %v from 127.78.0.0/30, want [127.78.0.2 127.78.0.1]", got)
	}
	delete(taken, netip.MustParseAddr("127.78.0.2"))
	if ip, ok := c.freeAddress(taken); !ok || ip.String() != "127.78.0.2" {
		t.Fatalf("a freed address is not handed out again: %v %v", ip, ok)
	}
	c.dynamic = netip.MustParsePrefix("127.0.0.0/8")
	if ip, _ := c.freeAddress(map[netip.Addr]string{}); ip.String() != "127.255.255.254" {
		t.Fatalf("first of 127.0.0.0/8: %v", ip)
	}
	if netmask(8) != "255.0.0.0" || netmask(24) != "255.255.255.0" || netmask(30) != "255.255.255.252" {
		t.Fatalf("netmask: %s %s %s", netmask(8), netmask(24), netmask(30))
	}
}
