package openstack

import (
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"
)

type network struct {
	ID       string
	Name     string
	External bool
	Subnets  []string
	seq      int64
}

type subnet struct {
	ID, Name, NetworkID string
	CIDR                netip.Prefix
	Gateway             netip.Addr
	PoolStart, PoolEnd  netip.Addr
}

type port struct {
	ID, Name, NetworkID, MAC string
	FixedIPs                 []fixedIP
	DeviceID, DeviceOwner    string
	Status                   string // DOWN, ACTIVE
	SecurityGroups           []string
	// byNova is set for the ports Nova made for a server (deleted with it).
	byNova  bool
	created time.Time
	seq     int64
}

type fixedIP struct {
	SubnetID string `json:"subnet_id"`
	IP       string `json:"ip_address"`
}

type secGroup struct {
	ID, Name, Description, ProjectID string
}

type floatingIP struct {
	ID, Address, NetworkID string
	PortID, FixedIP        string
	seq                    int64
}

func (c *Cloud) addNetwork(nc NetworkConfig) error {
	pfx, err := netip.ParsePrefix(nc.CIDR)
	if err != nil || !isLoopback4(pfx) {
		return fmt.Errorf("openstack sim: network %s: cidr %q is not a prefix in 127.0.0.0/8", nc.Name, nc.CIDR)
	}
	pfx = pfx.Masked()
	gw := pfx.Addr().Next()
	if nc.Gateway != "" {
		if gw, err = netip.ParseAddr(nc.Gateway); err != nil || !pfx.Contains(gw) {
			return fmt.Errorf("openstack sim: network %s: gateway %q is not in %s", nc.Name, nc.Gateway, pfx)
		}
	}
	n := &network{ID: stableID("network", nc.Name), Name: nc.Name, External: nc.External, seq: c.next()}
	// In a subnet larger than a /24 the lower half is left to the
	// addresses the operator assigns (the director's manual networks);
	// the pool hands out the upper half.
	start := gw.Next()
	if pfx.Bits() < 24 {
		start = midAddr(pfx)
	}
	last := lastAddr(pfx).Prev()
	s := &subnet{ID: stableID("subnet", nc.Name), Name: nc.Name + "-subnet", NetworkID: n.ID, CIDR: pfx, Gateway: gw, PoolStart: start, PoolEnd: last}
	n.Subnets = []string{s.ID}
	c.networks[n.ID] = n
	c.subnets[s.ID] = s
	return nil
}

// midAddr is the first address of the upper half of p.
func midAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= uint32(1) << (31 - p.Bits())
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func (c *Cloud) routeNeutron(mux *http.ServeMux) {
	h := func(pattern string, fn handler) { mux.HandleFunc(pattern, c.authed(neutron, fn)) }
	versions := func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"versions": []any{map[string]any{
			"id": "v2.0", "status": "CURRENT", "links": []any{map[string]any{"rel": "self", "href": c.baseURL + "/network/v2.0/"}}}}})
	}
	mux.HandleFunc("GET /network/{$}", versions)
	mux.HandleFunc("GET /network", versions)
	h("GET /network/v2.0/extensions", func(w http.ResponseWriter, r *http.Request) *apiError {
		var ext []any
		for _, a := range []string{"security-group", "router", "external-net", "binding", "port-security", "standard-attr-description"} {
			ext = append(ext, map[string]any{"alias": a, "name": a, "description": a, "links": []any{}, "updated": "2013-01-01T00:00:00-00:00"})
		}
		writeJSON(w, http.StatusOK, map[string]any{"extensions": ext})
		return nil
	})
	h("GET /network/v2.0/networks", c.listNetworks)
	h("GET /network/v2.0/networks/{id}", c.showNetwork)
	h("GET /network/v2.0/subnets", c.listSubnets)
	h("GET /network/v2.0/subnets/{id}", c.showSubnet)
	h("GET /network/v2.0/security-groups", c.listSecGroups)
	h("GET /network/v2.0/security-groups/{id}", c.showSecGroup)
	h("POST /network/v2.0/ports", c.createPort)
	h("GET /network/v2.0/ports", c.listPorts)
	h("GET /network/v2.0/ports/{id}", c.showPort)
	h("PUT /network/v2.0/ports/{id}", c.updatePort)
	h("DELETE /network/v2.0/ports/{id}", c.deletePort)
	h("POST /network/v2.0/floatingips", c.createFloatingIP)
	h("GET /network/v2.0/floatingips", c.listFloatingIPs)
	h("GET /network/v2.0/floatingips/{id}", c.showFloatingIP)
	h("PUT /network/v2.0/floatingips/{id}", c.updateFloatingIP)
	h("DELETE /network/v2.0/floatingips/{id}", c.deleteFloatingIP)
	mux.HandleFunc("/network/", c.authed(neutron, func(w http.ResponseWriter, r *http.Request) *apiError {
		return neutronErr(http.StatusNotFound, "HTTPNotFound", "The resource could not be found.")
	}))
}

