package openstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/keypairs"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/layer3/floatingips"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	"github.com/gophercloud/gophercloud/v2/pagination"

	"github.com/compleat/compleat/cpi"
)

// AgentIDKey is the server metadata key holding the agent id (the
// contract's standard tag), so that a server whose creation outcome is
// unknown can be found (ListVMs).
const AgentIDKey = cpi.TagAgentID

// Devices as the agent on a KVM server sees them.
const (
	systemDevice    = "/dev/vda"
	ephemeralDevice = "/dev/vdb"
)

// CreateVM boots one server of the stemcell's image on the request's
// networks, with the agent settings as user data (and on the config
// drive when config_drive is set), and waits until it is ACTIVE.
//
// Every object it makes on the way (the ports of manual networks, the
// server, the floating IP's association) goes into a ledger that a
// failure undoes in reverse. A port whose address Neutron says is taken
// (409) is recovered once by deleting the unbound DOWN ports that hold the
// address (ports leaked by an earlier failure). A server that goes to
// ERROR fails the call with Nova's fault message, retryable. A server
// whose creation outcome is unknown (the POST's answer was lost) is
// looked for by name and removed; it carries the agent id in its
// metadata either way.
func (c *CPI) CreateVM(ctx context.Context, req cpi.CreateVMRequest) (cpi.CreateVMResult, error) {
	props, err := parseVMProperties(req.CloudProperties)
	if err != nil {
		return cpi.CreateVMResult{}, err
	}
	private, vip, err := splitNetworks(req.Networks)
	if err != nil {
		return cpi.CreateVMResult{}, err
	}
	settings, err := settingsObject(req.AgentSettings)
	if err != nil {
		return cpi.CreateVMResult{}, err
	}
	cl, err := c.session(ctx)
	if err != nil {
		return cpi.CreateVMResult{}, err
	}
	image, err := c.stemcellImage(ctx, cl, req.StemcellCID)
	if err != nil {
		return cpi.CreateVMResult{}, fmt.Errorf("create vm: %w", err)
	}
	fl, err := c.flavor(ctx, cl, props.InstanceType)
	if err != nil {
		return cpi.CreateVMResult{}, err
	}
	bfv := c.props.BootFromVolume
	if props.BootFromVolume != nil {
		bfv = *props.BootFromVolume
	}
	switch {
	case bfv && fl.Disk == 0 && props.RootDisk == nil:
		return cpi.CreateVMResult{}, cpi.InvalidCloudProperty("root_disk.size", "flavor %s has no disk: booting from a volume needs root_disk.size", fl.Name)
	case !bfv && props.RootDisk != nil:
		return cpi.CreateVMResult{}, cpi.InvalidCloudProperty("root_disk", "only a server that boots from a volume (boot_from_volume) takes root_disk")
	case !bfv && fl.Disk == 0:
		return cpi.CreateVMResult{}, cpi.InvalidCloudProperty("instance_type", "flavor %s has no disk: set boot_from_volume and root_disk.size", fl.Name)
	}
	keyName := cmpOr(props.KeyName, c.props.DefaultKeyName)
	if keyName != "" {
		if _, err := keypairs.Get(ctx, cl.compute, keyName, nil).Extract(); err != nil {
			if isNotFound(err) {
				return cpi.CreateVMResult{}, cpi.InvalidCloudProperty(cmpOr(fieldIf(props.KeyName != "", "key_name"), "default_key_name"), "key pair %q does not exist", keyName)
			}
			return cpi.CreateVMResult{}, classify("create vm: key pair "+keyName, err, nil)
		}
	}
	if err := c.checkNetworks(ctx, cl, private); err != nil {
		return cpi.CreateVMResult{}, err
	}
	sgIDs, sgNames, err := c.securityGroups(ctx, cl, props, private)
	if err != nil {
		return cpi.CreateVMResult{}, err
	}
	var fip *floatingips.FloatingIP
	if vip != nil {
		if fip, err = c.floatingIP(ctx, cl, vip); err != nil {
			return cpi.CreateVMResult{}, err
		}
	}
	az, err := c.availabilityZone(ctx, cl, props, req.DiskCIDs)
	if err != nil {
		return cpi.CreateVMResult{}, err
	}

	name := "vm-" + req.AgentID
	log := c.logger.With("agent_id", req.AgentID, "server_name", name)
	var l ledger
	fail := func(what string, cause error, retryable bool) (cpi.CreateVMResult, error) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if left := l.undo(cctx, log); len(left) > 0 {
			what += " (left behind: " + strings.Join(left, "; ") + ")"
		}
		var ce *cpi.Error
		if errors.As(cause, &ce) && (ce.Code == cpi.CodeInvalidCloudProperties || ce.Code == cpi.CodeVMCreationFailed) {
			return cpi.CreateVMResult{}, fmt.Errorf("%s: %w", what, cause)
		}
		return cpi.CreateVMResult{}, creationFailed(what, cause, retryable)
	}

	var nets []servers.Network
	for _, vn := range private {
		if vn.net.Type != "manual" {
			nets = append(nets, servers.Network{UUID: vn.props.NetID})
			continue
		}
		p, err := c.createPort(ctx, cl, vn, sgIDs[vn.name], name+"-"+vn.name)
		if err != nil {
			return fail("create vm "+name+": port for "+vn.net.IP, err, false)
		}
		vn.portID = p.ID
		vn.mac = p.MACAddress
		portID := p.ID
		l.add("port "+portID, func(ctx context.Context) error {
			return ignoreNotFound(ports.Delete(ctx, cl.network, portID).ExtractErr())
		})
		nets = append(nets, servers.Network{Port: p.ID})
	}

	userData, err := userData(settings, name, private, fl, c.useDHCP())
	if err != nil {
		return fail("create vm "+name, err, false)
	}
	md := map[string]string{}
	for k, val := range req.Tags {
		if k != "" {
			md[truncate(k, 255)] = truncate(val, 255)
		}
	}
	md[AgentIDKey] = req.AgentID
	opts := servers.CreateOpts{
		Name: name, FlavorRef: fl.ID, SecurityGroups: sgNames, UserData: userData,
		AvailabilityZone: az, Networks: nets, Metadata: md,
	}
	if c.props.ConfigDrive != "" {
		t := true
		opts.ConfigDrive = &t
	}
	if bfv {
		size := fl.Disk
		if props.RootDisk != nil {
			size = props.RootDisk.Size
		}
		opts.BlockDevice = []servers.BlockDevice{{
			UUID: image, SourceType: servers.SourceImage, DestinationType: servers.DestinationVolume,
			VolumeSize: size, BootIndex: 0, DeleteOnTermination: true,
		}}
	} else {
		opts.ImageRef = image
	}
	var hints servers.SchedulerHintOptsBuilder
	if props.SchedulerHints != nil {
		hints = servers.SchedulerHintOpts{Group: props.SchedulerHints.Group}
	}
	var builder servers.CreateOptsBuilder = opts
	if keyName != "" {
		builder = keypairs.CreateOptsExt{CreateOptsBuilder: opts, KeyName: keyName}
	}
	srv, err := servers.Create(ctx, cl.compute, builder, hints).Extract()
	if err != nil {
		if statusOf(err) == 0 {
			// The answer was lost: the server may exist. Look for it
			// by name (and agent id) so that the ledger removes it.
			if id := c.findServer(context.WithoutCancel(ctx), cl, name, req.AgentID); id != "" {
				c.ledgerServer(&l, cl, id)
			}
			return fail("create vm "+name+": the outcome of creating the server is unknown (it carries metadata "+AgentIDKey+"="+req.AgentID+")", err, false)
		}
		if s := statusOf(err); s == http.StatusBadRequest || s == http.StatusNotFound {
			return fail("create vm "+name, c.explainCreateError(ctx, cl, err, private), false)
		}
		return fail("create vm "+name, classify("create server", err, nil), retryableStatus(err))
	}
	log = log.With("vm", srv.ID)
	log.Info("server created", "image", image, "flavor", fl.Name)
	c.ledgerServer(&l, cl, srv.ID)

	active, err := c.waitActive(ctx, cl, srv.ID)
	if err != nil {
		return fail("create vm "+name+": server "+srv.ID, err, true)
	}
	srvPorts, err := c.serverPorts(ctx, cl, srv.ID)
	if err != nil {
		return fail("create vm "+name+": server "+srv.ID, err, true)
	}
	if fip != nil {
		gw := private[0]
		portID := gw.portID
		if portID == "" {
			for _, p := range srvPorts {
				if p.NetworkID == gw.props.NetID {
					portID = p.ID
				}
			}
		}
		if portID == "" {
			return fail("create vm "+name, fmt.Errorf("server %s has no port on network %s for floating IP %s", srv.ID, gw.props.NetID, fip.FloatingIP), true)
		}
		prev := fip.PortID
		if _, err := floatingips.Update(ctx, cl.network, fip.ID, floatingips.UpdateOpts{PortID: &portID}).Extract(); err != nil {
			return fail("create vm "+name+": associate floating IP "+fip.FloatingIP, classify("update floating ip", err, nil), true)
		}
		fipID := fip.ID
		l.add("floating IP "+fip.FloatingIP+" association", func(ctx context.Context) error {
			var back *string
			if prev != "" {
				back = &prev
			}
			_, err := floatingips.Update(ctx, cl.network, fipID, floatingips.UpdateOpts{PortID: back}).Extract()
			return ignoreNotFound(err)
		})
	}

	res := cpi.CreateVMResult{CID: active.ID, Networks: map[string]cpi.Network{}}
	for name, n := range req.Networks {
		res.Networks[name] = n
	}
	for _, vn := range private {
		if vn.net.Type != "dynamic" {
			continue
		}
		n := res.Networks[vn.name]
		for _, p := range srvPorts {
			if p.NetworkID == vn.props.NetID && len(p.FixedIPs) > 0 {
				n.IP = p.FixedIPs[0].IPAddress
			}
		}
		if n.IP == "" {
			return fail("create vm "+name, fmt.Errorf("server %s has no address on dynamic network %s", srv.ID, vn.props.NetID), true)
		}
		res.Networks[vn.name] = n
	}
	log.Info("server active")
	return res, nil
}

