package azure

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// subnetOf finds a subnet document by its id. Caller holds s.mu.
func (s *Server) subnetOf(id string) (map[string]any, bool) {
	i := strings.Index(strings.ToLower(id), "/subnets/")
	if i < 0 {
		return nil, false
	}
	vnet := s.get(id[:i])
	if vnet == nil {
		return nil, false
	}
	for _, sn := range list(obj(vnet.doc, "properties"), "subnets") {
		m := sn.(map[string]any)
		if strings.EqualFold(m["id"].(string), id) {
			return m, true
		}
	}
	return nil, false
}

// putNIC creates or replaces a NIC: its subnet, security group, public IP
// and backend pools must exist; a static address must lie in the subnet
// and be free, a dynamic one is the subnet's next free address.
func putNIC(s *Server, q *request, group, name string, existing *object) {
	id := s.idOf(group, typeNIC, name)
	props, _ := q.body["properties"].(map[string]any)
	cfgs := list(props, "ipConfigurations")
	if len(cfgs) == 0 {
		writeError(q.w, invalid("ipConfigurations", "Network interface %s must have one or more IP configurations.", id))
		return
	}
	ref := func(rid string) *armError {
		return errf(http.StatusBadRequest, "InvalidResourceReference", "Resource %s referenced by resource %s was not found. Please make sure that the referenced resource exists, and that both resources are in the same region.", rid, id)
	}
	if nsg := str(props, "networkSecurityGroup", "id"); nsg != "" && s.get(nsg) == nil {
		writeError(q.w, ref(nsg))
		return
	}
	var taken []string
	release := func() {
		for _, ip := range taken {
			delete(s.ips, ip)
		}
	}
	if existing != nil {
		s.releaseNIC(existing)
	}
	for i, c := range cfgs {
		cm, _ := c.(map[string]any)
		if cm == nil {
			writeError(q.w, invalid("ipConfigurations", "IP configuration %d is not an object.", i))
			return
		}
		if cm["name"] == nil {
			cm["name"] = fmt.Sprintf("ipconfig%d", i+1)
		}
		cp := obj(cm, "properties")
		subnetID := str(cp, "subnet", "id")
		sn, ok := s.subnetOf(subnetID)
		if !ok {
			release()
			writeError(q.w, ref(subnetID))
			return
		}
		if pip := str(cp, "publicIPAddress", "id"); pip != "" {
			p := s.get(pip)
			if p == nil {
				release()
				writeError(q.w, ref(pip))
				return
			}
			if user := str(p.doc, "properties", "ipConfiguration", "id"); user != "" && !strings.HasPrefix(strings.ToLower(user), strings.ToLower(id)+"/") {
				release()
				writeError(q.w, errf(http.StatusBadRequest, "PublicIPAddressInUse", "Resource %s is referencing public IP address %s that is already allocated to resource %s.", id, pip, user))
				return
			}
		}
		for _, p := range list(cp, "loadBalancerBackendAddressPools") {
			pid := str(p.(map[string]any), "id")
			if _, ok := s.poolOf(pid); !ok {
				release()
				writeError(q.w, ref(pid))
				return
			}
		}
		prefix := netip.MustParsePrefix(str(sn, "properties", "addressPrefix"))
		var ip string
		if strings.EqualFold(str(cp, "privateIPAllocationMethod"), "Static") {
			ip = str(cp, "privateIPAddress")
			a, ok := addrOf(ip)
			if !ok || !prefix.Contains(a) {
				release()
				writeError(q.w, errf(http.StatusBadRequest, "PrivateIPAddressNotInSubnet", "IP configuration %s/ipConfigurations/%s is using the private IP address %s which does not belong to the subnet prefix %s.", id, cm["name"], ip, prefix))
				return
			}
			if reserved(prefix, a) {
				release()
				writeError(q.w, errf(http.StatusBadRequest, "PrivateIPAddressIsReserved", "The private IP address %s is reserved by Azure in subnet %s.", ip, prefix))
				return
			}
			if user, used := s.ips[ip]; used {
				release()
				writeError(q.w, errf(http.StatusBadRequest, "PrivateIPAddressInUse", "IP configuration %s/ipConfigurations/%s is using the private IP address %s which is already allocated to resource %s.", id, cm["name"], ip, user))
				return
			}
		} else {
			cp["privateIPAllocationMethod"] = "Dynamic"
			a, ok := s.freeAddress(prefix)
			if !ok {
				release()
				writeError(q.w, errf(http.StatusBadRequest, "SubnetIsFull", "Subnet %s with address prefix %s does not have enough capacity for 1 IP addresses.", subnetID, prefix))
				return
			}
			ip = a.String()
		}
		cp["privateIPAddress"] = ip
		cp["privateIPAddressVersion"] = "IPv4"
		cp["provisioningState"] = "Succeeded"
		cm["id"] = id + "/ipConfigurations/" + cm["name"].(string)
		s.ips[ip] = id
		taken = append(taken, ip)
	}
	for _, c := range cfgs {
		cm := c.(map[string]any)
		if pip := s.get(str(cm, "properties", "publicIPAddress", "id")); pip != nil {
			obj(pip.doc, "properties")["ipConfiguration"] = map[string]any{"id": cm["id"]}
		}
	}
	doc := clone(q.body)
	p := obj(doc, "properties")
	if existing != nil {
		if vm := obj(existing.doc, "properties")["virtualMachine"]; vm != nil {
			p["virtualMachine"] = vm
		}
	}
	p["provisioningState"] = "Updating"
	p["macAddress"] = macFor(id)
	p["resourceGuid"] = newID()
	o := s.put(group, typeNIC, name, doc)
	if existing != nil {
		o.etag = existing.etag + 1
	}
	op := s.begin(q, func() func() { obj(o.doc, "properties")["provisioningState"] = "Succeeded"; return nil }, nil)
	s.asyncHeaders(q.w, op, "Microsoft.Network", false)
	status := http.StatusCreated
	if existing != nil {
		status = http.StatusOK
	}
	writeJSON(q.w, status, o.view())
}