// filtered keeps the items whose fields match every query parameter named
// in fields (Neutron's filters; a parameter may repeat, matching any).
func filtered[T any](items []T, q url.Values, fields map[string]func(T) string) []T {
	var out []T
next:
	for _, it := range items {
		for key, get := range fields {
			want, ok := q[key]
			if ok && !slices.Contains(want, get(it)) {
				continue next
			}
		}
		out = append(out, it)
	}
	return out
}

func sortedBySeq[T any](m map[string]T, seq func(T) int64) []T {
	out := make([]T, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b T) int { return int(seq(a) - seq(b)) })
	return out
}

func (c *Cloud) networkDoc(n *network) map[string]any {
	return map[string]any{
		"id": n.ID, "name": n.Name, "status": "ACTIVE", "admin_state_up": true, "shared": false,
		"subnets": n.Subnets, "router:external": n.External, "tenant_id": c.projectID, "project_id": c.projectID,
		"mtu": 1500, "port_security_enabled": true, "description": "", "availability_zones": []string{DefaultAZ},
	}
}

func (c *Cloud) listNetworks(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	nets := filtered(sortedBySeq(c.networks, func(n *network) int64 { return n.seq }), r.URL.Query(), map[string]func(*network) string{
		"id": func(n *network) string { return n.ID }, "name": func(n *network) string { return n.Name },
		"router:external": func(n *network) string { return fmt.Sprint(n.External) },
	})
	docs := []any{}
	for _, n := range nets {
		docs = append(docs, c.networkDoc(n))
	}
	writeJSON(w, http.StatusOK, map[string]any{"networks": docs})
	return nil
}

func (c *Cloud) showNetwork(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.networks[r.PathValue("id")]
	if !ok {
		return neutronErr(http.StatusNotFound, "NetworkNotFound", "Network %s could not be found.", r.PathValue("id"))
	}
	writeJSON(w, http.StatusOK, map[string]any{"network": c.networkDoc(n)})
	return nil
}

func (c *Cloud) subnetDoc(s *subnet) map[string]any {
	return map[string]any{
		"id": s.ID, "name": s.Name, "network_id": s.NetworkID, "cidr": s.CIDR.String(), "ip_version": 4,
		"gateway_ip": s.Gateway.String(), "enable_dhcp": true, "dns_nameservers": []string{},
		"allocation_pools": []any{map[string]string{"start": s.PoolStart.String(), "end": s.PoolEnd.String()}},
		"host_routes":      []any{}, "tenant_id": c.projectID, "project_id": c.projectID, "description": "",
	}
}

func (c *Cloud) listSubnets(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	var all []*subnet
	for _, n := range sortedBySeq(c.networks, func(n *network) int64 { return n.seq }) {
		for _, id := range n.Subnets {
			all = append(all, c.subnets[id])
		}
	}
	subs := filtered(all, r.URL.Query(), map[string]func(*subnet) string{
		"id": func(s *subnet) string { return s.ID }, "name": func(s *subnet) string { return s.Name },
		"network_id": func(s *subnet) string { return s.NetworkID },
	})
	docs := []any{}
	for _, s := range subs {
		docs = append(docs, c.subnetDoc(s))
	}
	writeJSON(w, http.StatusOK, map[string]any{"subnets": docs})
	return nil
}