func fieldIf(ok bool, f string) string {
	if ok {
		return f
	}
	return ""
}

func retryableStatus(err error) bool {
	switch statusOf(err) {
	case http.StatusTooManyRequests, http.StatusRequestEntityTooLarge, http.StatusServiceUnavailable, http.StatusConflict:
		return true
	}
	return false
}

// ledgerServer records a server for the ledger to delete (and wait for).
func (c *CPI) ledgerServer(l *ledger, cl *clients, id string) {
	l.add("server "+id, func(ctx context.Context) error { return c.deleteServer(ctx, cl, id) })
}

func (c *CPI) useDHCP() bool { return c.props.UseDHCP == nil || *c.props.UseDHCP }

// ledger is what a CreateVM has made so far, to be undone in reverse
// when it fails.
type ledger struct {
	steps []ledgerStep
}

type ledgerStep struct {
	what string
	undo func(context.Context) error
}

func (l *ledger) add(what string, undo func(context.Context) error) {
	l.steps = append(l.steps, ledgerStep{what, undo})
}

// undo undoes every step, newest first, and returns what it could not
// undo. Every step is tried even when one fails.
func (l *ledger) undo(ctx context.Context, log interface {
	Warn(string, ...any)
	Error(string, ...any)
}) []string {
	var left []string
	for i := len(l.steps) - 1; i >= 0; i-- {
		s := l.steps[i]
		if err := s.undo(ctx); err != nil {
			log.Error("undo a step of a failed create", "step", s.what, "error", shortError(err))
			left = append(left, s.what+": "+shortError(err))
			continue
		}
		log.Warn("undid a step of a failed create", "step", s.what)
	}
	l.steps = nil
	return left
}

