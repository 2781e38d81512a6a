package aws

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

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/compleat/compleat/cpi"
)

// cleanupTimeout bounds what a failed CreateVM does to remove the instance
// it made, even when the caller's context has ended.
const cleanupTimeout = 5 * time.Minute

// CreateVM runs one instance of the stemcell's AMI on the request's network,
// with the agent settings as user data, and waits until it runs. An
// instance that does not come up is terminated; the error is
// cpi.ErrVMCreationFailed, retryable when EC2 said capacity or throttling.
func (c *CPI) CreateVM(ctx context.Context, req cpi.CreateVMRequest) (cpi.CreateVMResult, error) {
	props, err := parseVMProperties(req.CloudProperties)
	if err != nil {
		return cpi.CreateVMResult{}, err
	}
	primaryName, primary, vips, err := splitNetworks(req.Networks)
	if err != nil {
		return cpi.CreateVMResult{}, err
	}
	netProps, err := parseNetworkProperties(primaryName, primary.CloudProperties)
	if err != nil {
		return cpi.CreateVMResult{}, err
	}
	if primary.Type == "manual" && netProps.Subnet == "" {
		return cpi.CreateVMResult{}, cpi.InvalidCloudProperty("networks."+primaryName+".subnet", "a manual network needs the subnet its range lives in")
	}
	settings, err := settingsObject(req.AgentSettings)
	if err != nil {
		return cpi.CreateVMResult{}, err
	}
	ami, err := c.stemcellImage(ctx, req.StemcellCID)
	if err != nil {
		return cpi.CreateVMResult{}, fmt.Errorf("create vm: %w", err)
	}

	in, err := c.runInput(ctx, req, props, ami, primary, netProps, settings)
	if err != nil {
		return cpi.CreateVMResult{}, err
	}

	out, err := c.runInstances(ctx, in)
	if err != nil && in.InstanceMarketOptions != nil && props.SpotOnDemandFallback && spotUnavailable(err) {
		c.logger.Warn("no spot capacity at the bid; running on demand", "agent_id", req.AgentID, "error", err)
		in.InstanceMarketOptions = nil
		in.ClientToken = aws.String(randomHex(16))
		out, err = c.runInstances(ctx, in)
	}
	if err != nil {
		if code := apiCode(err); strings.HasPrefix(code, "InvalidAMIID.") {
			return cpi.CreateVMResult{}, fmt.Errorf("create vm: stemcell %s (%s): %w", req.StemcellCID, err, cpi.ErrStemcellNotFound)
		}
		return cpi.CreateVMResult{}, creationFailed(fmt.Sprintf("create vm: run instance of %s", ami), err, isRetryable(err))
	}
	if len(out.Instances) != 1 || out.Instances[0].InstanceId == nil {
		return cpi.CreateVMResult{}, creationFailed("create vm", fmt.Errorf("EC2 started %d instances, want 1", len(out.Instances)), false)
	}
	id := aws.ToString(out.Instances[0].InstanceId)
	log := c.logger.With("vm", id, "agent_id", req.AgentID)
	log.Info("instance started", "ami", ami, "instance_type", props.InstanceType)

	inst, err := c.waitRunning(ctx, id)
	if err == nil {
		err = c.associateVIPs(ctx, id, vips)
	}
	if err != nil {
		retry := isRetryable(err)
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if terr := c.terminate(cctx, id); terr != nil {
			log.Error("terminate the instance of a failed create", "error", terr)
			return cpi.CreateVMResult{}, creationFailed(fmt.Sprintf("create vm: instance %s (left behind: %v)", id, terr), err, retry)
		}
		log.Warn("instance of a failed create terminated", "error", err)
		return cpi.CreateVMResult{}, creationFailed(fmt.Sprintf("create vm: instance %s (terminated)", id), err, retry)
	}

	res := cpi.CreateVMResult{CID: id, Networks: map[string]cpi.Network{}}
	for name, n := range req.Networks {
		if name == primaryName && n.IP == "" {
			n.IP = aws.ToString(inst.PrivateIpAddress)
		}
		res.Networks[name] = n
	}
	return res, nil
}