func (c *Cloud) showSubnet(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.subnets[r.PathValue("id")]
	if !ok {
		return neutronErr(http.StatusNotFound, "SubnetNotFound", "Subnet %s could not be found.", r.PathValue("id"))
	}
	writeJSON(w, http.StatusOK, map[string]any{"subnet": c.subnetDoc(s)})
	return nil
}

func (c *Cloud) secGroupDoc(g *secGroup) map[string]any {
	return map[string]any{"id": g.ID, "name": g.Name, "description": g.Description, "tenant_id": g.ProjectID,
		"project_id": g.ProjectID, "security_group_rules": []any{}, "stateful": true}
}

func (c *Cloud) listSecGroups(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	var all []*secGroup
	for _, g := range c.secgroups {
		all = append(all, g)
	}
	slices.SortFunc(all, func(a, b *secGroup) int { return strings.Compare(a.Name, b.Name) })
	gs := filtered(all, r.URL.Query(), map[string]func(*secGroup) string{
		"id": func(g *secGroup) string { return g.ID }, "name": func(g *secGroup) string { return g.Name },
	})
	docs := []any{}
	for _, g := range gs {
		docs = append(docs, c.secGroupDoc(g))
	}
	writeJSON(w, http.StatusOK, map[string]any{"security_groups": docs})
	return nil
}

func (c *Cloud) showSecGroup(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	g, ok := c.secgroups[r.PathValue("id")]
	if !ok {
		return neutronErr(http.StatusNotFound, "SecurityGroupNotFound", "Security group %s does not exist", r.PathValue("id"))
	}
	writeJSON(w, http.StatusOK, map[string]any{"security_group": c.secGroupDoc(g)})
	return nil
}

// secGroupID resolves a security group given by name or id.
func (c *Cloud) secGroupID(nameOrID string) (string, bool) {
	if g, ok := c.secgroups[nameOrID]; ok {
		return g.ID, true
	}
	for _, g := range c.secgroups {
		if g.Name == nameOrID {
			return g.ID, true
		}
	}
	return "", false
}

func (c *Cloud) portDoc(p *port) map[string]any {
	sgs := p.SecurityGroups
	if sgs == nil {
		sgs = []string{}
	}
	ips := p.FixedIPs
	if ips == nil {
		ips = []fixedIP{}
	}
	host := ""
	vif := "unbound"
	if p.DeviceID != "" {
		host, vif = "compleat-sim", "ovs"
	}
	return map[string]any{
		"id": p.ID, "name": p.Name, "network_id": p.NetworkID, "mac_address": p.MAC, "fixed_ips": ips,
		"device_id": p.DeviceID, "device_owner": p.DeviceOwner, "status": p.Status, "admin_state_up": true,
		"security_groups": sgs, "tenant_id": c.projectID, "project_id": c.projectID,
		"binding:host_id": host, "binding:vif_type": vif, "binding:vnic_type": "normal",
		"allowed_address_pairs": []any{}, "port_security_enabled": true, "description": "",
		"created_at": timestamp(p.created), "updated_at": timestamp(p.created),
	}
}

type portRequest struct {
	Port struct {
		NetworkID      string    `json:"network_id"`
		Name           *string   `json:"name"`
		FixedIPs       []fixedIP `json:"fixed_ips"`
		SecurityGroups *[]string `json:"security_groups"`
		DeviceID       *string   `json:"device_id"`
		DeviceOwner    *string   `json:"device_owner"`
	} `json:"port"`
}