func ignoreNotFound(err error) error {
	if isNotFound(err) {
		return nil
	}
	return err
}

// flavor finds the flavor by name, else by id.
func (c *CPI) flavor(ctx context.Context, cl *clients, nameOrID string) (flavors.Flavor, error) {
	pages, err := flavors.ListDetail(cl.compute, flavors.ListOpts{AccessType: flavors.AllAccess}).AllPages(ctx)
	if err != nil {
		return flavors.Flavor{}, classify("create vm: list flavors", err, nil)
	}
	all, err := flavors.ExtractFlavors(pages)
	if err != nil {
		return flavors.Flavor{}, fmt.Errorf("create vm: list flavors: %w", err)
	}
	for _, f := range all {
		if f.Name == nameOrID {
			return f, nil
		}
	}
	for _, f := range all {
		if f.ID == nameOrID {
			return f, nil
		}
	}
	return flavors.Flavor{}, cpi.InvalidCloudProperty("instance_type", "flavor %q does not exist", nameOrID)
}

// checkNetworks makes sure every net_id names a network, naming the ones
// that do not.
func (c *CPI) checkNetworks(ctx context.Context, cl *clients, private []*vmNetwork) error {
	for _, vn := range private {
		_, err := networks.Get(ctx, cl.network, vn.props.NetID).Extract()
		if isNotFound(err) {
			return cpi.InvalidCloudProperty("networks."+vn.name+".net_id", "network %s does not exist (or this project cannot see it)", vn.props.NetID)
		}
		if err != nil {
			return classify("create vm: network "+vn.props.NetID, err, nil)
		}
	}
	return nil
}

