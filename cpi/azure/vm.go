package azure

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v6"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"

	"github.com/compleat/compleat/cpi"
)

// cleanupTimeout bounds what a failed CreateVM does to remove what it
// made, even when the caller's context has ended.
const cleanupTimeout = 10 * time.Minute

// Tags the plugin adds to what it creates.
const (
	// tagAgentID is the agent id of every VM (besides the director's
	// cpi.TagAgentID), and of a disk the VM it was made for.
	tagAgentID = "compleat_agent_id"
	// tagPersistent marks the disks CreateDisk made, apart from the OS and
	// ephemeral disks of VMs.
	tagPersistent = "compleat_persistent"
	// tagCaching records a persistent disk's caching, which AttachDisk
	// uses.
	tagCaching = "compleat_caching"
)

// poll waits for a long-running operation, at most the operation timeout,
// looking every poll interval unless Azure's Retry-After says otherwise.
func poll[T any](ctx context.Context, c *CPI, p *runtime.Poller[T]) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opTime)
	defer cancel()
	return p.PollUntilDone(ctx, &runtime.PollUntilDoneOptions{Frequency: c.poll})
}

// vmNetwork is one of a VM's networks, in NIC order.
type vmNetwork struct {
	name  string
	net   cpi.Network
	props NetworkProperties
	group string // the vnet's resource group
}