// runInput is the RunInstances request of a CreateVM: image, type,
// network, zone, security groups, key, instance profile, spot options,
// volumes, tags and the agent settings as user data.
func (c *CPI) runInput(ctx context.Context, req cpi.CreateVMRequest, props VMProperties, ami string,
	primary cpi.Network, netProps NetworkProperties, settings map[string]json.RawMessage) (*ec2.RunInstancesInput, error) {
	in := &ec2.RunInstancesInput{
		ImageId:      aws.String(ami),
		InstanceType: types.InstanceType(props.InstanceType),
		MinCount:     aws.Int32(1),
		MaxCount:     aws.Int32(1),
		ClientToken:  aws.String(randomHex(16)),
		MetadataOptions: &types.InstanceMetadataOptionsRequest{
			HttpEndpoint: types.InstanceMetadataEndpointStateEnabled,
			HttpTokens:   types.HttpTokensStateRequired,
		},
	}
	if netProps.Subnet != "" {
		in.SubnetId = aws.String(netProps.Subnet)
	}
	if primary.Type == "manual" {
		in.PrivateIpAddress = aws.String(primary.IP)
	}
	az := props.AvailabilityZone
	if az == "" && netProps.Subnet == "" && len(req.DiskCIDs) > 0 {
		// No subnet decides the zone: go where the persistent disk is.
		if v, err := c.volume(ctx, req.DiskCIDs[0]); err == nil {
			az = aws.ToString(v.AvailabilityZone)
		}
	}
	if az != "" {
		in.Placement = &types.Placement{AvailabilityZone: aws.String(az)}
	}
	if err := c.setSecurityGroups(ctx, in, props, netProps); err != nil {
		return nil, err
	}
	if key := cmpOr(props.KeyName, c.props.DefaultKeyName); key != "" {
		in.KeyName = aws.String(key)
	}
	if p := props.IAMInstanceProfile; p != "" {
		if strings.HasPrefix(p, "arn:") {
			in.IamInstanceProfile = &types.IamInstanceProfileSpecification{Arn: aws.String(p)}
		} else {
			in.IamInstanceProfile = &types.IamInstanceProfileSpecification{Name: aws.String(p)}
		}
	}
	if props.SpotBidPrice != nil {
		in.InstanceMarketOptions = &types.InstanceMarketOptionsRequest{
			MarketType: types.MarketTypeSpot,
			SpotOptions: &types.SpotMarketOptions{
				MaxPrice:                     aws.String(formatPrice(*props.SpotBidPrice)),
				SpotInstanceType:             types.SpotInstanceTypeOneTime,
				InstanceInterruptionBehavior: types.InstanceInterruptionBehaviorTerminate,
			},
		}
	}
	ephemeral, err := c.blockDevices(ctx, in, ami, props)
	if err != nil {
		return nil, err
	}
	// The request's tags (director, deployment, instance, agent id: what
	// ListVMs finds the instance by) win over the cloud properties' tags of
	// the same key; EC2 refuses a key given twice.
	all := maps.Clone(props.Tags)
	if all == nil {
		all = map[string]string{}
	}
	maps.Copy(all, req.Tags)
	all[agentIDTag] = req.AgentID
	tags := tagList(all)
	in.TagSpecifications = []types.TagSpecification{
		{ResourceType: types.ResourceTypeInstance, Tags: tags},
		{ResourceType: types.ResourceTypeVolume, Tags: tags},
	}

	// The settings as delivered: networks as requested (a dynamic address
	// is the instance's DHCP lease, which the agent reads on the VM), no
	// "vm" (the agent reads its instance id from IMDS), the ephemeral
	// disk's device.
	userData, err := userData(settings, req.Networks, ephemeral)
	if err != nil {
		return nil, err
	}
	in.UserData = aws.String(userData)
	return in, nil
}

// spotUnavailable reports whether EC2 refused a spot instance for want of
// spot capacity at the price.
func spotUnavailable(err error) bool {
	switch apiCode(err) {
	case "InsufficientInstanceCapacity", "SpotMaxPriceTooLow", "MaxSpotInstanceCountExceeded", "InsufficientCapacity":
		return true
	}
	return false
}