// explainCreateError turns Nova's 400 or 404 for a server into an error
// naming the networks that do not exist, when that is the cause.
func (c *CPI) explainCreateError(ctx context.Context, cl *clients, err error, private []*vmNetwork) error {
	var bad []string
	for _, vn := range private {
		if _, gerr := networks.Get(ctx, cl.network, vn.props.NetID).Extract(); isNotFound(gerr) {
			bad = append(bad, "networks."+vn.name+".net_id "+vn.props.NetID)
		}
	}
	if len(bad) > 0 {
		return &cpi.Error{Code: cpi.CodeVMCreationFailed, Field: strings.Fields(bad[0])[0],
			Message: fmt.Sprintf("no such network: %s (%s)", strings.Join(bad, ", "), shortError(err))}
	}
	return classify("create server", err, nil)
}

// securityGroups resolves each private network's security groups (the
// vm_type's, else the network's, else default_security_groups) to ids,
// and returns the names Nova takes for the ports it makes itself.
func (c *CPI) securityGroups(ctx context.Context, cl *clients, props VMProperties, private []*vmNetwork) (map[string][]string, []string, error) {
	pages, err := groups.List(cl.network, groups.ListOpts{}).AllPages(ctx)
	if err != nil {
		return nil, nil, classify("create vm: list security groups", err, nil)
	}
	all, err := groups.ExtractGroups(pages)
	if err != nil {
		return nil, nil, fmt.Errorf("create vm: list security groups: %w", err)
	}
	resolve := func(field string, names []string) ([]string, error) {
		var ids []string
		for i, n := range names {
			j := slices.IndexFunc(all, func(g groups.SecGroup) bool { return g.ID == n })
			if j < 0 {
				j = slices.IndexFunc(all, func(g groups.SecGroup) bool { return g.Name == n })
			}
			if j < 0 {
				return nil, cpi.InvalidCloudProperty(fmt.Sprintf("%s.%d", field, i), "security group %q does not exist", n)
			}
			ids = append(ids, all[j].ID)
		}
		return ids, nil
	}
	byNet := map[string][]string{}
	var serverNames []string
	for _, vn := range private {
		field, names := "security_groups", props.SecurityGroups
		if len(names) == 0 {
			field, names = "networks."+vn.name+".security_groups", vn.props.SecurityGroups
		}
		if len(names) == 0 {
			field, names = "default_security_groups", c.props.DefaultSecurityGroups
		}
		ids, err := resolve(field, names)
		if err != nil {
			return nil, nil, err
		}
		byNet[vn.name] = ids
		if vn.net.Type == "dynamic" {
			serverNames = names
		}
	}
	return byNet, serverNames, nil
}

