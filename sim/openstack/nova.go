package openstack

import (
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"
)

// novaMaxVersion is the newest compute microversion the simulator speaks;
// it answers every request in the 2.1 shapes.
const novaMaxVersion = "2.1"

type flavor struct {
	ID, Name        string
	VCPUs, RAM      int // RAM in MiB
	Disk, Ephemeral int // GiB
}

func defaultFlavors() []*flavor {
	return []*flavor{
		{ID: "1", Name: "m1.tiny", VCPUs: 1, RAM: 512, Disk: 1},
		{ID: "2", Name: "m1.small", VCPUs: 1, RAM: 2048, Disk: 20, Ephemeral: 10},
		{ID: "3", Name: "m1.medium", VCPUs: 2, RAM: 4096, Disk: 40, Ephemeral: 10},
		{ID: "4", Name: "m1.large", VCPUs: 4, RAM: 8192, Disk: 80, Ephemeral: 20},
		{ID: "5", Name: "m1.xlarge", VCPUs: 8, RAM: 16384, Disk: 160, Ephemeral: 40},
		{ID: "6", Name: "m1.bfv", VCPUs: 1, RAM: 2048, Disk: 0},
	}
}

type keypair struct {
	Name, PublicKey, Fingerprint string
}

func newKeypair(name string) *keypair {
	pub := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" + randomHex(16) + " " + name
	sum := md5.Sum([]byte(pub))
	h := hex.EncodeToString(sum[:])
	var parts []string
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return &keypair{Name: name, PublicKey: pub, Fingerprint: strings.Join(parts, ":")}
}

// server is a Nova server.
type server struct {
	ID, Name, ImageID, FlavorID, KeyName, AZ string
	Status, TaskState                        string
	Metadata                                 map[string]string
	UserData                                 []byte
	ConfigDrive                              bool
	Ports                                    []string // in the order of the request's networks
	SecurityGroups                           []string // names
	Volumes                                  []*attachment
	BootVolume                               string
	Fault                                    *serverFault
	Created, Updated                         time.Time
	seq                                      int64
	cancelBoot                               context.CancelFunc
}

type attachment struct {
	VolumeID, Device string
}

type serverFault struct {
	Code    int
	Message string
	Details string
	Created time.Time
}

func (c *Cloud) routeNova(mux *http.ServeMux) {
	h := func(pattern string, fn handler) { mux.HandleFunc(pattern, c.authed(nova, fn)) }
	versions := func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"versions": []any{c.novaVersionDoc()}})
	}
	mux.HandleFunc("GET /compute/{$}", versions)
	mux.HandleFunc("GET /compute", versions)
	versionDoc := func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"version": c.novaVersionDoc()})
	}
	mux.HandleFunc("GET /compute/v2.1/{$}", versionDoc)
	mux.HandleFunc("GET /compute/v2.1", versionDoc)
	h("GET /compute/v2.1/flavors", c.listFlavors(false))
	h("GET /compute/v2.1/flavors/detail", c.listFlavors(true))
	h("GET /compute/v2.1/flavors/{id}", c.showFlavor)
	h("GET /compute/v2.1/flavors/{id}/os-extra_specs", func(w http.ResponseWriter, r *http.Request) *apiError {
		writeJSON(w, http.StatusOK, map[string]any{"extra_specs": map[string]string{}})
		return nil
	})
	h("GET /compute/v2.1/os-keypairs", c.listKeypairs)
	h("GET /compute/v2.1/os-keypairs/{name}", c.showKeypair)
	h("GET /compute/v2.1/os-availability-zone", func(w http.ResponseWriter, r *http.Request) *apiError {
		writeJSON(w, http.StatusOK, map[string]any{"availabilityZoneInfo": []any{map[string]any{
			"zoneName": DefaultAZ, "zoneState": map[string]bool{"available": true}, "hosts": nil}}})
		return nil
	})
	h("POST /compute/v2.1/servers", c.createServer)
	h("GET /compute/v2.1/servers", c.listServers(false))
	h("GET /compute/v2.1/servers/detail", c.listServers(true))
	h("GET /compute/v2.1/servers/{id}", c.showServer)
	h("PUT /compute/v2.1/servers/{id}", c.updateServer)
	h("DELETE /compute/v2.1/servers/{id}", c.deleteServer)
	h("POST /compute/v2.1/servers/{id}/action", c.serverAction)
	h("GET /compute/v2.1/servers/{id}/metadata", c.serverMetadata)
	h("POST /compute/v2.1/servers/{id}/metadata", c.serverMetadata)
	h("PUT /compute/v2.1/servers/{id}/metadata", c.serverMetadata)
	h("GET /compute/v2.1/servers/{id}/metadata/{key}", c.serverMetadataItem)
	h("PUT /compute/v2.1/servers/{id}/metadata/{key}", c.serverMetadataItem)
	h("DELETE /compute/v2.1/servers/{id}/metadata/{key}", c.serverMetadataItem)
	h("GET /compute/v2.1/servers/{id}/os-volume_attachments", c.listAttachments)
	h("POST /compute/v2.1/servers/{id}/os-volume_attachments", c.attachVolume)
	h("GET /compute/v2.1/servers/{id}/os-volume_attachments/{vol}", c.showAttachment)
	h("DELETE /compute/v2.1/servers/{id}/os-volume_attachments/{vol}", c.detachVolume)
	h("GET /compute/v2.1/servers/{id}/os-interface", c.listInterfaces)
	h("POST /compute/v2.1/os-server-groups", c.createServerGroup)
	h("GET /compute/v2.1/os-server-groups", c.listServerGroups)
	h("GET /compute/v2.1/os-server-groups/{id}", c.showServerGroup)
	h("DELETE /compute/v2.1/os-server-groups/{id}", c.deleteServerGroup)
	mux.HandleFunc("/compute/", c.authed(nova, func(w http.ResponseWriter, r *http.Request) *apiError {
		return errorf(http.StatusNotFound, "The resource could not be found.")
	}))
}