// ipInUseTimeout bounds how long CreateVM waits for a manual address that
// EC2 still holds for a terminated instance.
const ipInUseTimeout = 2 * time.Minute

// runInstances is RunInstances, tried again while EC2 says the manual
// address is in use: the address of an instance terminated moments ago (a
// recreate) is freed a little later.
func (c *CPI) runInstances(ctx context.Context, in *ec2.RunInstancesInput) (*ec2.RunInstancesOutput, error) {
	deadline := time.Now().Add(ipInUseTimeout)
	for {
		out, err := c.ec2.RunInstances(ctx, in)
		if apiCode(err) != "InvalidIPAddress.InUse" || time.Now().After(deadline) {
			return out, err
		}
		c.logger.Info("address still in use, trying again", "ip", aws.ToString(in.PrivateIpAddress))
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (address %s in use)", ctx.Err(), aws.ToString(in.PrivateIpAddress))
		case <-time.After(max(c.poll, time.Second)):
		}
		in.ClientToken = aws.String(randomHex(16))
	}
}

// creationFailed is cpi.ErrVMCreationFailed for cause; errors.Is also finds
// cause (a context error, say) in it.
func creationFailed(what string, cause error, retryable bool) error {
	if !retryable {
		// A capacity answer may hide in a failed instance's state reason.
		var sr stateReasonError
		retryable = errors.As(cause, &sr) && strings.Contains(sr.code, "InsufficientInstanceCapacity")
	}
	e := &cpi.Error{Code: cpi.CodeVMCreationFailed, Message: fmt.Sprintf("%s: %v", what, cause), Retryable: retryable}
	return fmt.Errorf("%w%w", e, wrapOnly{cause})
}

// stateReasonError is an instance that stopped on its way up.
type stateReasonError struct {
	id, state, code, message string
}

func (e stateReasonError) Error() string {
	return fmt.Sprintf("instance %s is %s: %s %s", e.id, e.state, e.code, e.message)
}