// floatingIP finds the vip network's floating IP in the project.
func (c *CPI) floatingIP(ctx context.Context, cl *clients, vip *vmNetwork) (*floatingips.FloatingIP, error) {
	pages, err := floatingips.List(cl.network, floatingips.ListOpts{FloatingIP: vip.net.IP}).AllPages(ctx)
	if err != nil {
		return nil, classify("create vm: floating IP "+vip.net.IP, err, nil)
	}
	all, err := floatingips.ExtractFloatingIPs(pages)
	if err != nil {
		return nil, fmt.Errorf("create vm: floating IP %s: %w", vip.net.IP, err)
	}
	for _, f := range all {
		if f.FloatingIP == vip.net.IP {
			return &f, nil
		}
	}
	return nil, &cpi.Error{Code: cpi.CodeVMCreationFailed, Field: "networks." + vip.name + ".ip",
		Message: fmt.Sprintf("floating IP %s is not allocated to the project: allocate it first (openstack floating ip create --floating-ip-address %s <external network>)", vip.net.IP, vip.net.IP)}
}

// availabilityZone is the zone the server goes to: the vm_type's, one of
// its availability_zones at random, else the zone of the persistent disk
// it will attach (unless ignore_server_availability_zone).
func (c *CPI) availabilityZone(ctx context.Context, cl *clients, props VMProperties, disks []string) (string, error) {
	switch {
	case props.AvailabilityZone != "":
		return props.AvailabilityZone, nil
	case len(props.AvailabilityZones) > 0:
		return props.AvailabilityZones[rand.IntN(len(props.AvailabilityZones))], nil
	case c.props.IgnoreServerAvailabilityZone || len(disks) == 0:
		return "", nil
	}
	v, err := volumes.Get(ctx, cl.volume, disks[0]).Extract()
	if err != nil {
		if isNotFound(err) {
			return "", nil
		}
		return "", classify("create vm: disk "+disks[0], err, nil)
	}
	return v.AvailabilityZone, nil
}

// createPort makes the port of a manual network at its address. When
// Neutron answers that the address is taken, the unbound DOWN ports that
// hold it (leaked by earlier failures) are deleted and the port is made
// once more.
func (c *CPI) createPort(ctx context.Context, cl *clients, vn *vmNetwork, sgIDs []string, name string) (*ports.Port, error) {
	opts := ports.CreateOpts{
		NetworkID: vn.props.NetID, Name: name,
		FixedIPs:       []ports.IP{{IPAddress: vn.net.IP}},
		SecurityGroups: &sgIDs,
	}
	p, err := ports.Create(ctx, cl.network, opts).Extract()
	if err == nil {
		return p, nil
	}
	if statusOf(err) != http.StatusConflict {
		return nil, classify("create port", err, nil)
	}
	switch neutronType(err) {
	case "IpAddressAlreadyAllocated", "IpAddressInUse", "":
	default: // another conflict (a MAC in use, ...): nothing to recover
		return nil, classify("create port", err, nil)
	}
	pages, lerr := ports.List(cl.network, ports.ListOpts{NetworkID: vn.props.NetID, FixedIPs: []ports.FixedIPOpts{{IPAddress: vn.net.IP}}}).AllPages(ctx)
	if lerr != nil {
		return nil, classify("create port: "+shortError(err)+"; list ports holding the address", lerr, nil)
	}
	holders, lerr := ports.ExtractPorts(pages)
	if lerr != nil {
		return nil, fmt.Errorf("create port: list ports: %w", lerr)
	}
	freed := 0
	for _, h := range holders {
		if h.DeviceID != "" || h.Status != "DOWN" {
			return nil, fmt.Errorf("create port: address %s is in use by port %s (device %q, status %s): %w",
				vn.net.IP, h.ID, h.DeviceID, h.Status, answerError{err})
		}
		if derr := ignoreNotFound(ports.Delete(ctx, cl.network, h.ID).ExtractErr()); derr != nil {
			return nil, classify("create port: delete leaked port "+h.ID, derr, nil)
		}
		c.logger.Warn("deleted a leaked port holding a VM's address", "port", h.ID, "ip", vn.net.IP, "network", vn.props.NetID)
		freed++
	}
	if freed == 0 {
		return nil, classify("create port", err, nil)
	}
	p, err = ports.Create(ctx, cl.network, opts).Extract()
	if err != nil {
		return nil, classify("create port (after deleting leaked ports)", err, nil)
	}
	return p, nil
}