// CreateVM creates the VM's NICs (and public IP) by name, then the VM
// with the agent settings as user data and custom data, and waits until
// Azure has provisioned it. NICs, public IP, OS and ephemeral disks go
// with the VM when it is deleted (deleteOption Delete). On failure
// everything made is deleted again by name; capacity answers make the
// error retryable. When the create is not seen to end (operation timeout),
// nothing is deleted: the error is cpi.ErrOutcomeUnknown naming the VM,
// which ListVMs finds by its tags.
func (c *CPI) CreateVM(ctx context.Context, req cpi.CreateVMRequest) (cpi.CreateVMResult, error) {
	props, err := parseVMProperties(req.CloudProperties)
	if err != nil {
		return cpi.CreateVMResult{}, err
	}
	settings, err := settingsObject(req.AgentSettings)
	if err != nil {
		return cpi.CreateVMResult{}, err
	}
	nets, vips, err := c.vmNetworks(req.Networks)
	if err != nil {
		return cpi.CreateVMResult{}, err
	}
	ref, err := c.stemcellRef(ctx, req.StemcellCID)
	if err != nil {
		return cpi.CreateVMResult{}, fmt.Errorf("create vm: %w", err)
	}
	group := cmpOr(props.ResourceGroupName, c.rg)
	name := vmName(req.AgentID)
	id := c.resourceID(group, typeVM, name)
	log := c.logger.With("vm", name, "resource_group", group, "agent_id", req.AgentID)

	// Everything the request names must exist before anything is made.
	subnets, nsgs, err := c.resolveNetworks(ctx, nets, props)
	if err != nil {
		return cpi.CreateVMResult{}, err
	}
	pools, err := c.backendPools(ctx, group, props.LoadBalancer)
	if err != nil {
		return cpi.CreateVMResult{}, err
	}
	vipIDs, err := c.findVIPs(ctx, vips)
	if err != nil {
		return cpi.CreateVMResult{}, err
	}
	if _, err := c.vms.Get(ctx, group, name, nil); err == nil {
		return cpi.CreateVMResult{}, &cpi.Error{Code: cpi.CodeVMCreationFailed, Message: fmt.Sprintf("create vm: vm %s already exists in %s (agent id %s is in use)", name, group, req.AgentID)}
	} else if !isNotFound(err) {
		return cpi.CreateVMResult{}, creationFailed("create vm: look for vm "+name, err)
	}

	tags := c.vmTags(props, req)
	made := &leftovers{vm: name, group: group}
	fail := func(what string, cause error) (cpi.CreateVMResult, error) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if cerr := c.deleteVMResources(cctx, made); cerr != nil {
			log.Error("clean up after a failed create", "error", cerr)
			return cpi.CreateVMResult{}, creationFailed(fmt.Sprintf("%s (left behind, delete vm %s by hand: %v)", what, id, cerr), cause)
		}
		log.Warn("failed create cleaned up", "error", summary(cause))
		return cpi.CreateVMResult{}, creationFailed(what, cause)
	}

	var pipID string
	if props.AssignDynamicPublicIP && vipIDs == "" {
		made.pip = true
		if pipID, err = c.createPublicIP(ctx, group, name, props.AvailabilityZone, tags); err != nil {
			return fail("create vm: public ip "+pipName(name), err)
		}
	}
	if vipIDs != "" {
		pipID = vipIDs
	}
	var nicRefs []*armcompute.NetworkInterfaceReference
	ips := map[string]string{}
	for i, n := range nets {
		nic := nicName(name, i)
		made.nics = append(made.nics, nic)
		accel := props.AcceleratedNetworking || n.props.AcceleratedNetworking
		var pip string
		var lbPools []string
		if i == 0 {
			pip, lbPools = pipID, pools
		}
		nid, ip, err := c.createNIC(ctx, group, nic, n, subnets[i], nsgs[i], pip, lbPools, accel, tags)
		if err != nil {
			return fail("create vm: network interface "+nic+" on network "+n.name, err)
		}
		ips[n.name] = ip
		nicRefs = append(nicRefs, &armcompute.NetworkInterfaceReference{ID: to.Ptr(nid), Properties: &armcompute.NetworkInterfaceReferenceProperties{
			Primary: to.Ptr(i == 0), DeleteOption: to.Ptr(armcompute.DeleteOptionsDelete),
		}})
	}

	result := cpi.CreateVMResult{CID: id, Networks: map[string]cpi.Network{}}
	for k, n := range req.Networks {
		if ip := ips[k]; ip != "" {
			n.IP = ip
		}
		result.Networks[k] = n
	}
	doc, err := agentSettings(settings, result.Networks, id, props.EphemeralDisk)
	if err != nil {
		return fail("create vm", err)
	}
	vm := c.vmModel(req, props, name, ref, nicRefs, tags, doc)
	made.vmMaybe, made.osDisk, made.ephemeral = true, true, true
	poller, err := c.vms.BeginCreateOrUpdate(ctx, group, name, vm, &armcompute.VirtualMachinesClientBeginCreateOrUpdateOptions{IfNoneMatch: to.Ptr("*")})
	if err != nil {
		if timedOut(err) {
			return cpi.CreateVMResult{}, outcomeUnknown("create vm "+id, err)
		}
		return fail("create vm "+name, err)
	}
	if _, err := poll(ctx, c, poller); err != nil {
		if timedOut(err) {
			log.Error("create not seen to end; leaving it to Azure", "error", err)
			return cpi.CreateVMResult{}, outcomeUnknown(fmt.Sprintf("create vm %s (find it by its tags with ListVMs; agent id %s)", id, req.AgentID), err)
		}
		return fail("create vm "+name, err)
	}
	log.Info("vm created", "instance_type", props.InstanceType, "image", ref)
	return result, nil
}

// vmNetworks orders the request's manual and dynamic networks, the default
// gateway's first (its NIC is the primary one), and returns the vip
// networks apart.
func (c *CPI) vmNetworks(nets map[string]cpi.Network) ([]vmNetwork, map[string]cpi.Network, error) {
	var out []vmNetwork
	vips := map[string]cpi.Network{}
	for _, name := range slices.Sorted(maps.Keys(nets)) {
		n := nets[name]
		switch n.Type {
		case "manual", "dynamic":
		case "vip":
			vips[name] = n
			continue
		default:
			return nil, nil, cpi.InvalidCloudProperty("networks."+name+".type", "%q is not manual, dynamic or vip", n.Type)
		}
		if n.Type == "manual" && n.IP == "" {
			return nil, nil, cpi.InvalidCloudProperty("networks."+name+".ip", "a manual network needs the VM's address")
		}
		p, err := parseNetworkProperties(name, n.CloudProperties)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, vmNetwork{name: name, net: n, props: p, group: cmpOr(p.ResourceGroupName, c.rg)})
	}
	if len(out) == 0 {
		return nil, nil, cpi.InvalidCloudProperty("networks", "a VM needs a manual or dynamic network")
	}
	if len(vips) > 1 {
		return nil, nil, cpi.InvalidCloudProperty("networks", "a VM takes at most one vip network, got %d", len(vips))
	}
	slices.SortStableFunc(out, func(a, b vmNetwork) int {
		ga, gb := slices.Contains(a.net.Default, "gateway"), slices.Contains(b.net.Default, "gateway")
		switch {
		case ga && !gb:
			return -1
		case gb && !ga:
			return 1
		}
		return 0
	})
	return out, vips, nil
}