// reserved reports whether Azure keeps the address: a subnet's first four
// and its last.
func reserved(prefix netip.Prefix, a netip.Addr) bool {
	first := prefix.Masked().Addr()
	for i := 0; i < 4; i++ {
		if a == first {
			return true
		}
		first = first.Next()
	}
	last := prefix.Masked().Addr()
	for n := 1 << (32 - prefix.Bits()); n > 1; n-- {
		last = last.Next()
	}
	return a == last
}

// freeAddress is the subnet's lowest address neither reserved nor taken.
func (s *Server) freeAddress(prefix netip.Prefix) (netip.Addr, bool) {
	for a := prefix.Masked().Addr(); prefix.Contains(a); a = a.Next() {
		if _, used := s.ips[a.String()]; !used && !reserved(prefix, a) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func (s *Server) poolOf(id string) (map[string]any, bool) {
	i := strings.Index(strings.ToLower(id), "/backendaddresspools/")
	if i < 0 {
		return nil, false
	}
	lb := s.get(id[:i])
	if lb == nil {
		return nil, false
	}
	for _, p := range list(obj(lb.doc, "properties"), "backendAddressPools") {
		m := p.(map[string]any)
		if strings.EqualFold(m["id"].(string), id) {
			return m, true
		}
	}
	return nil, false
}

func macFor(id string) string {
	h := uint32(2166136261)
	for _, c := range strings.ToLower(id) {
		h = (h ^ uint32(c)) * 16777619
	}
	return fmt.Sprintf("00-0D-3A-%02X-%02X-%02X", byte(h>>16), byte(h>>8), byte(h))
}

// releaseNIC frees a NIC's addresses and public IPs. Caller holds s.mu.
func (s *Server) releaseNIC(nic *object) {
	for _, c := range list(obj(nic.doc, "properties"), "ipConfigurations") {
		cm := c.(map[string]any)
		if ip := str(cm, "properties", "privateIPAddress"); ip != "" && strings.EqualFold(s.ips[ip], nic.id) {
			delete(s.ips, ip)
		}
		if pip := s.get(str(cm, "properties", "publicIPAddress", "id")); pip != nil {
			delete(obj(pip.doc, "properties"), "ipConfiguration")
		}
	}
}

func (s *Server) removeNIC(nic *object) {
	s.releaseNIC(nic)
	delete(s.objs, key(nic.id))
}

func deleteNIC(s *Server, q *request, nic *object) {
	if vm := str(nic.doc, "properties", "virtualMachine", "id"); vm != "" {
		writeError(q.w, errf(http.StatusBadRequest, "NicInUse", "Network Interface %s is used by existing resource %s. In order to delete the network interface, it must be dissociated from the resource.", nic.id, vm))
		return
	}
	s.removeNIC(nic)
	op := s.begin(q, nil, nil)
	s.asyncHeaders(q.w, op, "Microsoft.Network", true)
	q.w.WriteHeader(http.StatusAccepted)
}

// putPIP creates a public IP; Standard ones must be static. Addresses are
// allocated in 127.254.0.0/16 (the simulation never leaves loopback).
func putPIP(s *Server, q *request, group, name string, existing *object) {
	props, _ := q.body["properties"].(map[string]any)
	sku := str(q.body, "sku", "name")
	if sku == "" {
		sku = "Standard"
	}
	if sku == "Basic" {
		writeError(q.w, errf(http.StatusBadRequest, "BasicSkuPublicIpRetired", "Basic SKU public IP addresses were retired on 30 September 2025; create a Standard SKU public IP."))
		return
	}
	if !strings.EqualFold(str(props, "publicIPAllocationMethod"), "Static") {
		writeError(q.w, errf(http.StatusBadRequest, "StandardSkuPublicIPAddressesMustBeStatic", "Standard sku publicIp %s must have AllocationMethod set to Static.", s.idOf(group, typePIP, name)))
		return
	}
	doc := clone(q.body)
	p := obj(doc, "properties")
	if existing != nil {
		p["ipAddress"] = str(existing.doc, "properties", "ipAddress")
		if c := obj(existing.doc, "properties")["ipConfiguration"]; c != nil {
			p["ipConfiguration"] = c
		}
	} else {
		for {
			s.nextIP++
			ip := fmt.Sprintf("127.254.%d.%d", byte(s.nextIP>>8), byte(s.nextIP))
			if _, used := s.pubIPs[ip]; !used && byte(s.nextIP) != 0 && byte(s.nextIP) != 255 {
				p["ipAddress"] = ip
				s.pubIPs[ip] = s.idOf(group, typePIP, name)
				break
			}
		}
	}
	doc["sku"] = map[string]any{"name": sku, "tier": "Regional"}
	p["provisioningState"] = "Updating"
	p["resourceGuid"] = newID()
	o := s.put(group, typePIP, name, doc)
	op := s.begin(q, func() func() { obj(o.doc, "properties")["provisioningState"] = "Succeeded"; return nil }, nil)
	s.asyncHeaders(q.w, op, "Microsoft.Network", false)
	writeJSON(q.w, http.StatusCreated, o.view())
}

func deletePIP(s *Server, q *request, pip *object) {
	if user := str(pip.doc, "properties", "ipConfiguration", "id"); user != "" {
		writeError(q.w, errf(http.StatusBadRequest, "PublicIPAddressCannotBeDeleted", "Public IP address %s can not be deleted since it is still allocated to resource %s.", pip.id, user))
		return
	}
	delete(s.pubIPs, str(pip.doc, "properties", "ipAddress"))
	delete(s.objs, key(pip.id))
	op := s.begin(q, nil, nil)
	s.asyncHeaders(q.w, op, "Microsoft.Network", true)
	q.w.WriteHeader(http.StatusAccepted)
}
