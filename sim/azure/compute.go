package azure

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

func init() {
	kinds = map[string]*kind{
		"Microsoft.Compute/virtualMachines": {
			put: putVM, patch: patchVM, delete: deleteVM,
			action: map[string]func(*Server, *request, *object){"restart": restartVM},
		},
		"Microsoft.Compute/disks":                 {put: putDisk, patch: patchDisk, delete: deleteDisk},
		"Microsoft.Compute/snapshots":             {put: putSnapshot, delete: deleteSnapshot},
		"Microsoft.Compute/images":                {put: putImage, delete: deleteImage},
		"Microsoft.Network/networkInterfaces":     {put: putNIC, delete: deleteNIC},
		"Microsoft.Network/publicIPAddresses":     {put: putPIP, delete: deletePIP},
		"Microsoft.Network/virtualNetworks":       {readOnly: true},
		"Microsoft.Network/networkSecurityGroups": {readOnly: true},
		"Microsoft.Network/loadBalancers":         {readOnly: true},
	}
}

const (
	typeVM       = "Microsoft.Compute/virtualMachines"
	typeDisk     = "Microsoft.Compute/disks"
	typeSnapshot = "Microsoft.Compute/snapshots"
	typeImage    = "Microsoft.Compute/images"
	typeNIC      = "Microsoft.Network/networkInterfaces"
	typePIP      = "Microsoft.Network/publicIPAddresses"
)

func invalid(target, format string, args ...any) *armError {
	e := errf(http.StatusBadRequest, "InvalidParameter", format, args...)
	if target != "" {
		e.message = fmt.Sprintf("%s Target: '%s'.", e.message, target)
	}
	return e
}