func (c *Cloud) novaVersionDoc() map[string]any {
	return map[string]any{
		"id": "v2.1", "status": "CURRENT", "version": novaMaxVersion, "min_version": "2.1", "updated": "2013-07-23T11:33:21Z",
		"links":       []any{map[string]any{"rel": "self", "href": c.baseURL + "/compute/v2.1/"}},
		"media-types": []any{map[string]any{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}},
	}
}

func (c *Cloud) link(path string) []any {
	return []any{
		map[string]string{"rel": "self", "href": c.baseURL + "/compute/v2.1/" + c.projectID + path},
		map[string]string{"rel": "bookmark", "href": c.baseURL + "/compute/" + c.projectID + path},
	}
}

func (c *Cloud) flavorDoc(f *flavor, detail bool) map[string]any {
	d := map[string]any{"id": f.ID, "name": f.Name, "links": c.link("/flavors/" + f.ID)}
	if detail {
		d["vcpus"], d["ram"], d["disk"] = f.VCPUs, f.RAM, f.Disk
		d["OS-FLV-EXT-DATA:ephemeral"], d["swap"], d["rxtx_factor"] = f.Ephemeral, "", 1.0
		d["os-flavor-access:is_public"], d["OS-FLV-DISABLED:disabled"] = true, false
	}
	return d
}

func (c *Cloud) listFlavors(detail bool) handler {
	return func(w http.ResponseWriter, r *http.Request) *apiError {
		pg, more, err := page(c.flavors, func(f *flavor) string { return f.ID }, r.URL.Query(), c.cfg.MaxLimit)
		if err != nil {
			return err
		}
		docs := []any{}
		for _, f := range pg {
			docs = append(docs, c.flavorDoc(f, detail))
		}
		body := map[string]any{"flavors": docs}
		if more {
			body["flavors_links"] = []any{map[string]string{"rel": "next", "href": c.nextLink(r, pg[len(pg)-1].ID)}}
		}
		writeJSON(w, http.StatusOK, body)
		return nil
	}
}

func (c *Cloud) flavor(id string) *flavor {
	for _, f := range c.flavors {
		if f.ID == id {
			return f
		}
	}
	return nil
}

func (c *Cloud) showFlavor(w http.ResponseWriter, r *http.Request) *apiError {
	f := c.flavor(r.PathValue("id"))
	if f == nil {
		return errorf(http.StatusNotFound, "Flavor %s could not be found.", r.PathValue("id"))
	}
	writeJSON(w, http.StatusOK, map[string]any{"flavor": c.flavorDoc(f, true)})
	return nil
}

func (c *Cloud) listKeypairs(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	docs := []any{}
	for _, k := range c.keypairs {
		docs = append(docs, map[string]any{"keypair": map[string]any{"name": k.Name, "public_key": k.PublicKey, "fingerprint": k.Fingerprint}})
	}
	writeJSON(w, http.StatusOK, map[string]any{"keypairs": docs})
	return nil
}

func (c *Cloud) showKeypair(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	k, ok := c.keypairs[r.PathValue("name")]
	if !ok {
		return errorf(http.StatusNotFound, "Keypair %s not found for user %s", r.PathValue("name"), c.userID)
	}
	writeJSON(w, http.StatusOK, map[string]any{"keypair": map[string]any{
		"name": k.Name, "public_key": k.PublicKey, "fingerprint": k.Fingerprint, "user_id": c.userID, "id": 1, "deleted": false,
		"created_at": "2026-01-01T00:00:00.000000", "updated_at": nil, "deleted_at": nil}})
	return nil
}

// serverRequest is the body of POST /servers.
type serverRequest struct {
	Server struct {
		Name             string                  `json:"name"`
		ImageRef         string                  `json:"imageRef"`
		FlavorRef        string                  `json:"flavorRef"`
		Networks         json.RawMessage         `json:"networks"`
		SecurityGroups   []struct{ Name string } `json:"security_groups"`
		UserData         string                  `json:"user_data"`
		Metadata         map[string]string       `json:"metadata"`
		KeyName          string                  `json:"key_name"`
		AvailabilityZone string                  `json:"availability_zone"`
		ConfigDrive      *bool                   `json:"config_drive"`
		BlockDevices     []struct {
			UUID                string `json:"uuid"`
			SourceType          string `json:"source_type"`
			DestinationType     string `json:"destination_type"`
			VolumeSize          int    `json:"volume_size"`
			BootIndex           *int   `json:"boot_index"`
			DeleteOnTermination bool   `json:"delete_on_termination"`
		} `json:"block_device_mapping_v2"`
	} `json:"server"`
	SchedulerHints map[string]any `json:"os:scheduler_hints"`
}