func (c *Cloud) createPort(w http.ResponseWriter, r *http.Request) *apiError {
	var req portRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.networks[req.Port.NetworkID]
	if !ok {
		return neutronErr(http.StatusNotFound, "NetworkNotFound", "Network %s could not be found.", req.Port.NetworkID)
	}
	var sgs []string
	if req.Port.SecurityGroups != nil {
		for _, g := range *req.Port.SecurityGroups {
			id, ok := c.secGroupID(g)
			if !ok {
				return neutronErr(http.StatusNotFound, "SecurityGroupNotFound", "Security group %s does not exist", g)
			}
			sgs = append(sgs, id)
		}
	} else {
		sgs = []string{stableID("security-group", "default")}
	}
	var ip string
	if len(req.Port.FixedIPs) > 0 {
		ip = req.Port.FixedIPs[0].IP
	}
	p, err := c.newPort(n, ip, sgs)
	if err != nil {
		return err
	}
	if req.Port.Name != nil {
		p.Name = *req.Port.Name
	}
	if req.Port.DeviceID != nil {
		p.DeviceID = *req.Port.DeviceID
	}
	if req.Port.DeviceOwner != nil {
		p.DeviceOwner = *req.Port.DeviceOwner
	}
	writeJSON(w, http.StatusCreated, map[string]any{"port": c.portDoc(p)})
	return nil
}

// newPort makes a DOWN port on n with the address ip (the pool's next free
// one when empty); c.mu is held.
func (c *Cloud) newPort(n *network, ip string, sgs []string) (*port, *apiError) {
	s := c.subnets[n.Subnets[0]]
	var addr netip.Addr
	if ip != "" {
		a, err := netip.ParseAddr(ip)
		if err != nil || !s.CIDR.Contains(a) || a == s.Gateway {
			return nil, neutronErr(http.StatusBadRequest, "InvalidIpForNetwork", "IP address %s is not a valid IP for any of the subnets on the specified network.", ip)
		}
		if c.ipInUse(n.ID, a.String()) {
			return nil, neutronErr(http.StatusConflict, "IpAddressAlreadyAllocated", "IP address %s already allocated in subnet %s", ip, s.ID)
		}
		addr = a
	} else {
		for a := s.PoolStart; a.Compare(s.PoolEnd) <= 0; a = a.Next() {
			if !c.ipInUse(n.ID, a.String()) {
				addr = a
				break
			}
		}
		if !addr.IsValid() {
			return nil, neutronErr(http.StatusConflict, "IpAddressGenerationFailure", "No more IP addresses available on network %s.", n.ID)
		}
	}
	p := &port{
		ID: newID(), NetworkID: n.ID, MAC: "fa:16:3e:" + randomHex(1) + ":" + randomHex(1) + ":" + randomHex(1),
		FixedIPs: []fixedIP{{SubnetID: s.ID, IP: addr.String()}}, Status: "DOWN", SecurityGroups: sgs,
		created: time.Now(), seq: c.next(),
	}
	c.ports[p.ID] = p
	return p, nil
}

func (c *Cloud) ipInUse(networkID, ip string) bool {
	for _, p := range c.ports {
		if p.NetworkID != networkID {
			continue
		}
		for _, f := range p.FixedIPs {
			if f.IP == ip {
				return true
			}
		}
	}
	return false
}