// splitNetworks returns the one manual or dynamic network a VM is placed on
// and its vip networks.
func splitNetworks(nets map[string]cpi.Network) (string, cpi.Network, map[string]cpi.Network, error) {
	var names []string
	vips := map[string]cpi.Network{}
	for name, n := range nets {
		switch n.Type {
		case "manual", "dynamic":
			names = append(names, name)
		case "vip":
			if n.IP == "" {
				return "", cpi.Network{}, nil, cpi.InvalidCloudProperty("networks."+name+".ip", "a vip network needs the elastic IP")
			}
			vips[name] = n
		default:
			return "", cpi.Network{}, nil, cpi.InvalidCloudProperty("networks."+name+".type", "%q is not manual, dynamic or vip", n.Type)
		}
	}
	slices.Sort(names)
	switch len(names) {
	case 0:
		return "", cpi.Network{}, nil, cpi.InvalidCloudProperty("networks", "a VM needs one manual or dynamic network")
	case 1:
	default:
		return "", cpi.Network{}, nil, cpi.InvalidCloudProperty("networks", "a VM is placed on exactly one manual or dynamic network, got %s", strings.Join(names, ", "))
	}
	n := nets[names[0]]
	if n.Type == "manual" && n.IP == "" {
		return "", cpi.Network{}, nil, cpi.InvalidCloudProperty("networks."+names[0]+".ip", "a manual network needs the VM's address")
	}
	return names[0], n, vips, nil
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

// userData is the agent settings as EC2 takes user data (base64), with
// "networks" set, no vm.cid (and no "vm" when nothing else is left in it)
// and disks.ephemeral set to the ephemeral disk's device.
func userData(settings map[string]json.RawMessage, nets map[string]cpi.Network, ephemeral string) (string, error) {
	b, err := json.Marshal(nets)
	if err != nil {
		return "", fmt.Errorf("create vm: encode networks: %w", err)
	}
	settings["networks"] = b
	if raw, ok := settings["vm"]; ok {
		vm := map[string]json.RawMessage{}
		if err := json.Unmarshal(raw, &vm); err != nil {
			vm = nil // not an object: drop it whole
		}
		delete(vm, "cid")
		if len(vm) == 0 {
			delete(settings, "vm")
		} else {
			settings["vm"], _ = json.Marshal(vm)
		}
	}
	if ephemeral != "" {
		disks := map[string]json.RawMessage{}
		if raw, ok := settings["disks"]; ok && string(raw) != "null" {
			if err := json.Unmarshal(raw, &disks); err != nil || disks == nil {
				return "", fmt.Errorf("create vm: agent settings: disks is not an object")
			}
		}
		disks["ephemeral"], _ = json.Marshal(ephemeral)
		settings["disks"], _ = json.Marshal(disks)
	}
	doc, err := json.Marshal(settings)
	if err != nil {
		return "", fmt.Errorf("create vm: encode agent settings: %w", err)
	}
	if len(doc) > maxUserDataBytes {
		return "", fmt.Errorf("create vm: agent settings take %d bytes, more than the %d EC2 user data holds", len(doc), maxUserDataBytes)
	}
	return base64.StdEncoding.EncodeToString(doc), nil
}

// setSecurityGroups puts the VM's security groups in the request: those of
// the cloud properties, else the network's, else the plugin's defaults.
// Names are resolved to ids in the subnet's VPC.
func (c *CPI) setSecurityGroups(ctx context.Context, in *ec2.RunInstancesInput, props VMProperties, net NetworkProperties) error {
	groups := props.SecurityGroups
	if len(groups) == 0 {
		groups = net.SecurityGroups
	}
	if len(groups) == 0 {
		groups = c.props.DefaultSecurityGroups
	}
	var ids, names []string
	for _, g := range groups {
		if strings.HasPrefix(g, "sg-") {
			ids = append(ids, g)
		} else {
			names = append(names, g)
		}
	}
	if len(names) > 0 && net.Subnet == "" {
		// The default VPC takes names.
		in.SecurityGroups = names
		in.SecurityGroupIds = ids
		return nil
	}
	if len(names) > 0 {
		sn, err := c.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{net.Subnet}})
		if err != nil || len(sn.Subnets) == 0 {
			if err == nil || strings.HasPrefix(apiCode(err), "InvalidSubnet") {
				return cpi.InvalidCloudProperty("subnet", "subnet %s does not exist", net.Subnet)
			}
			return classify("create vm: describe subnet "+net.Subnet, err, nil)
		}
		vpc := aws.ToString(sn.Subnets[0].VpcId)
		sg, err := c.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{
			{Name: aws.String("vpc-id"), Values: []string{vpc}},
			{Name: aws.String("group-name"), Values: names},
		}})
		if err != nil {
			return classify("create vm: describe security groups", err, nil)
		}
		byName := map[string]string{}
		for _, g := range sg.SecurityGroups {
			byName[aws.ToString(g.GroupName)] = aws.ToString(g.GroupId)
		}
		for _, n := range names {
			id, ok := byName[n]
			if !ok {
				return cpi.InvalidCloudProperty("security_groups", "no security group named %q in %s", n, vpc)
			}
			ids = append(ids, id)
		}
	}
	in.SecurityGroupIds = ids
	return nil
}

// blockDevices adds the root and ephemeral volumes to the request and
// returns the ephemeral disk's device ("" for none).
func (c *CPI) blockDevices(ctx context.Context, in *ec2.RunInstancesInput, ami string, props VMProperties) (string, error) {
	if r := props.RootDisk; r != nil {
		out, err := c.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{ami}})
		if err != nil || len(out.Images) == 0 {
			if err == nil || isNotFound(err) {
				return "", fmt.Errorf("create vm: image %s: %w", ami, cpi.ErrStemcellNotFound)
			}
			return "", classify("create vm: describe image "+ami, err, nil)
		}
		root := aws.ToString(out.Images[0].RootDeviceName)
		if root == "" {
			root = "/dev/xvda"
		}
		in.BlockDeviceMappings = append(in.BlockDeviceMappings, types.BlockDeviceMapping{
			DeviceName: aws.String(root),
			Ebs:        ebsDevice(r, r.Size),
		})
	}
	size := int64(defaultEphemeralMB)
	e := props.EphemeralDisk
	if e == nil {
		e = &DiskProperties{Type: defaultVolumeType}
	}
	if e.Size != nil {
		size = *e.Size
	}
	if size == 0 {
		return "", nil
	}
	in.BlockDeviceMappings = append(in.BlockDeviceMappings, types.BlockDeviceMapping{
		DeviceName: aws.String(ephemeralDevice),
		Ebs:        ebsDevice(e, &size),
	})
	return ephemeralDevice, nil
}