// putVM creates a VM: it checks what the VM names (size, image, NICs,
// disks), makes its OS and empty data disks, takes its NICs and attached
// disks, and answers 201 Creating with an Azure-AsyncOperation.
func putVM(s *Server, q *request, group, name string, existing *object) {
	if existing != nil {
		writeError(q.w, errf(http.StatusConflict, "OperationNotAllowed", "The simulator updates virtual machines through PATCH only; '%s' exists.", name))
		return
	}
	props, _ := q.body["properties"].(map[string]any)
	if props == nil {
		writeError(q.w, invalid("properties", "Required parameter 'properties' is missing (null)."))
		return
	}
	if str(props, "hardwareProfile", "vmSize") == "" {
		writeError(q.w, invalid("vmSize", "Required parameter 'hardwareProfile.vmSize' is missing (null)."))
		return
	}
	osp := obj(props, "osProfile")
	if str(osp, "computerName") == "" || str(osp, "adminUsername") == "" {
		writeError(q.w, invalid("osProfile", "Required parameters 'osProfile.computerName' and 'osProfile.adminUsername' must be given."))
		return
	}
	custom, _ := osp["customData"].(string)
	userData, _ := props["userData"].(string)
	for field, v := range map[string]string{"customData": custom, "userData": userData} {
		if _, err := base64.StdEncoding.DecodeString(v); err != nil || len(v) > 87380 {
			writeError(q.w, invalid(field, "The value of parameter %s is invalid: base64 of at most 64 KB.", field))
			return
		}
	}
	delete(osp, "customData")
	delete(props, "userData")
	storage := obj(props, "storageProfile")
	if e := s.checkImage(obj(storage, "imageReference")); e != nil {
		writeError(q.w, e)
		return
	}
	id := s.idOf(group, typeVM, name)
	zone := ""
	if z, _ := q.body["zones"].([]any); len(z) > 0 {
		zone, _ = z[0].(string)
	}
	// NICs.
	nics := list(obj(props, "networkProfile"), "networkInterfaces")
	if len(nics) == 0 {
		writeError(q.w, invalid("networkProfile", "At least one network interface is required."))
		return
	}
	var nicObjs []*object
	for _, n := range nics {
		nid := str(n.(map[string]any), "id")
		nic := s.get(nid)
		if nic == nil {
			writeError(q.w, errf(http.StatusBadRequest, "InvalidResourceReference", "Resource %s referenced by resource %s was not found. Please make sure that the referenced resource exists, and that both resources are in the same region.", nid, id))
			return
		}
		if vm := str(nic.doc, "properties", "virtualMachine", "id"); vm != "" && !strings.EqualFold(vm, id) {
			writeError(q.w, errf(http.StatusBadRequest, "NicInUse", "Network Interface %s is used by existing resource %s. In order to use it for this resource, please delete the other resource first.", nic.id, vm))
			return
		}
		nicObjs = append(nicObjs, nic)
	}
	// Disks: the OS disk from the image, empty data disks made, attached
	// ones taken.
	osDisk := obj(storage, "osDisk")
	if c := str(osDisk, "createOption"); !strings.EqualFold(c, "FromImage") {
		writeError(q.w, invalid("osDisk.createOption", "The simulator creates OS disks FromImage only, not '%s'.", c))
		return
	}
	dataDisks := list(storage, "dataDisks")
	if e := s.checkDataDisks(id, zone, dataDisks); e != nil {
		writeError(q.w, e)
		return
	}
	osName := str(osDisk, "name")
	if osName == "" {
		osName = name + "_OsDisk_1_" + strings.ReplaceAll(newID(), "-", "")
		osDisk["name"] = osName
	}
	if s.get(s.idOf(group, typeDisk, osName)) != nil {
		writeError(q.w, errf(http.StatusConflict, "Conflict", "Disk %s already exists in resource group %s. Only CreateOption.Attach is supported.", osName, group))
		return
	}
	size := 30.0
	if v, ok := osDisk["diskSizeGB"].(float64); ok {
		size = v
	}
	od := s.newDisk(group, osName, zone, str(osDisk, "managedDisk", "storageAccountType"), size, q.body["tags"])
	setManagedBy(od, id)
	mdOS := obj(osDisk, "managedDisk")
	mdOS["id"] = od.id
	osDisk["diskSizeGB"] = size
	osDisk["osType"] = "Linux"
	if osDisk["deleteOption"] == nil {
		osDisk["deleteOption"] = "Detach"
	}
	s.attachDataDisks(id, group, zone, dataDisks, q.body["tags"])
	for _, n := range nics {
		m := n.(map[string]any)
		if m["properties"] == nil {
			m["properties"] = map[string]any{}
		}
	}
	for _, nic := range nicObjs {
		obj(nic.doc, "properties")["virtualMachine"] = map[string]any{"id": id}
		nic.etag++
	}
	props["vmId"] = newID()
	props["timeCreated"] = now()
	props["provisioningState"] = "Creating"
	doc := clone(q.body)
	doc["properties"] = props
	vm := s.put(group, typeVM, name, doc)
	vm.secret = map[string]string{"customData": custom, "userData": userData}
	op := s.begin(q, func() func() {
		if s.get(vm.id) != vm {
			return nil
		}
		obj(vm.doc, "properties")["provisioningState"] = "Succeeded"
		info := s.vmInfo(vm)
		return func() { s.cfg.Hooks.VMCreated(info) }
	}, func(*armError) {
		obj(vm.doc, "properties")["provisioningState"] = "Failed"
	})
	s.asyncHeaders(q.w, op, "Microsoft.Compute", false)
	writeJSON(q.w, http.StatusCreated, vm.view())
}

// checkImage checks a VM's image reference: a marketplace image of the
// catalog, a managed image, or a gallery image version (taken as is).
func (s *Server) checkImage(ref map[string]any) *armError {
	if id := str(ref, "id"); id != "" {
		if strings.Contains(strings.ToLower(id), "/providers/microsoft.compute/galleries/") {
			return nil
		}
		if o := s.get(id); o == nil || o.typ != typeImage {
			return errf(http.StatusNotFound, "NotFound", "The Image '%s' cannot be found in '%s' region.", id, s.cfg.Location)
		}
		return nil
	}
	urn := strings.Join([]string{str(ref, "publisher"), str(ref, "offer"), str(ref, "sku"), str(ref, "version")}, ":")
	for _, im := range s.cfg.Images {
		p := strings.Split(im, ":")
		if strings.EqualFold(p[0], str(ref, "publisher")) && strings.EqualFold(p[1], str(ref, "offer")) && strings.EqualFold(p[2], str(ref, "sku")) &&
			(p[3] == str(ref, "version") || str(ref, "version") == "latest") {
			return nil
		}
	}
	return errf(http.StatusNotFound, "PlatformImageNotFound", "The platform image '%s' is not available. Verify that all fields in the storage profile are correct.", urn)
}