// serverPorts lists the ports bound to a server.
func (c *CPI) serverPorts(ctx context.Context, cl *clients, id string) ([]ports.Port, error) {
	pages, err := ports.List(cl.network, ports.ListOpts{DeviceID: id}).AllPages(ctx)
	if err != nil {
		return nil, classify("list ports of server "+id, err, nil)
	}
	return ports.ExtractPorts(pages)
}

// faultError is a server that went to ERROR, with Nova's fault.
type faultError struct {
	id, message string
	code        int
}

func (e faultError) Error() string {
	msg := e.message
	if msg == "" {
		msg = "no fault given"
	}
	return fmt.Sprintf("server %s went to ERROR: %s (fault code %d)", e.id, msg, e.code)
}

// waitActive waits until the server is ACTIVE; ERROR fails with the
// server's fault.
func (c *CPI) waitActive(ctx context.Context, cl *clients, id string) (*servers.Server, error) {
	var srv *servers.Server
	err := c.wait(ctx, "server "+id+" ACTIVE", func(ctx context.Context) (bool, error) {
		s, err := servers.Get(ctx, cl.compute, id).Extract()
		if err != nil {
			return false, classify("get server "+id, err, nil)
		}
		srv = s
		switch s.Status {
		case "ACTIVE":
			return true, nil
		case "ERROR":
			return false, faultError{id: id, message: s.Fault.Message, code: s.Fault.Code}
		case "DELETED", "SOFT_DELETED":
			return false, fmt.Errorf("server %s was deleted while it was built", id)
		}
		return false, nil
	})
	return srv, err
}

// findServer returns the id of the server called name that carries the
// agent id ("" when none does or the cloud cannot tell).
func (c *CPI) findServer(ctx context.Context, cl *clients, name, agentID string) string {
	ctx, cancel := context.WithTimeout(ctx, c.state)
	defer cancel()
	pages, err := servers.List(cl.compute, servers.ListOpts{Name: "^" + regexp.QuoteMeta(name) + "$"}).AllPages(ctx)
	if err != nil {
		return ""
	}
	all, err := servers.ExtractServers(pages)
	if err != nil {
		return ""
	}
	for _, s := range all {
		if s.Metadata[AgentIDKey] == agentID {
			return s.ID
		}
	}
	return ""
}

// deleteServer deletes a server and its ports that outlive it (those the
// plugin made for manual networks), and waits until it is gone. A missing
// server is success.
func (c *CPI) deleteServer(ctx context.Context, cl *clients, id string) error {
	if !looksLikeID(id) {
		return nil
	}
	own, err := c.serverPorts(ctx, cl, id)
	if err != nil {
		return err
	}
	err = servers.Delete(ctx, cl.compute, id).ExtractErr()
	if err != nil && !isNotFound(err) {
		return classify("delete server "+id, err, nil)
	}
	err = c.wait(ctx, "server "+id+" deleted", func(ctx context.Context) (bool, error) {
		s, err := servers.Get(ctx, cl.compute, id).Extract()
		if isNotFound(err) {
			return true, nil
		}
		if err != nil {
			return false, classify("get server "+id, err, nil)
		}
		return s.Status == "DELETED" || s.Status == "SOFT_DELETED", nil
	})
	if err != nil {
		return err
	}
	for _, p := range own {
		if p.DeviceOwner != "" && !strings.HasPrefix(p.DeviceOwner, "compute:") {
			continue // a router's or DHCP port, never ours
		}
		if err := ignoreNotFound(ports.Delete(ctx, cl.network, p.ID).ExtractErr()); err != nil {
			return classify("delete port "+p.ID+" of server "+id, err, nil)
		}
	}
	return nil
}

// DeleteVM deletes the server and the ports made for it, and waits until
// it is gone. A missing server is success.
func (c *CPI) DeleteVM(ctx context.Context, id string) error {
	cl, err := c.session(ctx)
	if err != nil {
		return err
	}
	if err := c.deleteServer(ctx, cl, id); err != nil {
		return fmt.Errorf("delete vm %s: %w", id, err)
	}
	return nil
}