type serverNetwork struct {
	UUID    string `json:"uuid"`
	Port    string `json:"port"`
	FixedIP string `json:"fixed_ip"`
}

// Nova's limits on a server's metadata and user data.
const (
	maxMetadataItems = 128
	maxUserDataB64   = 65535
)

func (c *Cloud) createServer(w http.ResponseWriter, r *http.Request) *apiError {
	var req serverRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	s := req.Server
	if strings.TrimSpace(s.Name) == "" {
		return errorf(http.StatusBadRequest, "Invalid input for field/attribute name. Value: %s. '%s' does not match '^(?! )[a-zA-Z0-9. _-]+(?<! )$'", s.Name, s.Name)
	}
	if len(s.Metadata) > maxMetadataItems {
		return errorf(http.StatusForbidden, "Quota exceeded for metadata_items: Requested %d, but already used 0 of %d metadata_items", len(s.Metadata), maxMetadataItems)
	}
	for k, v := range s.Metadata {
		if len(k) == 0 || len(k) > 255 || len(v) > 255 {
			return errorf(http.StatusBadRequest, "Invalid input for field/attribute metadata. Value: %s. metadata keys and values must be 1 to 255 characters", k)
		}
	}
	var userData []byte
	if s.UserData != "" {
		if len(s.UserData) > maxUserDataB64 {
			return errorf(http.StatusBadRequest, "Invalid input for field/attribute user_data. Value: <data>. is too long")
		}
		b, err := base64.StdEncoding.DecodeString(s.UserData)
		if err != nil {
			return errorf(http.StatusBadRequest, "User data needs to be valid base 64.")
		}
		userData = b
	}
	var nets []serverNetwork
	if len(s.Networks) > 0 && s.Networks[0] == '[' {
		if err := json.Unmarshal(s.Networks, &nets); err != nil {
			return errorf(http.StatusBadRequest, "Bad networks format: %v", err)
		}
	}
	if s.AvailabilityZone != "" && s.AvailabilityZone != DefaultAZ {
		return errorf(http.StatusBadRequest, "The requested availability zone is not available")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var group *serverGroup
	if g, ok := req.SchedulerHints["group"]; ok {
		id, _ := g.(string)
		if group = c.groups[id]; group == nil {
			return errorf(http.StatusBadRequest, "Invalid input for field/attribute group. Value: %v. Server group %v not found.", g, g)
		}
	}
	f := c.flavor(s.FlavorRef)
	if f == nil {
		return errorf(http.StatusBadRequest, "Flavor %s could not be found.", s.FlavorRef)
	}
	srv := &server{
		ID: newID(), Name: s.Name, FlavorID: f.ID, KeyName: s.KeyName, AZ: DefaultAZ, Status: "BUILD", TaskState: "scheduling",
		Metadata: map[string]string{}, UserData: userData, ConfigDrive: s.ConfigDrive != nil && *s.ConfigDrive,
		Created: time.Now(), Updated: time.Now(), seq: c.next(),
	}
	for k, v := range s.Metadata {
		srv.Metadata[k] = v
	}
	bootFromVolume := false
	for _, bd := range s.BlockDevices {
		if bd.BootIndex != nil && *bd.BootIndex == 0 && bd.DestinationType == "volume" {
			bootFromVolume = true
			if bd.SourceType == "image" {
				s.ImageRef = bd.UUID
			}
			if bd.VolumeSize <= 0 {
				return errorf(http.StatusBadRequest, "Block Device Mapping is Invalid: You specified more local devices than the limit allows")
			}
		}
	}
	if s.ImageRef == "" && !bootFromVolume {
		return errorf(http.StatusBadRequest, "Missing imageRef attribute")
	}
	im, ok := c.images[s.ImageRef]
	if !ok {
		return errorf(http.StatusBadRequest, "Image %s could not be found.", s.ImageRef)
	}
	if im.Status != "active" {
		return errorf(http.StatusBadRequest, "Image %s is not active.", s.ImageRef)
	}
	if f.Disk == 0 && !bootFromVolume {
		return errorf(http.StatusForbidden, "Only volume-backed servers are allowed for flavors with zero disk.")
	}
	srv.ImageID = im.ID
	if s.KeyName != "" {
		if _, ok := c.keypairs[s.KeyName]; !ok {
			return errorf(http.StatusBadRequest, "Invalid key_name provided.")
		}
	}
	sgNames := []string{}
	var sgIDs []string
	for _, g := range s.SecurityGroups {
		id, ok := c.secGroupID(g.Name)
		if !ok {
			return errorf(http.StatusBadRequest, "Security group %s not found for project %s.", g.Name, c.projectID)
		}
		sgIDs = append(sgIDs, id)
		sgNames = append(sgNames, c.secgroups[id].Name)
	}
	if len(sgIDs) == 0 {
		sgIDs = []string{stableID("security-group", "default")}
		sgNames = []string{"default"}
	}
	srv.SecurityGroups = sgNames
	if len(nets) == 0 {
		return errorf(http.StatusBadRequest, "Multiple possible networks found, use a Network ID to be more specific.")
	}
	// Check every network and port before making any port.
	for _, n := range nets {
		switch {
		case n.Port != "":
			p, ok := c.ports[n.Port]
			if !ok {
				return errorf(http.StatusBadRequest, "Port %s could not be found.", n.Port)
			}
			if p.DeviceID != "" {
				return errorf(http.StatusConflict, "Port %s is still in use.", n.Port)
			}
		default:
			if _, ok := c.networks[n.UUID]; !ok {
				return errorf(http.StatusBadRequest, "Network %s could not be found.", n.UUID)
			}
		}
	}
	var made []string
	for _, n := range nets {
		if n.Port != "" {
			srv.Ports = append(srv.Ports, n.Port)
			continue
		}
		p, err := c.newPort(c.networks[n.UUID], n.FixedIP, sgIDs)
		if err != nil {
			for _, id := range made {
				delete(c.ports, id)
			}
			if err.status == http.StatusConflict {
				return errorf(http.StatusConflict, "Fixed IP address %s is already in use on instance %s.", n.FixedIP, srv.ID)
			}
			return errorf(http.StatusBadRequest, "%s", err.message)
		}
		p.byNova = true
		made = append(made, p.ID)
		srv.Ports = append(srv.Ports, p.ID)
	}
	for _, id := range srv.Ports {
		p := c.ports[id]
		p.DeviceID, p.DeviceOwner = srv.ID, "compute:"+DefaultAZ
	}
	if bootFromVolume {
		v := &volume{ID: newID(), Size: max(f.Disk, 1), Status: "in-use", VolumeType: "standard", AZ: DefaultAZ, Bootable: true,
			Metadata: map[string]string{}, Created: time.Now(), seq: c.next(), deleteWithServer: true}
		for _, bd := range s.BlockDevices {
			if bd.BootIndex != nil && *bd.BootIndex == 0 {
				v.Size = max(bd.VolumeSize, 1)
			}
		}
		v.Attachments = []*volAttachment{{ServerID: srv.ID, Device: "/dev/vda", ID: newID(), At: time.Now()}}
		c.volumes[v.ID] = v
		srv.BootVolume = v.ID
	}
	c.servers[srv.ID] = srv
	if group != nil {
		group.Members = append(group.Members, srv.ID)
	}
	c.startBuild(srv)
	w.Header().Set("Location", c.baseURL+"/compute/v2.1/"+c.projectID+"/servers/"+srv.ID)
	writeJSON(w, http.StatusAccepted, map[string]any{"server": map[string]any{
		"id": srv.ID, "links": c.link("/servers/" + srv.ID), "adminPass": randomHex(6), "OS-DCF:diskConfig": "MANUAL",
		"security_groups": sgNamesDoc(sgNames)}})
	return nil
}

func sgNamesDoc(names []string) []any {
	out := []any{}
	for _, n := range names {
		out = append(out, map[string]string{"name": n})
	}
	return out
}

// FailNextServers makes the next n servers go to ERROR instead of ACTIVE,
// with the fault message (Nova's "No valid host was found. ..." when
// empty).
func (c *Cloud) FailNextServers(n int, message string) {
	if message == "" {
		message = "No valid host was found. There are not enough hosts available."
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for range n {
		c.buildFails = append(c.buildFails, message)
	}
}

// HoldBuild keeps new servers in BUILD while hold is true (a cloud whose
// scheduler is stuck); releasing it lets them go on.
func (c *Cloud) HoldBuild(hold bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.holdBuild = hold
	if !hold {
		for _, s := range c.servers {
			if s.Status == "BUILD" && s.TaskState == "held" {
				c.startBuild(s)
			}
		}
	}
}

// startBuild takes a server from BUILD to ACTIVE (booting it) or ERROR;
// c.mu is held.
func (c *Cloud) startBuild(s *server) {
	if c.holdBuild {
		s.TaskState = "held"
		return
	}
	s.TaskState = "spawning"
	if len(c.buildFails) > 0 {
		msg := c.buildFails[0]
		c.buildFails = c.buildFails[1:]
		c.later(c.cfg.BuildTime, func() { c.failServer(s, msg, "") })
		return
	}
	if c.cfg.Booter == nil {
		c.later(c.cfg.BuildTime, func() { c.activate(s) })
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancelBoot = cancel
	vm := c.bootSpec(s)
	c.timers.Add(1)
	go func() {
		defer c.timers.Done()
		err := c.cfg.Booter.Boot(ctx, vm)
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.closed || c.servers[s.ID] != s || s.Status != "BUILD" {
			return
		}
		if err != nil {
			c.failServer(s, "Build of instance "+s.ID+" aborted: "+err.Error(), err.Error())
			return
		}
		c.activate(s)
	}()
}

func (c *Cloud) activate(s *server) {
	if c.servers[s.ID] != s || s.Status != "BUILD" {
		return
	}
	s.Status, s.TaskState, s.Updated = "ACTIVE", "", time.Now()
	for _, id := range s.Ports {
		if p, ok := c.ports[id]; ok {
			p.Status = "ACTIVE"
		}
	}
}

func (c *Cloud) failServer(s *server, msg, details string) {
	if c.servers[s.ID] != s || s.Status != "BUILD" {
		return
	}
	s.Status, s.TaskState, s.Updated = "ERROR", "", time.Now()
	s.Fault = &serverFault{Code: 500, Message: msg, Details: details, Created: time.Now()}
}

// fixedIPs are the server's addresses by network name.
func (c *Cloud) addresses(s *server) map[string]any {
	out := map[string]any{}
	for _, id := range s.Ports {
		p, ok := c.ports[id]
		if !ok {
			continue
		}
		n := c.networks[p.NetworkID]
		var list []any
		if prev, ok := out[n.Name].([]any); ok {
			list = prev
		}
		for _, ip := range p.FixedIPs {
			list = append(list, map[string]any{"addr": ip.IP, "version": 4, "OS-EXT-IPS:type": "fixed", "OS-EXT-IPS-MAC:mac_addr": p.MAC})
			for _, f := range c.fips {
				if f.PortID == p.ID && f.FixedIP == ip.IP {
					list = append(list, map[string]any{"addr": f.Address, "version": 4, "OS-EXT-IPS:type": "floating", "OS-EXT-IPS-MAC:mac_addr": p.MAC})
				}
			}
		}
		out[n.Name] = list
	}
	return out
}

func (c *Cloud) serverDoc(s *server, detail bool) map[string]any {
	d := map[string]any{"id": s.ID, "name": s.Name, "links": c.link("/servers/" + s.ID)}
	if !detail {
		return d
	}
	vols := []any{}
	for _, a := range s.Volumes {
		vols = append(vols, map[string]any{"id": a.VolumeID, "delete_on_termination": false})
	}
	if s.BootVolume != "" {
		vols = append([]any{map[string]any{"id": s.BootVolume, "delete_on_termination": true}}, vols...)
	}
	var img any = map[string]any{"id": s.ImageID, "links": []any{map[string]string{"rel": "bookmark", "href": c.baseURL + "/compute/" + c.projectID + "/images/" + s.ImageID}}}
	if s.BootVolume != "" {
		img = ""
	}
	power := 1
	if s.Status != "ACTIVE" {
		power = 0
	}
	vmState := map[string]string{"BUILD": "building", "ACTIVE": "active", "ERROR": "error", "REBOOT": "active", "SHUTOFF": "stopped"}[s.Status]
	var task any
	if s.TaskState != "" && s.TaskState != "held" {
		task = s.TaskState
	} else if s.TaskState == "held" {
		task = "scheduling"
	}
	cd := ""
	if s.ConfigDrive {
		cd = "True"
	}
	var key any
	if s.KeyName != "" {
		key = s.KeyName
	}
	md := s.Metadata
	if md == nil {
		md = map[string]string{}
	}
	d["status"], d["OS-EXT-STS:task_state"], d["OS-EXT-STS:vm_state"], d["OS-EXT-STS:power_state"] = s.Status, task, vmState, power
	d["tenant_id"], d["user_id"], d["metadata"], d["hostId"] = c.projectID, c.userID, md, randomHexOf(s.ID)
	d["image"], d["flavor"] = img, map[string]any{"id": s.FlavorID, "links": c.link("/flavors/" + s.FlavorID)}
	d["created"], d["updated"], d["addresses"], d["key_name"] = timestamp(s.Created), timestamp(s.Updated), c.addresses(s), key
	d["OS-EXT-AZ:availability_zone"], d["config_drive"], d["progress"] = s.AZ, cd, 0
	d["os-extended-volumes:volumes_attached"], d["security_groups"] = vols, sgNamesDoc(s.SecurityGroups)
	d["accessIPv4"], d["accessIPv6"], d["OS-DCF:diskConfig"] = "", "", "MANUAL"
	d["OS-SRV-USG:launched_at"], d["OS-SRV-USG:terminated_at"] = nil, nil
	if s.Status == "ACTIVE" {
		d["OS-SRV-USG:launched_at"] = s.Updated.UTC().Format("2006-01-02T15:04:05.000000")
		d["progress"] = 100
	}
	if s.Fault != nil {
		d["fault"] = map[string]any{"code": s.Fault.Code, "message": s.Fault.Message, "details": s.Fault.Details, "created": timestamp(s.Fault.Created)}
	}
	return d
}

func randomHexOf(id string) string {
	sum := md5.Sum([]byte("host/" + id))
	return hex.EncodeToString(sum[:])
}

func (c *Cloud) listServers(detail bool) handler {
	return func(w http.ResponseWriter, r *http.Request) *apiError {
		q := r.URL.Query()
		c.mu.Lock()
		defer c.mu.Unlock()
		all := sortedBySeq(c.servers, func(s *server) int64 { return s.seq })
		slices.Reverse(all) // newest first, as Nova lists
		if name := q.Get("name"); name != "" {
			re, err := regexp.Compile(name)
			if err != nil {
				return errorf(http.StatusBadRequest, "Invalid filter name: %v", err)
			}
			all = slices.DeleteFunc(all, func(s *server) bool { return !re.MatchString(s.Name) })
		}
		if st := q.Get("status"); st != "" {
			all = slices.DeleteFunc(all, func(s *server) bool { return !strings.EqualFold(s.Status, st) })
		}
		pg, more, err := page(all, func(s *server) string { return s.ID }, q, c.cfg.MaxLimit)
		if err != nil {
			return err
		}
		docs := []any{}
		for _, s := range pg {
			docs = append(docs, c.serverDoc(s, detail))
		}
		body := map[string]any{"servers": docs}
		if more {
			body["servers_links"] = []any{map[string]string{"rel": "next", "href": c.nextLink(r, pg[len(pg)-1].ID)}}
		}
		writeJSON(w, http.StatusOK, body)
		return nil
	}
}

// lookupServer returns the server in the path; c.mu is held.
func (c *Cloud) lookupServer(r *http.Request) (*server, *apiError) {
	s, ok := c.servers[r.PathValue("id")]
	if !ok {
		return nil, errorf(http.StatusNotFound, "Instance %s could not be found.", r.PathValue("id"))
	}
	return s, nil
}

func (c *Cloud) showServer(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, err := c.lookupServer(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"server": c.serverDoc(s, true)})
	return nil
}

func (c *Cloud) updateServer(w http.ResponseWriter, r *http.Request) *apiError {
	var req struct {
		Server struct {
			Name *string `json:"name"`
		} `json:"server"`
	}
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s, err := c.lookupServer(r)
	if err != nil {
		return err
	}
	if req.Server.Name != nil {
		if strings.TrimSpace(*req.Server.Name) == "" {
			return errorf(http.StatusBadRequest, "Invalid input for field/attribute name.")
		}
		s.Name, s.Updated = *req.Server.Name, time.Now()
	}
	writeJSON(w, http.StatusOK, map[string]any{"server": c.serverDoc(s, true)})
	return nil
}

func (c *Cloud) deleteServer(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, err := c.lookupServer(r)
	if err != nil {
		return err
	}
	if s.TaskState != "deleting" {
		s.TaskState = "deleting"
		if s.cancelBoot != nil {
			s.cancelBoot()
		}
		c.timers.Add(1)
		go func() {
			defer c.timers.Done()
			if b := c.cfg.Booter; b != nil {
				if err := b.Delete(s.ID); err != nil {
					c.log.Error("delete the vm of a server", "server", s.ID, "error", err)
				}
			}
			time.Sleep(c.cfg.BuildTime)
			c.mu.Lock()
			defer c.mu.Unlock()
			c.removeServer(s)
		}()
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// removeServer forgets a deleted server: the ports Nova made go, the ports
// it was given are unbound, volumes are detached; c.mu is held.
func (c *Cloud) removeServer(s *server) {
	if c.servers[s.ID] != s {
		return
	}
	delete(c.servers, s.ID)
	for _, g := range c.groups {
		g.Members = slices.DeleteFunc(g.Members, func(m string) bool { return m == s.ID })
	}
	for _, id := range s.Ports {
		p, ok := c.ports[id]
		if !ok {
			continue
		}
		if p.byNova {
			c.removePort(id)
			continue
		}
		p.DeviceID, p.DeviceOwner, p.Status = "", "", "DOWN"
	}
	for _, a := range s.Volumes {
		if v, ok := c.volumes[a.VolumeID]; ok {
			v.Attachments, v.Status = nil, "available"
		}
	}
	if v, ok := c.volumes[s.BootVolume]; ok {
		delete(c.volumes, v.ID)
	}
}

func (c *Cloud) serverAction(w http.ResponseWriter, r *http.Request) *apiError {
	var req map[string]json.RawMessage
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s, err := c.lookupServer(r)
	if err != nil {
		return err
	}
	switch {
	case req["reboot"] != nil:
		if s.Status != "ACTIVE" {
			return errorf(http.StatusConflict, "Cannot 'reboot' instance %s while it is in vm_state %s", s.ID, strings.ToLower(s.Status))
		}
		s.Status, s.TaskState = "REBOOT", "rebooting"
		c.timers.Add(1)
		go func() {
			defer c.timers.Done()
			var berr error
			if b := c.cfg.Booter; b != nil {
				berr = b.Reboot(s.ID)
			}
			time.Sleep(c.cfg.BuildTime)
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.servers[s.ID] == s && s.Status == "REBOOT" {
				s.Status, s.TaskState, s.Updated = "ACTIVE", "", time.Now()
				if berr != nil {
					s.Status = "ERROR"
					s.Fault = &serverFault{Code: 500, Message: "reboot failed: " + berr.Error(), Created: time.Now()}
				}
			}
		}()
	default:
		for k := range req {
			return errorf(http.StatusBadRequest, "There is no such action: %s", k)
		}
		return errorf(http.StatusBadRequest, "Malformed request body")
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

func (c *Cloud) serverMetadata(w http.ResponseWriter, r *http.Request) *apiError {
	var req struct {
		Metadata map[string]string `json:"metadata"`
	}
	if r.Method != http.MethodGet {
		if err := decodeBody(r, &req); err != nil {
			return err
		}
		if req.Metadata == nil {
			return errorf(http.StatusBadRequest, "Malformed request body: metadata is required")
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s, err := c.lookupServer(r)
	if err != nil {
		return err
	}
	switch r.Method {
	case http.MethodPut:
		s.Metadata = map[string]string{}
		fallthrough
	case http.MethodPost:
		merged := len(s.Metadata)
		for k := range req.Metadata {
			if _, ok := s.Metadata[k]; !ok {
				merged++
			}
		}
		if merged > maxMetadataItems {
			return errorf(http.StatusForbidden, "Quota exceeded for metadata_items: Requested %d, but already used %d of %d metadata_items", len(req.Metadata), len(s.Metadata), maxMetadataItems)
		}
		for k, v := range req.Metadata {
			if len(k) == 0 || len(k) > 255 || len(v) > 255 {
				return errorf(http.StatusBadRequest, "Invalid input for field/attribute metadata: keys and values are 1 to 255 characters")
			}
			s.Metadata[k] = v
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"metadata": s.Metadata})
	return nil
}

func (c *Cloud) serverMetadataItem(w http.ResponseWriter, r *http.Request) *apiError {
	var req struct {
		Meta map[string]string `json:"meta"`
	}
	if r.Method == http.MethodPut {
		if err := decodeBody(r, &req); err != nil {
			return err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s, err := c.lookupServer(r)
	if err != nil {
		return err
	}
	key := r.PathValue("key")
	switch r.Method {
	case http.MethodGet:
		v, ok := s.Metadata[key]
		if !ok {
			return errorf(http.StatusNotFound, "Metadata item was not found")
		}
		writeJSON(w, http.StatusOK, map[string]any{"meta": map[string]string{key: v}})
	case http.MethodPut:
		v, ok := req.Meta[key]
		if !ok || len(req.Meta) != 1 {
			return errorf(http.StatusBadRequest, "Request body and URI mismatch")
		}
		s.Metadata[key] = v
		writeJSON(w, http.StatusOK, map[string]any{"meta": map[string]string{key: v}})
	case http.MethodDelete:
		if _, ok := s.Metadata[key]; !ok {
			return errorf(http.StatusNotFound, "Metadata item was not found")
		}
		delete(s.Metadata, key)
		w.WriteHeader(http.StatusNoContent)
	}
	return nil
}

func (c *Cloud) attachmentDoc(s *server, a *attachment) map[string]any {
	return map[string]any{"id": a.VolumeID, "serverId": s.ID, "volumeId": a.VolumeID, "device": a.Device}
}

func (c *Cloud) listAttachments(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, err := c.lookupServer(r)
	if err != nil {
		return err
	}
	docs := []any{}
	if s.BootVolume != "" {
		docs = append(docs, c.attachmentDoc(s, &attachment{VolumeID: s.BootVolume, Device: "/dev/vda"}))
	}
	for _, a := range s.Volumes {
		docs = append(docs, c.attachmentDoc(s, a))
	}
	writeJSON(w, http.StatusOK, map[string]any{"volumeAttachments": docs})
	return nil
}

func (c *Cloud) showAttachment(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, err := c.lookupServer(r)
	if err != nil {
		return err
	}
	for _, a := range s.Volumes {
		if a.VolumeID == r.PathValue("vol") {
			writeJSON(w, http.StatusOK, map[string]any{"volumeAttachment": c.attachmentDoc(s, a)})
			return nil
		}
	}
	return errorf(http.StatusNotFound, "Volume %s is not attached to %s", r.PathValue("vol"), s.ID)
}

// attachVolume attaches a volume at the next free /dev/vdX: like Nova on
// libvirt it ignores the device the request names.
func (c *Cloud) attachVolume(w http.ResponseWriter, r *http.Request) *apiError {
	var req struct {
		VolumeAttachment struct {
			VolumeID string `json:"volumeId"`
			Device   string `json:"device"`
		} `json:"volumeAttachment"`
	}
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s, err := c.lookupServer(r)
	if err != nil {
		return err
	}
	if s.Status != "ACTIVE" && s.Status != "SHUTOFF" {
		return errorf(http.StatusConflict, "Cannot 'attach_volume' instance %s while it is in vm_state %s", s.ID, strings.ToLower(s.Status))
	}
	v, ok := c.volumes[req.VolumeAttachment.VolumeID]
	if !ok {
		return errorf(http.StatusNotFound, "Volume %s could not be found.", req.VolumeAttachment.VolumeID)
	}
	if v.Status != "available" {
		return errorf(http.StatusBadRequest, "Invalid volume: volume %s status must be available, but current status is: %s", v.ID, v.Status)
	}
	used := map[string]bool{"/dev/vda": true}
	if c.flavor(s.FlavorID).Ephemeral > 0 {
		used["/dev/vdb"] = true
	}
	for _, a := range s.Volumes {
		used[a.Device] = true
	}
	dev := ""
	for l := 'b'; l <= 'z'; l++ {
		if d := "/dev/vd" + string(l); !used[d] {
			dev = d
			break
		}
	}
	if dev == "" {
		return errorf(http.StatusBadRequest, "No free disk device names for prefix 'vd'")
	}
	a := &attachment{VolumeID: v.ID, Device: dev}
	s.Volumes = append(s.Volumes, a)
	v.Status = "attaching"
	va := &volAttachment{ID: newID(), ServerID: s.ID, Device: dev, At: time.Now()}
	v.Attachments = []*volAttachment{va}
	sid := s.ID
	c.timers.Add(1)
	go func() {
		defer c.timers.Done()
		var berr error
		if b := c.cfg.Booter; b != nil {
			berr = b.AttachVolume(sid, c.VolumePath(v.ID), v.ID, dev)
		}
		time.Sleep(c.cfg.BuildTime / 2)
		c.mu.Lock()
		defer c.mu.Unlock()
		if v.Status != "attaching" {
			return
		}
		if berr != nil {
			c.log.Error("attach volume", "server", sid, "volume", v.ID, "error", berr)
			v.Status, v.Attachments = "available", nil
			s.Volumes = slices.DeleteFunc(s.Volumes, func(x *attachment) bool { return x == a })
			return
		}
		v.Status = "in-use"
	}()
	writeJSON(w, http.StatusOK, map[string]any{"volumeAttachment": c.attachmentDoc(s, a)})
	return nil
}

func (c *Cloud) detachVolume(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, err := c.lookupServer(r)
	if err != nil {
		return err
	}
	vid := r.PathValue("vol")
	i := slices.IndexFunc(s.Volumes, func(a *attachment) bool { return a.VolumeID == vid })
	if i < 0 {
		return errorf(http.StatusNotFound, "Volume %s is not attached to %s", vid, s.ID)
	}
	v := c.volumes[vid]
	if v != nil && v.Status == "attaching" {
		return errorf(http.StatusBadRequest, "Invalid volume: Unable to detach volume. Volume status must be 'in-use' and attach_status must be 'attached' to detach.")
	}
	s.Volumes = slices.Delete(s.Volumes, i, i+1)
	if v == nil {
		w.WriteHeader(http.StatusAccepted)
		return nil
	}
	v.Status = "detaching"
	sid := s.ID
	c.timers.Add(1)
	go func() {
		defer c.timers.Done()
		if b := c.cfg.Booter; b != nil {
			if err := b.DetachVolume(sid, vid); err != nil {
				c.log.Error("detach volume", "server", sid, "volume", vid, "error", err)
			}
		}
		time.Sleep(c.cfg.BuildTime / 2)
		c.mu.Lock()
		defer c.mu.Unlock()
		if v.Status == "detaching" {
			v.Status, v.Attachments = "available", nil
		}
	}()
	w.WriteHeader(http.StatusAccepted)
	return nil
}

func (c *Cloud) listInterfaces(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, err := c.lookupServer(r)
	if err != nil {
		return err
	}
	docs := []any{}
	for _, id := range s.Ports {
		if p, ok := c.ports[id]; ok {
			docs = append(docs, map[string]any{"port_id": p.ID, "net_id": p.NetworkID, "mac_addr": p.MAC, "port_state": p.Status, "fixed_ips": p.FixedIPs})
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"interfaceAttachments": docs})
	return nil
}

// serverGroup is a Nova server group; the simulator records its members
// and places every server on the one host it has, whatever the policy.
type serverGroup struct {
	ID, Name string
	Policies []string
	Members  []string
}

func (c *Cloud) serverGroupDoc(g *serverGroup) map[string]any {
	members := g.Members
	if members == nil {
		members = []string{}
	}
	return map[string]any{"id": g.ID, "name": g.Name, "policies": g.Policies, "members": members, "metadata": map[string]string{},
		"project_id": c.projectID, "user_id": c.userID}
}

func (c *Cloud) createServerGroup(w http.ResponseWriter, r *http.Request) *apiError {
	var req struct {
		ServerGroup struct {
			Name     string   `json:"name"`
			Policies []string `json:"policies"`
		} `json:"server_group"`
	}
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	g := req.ServerGroup
	if g.Name == "" || len(g.Policies) != 1 {
		return errorf(http.StatusBadRequest, "Invalid input for field/attribute server_group: a name and one policy are required")
	}
	switch g.Policies[0] {
	case "affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity":
	default:
		return errorf(http.StatusBadRequest, "Invalid input for field/attribute 0. Value: %s. '%s' is not one of ['anti-affinity', 'affinity', 'soft-anti-affinity', 'soft-affinity']", g.Policies[0], g.Policies[0])
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	sg := &serverGroup{ID: newID(), Name: g.Name, Policies: g.Policies}
	c.groups[sg.ID] = sg
	writeJSON(w, http.StatusOK, map[string]any{"server_group": c.serverGroupDoc(sg)})
	return nil
}

func (c *Cloud) listServerGroups(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	docs := []any{}
	for _, g := range c.groups {
		docs = append(docs, c.serverGroupDoc(g))
	}
	writeJSON(w, http.StatusOK, map[string]any{"server_groups": docs})
	return nil
}

func (c *Cloud) showServerGroup(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	g, ok := c.groups[r.PathValue("id")]
	if !ok {
		return errorf(http.StatusNotFound, "Instance group %s could not be found.", r.PathValue("id"))
	}
	writeJSON(w, http.StatusOK, map[string]any{"server_group": c.serverGroupDoc(g)})
	return nil
}

func (c *Cloud) deleteServerGroup(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.groups[r.PathValue("id")]; !ok {
		return errorf(http.StatusNotFound, "Instance group %s could not be found.", r.PathValue("id"))
	}
	delete(c.groups, r.PathValue("id"))
	w.WriteHeader(http.StatusNoContent)
	return nil
}