// checkDataDisks checks a VM's data disk list: LUNs unique, attached disks
// existing and free (or the VM's own), zones matching.
func (s *Server) checkDataDisks(vmID, zone string, disks []any) *armError {
	luns := map[float64]bool{}
	for _, d := range disks {
		dd, _ := d.(map[string]any)
		lun, ok := dd["lun"].(float64)
		if !ok || lun < 0 || lun > 63 {
			return invalid("dataDisks", "A data disk needs a LUN from 0 to 63.")
		}
		if luns[lun] {
			return invalid("dataDisks", "Two data disks use LUN %v.", lun)
		}
		luns[lun] = true
		switch c := str(dd, "createOption"); {
		case strings.EqualFold(c, "Empty"):
			if _, ok := dd["diskSizeGB"].(float64); !ok {
				return invalid("diskSizeGB", "An empty data disk needs diskSizeGB.")
			}
		case strings.EqualFold(c, "Attach"):
			did := str(dd, "managedDisk", "id")
			disk := s.get(did)
			if disk == nil || disk.typ != typeDisk {
				return errf(http.StatusNotFound, "NotFound", "Disk %s does not exist.", did)
			}
			if m := str(disk.doc, "managedBy"); m != "" && !strings.EqualFold(m, vmID) {
				return errf(http.StatusConflict, "OperationNotAllowed", "Disk %s is already attached to VM %s.", disk.name, m)
			}
			if dz := diskZone(disk); dz != zone && dz != "" {
				return errf(http.StatusBadRequest, "BadRequest", "Disk %s is in zone '%s', the VM in zone '%s'.", disk.name, dz, zone)
			}
		default:
			return invalid("createOption", "The simulator takes data disks Empty or Attach, not '%s'.", c)
		}
	}
	return nil
}

// attachDataDisks makes a VM's empty data disks and marks attached ones
// as the VM's.
func (s *Server) attachDataDisks(vmID, group, zone string, disks []any, tags any) {
	for _, d := range disks {
		dd := d.(map[string]any)
		md := obj(dd, "managedDisk")
		var disk *object
		if strings.EqualFold(str(dd, "createOption"), "Empty") && str(md, "id") == "" {
			n := str(dd, "name")
			if n == "" {
				n = fmt.Sprintf("%s_disk%v_%s", s.get(vmID).nameOr(vmID), dd["lun"], strings.ReplaceAll(newID(), "-", ""))
				dd["name"] = n
			}
			disk = s.newDisk(group, n, zone, str(md, "storageAccountType"), dd["diskSizeGB"].(float64), tags)
			md["id"] = disk.id
		} else {
			disk = s.get(str(md, "id"))
			if disk == nil {
				continue
			}
			dd["name"] = disk.name
			dd["diskSizeGB"] = obj(disk.doc, "properties")["diskSizeGB"]
			if str(md, "storageAccountType") == "" {
				md["storageAccountType"] = str(disk.doc, "sku", "name")
			}
		}
		if dd["deleteOption"] == nil {
			dd["deleteOption"] = "Detach"
		}
		if dd["caching"] == nil {
			dd["caching"] = "None"
		}
		dd["toBeDetached"] = false
		setManagedBy(disk, vmID)
	}
}

func (o *object) nameOr(fallback string) string {
	if o == nil {
		return fallback
	}
	return o.name
}

func diskZone(d *object) string {
	if z, _ := d.doc["zones"].([]any); len(z) > 0 {
		s, _ := z[0].(string)
		return s
	}
	return ""
}

func setManagedBy(d *object, vmID string) {
	if vmID == "" {
		delete(d.doc, "managedBy")
		obj(d.doc, "properties")["diskState"] = "Unattached"
	} else {
		d.doc["managedBy"] = vmID
		obj(d.doc, "properties")["diskState"] = "Attached"
	}
	d.etag++
}