// resolveNetworks reads each network's subnet and the security group its
// NIC gets (vm_type's, else the network's, else the plugin's default).
func (c *CPI) resolveNetworks(ctx context.Context, nets []vmNetwork, props VMProperties) (subnets, nsgs []string, err error) {
	for _, n := range nets {
		field := "networks." + n.name
		s, err := c.subnets.Get(ctx, n.group, n.props.VirtualNetworkName, n.props.SubnetName, nil)
		if err != nil {
			if isNotFound(err) {
				return nil, nil, cpi.InvalidCloudProperty(field+".subnet_name", "subnet %s of virtual network %s in resource group %s does not exist",
					n.props.SubnetName, n.props.VirtualNetworkName, n.group)
			}
			return nil, nil, classify(fmt.Sprintf("create vm: subnet %s/%s", n.props.VirtualNetworkName, n.props.SubnetName), err, nil)
		}
		subnets = append(subnets, *s.ID)
		sg, sgField := props.SecurityGroup, "security_group"
		if sg == "" {
			sg, sgField = n.props.SecurityGroup, field+".security_group"
		}
		if sg == "" {
			sg, sgField = c.props.DefaultSecurityGroup, "default_security_group"
		}
		if sg == "" {
			nsgs = append(nsgs, "")
			continue
		}
		// A group named by the network is looked for in the network's
		// resource group first, the plugin's default in the plugin's.
		groups := slices.Compact([]string{n.group, c.rg})
		if sgField == "default_security_group" {
			groups = slices.Compact([]string{c.rg, n.group})
		}
		var found string
		for _, g := range groups {
			out, err := c.nsgs.Get(ctx, g, sg, nil)
			if err == nil {
				found = *out.ID
				break
			}
			if !isNotFound(err) {
				return nil, nil, classify("create vm: security group "+sg, err, nil)
			}
		}
		if found == "" {
			return nil, nil, cpi.InvalidCloudProperty(sgField, "network security group %s does not exist in resource group %s", sg, strings.Join(groups, " or "))
		}
		nsgs = append(nsgs, found)
	}
	return subnets, nsgs, nil
}

// backendPools is the id of the load balancer pool the primary NIC joins
// (none without a load_balancer).
func (c *CPI) backendPools(ctx context.Context, group string, lb *LoadBalancer) ([]string, error) {
	if lb == nil {
		return nil, nil
	}
	g := cmpOr(lb.ResourceGroupName, group)
	out, err := c.lbs.Get(ctx, g, lb.Name, nil)
	if err != nil {
		if isNotFound(err) {
			return nil, cpi.InvalidCloudProperty("load_balancer", "load balancer %s does not exist in resource group %s", lb.Name, g)
		}
		return nil, classify("create vm: load balancer "+lb.Name, err, nil)
	}
	if out.Properties == nil || len(out.Properties.BackendAddressPools) == 0 {
		return nil, cpi.InvalidCloudProperty("load_balancer", "load balancer %s has no backend pool", lb.Name)
	}
	for _, p := range out.Properties.BackendAddressPools {
		if lb.BackendPoolName == "" || (p.Name != nil && *p.Name == lb.BackendPoolName) {
			return []string{*p.ID}, nil
		}
	}
	return nil, cpi.InvalidCloudProperty("load_balancer.backend_pool_name", "load balancer %s has no backend pool %s", lb.Name, lb.BackendPoolName)
}

