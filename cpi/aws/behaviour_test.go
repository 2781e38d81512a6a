package aws

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/compleat/compleat/cpi"
)

// What the conformance suite does not look at, against one moto: what
// reaches EC2 (user data, addresses, groups, tags, zones, devices, sizes).
func TestEC2(t *testing.T) {
	c := motoCloud(t)
	impl := c.newCPI(t)
	img, stemcellProps := c.lightStemcell(t)
	stemcell, err := impl.CreateStemcell(ctx(t), cpi.CreateStemcellRequest{ImagePath: img, CloudProperties: stemcellProps})
	if err != nil {
		t.Fatalf("CreateStemcell: %v", err)
	}
	vpc := c.subnetVPC(t)
	sg, err := c.ec2.CreateSecurityGroup(ctx(t), &ec2.CreateSecurityGroupInput{
		GroupName: aws.String("web"), Description: aws.String("web"), VpcId: aws.String(vpc),
	})
	if err != nil {
		t.Fatalf("create security group: %v", err)
	}
	c.createInstanceProfile(t, "compleat-vm")
	netProps, _ := json.Marshal(map[string]string{"subnet": c.subnet})
	manual := func(ip string) map[string]cpi.Network {
		return map[string]cpi.Network{"private": {
			Type: "manual", IP: ip, Netmask: "255.255.0.0", Gateway: "10.20.0.1",
			Default: []string{"dns", "gateway"}, CloudProperties: netProps,
		}}
	}
	settings := `{"agent_id": "agent-1", "vm": {"cid": "stale", "name": "web/3"}, "mbus": {"url": "nats://10.0.0.6:4222"}, "disks": {"persistent": {}}}`
	vmProps := `{"instance_type": "m6i.large", "security_groups": ["web"], "key_name": "ops",
		"iam_instance_profile": "compleat-vm", "root_disk": {"size": 20480, "type": "gp3"},
		"ephemeral_disk": {"size": 4096, "type": "gp2"}, "tags": {"team": "platform"}}`
	res, err := impl.CreateVM(ctx(t), cpi.CreateVMRequest{
		AgentID: "agent-1", StemcellCID: stemcell, CloudProperties: json.RawMessage(vmProps),
		Networks: manual("10.20.9.5"), AgentSettings: json.RawMessage(settings),
	})
	if err != nil {
		t.Fatalf("CreateVM: %v", err)
	}
	vm := res.CID
	t.Cleanup(func() { _ = impl.DeleteVM(t.Context(), vm) })

	t.Run("instance", func(t *testing.T) {
		i := c.instance(t, vm)
		if got := aws.ToString(i.PrivateIpAddress); got != "10.20.9.5" || res.Networks["private"].IP != "10.20.9.5" {
			t.Errorf("private ip = %s (result %s), want 10.20.9.5", got, res.Networks["private"].IP)
		}
		if got := aws.ToString(i.SubnetId); got != c.subnet {
			t.Errorf("subnet = %s, want %s", got, c.subnet)
		}
		if i.InstanceType != "m6i.large" || aws.ToString(i.KeyName) != "ops" {
			t.Errorf("instance type %s, key %s; want m6i.large, ops", i.InstanceType, aws.ToString(i.KeyName))
		}
		if i.IamInstanceProfile == nil || !strings.HasSuffix(aws.ToString(i.IamInstanceProfile.Arn), "/compleat-vm") {
			t.Errorf("instance profile %+v, want compleat-vm", i.IamInstanceProfile)
		}
		var groups []string
		for _, g := range i.SecurityGroups {
			groups = append(groups, aws.ToString(g.GroupId))
		}
		if !slices.Equal(groups, []string{aws.ToString(sg.GroupId)}) {
			t.Errorf("security groups = %v, want [%s] (the group named web in the subnet's vpc)", groups, aws.ToString(sg.GroupId))
		}
		if tag(i.Tags, "team") != "platform" || tag(i.Tags, "compleat:agent_id") != "agent-1" {
			t.Errorf("tags = %v, want team=platform and compleat:agent_id=agent-1", i.Tags)
		}
		devices := map[string]string{}
		for _, m := range i.BlockDeviceMappings {
			if m.Ebs != nil {
				devices[aws.ToString(m.DeviceName)] = aws.ToString(m.Ebs.VolumeId)
			}
		}
		eph, ok := devices[ephemeralDevice]
		if !ok {
			t.Fatalf("no ephemeral volume at %s: %v", ephemeralDevice, devices)
		}
		v := c.volumeOf(t, eph)
		if aws.ToInt32(v.Size) != 4 || v.VolumeType != "gp2" {
			t.Errorf("ephemeral volume %d GiB %s, want 4 GiB gp2", aws.ToInt32(v.Size), v.VolumeType)
		}
	})

	t.Run("user data", func(t *testing.T) {
		out, err := c.ec2.DescribeInstanceAttribute(ctx(t), &ec2.DescribeInstanceAttributeInput{
			InstanceId: aws.String(vm), Attribute: types.InstanceAttributeNameUserData,
		})
		if err != nil {
			t.Fatal(err)
		}
		raw, err := base64.StdEncoding.DecodeString(aws.ToString(out.UserData.Value))
		if err != nil {
			t.Fatalf("user data is not base64: %v", err)
		}
		var doc struct {
			AgentID  string                 `json:"agent_id"`
			VM       map[string]string      `json:"vm"`
			Mbus     struct{ URL string }   `json:"mbus"`
			Networks map[string]cpi.Network `json:"networks"`
			Disks    struct {
				Ephemeral  string          `json:"ephemeral"`
				Persistent json.RawMessage `json:"persistent"`
			} `json:"disks"`
		}
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatalf("user data is not the settings JSON: %v\n%s", err, raw)
		}
		if doc.AgentID != "agent-1" || doc.Mbus.URL != "nats://10.0.0.6:4222" || string(doc.Disks.Persistent) != "{}" {
			t.Errorf("settings not delivered as given: %s", raw)
		}
		if _, ok := doc.VM["cid"]; ok || doc.VM["name"] != "web/3" {
			t.Errorf("settings hold vm %v, want vm.name kept and no vm.cid (the agent reads its instance id from IMDS)", doc.VM)
		}
		if n := doc.Networks["private"]; n.IP != "10.20.9.5" || n.Type != "manual" {
			t.Errorf("settings networks = %+v, want the manual network at 10.20.9.5", doc.Networks)
		}
		if doc.Disks.Ephemeral != ephemeralDevice {
			t.Errorf("settings disks.ephemeral = %q, want %s", doc.Disks.Ephemeral, ephemeralDevice)
		}
	})

	t.Run("metadata", func(t *testing.T) {
		if err := impl.SetVMMetadata(ctx(t), vm, map[string]string{"deployment": "web", "job": "web", "index": "3", "aws:x": "no"}); err != nil {
			t.Fatal(err)
		}
		i := c.instance(t, vm)
		if tag(i.Tags, "Name") != "web/3" || tag(i.Tags, "deployment") != "web" || tag(i.Tags, "aws:x") != "" {
			t.Errorf("tags = %v, want Name=web/3, deployment=web and no aws: key", i.Tags)
		}
		for _, m := range i.BlockDeviceMappings {
			v := c.volumeOf(t, aws.ToString(m.Ebs.VolumeId))
			if tag(v.Tags, "Name") != "web/3" {
				t.Errorf("volume %s at %s tagged %v, want Name=web/3 like its instance", aws.ToString(v.VolumeId), aws.ToString(m.DeviceName), v.Tags)
			}
		}
	})

	t.Run("disks", func(t *testing.T) {
		d1, err := impl.CreateDisk(ctx(t), cpi.CreateDiskRequest{SizeMB: 1500, VMCID: vm,
			CloudProperties: json.RawMessage(`{"type": "io2", "iops": 3000, "encrypted": true}`)})
		if err != nil {
			t.Fatalf("CreateDisk: %v", err)
		}
		t.Cleanup(func() { _ = impl.DeleteDisk(t.Context(), d1) })
		v := c.volumeOf(t, d1)
		if aws.ToInt32(v.Size) != 2 || v.VolumeType != "io2" || aws.ToInt32(v.Iops) != 3000 || !aws.ToBool(v.Encrypted) {
			t.Errorf("volume %d GiB %s iops %d encrypted %v; want 2 GiB io2 iops 3000 encrypted", aws.ToInt32(v.Size), v.VolumeType, aws.ToInt32(v.Iops), aws.ToBool(v.Encrypted))
		}
		if az := aws.ToString(v.AvailabilityZone); az != testRegion+"a" {
			t.Errorf("disk in %s, want the vm's zone %sa", az, testRegion)
		}
		d2, err := impl.CreateDisk(ctx(t), cpi.CreateDiskRequest{SizeMB: 1024, VMCID: vm})
		if err != nil {
			t.Fatalf("CreateDisk: %v", err)
		}
		t.Cleanup(func() { _ = impl.DeleteDisk(t.Context(), d2) })

		h1, err := impl.AttachDisk(ctx(t), vm, d1)
		if err != nil {
			t.Fatalf("AttachDisk: %v", err)
		}
		h2, err := impl.AttachDisk(ctx(t), vm, d2)
		if err != nil {
			t.Fatalf("AttachDisk: %v", err)
		}
		if h1 != (cpi.DiskHint{Path: "/dev/sdf", VolumeID: d1}) || h2 != (cpi.DiskHint{Path: "/dev/sdg", VolumeID: d2}) {
			t.Errorf("hints %+v, %+v; want /dev/sdf and /dev/sdg with their volume ids", h1, h2)
		}
		if again, err := impl.AttachDisk(ctx(t), vm, d1); err != nil || again != h1 {
			t.Errorf("AttachDisk of an attached disk = %+v, %v; want %+v again", again, err, h1)
		}
		disks, err := impl.GetDisks(ctx(t), vm)
		if want := []string{d1, d2}; err != nil || !slices.Equal(disks, sorted(want)) {
			t.Errorf("GetDisks = %v, %v; want %v (no root, no ephemeral)", disks, err, sorted(want))
		}
		if err := impl.DetachDisk(ctx(t), vm, d1); err != nil {
			t.Fatalf("DetachDisk: %v", err)
		}
		if err := impl.DetachDisk(ctx(t), vm, d1); !errors.Is(err, cpi.ErrDiskNotFound) {
			t.Errorf("DetachDisk of a detached disk: %v, want DiskNotFound", err)
		}
		if h, err := impl.AttachDisk(ctx(t), vm, d1); err != nil || h.Path != "/dev/sdf" {
			t.Errorf("AttachDisk after detach = %+v, %v; want the freed /dev/sdf", h, err)
		}
		if err := impl.DeleteDisk(ctx(t), d2); err == nil {
			t.Error("DeleteDisk of an attached disk succeeded")
		}
		for _, d := range []string{d1, d2} {
			if err := impl.DetachDisk(ctx(t), vm, d); err != nil {
				t.Fatalf("DetachDisk: %v", err)
			}
		}

		if err := impl.ResizeDisk(ctx(t), d2, 4096); err != nil {
			t.Fatalf("ResizeDisk: %v", err)
		}
		if got := aws.ToInt32(c.volumeOf(t, d2).Size); got != 4 {
			t.Errorf("size after ResizeDisk(4096 MB) = %d GiB, want 4", got)
		}
		if err := impl.ResizeDisk(ctx(t), d2, 2048); err == nil {
			t.Error("ResizeDisk to a smaller size succeeded; EBS cannot shrink")
		}
		if err := impl.ResizeDisk(ctx(t), "vol-0000missing", 2048); !errors.Is(err, cpi.ErrDiskNotFound) {
			t.Errorf("ResizeDisk of a missing disk: %v, want DiskNotFound", err)
		}

		snap, err := impl.SnapshotDisk(ctx(t), d2, map[string]string{"deployment": "web", "job": "db", "index": "0"})
		if err != nil {
			t.Fatalf("SnapshotDisk: %v", err)
		}
		out, err := c.ec2.DescribeSnapshots(ctx(t), &ec2.DescribeSnapshotsInput{SnapshotIds: []string{snap}})
		if err != nil || len(out.Snapshots) != 1 {
			t.Fatalf("describe snapshot %s: %v", snap, err)
		}
		s := out.Snapshots[0]
		if aws.ToString(s.VolumeId) != d2 || tag(s.Tags, "deployment") != "web" || aws.ToString(s.Description) != "web/db/0" {
			t.Errorf("snapshot of %s, tags %v, description %q; want of %s tagged deployment=web, web/db/0", aws.ToString(s.VolumeId), s.Tags, aws.ToString(s.Description), d2)
		}
		if err := impl.DeleteSnapshot(ctx(t), snap); err != nil {
			t.Fatalf("DeleteSnapshot: %v", err)
		}
	})

	t.Run("invalid cloud properties", func(t *testing.T) {
		for _, tc := range []struct{ props, field string }{
			{`{}`, "instance_type"},
			{`{"instance_type": "large"}`, "instance_type"},
			{`{"instance_type": "t3.micro", "security_groups": ["nope"]}`, "security_groups"},
			{`{"instance_type": "t3.micro", "root_disk": {"size": 10240, "type": "fast"}}`, "root_disk.type"},
			{`{"instance_type": "t3.micro", "ephemeral_disk": {"type": "gp2", "throughput": 200}}`, "ephemeral_disk.throughput"},
			{`{"instance_type": "t3.micro", "spot_bid_price": -1}`, "spot_bid_price"},
			{`{"instance_type": "t3.micro", "tags": {"aws:owner": "me"}}`, "tags"},
		} {
			_, err := impl.CreateVM(ctx(t), cpi.CreateVMRequest{
				AgentID: "agent-bad", StemcellCID: stemcell, CloudProperties: json.RawMessage(tc.props),
				Networks: manual("10.20.9.50"), AgentSettings: json.RawMessage(`{}`),
			})
			if got := fieldOf(err); !errors.Is(err, cpi.ErrInvalidCloudProperties) || got != tc.field {
				t.Errorf("CreateVM with %s: %v (field %q), want InvalidCloudProperties naming %s", tc.props, err, got, tc.field)
			}
		}
		_, err := impl.CreateVM(ctx(t), cpi.CreateVMRequest{
			AgentID: "agent-bad", StemcellCID: stemcell, CloudProperties: json.RawMessage(`{"instance_type": "t3.micro"}`),
			Networks: map[string]cpi.Network{"private": {Type: "manual", IP: "10.20.9.51"}},
		})
		if got := fieldOf(err); got != "networks.private.subnet" {
			t.Errorf("CreateVM on a manual network without subnet: %v, want InvalidCloudProperties naming networks.private.subnet", err)
		}
		for _, tc := range []struct{ props, field string }{
			{`{"type": "io1"}`, "iops"},
			{`{"type": "gp3", "iops": "many"}`, "iops"},
			{`{"type": "st1", "throughput": 500}`, "throughput"},
			{`{"encrypted": false, "kms_key_arn": "arn:aws:kms:us-east-1:1:key/k"}`, "kms_key_arn"},
		} {
			_, err := impl.CreateDisk(ctx(t), cpi.CreateDiskRequest{SizeMB: 1024, CloudProperties: json.RawMessage(tc.props)})
			if got := fieldOf(err); !errors.Is(err, cpi.ErrInvalidCloudProperties) || got != tc.field {
				t.Errorf("CreateDisk with %s: %v (field %q), want InvalidCloudProperties naming %s", tc.props, err, got, tc.field)
			}
		}
		if instances := c.liveInstances(t, "agent-bad"); instances != 0 {
			t.Errorf("%d instances of refused creates", instances)
		}
	})

	t.Run("vip", func(t *testing.T) {
		eip, err := c.ec2.AllocateAddress(ctx(t), &ec2.AllocateAddressInput{Domain: types.DomainTypeVpc})
		if err != nil {
			t.Fatalf("allocate address: %v", err)
		}
		nets := manual("10.20.9.6")
		nets["public"] = cpi.Network{Type: "vip", IP: aws.ToString(eip.PublicIp)}
		res, err := impl.CreateVM(ctx(t), cpi.CreateVMRequest{
			AgentID: "agent-2", StemcellCID: stemcell, CloudProperties: json.RawMessage(`{"instance_type": "t3.micro"}`),
			Networks: nets, AgentSettings: json.RawMessage(`{"agent_id": "agent-2"}`),
		})
		if err != nil {
			t.Fatalf("CreateVM with a vip network: %v", err)
		}
		t.Cleanup(func() { _ = impl.DeleteVM(t.Context(), res.CID) })
		out, err := c.ec2.DescribeAddresses(ctx(t), &ec2.DescribeAddressesInput{PublicIps: []string{aws.ToString(eip.PublicIp)}})
		if err != nil || len(out.Addresses) != 1 || aws.ToString(out.Addresses[0].InstanceId) != res.CID {
			t.Errorf("elastic ip %s not associated with %s: %+v %v", aws.ToString(eip.PublicIp), res.CID, out, err)
		}
	})

	t.Run("spot", func(t *testing.T) {
		res, err := impl.CreateVM(ctx(t), cpi.CreateVMRequest{
			AgentID: "agent-3", StemcellCID: stemcell, CloudProperties: json.RawMessage(`{"instance_type": "t3.micro", "spot_bid_price": 0.05}`),
			Networks: manual("10.20.9.7"), AgentSettings: json.RawMessage(`{"agent_id": "agent-3"}`),
		})
		if err != nil {
			t.Fatalf("CreateVM with spot_bid_price: %v", err)
		}
		t.Cleanup(func() { _ = impl.DeleteVM(t.Context(), res.CID) })
		if i := c.instance(t, res.CID); i.InstanceLifecycle != types.InstanceLifecycleTypeSpot {
			t.Errorf("instance lifecycle %q, want spot", i.InstanceLifecycle)
		}
	})

	t.Run("stemcells", func(t *testing.T) { testStemcells(t, c) })
}

