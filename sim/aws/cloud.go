package aws

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// The simulated network: one VPC, a /16 in 127.0.0.0/8, with a /24 subnet
// per zone, so every instance's private address is a loopback address of
// this machine.
const (
	// VPCCIDR is the VPC's default prefix.
	VPCCIDR = "127.80.0.0/16"
	// ImageName is the name of the AMI Setup registers for light stemcells.
	ImageName = "compleat-stemcell"
)

// Credentials are the static keys the simulator's clients use; moto accepts
// any.
const (
	AccessKeyID     = "compleat-sim"
	SecretAccessKey = "compleat-sim-secret"
)

// Subnet is a subnet of the simulated VPC.
type Subnet struct {
	AZ   string `json:"az"`
	ID   string `json:"id"`
	CIDR string `json:"cidr"`
}

// Network is what Setup made in moto.
type Network struct {
	VPC     string   `json:"vpc"`
	Subnets []Subnet `json:"subnets"`
	// AMI is the image a light stemcell names (ami_id).
	AMI string `json:"ami"`
}

// NewClient returns an EC2 client of endpoint (moto) with the simulator's
// static keys; moto's faults fail fast (no retries).
func NewClient(endpoint, region string) *ec2.Client {
	return ec2.New(ec2.Options{
		BaseEndpoint:     aws.String(endpoint),
		Region:           region,
		Credentials:      credentials.NewStaticCredentialsProvider(AccessKeyID, SecretAccessKey, ""),
		RetryMaxAttempts: 1,
	})
}

// Setup makes the simulated network in moto: the VPC cidr (a /16 in
// 127.0.0.0/8, e.g. VPCCIDR) and a subnet 127.X.<n>.0/24 in each of the
// region's first zones (n from 1), and registers the AMI light stemcells
// name.
func Setup(ctx context.Context, client *ec2.Client, cidr string, zones int) (Network, error) {
	var n Network
	prefix, err := netip.ParsePrefix(cidr)
	if err != nil || !prefix.Addr().Is4() || !prefix.Addr().IsLoopback() || prefix.Bits() != 16 || prefix.Masked() != prefix {
		return n, fmt.Errorf("vpc %q: want a /16 inside 127.0.0.0/8, such as %s", cidr, VPCCIDR)
	}
	if zones < 1 || zones > 250 {
		return n, fmt.Errorf("zones %d: want 1 to 250", zones)
	}
	b := prefix.Addr().As4()
	azs, err := client.DescribeAvailabilityZones(ctx, &ec2.DescribeAvailabilityZonesInput{})
	if err != nil {
		return n, fmt.Errorf("describe zones: %w", err)
	}
	if len(azs.AvailabilityZones) < zones {
		return n, fmt.Errorf("the region has %d zones, not %d", len(azs.AvailabilityZones), zones)
	}
	vpc, err := client.CreateVpc(ctx, &ec2.CreateVpcInput{
		CidrBlock:         aws.String(cidr),
		TagSpecifications: nameTag(types.ResourceTypeVpc, "compleat-sim"),
	})
	if err != nil {
		return n, fmt.Errorf("create vpc %s: %w", cidr, err)
	}
	n.VPC = aws.ToString(vpc.Vpc.VpcId)
	for i := 0; i < zones; i++ {
		az := aws.ToString(azs.AvailabilityZones[i].ZoneName)
		cidr := fmt.Sprintf("%d.%d.%d.0/24", b[0], b[1], i+1)
		sn, err := client.CreateSubnet(ctx, &ec2.CreateSubnetInput{
			VpcId: aws.String(n.VPC), CidrBlock: aws.String(cidr), AvailabilityZone: aws.String(az),
			TagSpecifications: nameTag(types.ResourceTypeSubnet, "compleat-sim-"+az),
		})
		if err != nil {
			return n, fmt.Errorf("create subnet %s in %s: %w", cidr, az, err)
		}
		n.Subnets = append(n.Subnets, Subnet{AZ: az, ID: aws.ToString(sn.Subnet.SubnetId), CIDR: cidr})
	}
	img, err := client.RegisterImage(ctx, &ec2.RegisterImageInput{
		Name:           aws.String(ImageName),
		Description:    aws.String("Compleat light stemcell image: the simulator boots the agent it was given"),
		Architecture:   types.ArchitectureValuesX8664,
		RootDeviceName: aws.String("/dev/xvda"),
		BlockDeviceMappings: []types.BlockDeviceMapping{{
			DeviceName: aws.String("/dev/xvda"),
			Ebs:        &types.EbsBlockDevice{VolumeSize: aws.Int32(8), DeleteOnTermination: aws.Bool(true)},
		}},
		VirtualizationType: aws.String("hvm"),
		EnaSupport:         aws.Bool(true),
	})
	if err != nil {
		return n, fmt.Errorf("register image %s: %w", ImageName, err)
	}
	n.AMI = aws.ToString(img.ImageId)
	return n, nil
}

func nameTag(rt types.ResourceType, name string) []types.TagSpecification {
	return []types.TagSpecification{{ResourceType: rt, Tags: []types.Tag{{Key: aws.String("Name"), Value: aws.String(name)}}}}
}