// findVIPs finds the public IP of a vip network by its address, in the
// network's resource_group_name or the plugin's.
func (c *CPI) findVIPs(ctx context.Context, vips map[string]cpi.Network) (string, error) {
	for name, n := range vips {
		var p struct {
			ResourceGroupName string `json:"resource_group_name,omitempty"`
		}
		if err := cpi.DecodeCloudProperties(n.CloudProperties, &p); err != nil {
			return "", prefixField("networks."+name, err)
		}
		if n.IP == "" {
			return "", cpi.InvalidCloudProperty("networks."+name+".ip", "a vip network needs the public IP's address")
		}
		g := cmpOr(p.ResourceGroupName, c.rg)
		pager := c.pips.NewListPager(g, nil)
		for pager.More() {
			page, err := pager.NextPage(ctx)
			if err != nil {
				return "", classify("create vm: list public ips of "+g, err, nil)
			}
			for _, pip := range page.Value {
				if pip.Properties != nil && pip.Properties.IPAddress != nil && *pip.Properties.IPAddress == n.IP {
					return *pip.ID, nil
				}
			}
		}
		return "", cpi.InvalidCloudProperty("networks."+name+".ip", "no public IP with address %s in resource group %s", n.IP, g)
	}
	return "", nil
}

// createPublicIP makes the VM's Standard, static public IP (zonal VMs need
// Standard; Basic ones are retired).
func (c *CPI) createPublicIP(ctx context.Context, group, vm, zone string, tags map[string]*string) (string, error) {
	pip := armnetwork.PublicIPAddress{
		Location: to.Ptr(c.props.Location),
		Tags:     tags,
		SKU:      &armnetwork.PublicIPAddressSKU{Name: to.Ptr(armnetwork.PublicIPAddressSKUNameStandard), Tier: to.Ptr(armnetwork.PublicIPAddressSKUTierRegional)},
		Properties: &armnetwork.PublicIPAddressPropertiesFormat{
			PublicIPAllocationMethod: to.Ptr(armnetwork.IPAllocationMethodStatic),
			PublicIPAddressVersion:   to.Ptr(armnetwork.IPVersionIPv4),
		},
	}
	if zone != "" {
		pip.Zones = []*string{to.Ptr(zone)}
	}
	poller, err := c.pips.BeginCreateOrUpdate(ctx, group, pipName(vm), pip, nil)
	if err != nil {
		return "", err
	}
	out, err := poll(ctx, c, poller)
	if err != nil {
		return "", err
	}
	return *out.ID, nil
}

// createNIC makes one NIC and returns its id and private address.
func (c *CPI) createNIC(ctx context.Context, group, name string, n vmNetwork, subnet, nsg, pip string, pools []string, accel bool, tags map[string]*string) (string, string, error) {
	ipc := &armnetwork.InterfaceIPConfigurationPropertiesFormat{
		Subnet:                    &armnetwork.Subnet{ID: to.Ptr(subnet)},
		Primary:                   to.Ptr(true),
		PrivateIPAddressVersion:   to.Ptr(armnetwork.IPVersionIPv4),
		PrivateIPAllocationMethod: to.Ptr(armnetwork.IPAllocationMethodDynamic),
	}
	if n.net.Type == "manual" {
		ipc.PrivateIPAllocationMethod = to.Ptr(armnetwork.IPAllocationMethodStatic)
		ipc.PrivateIPAddress = to.Ptr(n.net.IP)
	}
	if pip != "" {
		ipc.PublicIPAddress = &armnetwork.PublicIPAddress{ID: to.Ptr(pip)}
	}
	for _, p := range pools {
		ipc.LoadBalancerBackendAddressPools = append(ipc.LoadBalancerBackendAddressPools, &armnetwork.BackendAddressPool{ID: to.Ptr(p)})
	}
	nic := armnetwork.Interface{
		Location: to.Ptr(c.props.Location),
		Tags:     tags,
		Properties: &armnetwork.InterfacePropertiesFormat{
			IPConfigurations:            []*armnetwork.InterfaceIPConfiguration{{Name: to.Ptr("ipconfig1"), Properties: ipc}},
			EnableAcceleratedNetworking: to.Ptr(accel),
		},
	}
	if nsg != "" {
		nic.Properties.NetworkSecurityGroup = &armnetwork.SecurityGroup{ID: to.Ptr(nsg)}
	}
	poller, err := c.nics.BeginCreateOrUpdate(ctx, group, name, nic, nil)
	if err != nil {
		return "", "", err
	}
	out, err := poll(ctx, c, poller)
	if err != nil {
		return "", "", err
	}
	ip := ""
	if out.Properties != nil {
		for _, cfg := range out.Properties.IPConfigurations {
			if cfg.Properties != nil && cfg.Properties.PrivateIPAddress != nil {
				ip = *cfg.Properties.PrivateIPAddress
				break
			}
		}
	}
	if ip == "" {
		return *out.ID, "", fmt.Errorf("network interface %s has no private address", name)
	}
	return *out.ID, ip, nil
}

