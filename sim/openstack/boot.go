package openstack

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"strings"
)

// Booter boots real local VMs for the cloud's servers: the boot machinery
// shared by the simulated clouds. Every method may block; the cloud calls
// them outside its lock.
type Booter interface {
	// Boot starts the VM of a server and returns once it is up (the
	// server turns ACTIVE) or has failed (the server turns ERROR with
	// the error as its fault). ctx ends when the server is deleted.
	Boot(ctx context.Context, vm VM) error
	// Reboot restarts the VM.
	Reboot(id string) error
	// Delete stops the VM and removes what Boot made. A VM that does not
	// exist is no error.
	Delete(id string) error
	// AttachVolume shows the VM the volume whose data lives at path,
	// as the device (and by its id, as virtio does).
	AttachVolume(id, path, volumeID, device string) error
	// DetachVolume takes the volume away from the VM.
	DetachVolume(id, volumeID string) error
}

// VM is what a Booter needs to boot a server.
type VM struct {
	ID, Name string
	// IP is the server's first fixed address (127.x).
	IP string
	// ImageID is the server's image; ImagePath its uploaded data ("" for
	// an image without data, such as a light stemcell's).
	ImageID, ImagePath string
	// ConfigDrive is the config drive's files by path
	// ("openstack/latest/user_data", ...), nil without a config drive.
	ConfigDrive map[string][]byte
	// Metadata is the server's metadata service (/openstack/latest/...),
	// to be served at an address the VM is told.
	Metadata http.Handler
}

// bootSpec is what the booter gets for s; c.mu is held.
func (c *Cloud) bootSpec(s *server) VM {
	vm := VM{ID: s.ID, Name: s.Name, ImageID: s.ImageID, Metadata: c.metadataHandler(s.ID)}
	if im, ok := c.images[s.ImageID]; ok && im.hasData {
		vm.ImagePath = c.imageFile(im.ID)
	}
	if len(s.Ports) > 0 {
		if p, ok := c.ports[s.Ports[0]]; ok && len(p.FixedIPs) > 0 {
			vm.IP = p.FixedIPs[0].IP
		}
	}
	if s.ConfigDrive {
		vm.ConfigDrive = c.metadataFiles(s)
	}
	return vm
}

// metadataFiles are the documents of the metadata service and config
// drive for s: openstack/latest/{meta_data.json,user_data,network_data.json}
// (also under openstack/2012-08-10) and ec2/latest/user-data; c.mu is held.
func (c *Cloud) metadataFiles(s *server) map[string][]byte {
	md := map[string]any{
		"uuid": s.ID, "name": s.Name, "hostname": s.Name, "availability_zone": s.AZ,
		"project_id": c.projectID, "launch_index": 0, "meta": s.Metadata, "devices": []any{},
	}
	if s.KeyName != "" {
		if k, ok := c.keypairs[s.KeyName]; ok {
			md["public_keys"] = map[string]string{k.Name: k.PublicKey}
			md["keys"] = []any{map[string]string{"name": k.Name, "type": "ssh", "data": k.PublicKey}}
		}
	}
	var links, networks []any
	for i, id := range s.Ports {
		p, ok := c.ports[id]
		if !ok {
			continue
		}
		tap := "tap" + strings.ReplaceAll(p.ID, "-", "")[:11]
		links = append(links, map[string]any{"id": tap, "vif_id": p.ID, "type": "ovs", "mtu": 1500, "ethernet_mac_address": p.MAC})
		for _, ip := range p.FixedIPs {
			sn := c.subnets[ip.SubnetID]
			netmask := "255.255.255.255"
			gw := ""
			if sn != nil {
				m := ^uint32(0) << (32 - sn.CIDR.Bits())
				netmask = ipv4String(m)
				gw = sn.Gateway.String()
			}
			networks = append(networks, map[string]any{
				"id": "network" + string(rune('0'+i)), "type": "ipv4", "link": tap, "ip_address": ip.IP, "netmask": netmask,
				"network_id": p.NetworkID, "routes": []any{map[string]string{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": gw}},
			})
		}
	}
	nd := map[string]any{"links": orEmptyList(links), "networks": orEmptyList(networks), "services": []any{}}
	mdJSON, _ := json.Marshal(md)
	ndJSON, _ := json.Marshal(nd)
	files := map[string][]byte{}
	for _, v := range []string{"latest", "2012-08-10"} {
		files["openstack/"+v+"/meta_data.json"] = mdJSON
		files["openstack/"+v+"/network_data.json"] = ndJSON
		if s.UserData != nil {
			files["openstack/"+v+"/user_data"] = s.UserData
		}
	}
	if s.UserData != nil {
		files["ec2/latest/user-data"] = s.UserData
	}
	return files
}

func orEmptyList(l []any) []any {
	if l == nil {
		return []any{}
	}
	return l
}

func ipv4String(v uint32) string {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}).String()
}

// metadataHandler is the metadata service as the server sees it
// (/openstack/latest/..., /latest/user-data): it answers from the
// server's current state, so renames and metadata show.
func (c *Cloud) metadataHandler(id string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		c.mu.Lock()
		s, ok := c.servers[id]
		var files map[string][]byte
		if ok {
			files = c.metadataFiles(s)
		}
		c.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		p := strings.TrimPrefix(r.URL.Path, "/")
		if p == "latest/user-data" {
			p = "ec2/latest/user-data"
		}
		switch p {
		case "openstack", "openstack/":
			w.Write([]byte("2012-08-10\nlatest"))
			return
		case "openstack/latest", "openstack/latest/":
			w.Write([]byte("meta_data.json\nnetwork_data.json\nuser_data"))
			return
		}
		b, ok := files[p]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if strings.HasSuffix(p, ".json") {
			w.Header().Set("Content-Type", "application/json")
		}
		w.Write(b)
	})
}

// MetadataHandler is the metadata service of server id (for a Booter
// that serves it itself).
func (c *Cloud) MetadataHandler(id string) http.Handler { return c.metadataHandler(id) }
