package manifest

import (
	"fmt"
	"math/big"
	"net/netip"
	"strings"

	"go.yaml.in/yaml/v3"
)

// AddrRange is an inclusive range of IP addresses, written in a manifest as
// one address ("10.0.0.5"), a range ("10.0.0.5 - 10.0.0.9") or a CIDR
// ("10.0.0.0/28", every address in it).
type AddrRange struct {
	First, Last netip.Addr
}

// Contains reports whether a is inside the range.
func (r AddrRange) Contains(a netip.Addr) bool {
	return r.First.Compare(a) <= 0 && a.Compare(r.Last) <= 0
}

// Overlaps reports whether two ranges share an address.
func (r AddrRange) Overlaps(o AddrRange) bool {
	return r.First.Compare(o.Last) <= 0 && o.First.Compare(r.Last) <= 0
}

// String writes the range as it appears in a manifest.
func (r AddrRange) String() string {
	if r.First == r.Last {
		return r.First.String()
	}
	return r.First.String() + " - " + r.Last.String()
}

// MarshalText writes the range as it appears in a manifest.
func (r AddrRange) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

func (r AddrRange) size() uint64 {
	a, b := new(big.Int).SetBytes(r.First.AsSlice()), new(big.Int).SetBytes(r.Last.AsSlice())
	n := new(big.Int).Sub(b, a)
	if !n.IsUint64() {
		return ^uint64(0)
	}
	return n.Uint64() + 1
}

// ParseAddrRange reads "10.0.0.5", "10.0.0.5 - 10.0.0.9" or "10.0.0.0/28".
func ParseAddrRange(s string) (AddrRange, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return AddrRange{}, fmt.Errorf("%q is not a CIDR range", s)
		}
		return prefixRange(p.Masked()), nil
	}
	lo, hi, isRange := strings.Cut(s, "-")
	first, err := netip.ParseAddr(strings.TrimSpace(lo))
	if err != nil {
		return AddrRange{}, fmt.Errorf("%q is not an IP address or range", s)
	}
	last := first
	if isRange {
		last, err = netip.ParseAddr(strings.TrimSpace(hi))
		if err != nil {
			return AddrRange{}, fmt.Errorf("%q is not an IP address or range", s)
		}
	}
	first, last = first.Unmap(), last.Unmap()
	if first.Is4() != last.Is4() {
		return AddrRange{}, fmt.Errorf("range %q mixes IPv4 and IPv6", s)
	}
	if first.Zone() != "" || last.Zone() != "" {
		return AddrRange{}, fmt.Errorf("%q: zoned addresses are not allowed", s)
	}
	if last.Less(first) {
		return AddrRange{}, fmt.Errorf("range %q ends before it starts", s)
	}
	return AddrRange{First: first, Last: last}, nil
}

func prefixRange(p netip.Prefix) AddrRange {
	first := p.Addr()
	b := first.AsSlice()
	bits := p.Bits()
	for i := range b {
		for j := 0; j < 8; j++ {
			if i*8+j >= bits {
				b[i] |= 0x80 >> j
			}
		}
	}
	last, _ := netip.AddrFromSlice(b)
	return AddrRange{First: first, Last: last}
}

func (d *decoder) addrRange(n *yaml.Node, path string) (AddrRange, bool) {
	s := d.str(n, path)
	if s == "" {
		return AddrRange{}, false
	}
	r, err := ParseAddrRange(s)
	if err != nil {
		d.errorf(n, path, "%v", err)
		return AddrRange{}, false
	}
	return r, true
}

func (d *decoder) addr(n *yaml.Node, path string) (netip.Addr, bool) {
	s := d.str(n, path)
	if s == "" {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || a.Zone() != "" {
		d.errorf(n, path, "%q is not an IP address", s)
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

func (d *decoder) addrs(n *yaml.Node, path string) []netip.Addr {
	var out []netip.Addr
	for i, c := range d.list(n, path) {
		if a, ok := d.addr(c, index(path, i)); ok {
			out = append(out, a)
		}
	}
	return out
}