// vmTags are the tags of the VM and everything made with it: the cloud
// properties' tags, then the request's (director, deployment, instance,
// agent id: what ListVMs finds the VM by), which win.
func (c *CPI) vmTags(props VMProperties, req cpi.CreateVMRequest) map[string]*string {
	all := map[string]string{}
	maps.Copy(all, props.Tags)
	maps.Copy(all, req.Tags)
	all[tagAgentID] = req.AgentID
	return azureTags(all)
}

func azureTags(m map[string]string) map[string]*string {
	out := make(map[string]*string, len(m))
	for k, v := range m {
		if len(v) > maxTagValueLen {
			v = v[:maxTagValueLen]
		}
		out[k] = to.Ptr(v)
	}
	return out
}

func plainTags(m map[string]*string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		if v != nil {
			out[k] = *v
		}
	}
	return out
}

// vmModel is the VM's create request.
func (c *CPI) vmModel(req cpi.CreateVMRequest, props VMProperties, name, ref string, nics []*armcompute.NetworkInterfaceReference, tags map[string]*string, settings []byte) armcompute.VirtualMachine {
	enc := base64.StdEncoding.EncodeToString(settings)
	os := &armcompute.OSDisk{
		Name:         to.Ptr(osDiskName(name)),
		CreateOption: to.Ptr(armcompute.DiskCreateOptionTypesFromImage),
		Caching:      to.Ptr(armcompute.CachingTypes(cmpOr(props.Caching, defaultOSCaching))),
		DeleteOption: to.Ptr(armcompute.DiskDeleteOptionTypesDelete),
		ManagedDisk:  &armcompute.ManagedDiskParameters{StorageAccountType: to.Ptr(armcompute.StorageAccountTypes(defaultStorageType))},
	}
	if r := props.RootDisk; r != nil {
		if r.Size != nil {
			os.DiskSizeGB = to.Ptr(gib(*r.Size))
		}
		if r.Type != "" {
			os.ManagedDisk.StorageAccountType = to.Ptr(armcompute.StorageAccountTypes(r.Type))
		}
	}
	storage := &armcompute.StorageProfile{ImageReference: imageReference(ref), OSDisk: os}
	if e := props.EphemeralDisk; e == nil || !e.UseRootDisk {
		size, typ, caching := int64(defaultEphemeralMB), defaultStorageType, "ReadWrite"
		if e != nil {
			if e.Size != nil {
				size = *e.Size
			}
			typ, caching = cmpOr(e.Type, typ), cmpOr(e.Caching, caching)
		}
		storage.DataDisks = []*armcompute.DataDisk{{
			Name:         to.Ptr(ephemeralName(name)),
			Lun:          to.Ptr[int32](ephemeralLUN),
			CreateOption: to.Ptr(armcompute.DiskCreateOptionTypesEmpty),
			DiskSizeGB:   to.Ptr(gib(size)),
			Caching:      to.Ptr(armcompute.CachingTypes(caching)),
			DeleteOption: to.Ptr(armcompute.DiskDeleteOptionTypesDelete),
			ManagedDisk:  &armcompute.ManagedDiskParameters{StorageAccountType: to.Ptr(armcompute.StorageAccountTypes(typ))},
		}}
	}
	vm := armcompute.VirtualMachine{
		Location: to.Ptr(c.props.Location),
		Tags:     tags,
		Properties: &armcompute.VirtualMachineProperties{
			HardwareProfile: &armcompute.HardwareProfile{VMSize: to.Ptr(armcompute.VirtualMachineSizeTypes(props.InstanceType))},
			StorageProfile:  storage,
			OSProfile: &armcompute.OSProfile{
				ComputerName:  to.Ptr(computerName(req.AgentID)),
				AdminUsername: to.Ptr(c.props.SSHUser),
				CustomData:    to.Ptr(enc),
				LinuxConfiguration: &armcompute.LinuxConfiguration{
					DisablePasswordAuthentication: to.Ptr(true),
					SSH: &armcompute.SSHConfiguration{PublicKeys: []*armcompute.SSHPublicKey{{
						Path:    to.Ptr("/home/" + c.props.SSHUser + "/.ssh/authorized_keys"),
						KeyData: to.Ptr(c.props.SSHPublicKey),
					}}},
				},
			},
			// The agent reads its settings from IMDS user data; custom data
			// (the same document) serves stemcells that read it from disk.
			UserData:       to.Ptr(enc),
			NetworkProfile: &armcompute.NetworkProfile{NetworkInterfaces: nics},
		},
	}
	if props.AvailabilityZone != "" {
		vm.Zones = []*string{to.Ptr(props.AvailabilityZone)}
	}
	if m := props.ManagedIdentity; m != nil {
		if m.Type == "SystemAssigned" {
			vm.Identity = &armcompute.VirtualMachineIdentity{Type: to.Ptr(armcompute.ResourceIdentityTypeSystemAssigned)}
		} else {
			id := m.UserAssignedIdentityName
			if !strings.HasPrefix(id, "/") {
				id = fmt.Sprintf("/subscriptions/%s/resourceGroups/%s/providers/Microsoft.ManagedIdentity/userAssignedIdentities/%s",
					c.props.SubscriptionID, cmpOr(props.ResourceGroupName, c.rg), id)
			}
			vm.Identity = &armcompute.VirtualMachineIdentity{
				Type:                   to.Ptr(armcompute.ResourceIdentityTypeUserAssigned),
				UserAssignedIdentities: map[string]*armcompute.UserAssignedIdentitiesValue{id: {}},
			}
		}
	}
	return vm
}