// patchVM changes a VM's tags and data disks (a list that replaces the
// old one: disks left out are detached).
func patchVM(s *Server, q *request, vm *object) {
	if st := str(vm.doc, "properties", "provisioningState"); st == "Deleting" || st == "Creating" {
		writeError(q.w, errf(http.StatusConflict, "OperationNotAllowed", "Operation 'Update' is not allowed on VM '%s' since the VM is %s.", vm.name, strings.ToLower(st)))
		return
	}
	if t, ok := q.body["tags"]; ok {
		vm.doc["tags"] = t
	}
	props, _ := q.body["properties"].(map[string]any)
	disksChanged := false
	if sp, ok := props["storageProfile"].(map[string]any); ok {
		if newDisks, ok := sp["dataDisks"].([]any); ok {
			zone := ""
			if z, _ := vm.doc["zones"].([]any); len(z) > 0 {
				zone, _ = z[0].(string)
			}
			if e := s.checkDataDisks(vm.id, zone, newDisks); e != nil {
				writeError(q.w, e)
				return
			}
			old := list(obj(obj(vm.doc, "properties"), "storageProfile"), "dataDisks")
			for _, d := range old {
				id := str(d.(map[string]any), "managedDisk", "id")
				if !slices.ContainsFunc(newDisks, func(n any) bool { return strings.EqualFold(str(n.(map[string]any), "managedDisk", "id"), id) }) {
					if disk := s.get(id); disk != nil {
						setManagedBy(disk, "")
					}
				}
			}
			s.attachDataDisks(vm.id, vm.group, zone, newDisks, vm.doc["tags"])
			obj(obj(vm.doc, "properties"), "storageProfile")["dataDisks"] = newDisks
			disksChanged = true
		}
	}
	vm.etag++
	obj(vm.doc, "properties")["provisioningState"] = "Updating"
	op := s.begin(q, func() func() {
		if s.get(vm.id) != vm {
			return nil
		}
		obj(vm.doc, "properties")["provisioningState"] = "Succeeded"
		if !disksChanged {
			return nil
		}
		info := s.vmInfo(vm)
		return func() { s.cfg.Hooks.VMDisksChanged(info) }
	}, func(*armError) { obj(vm.doc, "properties")["provisioningState"] = "Failed" })
	s.asyncHeaders(q.w, op, "Microsoft.Compute", false)
	writeJSON(q.w, http.StatusOK, vm.view())
}

// deleteVM deletes a VM; when the operation ends, its NICs and disks with
// deleteOption Delete go too, the others are freed.
func deleteVM(s *Server, q *request, vm *object) {
	obj(vm.doc, "properties")["provisioningState"] = "Deleting"
	vm.etag++
	op := s.begin(q, func() func() {
		if s.get(vm.id) != vm {
			return nil
		}
		s.removeVM(vm)
		return func() { s.cfg.Hooks.VMDeleted(vm.id) }
	}, func(*armError) { obj(vm.doc, "properties")["provisioningState"] = "Failed" })
	s.asyncHeaders(q.w, op, "Microsoft.Compute", true)
	q.w.WriteHeader(http.StatusAccepted)
}

// removeVM takes a VM out with what goes with it. Caller holds s.mu.
func (s *Server) removeVM(vm *object) {
	props := obj(vm.doc, "properties")
	for _, n := range list(obj(props, "networkProfile"), "networkInterfaces") {
		m := n.(map[string]any)
		nic := s.get(str(m, "id"))
		if nic == nil {
			continue
		}
		delete(obj(nic.doc, "properties"), "virtualMachine")
		if str(m, "properties", "deleteOption") == "Delete" {
			s.removeNIC(nic)
		}
	}
	sp := obj(props, "storageProfile")
	disks := append([]any{obj(sp, "osDisk")}, list(sp, "dataDisks")...)
	for _, d := range disks {
		m := d.(map[string]any)
		disk := s.get(str(m, "managedDisk", "id"))
		if disk == nil {
			continue
		}
		if str(m, "deleteOption") == "Delete" {
			delete(s.objs, key(disk.id))
		} else {
			setManagedBy(disk, "")
		}
	}
	delete(s.objs, key(vm.id))
}

func restartVM(s *Server, q *request, vm *object) {
	if str(vm.doc, "properties", "provisioningState") != "Succeeded" {
		writeError(q.w, errf(http.StatusConflict, "OperationNotAllowed", "Operation 'Restart' is not allowed on VM '%s' since the VM is %s.", vm.name, str(vm.doc, "properties", "provisioningState")))
		return
	}
	op := s.begin(q, func() func() {
		if s.get(vm.id) != vm {
			return nil
		}
		info := s.vmInfo(vm)
		return func() { s.cfg.Hooks.VMRestarted(info) }
	}, nil)
	s.asyncHeaders(q.w, op, "Microsoft.Compute", true)
	q.w.WriteHeader(http.StatusAccepted)
}