// liveServer returns the server, or cpi.ErrVMNotFound when it is missing
// or deleted.
func (c *CPI) liveServer(ctx context.Context, cl *clients, what, id string) (*servers.Server, error) {
	if !looksLikeID(id) {
		return nil, fmt.Errorf("%s: %w", what, cpi.ErrVMNotFound)
	}
	s, err := servers.Get(ctx, cl.compute, id).Extract()
	if err != nil {
		return nil, classify(what, err, cpi.ErrVMNotFound)
	}
	if s.Status == "DELETED" || s.Status == "SOFT_DELETED" {
		return nil, fmt.Errorf("%s: server is %s: %w", what, s.Status, cpi.ErrVMNotFound)
	}
	return s, nil
}

// HasVM reports whether the server exists and is not deleted. Any other
// failure is an error, never false: a director must not take a server
// for gone because the API stumbled.
func (c *CPI) HasVM(ctx context.Context, id string) (bool, error) {
	cl, err := c.session(ctx)
	if err != nil {
		return false, err
	}
	_, err = c.liveServer(ctx, cl, "has vm "+id, id)
	if errors.Is(err, cpi.ErrVMNotFound) {
		return false, nil
	}
	return err == nil, err
}

// RebootVM soft-reboots the server and waits until it is ACTIVE again.
func (c *CPI) RebootVM(ctx context.Context, id string) error {
	cl, err := c.session(ctx)
	if err != nil {
		return err
	}
	what := "reboot vm " + id
	if _, err := c.liveServer(ctx, cl, what, id); err != nil {
		return err
	}
	if err := servers.Reboot(ctx, cl.compute, id, servers.RebootOpts{Type: servers.SoftReboot}).ExtractErr(); err != nil {
		return classify(what, err, cpi.ErrVMNotFound)
	}
	if _, err := c.waitActive(ctx, cl, id); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// SetVMMetadata sets the metadata on the server (keys and values cut to
// Nova's 255 characters) and, with human_readable_vm_names, renames it
// to the metadata's name, job/index or compiling/<package>.
func (c *CPI) SetVMMetadata(ctx context.Context, id string, md map[string]string) error {
	cl, err := c.session(ctx)
	if err != nil {
		return err
	}
	what := "set vm metadata " + id
	if _, err := c.liveServer(ctx, cl, what, id); err != nil {
		return err
	}
	opts := servers.MetadataOpts{}
	for k, v := range md {
		if k == "" || k == AgentIDKey {
			continue
		}
		opts[truncate(k, 255)] = truncate(v, 255)
	}
	if len(opts) > 0 {
		if _, err := servers.UpdateMetadata(ctx, cl.compute, id, opts).Extract(); err != nil {
			return classify(what, err, cpi.ErrVMNotFound)
		}
	}
	if c.props.HumanReadableVMNames {
		name := md["name"]
		if name == "" && md["job"] != "" && md["index"] != "" {
			name = md["job"] + "/" + md["index"]
		}
		if name == "" && md["compiling"] != "" {
			name = "compiling/" + md["compiling"]
		}
		if name != "" {
			if _, err := servers.Update(ctx, cl.compute, id, servers.UpdateOpts{Name: truncate(name, 255)}).Extract(); err != nil {
				return classify(what+": rename", err, cpi.ErrVMNotFound)
			}
		}
	}
	return nil
}

// CalculateVMCloudProperties picks the smallest flavor (by RAM, then
// vCPUs) that fits the resources: ephemeral_disk_size in its ephemeral
// disk, else in its root disk.
func (c *CPI) CalculateVMCloudProperties(ctx context.Context, req cpi.VMResources) (json.RawMessage, error) {
	cl, err := c.session(ctx)
	if err != nil {
		return nil, err
	}
	pages, err := flavors.ListDetail(cl.compute, flavors.ListOpts{AccessType: flavors.AllAccess}).AllPages(ctx)
	if err != nil {
		return nil, classify("calculate vm cloud properties: list flavors", err, nil)
	}
	all, err := flavors.ExtractFlavors(pages)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(all, func(a, b flavors.Flavor) int {
		if a.RAM != b.RAM {
			return a.RAM - b.RAM
		}
		return a.VCPUs - b.VCPUs
	})
	for _, f := range all {
		disk := int64(max(f.Ephemeral, f.Disk)) * 1024
		if f.VCPUs >= req.CPU && int64(f.RAM) >= req.RAMMB && disk >= req.EphemeralDiskSize {
			return json.Marshal(map[string]string{"instance_type": f.Name})
		}
	}
	return nil, fmt.Errorf("calculate vm cloud properties: no flavor has %d vCPUs, %d MB RAM and %d MB of disk", req.CPU, req.RAMMB, req.EphemeralDiskSize)
}

// ListVMs lists the project's servers whose metadata carries the
// director tag the filter selects (the tags are the server's metadata,
// set in the same call that creates it): every server the plugin made,
// also one whose creation outcome was unknown to the director.
func (c *CPI) ListVMs(ctx context.Context, filter cpi.ListFilter) ([]cpi.VMInfo, error) {
	cl, err := c.session(ctx)
	if err != nil {
		return nil, err
	}
	out := []cpi.VMInfo{}
	err = servers.List(cl.compute, servers.ListOpts{}).EachPage(ctx, func(ctx context.Context, p pagination.Page) (bool, error) {
		all, err := servers.ExtractServers(p)
		if err != nil {
			return false, err
		}
		for _, s := range all {
			if filter.Match(s.Metadata) && s.Status != "DELETED" && s.Status != "SOFT_DELETED" {
				out = append(out, cpi.VMInfo{CID: s.ID, AgentID: s.Metadata[AgentIDKey], Tags: s.Metadata})
			}
		}
		return true, nil
	})
	if err != nil {
		return nil, classify("list vms", err, nil)
	}
	return out, nil
}

// settingsObject decodes the agent settings document.
func settingsObject(raw json.RawMessage) (map[string]json.RawMessage, error) {
	m := map[string]json.RawMessage{}
	if len(raw) == 0 {
		return m, nil
	}
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, fmt.Errorf("create vm: agent settings are not a JSON object")
	}
	return m, nil
}