// settingsObject decodes the agent settings document.
func settingsObject(raw json.RawMessage) (map[string]json.RawMessage, error) {
	m := map[string]json.RawMessage{}
	if len(raw) == 0 {
		return m, nil
	}
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, errors.New("create vm: agent settings are not a JSON object")
	}
	return m, nil
}

// agentSettings is the settings document the VM gets: networks as
// configured, vm.cid, and the ephemeral disk's device (the LUN 0 link
// Azure's udev rules make) unless the OS disk holds the ephemeral data.
func agentSettings(settings map[string]json.RawMessage, nets map[string]cpi.Network, id string, e *EphemeralDisk) ([]byte, error) {
	b, err := json.Marshal(nets)
	if err != nil {
		return nil, fmt.Errorf("encode networks: %w", err)
	}
	settings["networks"] = b
	settings["vm"], _ = json.Marshal(map[string]string{"cid": id})
	if e == nil || !e.UseRootDisk {
		disks := map[string]json.RawMessage{}
		if raw, ok := settings["disks"]; ok && string(raw) != "null" {
			if err := json.Unmarshal(raw, &disks); err != nil || disks == nil {
				return nil, errors.New("agent settings: disks is not an object")
			}
		}
		disks["ephemeral"], _ = json.Marshal(ephemeralDevicePath)
		settings["disks"], _ = json.Marshal(disks)
	}
	doc, err := json.Marshal(settings)
	if err != nil {
		return nil, fmt.Errorf("encode agent settings: %w", err)
	}
	if len(doc) > maxCustomDataBytes {
		return nil, fmt.Errorf("agent settings take %d bytes, more than the %d Azure's custom data holds", len(doc), maxCustomDataBytes)
	}
	return doc, nil
}