// ebsDevice is the EBS volume of a block device mapping; without a size
// EC2 takes the image's.
func ebsDevice(d *DiskProperties, sizeMB *int64) *types.EbsBlockDevice {
	b := &types.EbsBlockDevice{
		VolumeType:          types.VolumeType(cmpOr(d.Type, defaultVolumeType)),
		DeleteOnTermination: aws.Bool(true),
		Iops:                d.IOPS,
		Throughput:          d.Throughput,
		Encrypted:           d.Encrypted,
	}
	if sizeMB != nil {
		b.VolumeSize = aws.Int32(gib(*sizeMB))
	}
	if d.KMSKeyARN != "" {
		b.KmsKeyId = aws.String(d.KMSKeyARN)
		b.Encrypted = aws.Bool(true)
	}
	return b
}

// waitRunning waits until the instance runs and returns it.
func (c *CPI) waitRunning(ctx context.Context, id string) (types.Instance, error) {
	var inst types.Instance
	err := c.wait(ctx, "instance "+id+" running", func(ctx context.Context) (bool, error) {
		i, err := c.describeInstance(ctx, id)
		if isNotFound(err) {
			return false, nil // EC2 is eventually consistent right after RunInstances
		}
		if err != nil {
			return false, fmt.Errorf("describe instance %s: %w", id, err)
		}
		inst = i
		switch i.State.Name {
		case types.InstanceStateNameRunning:
			return true, nil
		case types.InstanceStateNamePending:
			return false, nil
		}
		sr := stateReasonError{id: id, state: string(i.State.Name)}
		if i.StateReason != nil {
			sr.code, sr.message = aws.ToString(i.StateReason.Code), aws.ToString(i.StateReason.Message)
		}
		return false, sr
	})
	return inst, err
}

// associateVIPs moves each vip network's elastic IP to the instance.
func (c *CPI) associateVIPs(ctx context.Context, id string, vips map[string]cpi.Network) error {
	for name, n := range vips {
		out, err := c.ec2.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{PublicIps: []string{n.IP}})
		if err != nil || len(out.Addresses) == 0 {
			if err == nil || apiCode(err) == "InvalidAddress.NotFound" {
				return cpi.InvalidCloudProperty("networks."+name+".ip", "%s is not an elastic IP of this account in %s", n.IP, c.region)
			}
			return fmt.Errorf("vip network %s: describe elastic ip %s: %w", name, n.IP, err)
		}
		a := out.Addresses[0]
		assoc := &ec2.AssociateAddressInput{InstanceId: aws.String(id), AllowReassociation: aws.Bool(true)}
		if a.AllocationId != nil {
			assoc.AllocationId = a.AllocationId
		} else {
			assoc.PublicIp = aws.String(n.IP)
		}
		if _, err := c.ec2.AssociateAddress(ctx, assoc); err != nil {
			return fmt.Errorf("vip network %s: associate %s: %w", name, n.IP, err)
		}
	}
	return nil
}

// describeInstance returns the instance; a malformed id answers EC2's
// not-found code without a call.
func (c *CPI) describeInstance(ctx context.Context, id string) (types.Instance, error) {
	if !strings.HasPrefix(id, "i-") {
		return types.Instance{}, notFoundError("InvalidInstanceID.Malformed", "instance "+id)
	}
	out, err := c.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		return types.Instance{}, err
	}
	for _, r := range out.Reservations {
		for _, i := range r.Instances {
			if aws.ToString(i.InstanceId) == id && i.State != nil {
				return i, nil
			}
		}
	}
	return types.Instance{}, notFoundError("InvalidInstanceID.NotFound", "instance "+id)
}