// vmInfo is what the hooks learn of a VM. Caller holds s.mu.
func (s *Server) vmInfo(vm *object) VM {
	props := obj(vm.doc, "properties")
	info := VM{ID: vm.id, Name: vm.name, ComputerName: str(props, "osProfile", "computerName"), UserData: vm.secret["userData"], CustomData: vm.secret["customData"]}
	for _, n := range list(obj(props, "networkProfile"), "networkInterfaces") {
		if nic := s.get(str(n.(map[string]any), "id")); nic != nil {
			for _, c := range list(obj(nic.doc, "properties"), "ipConfigurations") {
				if ip := str(c.(map[string]any), "properties", "privateIPAddress"); ip != "" {
					info.PrivateIPs = append(info.PrivateIPs, ip)
				}
			}
		}
	}
	for _, d := range list(obj(props, "storageProfile"), "dataDisks") {
		m := d.(map[string]any)
		lun, _ := m["lun"].(float64)
		size, _ := m["diskSizeGB"].(float64)
		info.DataDisks = append(info.DataDisks, DataDisk{LUN: int(lun), DiskID: str(m, "managedDisk", "id"), Name: str(m, "name"), SizeGB: int(size), Persistent: str(m, "deleteOption") != "Delete"})
	}
	return info
}

// VMs lists the VMs that exist (for the boot machinery and tests).
func (s *Server) VMs() []VM {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []VM
	for _, o := range s.objs {
		if o.typ == typeVM {
			out = append(out, s.vmInfo(o))
		}
	}
	slices.SortFunc(out, func(a, b VM) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Count returns how many resources of the type exist (e.g.
// "Microsoft.Network/networkInterfaces").
func (s *Server) Count(typ string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, o := range s.objs {
		if strings.EqualFold(o.typ, typ) {
			n++
		}
	}
	return n
}

// newDisk makes a managed disk record. Caller holds s.mu.
func (s *Server) newDisk(group, name, zone, sku string, sizeGB float64, tags any) *object {
	if sku == "" {
		sku = "Standard_LRS"
	}
	doc := map[string]any{
		"location": s.cfg.Location, "sku": map[string]any{"name": sku, "tier": strings.SplitN(sku, "_", 2)[0]},
		"properties": map[string]any{
			"creationData": map[string]any{"createOption": "Empty"}, "diskSizeGB": sizeGB, "diskSizeBytes": sizeGB * (1 << 30),
			"diskState": "Unattached", "provisioningState": "Succeeded", "timeCreated": now(), "uniqueId": newID(),
		},
	}
	if t, ok := tags.(map[string]any); ok {
		doc["tags"] = cloneValue(t)
	}
	if zone != "" {
		doc["zones"] = []any{zone}
	}
	return s.put(group, typeDisk, name, doc)
}

// putDisk creates an empty managed disk (202 and a Location to poll), or
// changes an existing one's tags.
func putDisk(s *Server, q *request, group, name string, existing *object) {
	props, _ := q.body["properties"].(map[string]any)
	if existing != nil {
		if t, ok := q.body["tags"]; ok {
			existing.doc["tags"] = t
			existing.etag++
		}
		s.diskDone(q, existing, "Microsoft.Compute")
		return
	}
	if c := str(props, "creationData", "createOption"); !strings.EqualFold(c, "Empty") {
		writeError(q.w, invalid("creationData.createOption", "The simulator creates disks Empty only, not '%s'.", c))
		return
	}
	size, ok := props["diskSizeGB"].(float64)
	if !ok || size < 1 || size > 32767 {
		writeError(q.w, invalid("diskSizeGB", "The disk size must be between 1 and 32767 GB."))
		return
	}
	zone := ""
	if z, _ := q.body["zones"].([]any); len(z) > 0 {
		zone, _ = z[0].(string)
	}
	d := s.newDisk(group, name, zone, str(q.body, "sku", "name"), size, q.body["tags"])
	obj(d.doc, "properties")["provisioningState"] = "Updating"
	s.diskDone(q, d, "Microsoft.Compute")
}

// diskDone answers a disk or snapshot change: 202 and a Location that
// answers the resource once the operation ended.
func (s *Server) diskDone(q *request, d *object, provider string) {
	op := s.begin(q, func() func() {
		obj(d.doc, "properties")["provisioningState"] = "Succeeded"
		return nil
	}, func(*armError) { delete(s.objs, key(d.id)) })
	op.result = func() map[string]any {
		if o := s.get(d.id); o != nil {
			return o.view()
		}
		return nil
	}
	s.locationHeaders(q.w, op, provider)
	q.w.WriteHeader(http.StatusAccepted)
}

func patchDisk(s *Server, q *request, d *object) {
	if t, ok := q.body["tags"]; ok {
		d.doc["tags"] = t
	}
	if props, ok := q.body["properties"].(map[string]any); ok {
		if size, ok := props["diskSizeGB"].(float64); ok {
			cur, _ := obj(d.doc, "properties")["diskSizeGB"].(float64)
			if size < cur {
				writeError(q.w, errf(http.StatusBadRequest, "BadRequest", "Disk size reduction is not supported: '%s' is %v GB, asked %v GB.", d.name, cur, size))
				return
			}
			obj(d.doc, "properties")["diskSizeGB"] = size
			obj(d.doc, "properties")["diskSizeBytes"] = size * (1 << 30)
		}
	}
	d.etag++
	s.diskDone(q, d, "Microsoft.Compute")
}

func deleteDisk(s *Server, q *request, d *object) {
	if m := str(d.doc, "managedBy"); m != "" {
		writeError(q.w, errf(http.StatusConflict, "OperationNotAllowed", "Disk %s is attached to VM %s.", d.name, m))
		return
	}
	delete(s.objs, key(d.id))
	op := s.begin(q, func() func() { return func() { s.cfg.Hooks.DiskDeleted(d.id) } }, nil)
	s.locationHeaders(q.w, op, "Microsoft.Compute")
	q.w.WriteHeader(http.StatusAccepted)
}

func putSnapshot(s *Server, q *request, group, name string, existing *object) {
	if existing != nil {
		writeError(q.w, errf(http.StatusConflict, "OperationNotAllowed", "Snapshot %s exists.", name))
		return
	}
	props, _ := q.body["properties"].(map[string]any)
	src := str(props, "creationData", "sourceResourceId")
	d := s.get(src)
	if d == nil || d.typ != typeDisk {
		writeError(q.w, errf(http.StatusNotFound, "NotFound", "The source resource '%s' was not found.", src))
		return
	}
	doc := clone(q.body)
	p := obj(doc, "properties")
	p["diskSizeGB"] = obj(d.doc, "properties")["diskSizeGB"]
	p["provisioningState"] = "Updating"
	p["timeCreated"] = now()
	p["uniqueId"] = newID()
	doc["sku"] = map[string]any{"name": "Standard_LRS", "tier": "Standard"}
	o := s.put(group, typeSnapshot, name, doc)
	s.diskDone(q, o, "Microsoft.Compute")
}

func deleteSnapshot(s *Server, q *request, o *object) {
	delete(s.objs, key(o.id))
	op := s.begin(q, nil, nil)
	s.locationHeaders(q.w, op, "Microsoft.Compute")
	q.w.WriteHeader(http.StatusAccepted)
}

// putImage records a managed image made from a snapshot or disk.
func putImage(s *Server, q *request, group, name string, existing *object) {
	props, _ := q.body["properties"].(map[string]any)
	src := str(props, "storageProfile", "osDisk", "snapshot", "id")
	if src == "" {
		src = str(props, "storageProfile", "osDisk", "managedDisk", "id")
	}
	if s.get(src) == nil {
		writeError(q.w, errf(http.StatusNotFound, "NotFound", "The source '%s' of image '%s' was not found.", src, name))
		return
	}
	doc := clone(q.body)
	obj(doc, "properties")["provisioningState"] = "Creating"
	o := s.put(group, typeImage, name, doc)
	if existing != nil {
		o.etag = existing.etag + 1
	}
	op := s.begin(q, func() func() { obj(o.doc, "properties")["provisioningState"] = "Succeeded"; return nil }, nil)
	s.asyncHeaders(q.w, op, "Microsoft.Compute", false)
	writeJSON(q.w, http.StatusCreated, o.view())
}

func deleteImage(s *Server, q *request, o *object) {
	delete(s.objs, key(o.id))
	op := s.begin(q, nil, nil)
	s.asyncHeaders(q.w, op, "Microsoft.Compute", true)
	q.w.WriteHeader(http.StatusAccepted)
}