func (c *Cloud) listPorts(w http.ResponseWriter, r *http.Request) *apiError {
	q := r.URL.Query()
	c.mu.Lock()
	defer c.mu.Unlock()
	ports := filtered(sortedBySeq(c.ports, func(p *port) int64 { return p.seq }), q, map[string]func(*port) string{
		"id": func(p *port) string { return p.ID }, "name": func(p *port) string { return p.Name },
		"network_id": func(p *port) string { return p.NetworkID }, "device_id": func(p *port) string { return p.DeviceID },
		"device_owner": func(p *port) string { return p.DeviceOwner }, "status": func(p *port) string { return p.Status },
		"mac_address": func(p *port) string { return p.MAC },
	})
	// fixed_ips=ip_address=X (and subnet_id=Y) filters by address.
	for _, f := range q["fixed_ips"] {
		k, v, _ := strings.Cut(f, "=")
		ports = slices.DeleteFunc(ports, func(p *port) bool {
			return !slices.ContainsFunc(p.FixedIPs, func(ip fixedIP) bool {
				return (k == "ip_address" && ip.IP == v) || (k == "subnet_id" && ip.SubnetID == v)
			})
		})
	}
	pg, more, err := page(ports, func(p *port) string { return p.ID }, q, c.cfg.MaxLimit)
	if err != nil {
		return err
	}
	docs := []any{}
	for _, p := range pg {
		docs = append(docs, c.portDoc(p))
	}
	body := map[string]any{"ports": docs}
	if more {
		body["ports_links"] = []any{map[string]string{"rel": "next", "href": c.nextLink(r, pg[len(pg)-1].ID)}}
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}

func (c *Cloud) showPort(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.ports[r.PathValue("id")]
	if !ok {
		return neutronErr(http.StatusNotFound, "PortNotFound", "Port %s could not be found.", r.PathValue("id"))
	}
	writeJSON(w, http.StatusOK, map[string]any{"port": c.portDoc(p)})
	return nil
}

func (c *Cloud) updatePort(w http.ResponseWriter, r *http.Request) *apiError {
	var req portRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.ports[r.PathValue("id")]
	if !ok {
		return neutronErr(http.StatusNotFound, "PortNotFound", "Port %s could not be found.", r.PathValue("id"))
	}
	if req.Port.Name != nil {
		p.Name = *req.Port.Name
	}
	if req.Port.SecurityGroups != nil {
		var sgs []string
		for _, g := range *req.Port.SecurityGroups {
			id, ok := c.secGroupID(g)
			if !ok {
				return neutronErr(http.StatusNotFound, "SecurityGroupNotFound", "Security group %s does not exist", g)
			}
			sgs = append(sgs, id)
		}
		p.SecurityGroups = sgs
	}
	writeJSON(w, http.StatusOK, map[string]any{"port": c.portDoc(p)})
	return nil
}

func (c *Cloud) deletePort(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	id := r.PathValue("id")
	if _, ok := c.ports[id]; !ok {
		return neutronErr(http.StatusNotFound, "PortNotFound", "Port %s could not be found.", id)
	}
	c.removePort(id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// removePort deletes a port and disassociates the floating IPs on it;
// c.mu is held.
func (c *Cloud) removePort(id string) {
	delete(c.ports, id)
	for _, f := range c.fips {
		if f.PortID == id {
			f.PortID, f.FixedIP = "", ""
		}
	}
}

func (c *Cloud) externalNetwork() *network {
	for _, n := range sortedBySeq(c.networks, func(n *network) int64 { return n.seq }) {
		if n.External {
			return n
		}
	}
	return nil
}

// allocateFloatingIP allocates addr (the next free one when empty) on the
// external network; c.mu is held or the cloud is being built.
func (c *Cloud) allocateFloatingIP(addr string) (*floatingIP, *apiError) {
	ext := c.externalNetwork()
	if ext == nil {
		return nil, neutronErr(http.StatusNotFound, "ExternalGatewayForFloatingIPNotFound", "No external network for floating IPs.")
	}
	s := c.subnets[ext.Subnets[0]]
	used := func(a string) bool {
		for _, f := range c.fips {
			if f.Address == a {
				return true
			}
		}
		return false
	}
	if addr != "" {
		a, err := netip.ParseAddr(addr)
		if err != nil || !s.CIDR.Contains(a) {
			return nil, neutronErr(http.StatusBadRequest, "InvalidIpForNetwork", "IP address %s is not a valid IP for the specified network.", addr)
		}
		if used(addr) {
			return nil, neutronErr(http.StatusConflict, "FloatingIpSetupException", "IP address %s already allocated in subnet %s", addr, s.ID)
		}
	} else {
		for a := s.PoolStart; a.Compare(s.PoolEnd) <= 0; a = a.Next() {
			if !used(a.String()) {
				addr = a.String()
				break
			}
		}
	}
	f := &floatingIP{ID: newID(), Address: addr, NetworkID: ext.ID, seq: c.next()}
	c.fips[f.ID] = f
	return f, nil
}

func (c *Cloud) fipDoc(f *floatingIP) map[string]any {
	status := "DOWN"
	var portID, fixed any
	if f.PortID != "" {
		status, portID, fixed = "ACTIVE", f.PortID, f.FixedIP
	}
	return map[string]any{
		"id": f.ID, "floating_ip_address": f.Address, "floating_network_id": f.NetworkID, "port_id": portID,
		"fixed_ip_address": fixed, "status": status, "router_id": nil, "tenant_id": c.projectID, "project_id": c.projectID,
		"description": "",
	}
}

func (c *Cloud) createFloatingIP(w http.ResponseWriter, r *http.Request) *apiError {
	var req struct {
		FloatingIP struct {
			FloatingNetworkID string `json:"floating_network_id"`
			FloatingIPAddress string `json:"floating_ip_address"`
		} `json:"floatingip"`
	}
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, ok := c.networks[req.FloatingIP.FloatingNetworkID]; !ok || !n.External {
		return neutronErr(http.StatusNotFound, "ExternalNetworkNotFound", "External network %s could not be found.", req.FloatingIP.FloatingNetworkID)
	}
	f, err := c.allocateFloatingIP(req.FloatingIP.FloatingIPAddress)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, map[string]any{"floatingip": c.fipDoc(f)})
	return nil
}

func (c *Cloud) listFloatingIPs(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	fs := filtered(sortedBySeq(c.fips, func(f *floatingIP) int64 { return f.seq }), r.URL.Query(), map[string]func(*floatingIP) string{
		"id": func(f *floatingIP) string { return f.ID }, "floating_ip_address": func(f *floatingIP) string { return f.Address },
		"port_id": func(f *floatingIP) string { return f.PortID }, "floating_network_id": func(f *floatingIP) string { return f.NetworkID },
	})
	docs := []any{}
	for _, f := range fs {
		docs = append(docs, c.fipDoc(f))
	}
	writeJSON(w, http.StatusOK, map[string]any{"floatingips": docs})
	return nil
}

func (c *Cloud) showFloatingIP(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, ok := c.fips[r.PathValue("id")]
	if !ok {
		return neutronErr(http.StatusNotFound, "FloatingIPNotFound", "Floating IP %s could not be found", r.PathValue("id"))
	}
	writeJSON(w, http.StatusOK, map[string]any{"floatingip": c.fipDoc(f)})
	return nil
}

func (c *Cloud) updateFloatingIP(w http.ResponseWriter, r *http.Request) *apiError {
	var req struct {
		FloatingIP struct {
			PortID *string `json:"port_id"`
		} `json:"floatingip"`
	}
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	f, ok := c.fips[r.PathValue("id")]
	if !ok {
		return neutronErr(http.StatusNotFound, "FloatingIPNotFound", "Floating IP %s could not be found", r.PathValue("id"))
	}
	if req.FloatingIP.PortID == nil || *req.FloatingIP.PortID == "" {
		f.PortID, f.FixedIP = "", ""
	} else {
		p, ok := c.ports[*req.FloatingIP.PortID]
		if !ok {
			return neutronErr(http.StatusNotFound, "PortNotFound", "Port %s could not be found.", *req.FloatingIP.PortID)
		}
		if len(p.FixedIPs) == 0 {
			return neutronErr(http.StatusBadRequest, "BadRequest", "Port %s does not have any IP addresses on it", p.ID)
		}
		f.PortID, f.FixedIP = p.ID, p.FixedIPs[0].IP
	}
	writeJSON(w, http.StatusOK, map[string]any{"floatingip": c.fipDoc(f)})
	return nil
}

func (c *Cloud) deleteFloatingIP(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.fips[r.PathValue("id")]; !ok {
		return neutronErr(http.StatusNotFound, "FloatingIPNotFound", "Floating IP %s could not be found", r.PathValue("id"))
	}
	delete(c.fips, r.PathValue("id"))
	w.WriteHeader(http.StatusNoContent)
	return nil
}
