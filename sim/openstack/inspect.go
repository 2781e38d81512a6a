package openstack

// ServerInfo is a server as tests see it.
type ServerInfo struct {
	ID, Name, Status, FaultMessage string
	Metadata                       map[string]string
	Ports                          []string
}

// PortInfo is a port as tests see it.
type PortInfo struct {
	ID, NetworkID, IP, DeviceID, Status string
}

// Servers lists the servers, oldest first.
func (c *Cloud) Servers() []ServerInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []ServerInfo
	for _, s := range sortedBySeq(c.servers, func(s *server) int64 { return s.seq }) {
		si := ServerInfo{ID: s.ID, Name: s.Name, Status: s.Status, Metadata: map[string]string{}, Ports: append([]string(nil), s.Ports...)}
		for k, v := range s.Metadata {
			si.Metadata[k] = v
		}
		if s.Fault != nil {
			si.FaultMessage = s.Fault.Message
		}
		out = append(out, si)
	}
	return out
}

// Ports lists the ports, oldest first.
func (c *Cloud) Ports() []PortInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []PortInfo
	for _, p := range sortedBySeq(c.ports, func(p *port) int64 { return p.seq }) {
		pi := PortInfo{ID: p.ID, NetworkID: p.NetworkID, DeviceID: p.DeviceID, Status: p.Status}
		if len(p.FixedIPs) > 0 {
			pi.IP = p.FixedIPs[0].IP
		}
		out = append(out, pi)
	}
	return out
}

// VolumeCount is the number of volumes (boot volumes included).
func (c *Cloud) VolumeCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.volumes)
}