// liveInstance returns the instance unless it is missing or terminated, in
// which case it answers cpi.ErrVMNotFound.
func (c *CPI) liveInstance(ctx context.Context, what, id string) (types.Instance, error) {
	i, err := c.describeInstance(ctx, id)
	if err != nil {
		return types.Instance{}, classify(what, err, cpi.ErrVMNotFound)
	}
	if gone(i) {
		return types.Instance{}, fmt.Errorf("%s: instance is %s: %w", what, i.State.Name, cpi.ErrVMNotFound)
	}
	return i, nil
}

func gone(i types.Instance) bool {
	return i.State.Name == types.InstanceStateNameTerminated || i.State.Name == types.InstanceStateNameShuttingDown
}

// DeleteVM terminates the instance and waits until it is gone. A missing
// instance is success.
func (c *CPI) DeleteVM(ctx context.Context, id string) error {
	if err := c.terminate(ctx, id); err != nil {
		return fmt.Errorf("delete vm %s: %w", id, err)
	}
	return nil
}

func (c *CPI) terminate(ctx context.Context, id string) error {
	if !strings.HasPrefix(id, "i-") {
		return nil
	}
	_, err := c.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return classify("terminate", err, nil)
	}
	return c.wait(ctx, "instance "+id+" terminated", func(ctx context.Context) (bool, error) {
		i, err := c.describeInstance(ctx, id)
		if isNotFound(err) {
			return true, nil
		}
		if err != nil {
			return false, classify("describe", err, nil)
		}
		return i.State.Name == types.InstanceStateNameTerminated, nil
	})
}

// HasVM reports whether the instance exists and is not terminated (or
// terminating).
func (c *CPI) HasVM(ctx context.Context, id string) (bool, error) {
	i, err := c.describeInstance(ctx, id)
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, classify("has vm "+id, err, nil)
	}
	return !gone(i), nil
}

// RebootVM reboots the instance (EC2 reboots asynchronously).
func (c *CPI) RebootVM(ctx context.Context, id string) error {
	what := "reboot vm " + id
	if _, err := c.liveInstance(ctx, what, id); err != nil {
		return err
	}
	_, err := c.ec2.RebootInstances(ctx, &ec2.RebootInstancesInput{InstanceIds: []string{id}})
	return classify(what, err, cpi.ErrVMNotFound)
}

// SetVMMetadata tags the instance and the volumes that live and die with it
// (root, ephemeral) with the metadata, plus Name: the metadata's name, else
// job/index. Persistent disks keep their own tags.
func (c *CPI) SetVMMetadata(ctx context.Context, id string, md map[string]string) error {
	what := "set vm metadata " + id
	inst, err := c.liveInstance(ctx, what, id)
	if err != nil {
		return err
	}
	resources := []string{id}
	for _, m := range inst.BlockDeviceMappings {
		if m.Ebs != nil && aws.ToBool(m.Ebs.DeleteOnTermination) && m.Ebs.VolumeId != nil {
			resources = append(resources, aws.ToString(m.Ebs.VolumeId))
		}
	}
	tags := metadataTags(md)
	name := md["name"]
	if name == "" && md["job"] != "" && md["index"] != "" {
		name = md["job"] + "/" + md["index"]
	}
	if name == "" && md["compiling"] != "" {
		name = "compiling/" + md["compiling"]
	}
	if name != "" {
		tags = append(tags, types.Tag{Key: aws.String("Name"), Value: aws.String(truncate(name, maxTagValueLen))})
	}
	if len(tags) == 0 {
		return nil
	}
	_, err = c.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: resources, Tags: tags})
	return classify(what, err, cpi.ErrVMNotFound)
}

// metadataTags turns director metadata into EC2 tags, leaving out keys EC2
// reserves and cutting what is too long.
func metadataTags(md map[string]string) []types.Tag {
	keys := make([]string, 0, len(md))
	for k := range md {
		if k != "" && !strings.HasPrefix(strings.ToLower(k), "aws:") && k != "name" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	tags := make([]types.Tag, 0, len(keys))
	for _, k := range keys {
		tags = append(tags, types.Tag{Key: aws.String(truncate(k, maxTagKeyLen)), Value: aws.String(truncate(md[k], maxTagValueLen))})
	}
	return tags
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