func testStemcells(t *testing.T, c *cloud) {
	impl := c.newCPI(t)
	img, _ := c.lightStemcell(t)

	for _, tc := range []struct{ props, field string }{
		{`{"ami": {"eu-west-1": "` + c.ami + `"}}`, "ami"},
		{`{"ami": {"us-east-1": "ami-00000000deadbeef0"}}`, "ami.us-east-1"},
		{`{"ami_id": "image-1"}`, "ami_id"},
		{`{}`, "ami"},
		{`{"ami": "` + c.ami + `"}`, "ami"},
	} {
		_, err := impl.CreateStemcell(ctx(t), cpi.CreateStemcellRequest{ImagePath: img, CloudProperties: json.RawMessage(tc.props)})
		if got := fieldOf(err); !errors.Is(err, cpi.ErrInvalidCloudProperties) || got != tc.field {
			t.Errorf("CreateStemcell with %s: %v (field %q), want InvalidCloudProperties naming %s", tc.props, err, got, tc.field)
		}
	}

	heavy := filepath.Join(t.TempDir(), "image")
	if err := os.WriteFile(heavy, []byte("a disk image"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := impl.CreateStemcell(ctx(t), cpi.CreateStemcellRequest{ImagePath: heavy, CloudProperties: json.RawMessage(`{"name": "x"}`)})
	if !errors.Is(err, cpi.ErrNotImplemented) || !strings.Contains(err.Error(), "vmimport") {
		t.Errorf("CreateStemcell of a heavy stemcell: %v, want NotImplemented saying why", err)
	}

	cid, err := impl.CreateStemcell(ctx(t), cpi.CreateStemcellRequest{ImagePath: img, CloudProperties: json.RawMessage(`{"ami_id": "` + c.ami + `"}`)})
	if err != nil {
		t.Fatalf("CreateStemcell with ami_id: %v", err)
	}
	if err := impl.DeleteStemcell(ctx(t), cid); err != nil {
		t.Fatal(err)
	}

	// A launch template that is not a stemcell of the plugin survives
	// DeleteStemcell of its id.
	lt, err := c.ec2.CreateLaunchTemplate(ctx(t), &ec2.CreateLaunchTemplateInput{
		LaunchTemplateName: aws.String("someone-elses"),
		LaunchTemplateData: &types.RequestLaunchTemplateData{ImageId: aws.String(c.ami)},
	})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(lt.LaunchTemplate.LaunchTemplateId)
	if err := impl.DeleteStemcell(ctx(t), id); err != nil {
		t.Fatalf("DeleteStemcell of a foreign launch template: %v", err)
	}
	if _, err := c.ec2.DescribeLaunchTemplates(ctx(t), &ec2.DescribeLaunchTemplatesInput{LaunchTemplateIds: []string{id}}); err != nil {
		t.Errorf("foreign launch template gone after DeleteStemcell: %v", err)
	}
}

func TestCalculateVMCloudProperties(t *testing.T) {
	impl, err := New(t.Context(), json.RawMessage(`{"region": "us-east-1", "access_key_id": "a", "secret_access_key": "b"}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cpu      int
		ram, eph int64
		want     string
	}{
		{1, 512, 0, `{"ephemeral_disk":{"size":1024,"type":"gp3"},"instance_type":"t3.micro"}`},
		{2, 2048, 4096, `{"ephemeral_disk":{"size":4096,"type":"gp3"},"instance_type":"t3.small"}`},
		{2, 3000, 5000, `{"ephemeral_disk":{"size":5120,"type":"gp3"},"instance_type":"t3.medium"}`},
		{4, 8192, 10240, `{"ephemeral_disk":{"size":10240,"type":"gp3"},"instance_type":"t3.xlarge"}`},
		{16, 16384, 1, `{"ephemeral_disk":{"size":1024,"type":"gp3"},"instance_type":"c6i.4xlarge"}`},
		{8, 65536, 1, `{"ephemeral_disk":{"size":1024,"type":"gp3"},"instance_type":"r6i.2xlarge"}`},
	} {
		got, err := impl.CalculateVMCloudProperties(t.Context(), cpi.VMResources{CPU: tc.cpu, RAMMB: tc.ram, EphemeralDiskSize: tc.eph})
		if err != nil || string(got) != tc.want {
			t.Errorf("CalculateVMCloudProperties(%d cpu, %d MB, %d MB) = %s, %v; want %s", tc.cpu, tc.ram, tc.eph, got, err, tc.want)
		}
	}
	_, err = impl.CalculateVMCloudProperties(t.Context(), cpi.VMResources{CPU: 256, RAMMB: 1024})
	if !errors.Is(err, cpi.ErrInvalidCloudProperties) {
		t.Errorf("CalculateVMCloudProperties(256 cpu): %v, want InvalidCloudProperties", err)
	}
}

func TestProperties(t *testing.T) {
	const secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	for _, tc := range []struct{ props, field string }{
		{`{"access_key_id": "AKIA", "secret_access_key": "` + secret + `"}`, "region"},
		{`{"region": "us-east-1"}`, "access_key_id"},
		{`{"region": "us-east-1", "access_key_id": "AKIA"}`, "access_key_id"},
		{`{"region": "us-east-1", "credentials_source": "magic"}`, "credentials_source"},
		{`{"region": "us-east-1", "credentials_source": "env_or_profile", "access_key_id": "AKIA", "secret_access_key": "` + secret + `"}`, "credentials_source"},
		{`{"region": "us-east-1", "access_key_id": "AKIA", "secret_access_key": "` + secret + `", "endpoint": "localhost:5000"}`, "endpoint"},
		{`{"region": "us-east-1", "access_key_id": "AKIA", "secret_access_key": "` + secret + `", "max_retries": -1}`, "max_retries"},
		{`{"region": "us-east-1", "access_key_id": "AKIA", "secret_access_key": "` + secret + `", "poll_interval": "often"}`, "poll_interval"},
		{`{"region": "us-east-1", "access_key_id": "AKIA", "secret_access_key": "` + secret + `", "secret_acess_key": "x"}`, "secret_acess_key"},
		{`{"region": "us-east-1", "access_key_id": "AKIA", "secret_access_key": 42}`, "secret_access_key"},
		{`["` + secret + `"]`, ""},
	} {
		_, err := New(t.Context(), json.RawMessage(tc.props))
		if got := fieldOf(err); !errors.Is(err, cpi.ErrInvalidCloudProperties) || got != tc.field {
			t.Errorf("New(%s): %v (field %q), want InvalidCloudProperties naming %q", tc.props, err, got, tc.field)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("New: error shows the secret key: %v", err)
		}
	}
	if _, err := New(t.Context(), json.RawMessage(`{"region": "eu-west-1", "credentials_source": "env_or_profile"}`)); err != nil {
		t.Errorf("New with the default credentials chain: %v", err)
	}
}

func fieldOf(err error) string {
	var e *cpi.Error
	if errors.As(err, &e) {
		return e.Field
	}
	return "<not a cpi.Error>"
}

func tag(tags []types.Tag, key string) string {
	for _, t := range tags {
		if aws.ToString(t.Key) == key {
			return aws.ToString(t.Value)
		}
	}
	return ""
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