// maxUserData is Nova's bound on user data (65535 bytes once base64).
const maxUserData = 65535 * 3 / 4

// userData is the agent settings as the server's user data: networks as
// configured (each with use_dhcp, and the port's MAC for manual ones),
// vm.name, and the system and ephemeral disks. The server id is not known
// yet: the agent reads it from meta_data.json (uuid).
func userData(settings map[string]json.RawMessage, name string, private []*vmNetwork, fl flavors.Flavor, dhcp bool) ([]byte, error) {
	nets := map[string]any{}
	for _, vn := range private {
		n := map[string]any{}
		b, _ := json.Marshal(vn.net)
		_ = json.Unmarshal(b, &n)
		n["use_dhcp"] = dhcp
		if vn.mac != "" {
			n["mac"] = vn.mac
		}
		nets[vn.name] = n
	}
	b, err := json.Marshal(nets)
	if err != nil {
		return nil, fmt.Errorf("encode networks: %w", err)
	}
	settings["networks"] = b
	vm := map[string]json.RawMessage{}
	if raw, ok := settings["vm"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &vm); err != nil {
			vm = map[string]json.RawMessage{}
		}
	}
	delete(vm, "cid")
	vm["name"], _ = json.Marshal(name)
	settings["vm"], _ = json.Marshal(vm)
	disks := map[string]json.RawMessage{}
	if raw, ok := settings["disks"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &disks); err != nil || disks == nil {
			return nil, fmt.Errorf("agent settings: disks is not an object")
		}
	}
	disks["system"], _ = json.Marshal(systemDevice)
	if fl.Ephemeral > 0 {
		disks["ephemeral"], _ = json.Marshal(ephemeralDevice)
	}
	settings["disks"], _ = json.Marshal(disks)
	doc, err := json.Marshal(settings)
	if err != nil {
		return nil, fmt.Errorf("encode agent settings: %w", err)
	}
	if len(doc) > maxUserData {
		return nil, fmt.Errorf("agent settings take %d bytes, more than the %d Nova's user data holds", len(doc), maxUserData)
	}
	return doc, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