// leftovers names what a CreateVM made (or may have made), for cleanup.
type leftovers struct {
	group, vm string
	vmMaybe   bool
	nics      []string
	pip       bool
	osDisk    bool
	ephemeral bool
}

// deleteVMResources deletes, by name, the VM and what it was made with:
// the VM first (a NIC in use cannot go), then NICs, public IP and disks.
// A missing resource is success.
func (c *CPI) deleteVMResources(ctx context.Context, l *leftovers) error {
	var errs []error
	if l.vmMaybe {
		if err := c.deleteResource(ctx, "vm "+l.vm, func() (waiter, error) {
			p, err := c.vms.BeginDelete(ctx, l.group, l.vm, nil)
			return pollerOf(p), err
		}); err != nil {
			return err // its NICs and disks are still in use
		}
	}
	for _, n := range l.nics {
		errs = append(errs, c.deleteResource(ctx, "network interface "+n, func() (waiter, error) {
			p, err := c.nics.BeginDelete(ctx, l.group, n, nil)
			return pollerOf(p), err
		}))
	}
	if l.pip {
		errs = append(errs, c.deleteResource(ctx, "public ip "+pipName(l.vm), func() (waiter, error) {
			p, err := c.pips.BeginDelete(ctx, l.group, pipName(l.vm), nil)
			return pollerOf(p), err
		}))
	}
	for _, d := range []struct {
		on   bool
		name string
	}{{l.osDisk, osDiskName(l.vm)}, {l.ephemeral, ephemeralName(l.vm)}} {
		if d.on {
			errs = append(errs, c.deleteResource(ctx, "disk "+d.name, func() (waiter, error) {
				p, err := c.disks.BeginDelete(ctx, l.group, d.name, nil)
				return pollerOf(p), err
			}))
		}
	}
	return errors.Join(errs...)
}

// waiter is a started long-running operation.
type waiter func(ctx context.Context) error

func pollerOf[T any](p *runtime.Poller[T]) waiter {
	if p == nil {
		return nil
	}
	return func(ctx context.Context) error {
		_, err := p.PollUntilDone(ctx, &runtime.PollUntilDoneOptions{Frequency: time.Second})
		return err
	}
}

// deleteResource runs a delete and waits for it; 404 is success.
func (c *CPI) deleteResource(ctx context.Context, what string, begin func() (waiter, error)) error {
	w, err := begin()
	if err == nil && w != nil {
		ctx, cancel := context.WithTimeout(ctx, c.opTime)
		defer cancel()
		err = w(ctx)
	}
	if err != nil && !isNotFound(err) {
		return classify("delete "+what, err, nil)
	}
	return nil
}

// DeleteVM deletes the VM and, by name, everything it was made with (most
// goes with it through deleteOption Delete; the rest, left by an earlier
// failure, by name). Persistent disks are detached, not deleted. A missing
// VM is success.
func (c *CPI) DeleteVM(ctx context.Context, cid string) error {
	r, ok := parseID(cid, typeVM)
	if !ok {
		return nil
	}
	l := &leftovers{group: r.group, vm: r.name, vmMaybe: true, pip: true}
	vm, err := c.vms.Get(ctx, r.group, r.name, nil)
	switch {
	case err == nil:
		// What the VM deletes with it (deleteOption Delete) goes in the
		// same operation; the rest is deleted by name.
		if p := vm.Properties; p != nil && p.NetworkProfile != nil {
			for _, n := range p.NetworkProfile.NetworkInterfaces {
				cascades := n.Properties != nil && deref(n.Properties.DeleteOption) == armcompute.DeleteOptionsDelete
				if nr, ok := parseID(deref(n.ID), "Microsoft.Network/networkInterfaces"); ok && strings.EqualFold(nr.group, r.group) && !cascades {
					l.nics = append(l.nics, nr.name)
				}
			}
		}
		if p := vm.Properties; p != nil && p.StorageProfile != nil {
			if os := p.StorageProfile.OSDisk; os != nil && deref(os.DeleteOption) != armcompute.DiskDeleteOptionTypesDelete {
				l.osDisk = true
			}
			for _, d := range p.StorageProfile.DataDisks {
				if deref(d.Name) == ephemeralName(r.name) && deref(d.DeleteOption) != armcompute.DiskDeleteOptionTypesDelete {
					l.ephemeral = true
				}
			}
		}
	case isNotFound(err):
		// Gone, perhaps after a create that failed half way: everything
		// it may have been made with, by name.
		l.vmMaybe = false
		for i := range maxNICs {
			l.nics = append(l.nics, nicName(r.name, i))
		}
		l.osDisk, l.ephemeral = true, true
	default:
		return classify("delete vm "+cid, err, nil)
	}
	if err := c.deleteVMResources(ctx, l); err != nil {
		return fmt.Errorf("delete vm %s: %w", cid, err)
	}
	c.logger.Info("vm deleted", "vm", cid)
	return nil
}

// HasVM reports whether the VM exists and is not being deleted. Any answer
// but a VM or a 404 is an error, never false: a director that took a
// transient fault for "gone" would recreate a healthy VM.
func (c *CPI) HasVM(ctx context.Context, cid string) (bool, error) {
	r, ok := parseID(cid, typeVM)
	if !ok {
		return false, nil
	}
	vm, err := c.vms.Get(ctx, r.group, r.name, nil)
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, classify("has vm "+cid, err, nil)
	}
	if p := vm.Properties; p != nil && p.ProvisioningState != nil && strings.EqualFold(*p.ProvisioningState, "Deleting") {
		return false, nil
	}
	return true, nil
}

// vm reads a VM, answering cpi.ErrVMNotFound for a missing one.
func (c *CPI) vm(ctx context.Context, what, cid string) (resource, armcompute.VirtualMachine, error) {
	r, ok := parseID(cid, typeVM)
	if !ok {
		return r, armcompute.VirtualMachine{}, cpi.Errorf(cpi.CodeVMNotFound, "%s: %q is not a virtual machine id", what, cid)
	}
	out, err := c.vms.Get(ctx, r.group, r.name, nil)
	if err != nil {
		return r, armcompute.VirtualMachine{}, classify(what, err, cpi.ErrVMNotFound)
	}
	return r, out.VirtualMachine, nil
}

// RebootVM restarts the VM and waits for Azure to say it has.
func (c *CPI) RebootVM(ctx context.Context, cid string) error {
	what := "reboot vm " + cid
	r, _, err := c.vm(ctx, what, cid)
	if err != nil {
		return err
	}
	p, err := c.vms.BeginRestart(ctx, r.group, r.name, nil)
	if err == nil {
		_, err = poll(ctx, c, p)
	}
	return classify(what, err, cpi.ErrVMNotFound)
}

// SetVMMetadata merges the metadata into the VM's tags (keeping the tags
// given at creation).
func (c *CPI) SetVMMetadata(ctx context.Context, cid string, md map[string]string) error {
	what := "set vm metadata " + cid
	r, vm, err := c.vm(ctx, what, cid)
	if err != nil {
		return err
	}
	tags := plainTags(vm.Tags)
	for k, v := range md {
		if _, ours := tags[k]; ours && (k == cpi.TagDirector || k == cpi.TagAgentID || k == tagAgentID) {
			continue
		}
		if k != "" && len(k) <= maxTagKeyLen && !strings.ContainsAny(k, "<>%&\\?/") {
			tags[k] = v
		}
	}
	if len(tags) > maxTags {
		return fmt.Errorf("%s: %d tags, Azure allows %d", what, len(tags), maxTags)
	}
	p, err := c.vms.BeginUpdate(ctx, r.group, r.name, armcompute.VirtualMachineUpdate{Tags: azureTags(tags)}, nil)
	if err == nil {
		_, err = poll(ctx, c, p)
	}
	return classify(what, err, cpi.ErrVMNotFound)
}
