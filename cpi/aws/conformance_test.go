package aws

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/cpitest"
)

// testCloud is real AWS when COMPLEAT_LIVE_AWS=1 (see liveCloud), else moto.
func testCloud(t *testing.T) *cloud {
	t.Helper()
	if os.Getenv("COMPLEAT_LIVE_AWS") == "1" {
		return liveCloud(t)
	}
	return motoCloud(t)
}

// conformanceConfig is the suite's configuration on the cloud: the light
// stemcell of its AMI, VMs on a manual network in its subnet, and a VMAlive
// that asks EC2 whether the instance runs.
func conformanceConfig(t *testing.T, c *cloud, manual bool) cpitest.Config {
	img, stemcellProps := c.lightStemcell(t)
	cfg := cpitest.Config{
		Stemcell:                 cpi.CreateStemcellRequest{ImagePath: img, CloudProperties: stemcellProps},
		VMCloudProperties:        json.RawMessage(`{"instance_type": "` + c.instanceType + `", "ephemeral_disk": {"size": 1024}, "tags": {"purpose": "cpitest"}}`),
		DiskCloudProperties:      json.RawMessage(`{"type": "gp3"}`),
		InvalidVMCloudProperties: json.RawMessage(`{"instance_type": "` + c.instanceType + `", "ephemeral_disk": {"size": "big"}}`),
		InvalidField:             "ephemeral_disk.size",
		VMAlive: func(t *testing.T, cid string) bool {
			return c.instanceState(t, cid) == types.InstanceStateNameRunning
		},
		DeliveredSettings: c.userData,
		// Unknown keys are ignored on purpose (docs/cpi/aws.md): vm
		// extensions may carry keys for other tools.
		IgnoresUnknownKeys: true,
		// An elastic IP of the account for each vip network (released when
		// the test ends).
		VIPNetworks: func(int) map[string]cpi.Network {
			eip, err := c.ec2.AllocateAddress(t.Context(), &ec2.AllocateAddressInput{Domain: types.DomainTypeVpc})
			if err != nil {
				t.Errorf("allocate an elastic ip: %v", err)
				return nil
			}
			t.Cleanup(func() {
				_, _ = c.ec2.ReleaseAddress(context.Background(), &ec2.ReleaseAddressInput{AllocationId: eip.AllocationId})
			})
			return map[string]cpi.Network{"public": {Type: "vip", IP: aws.ToString(eip.PublicIp)}}
		},
		Timeout: 2 * time.Minute,
	}
	if c.endpoint == "" {
		cfg.Timeout = 15 * time.Minute
	}
	netProps, _ := json.Marshal(map[string]string{"subnet": c.subnet})
	// The manual networks of the Networks test: addresses of their own,
	// each used once (moto keeps the address of a terminated instance).
	var nextManual atomic.Int32
	cfg.ManualNetworks = func(int) map[string]cpi.Network {
		nets := cpitest.ManualNetworks(c.ipBase)(1000 + int(nextManual.Add(1)))
		n := nets["default"]
		n.CloudProperties = netProps
		nets["default"] = n
		return nets
	}
	if manual {
		// moto never frees the address of a terminated instance, so every
		// VM of the run gets the next address, not base+i of its test.
		base := cpitest.ManualNetworks(c.ipBase)
		var next atomic.Int32
		cfg.Networks = func(i int) map[string]cpi.Network {
			if c.endpoint != "" {
				i = int(next.Add(1)) - 1
			}
			nets := base(i)
			n := nets["default"]
			n.CloudProperties = netProps
			nets["default"] = n
			return nets
		}
	} else {
		cfg.Networks = func(int) map[string]cpi.Network {
			return map[string]cpi.Network{"default": {Type: "dynamic", Default: []string{"dns", "gateway"}, CloudProperties: netProps}}
		}
	}
	return cfg
}

// The suite in-process over real gRPC, on a manual network.
func TestConformanceInProcess(t *testing.T) {
	c := testCloud(t)
	cpitest.RunInProcess(t, func(t *testing.T) cpi.CPI { return c.newCPI(t) }, conformanceConfig(t, c, true))
}

// The suite against the cpi-aws binary on a dynamic network, properties in
// COMPLEAT_CPI_PROPERTIES: started through cpi/host and kept running, and
// called the BOSH way (a process per call, JSON on stdin), which works
// because the plugin keeps all its state in EC2.
func TestConformanceBinary(t *testing.T) {
	c := testCloud(t)
	bin := pluginBinary(t)
	cfg := conformanceConfig(t, c, false)
	t.Run("grpc", func(t *testing.T) { cpitest.RunBinary(t, bin, c.props, cfg) })
	props := c.props
	if c.endpoint != "" {
		// A process per call, eight at once: moto now and then resets a
		// connection mid-response (the SDK reads the RST as "use of closed
		// network connection" and counts it retryable), which a retry
		// absorbs, as the default retries do in production.
		props = motoProps(c.endpoint, map[string]any{"max_retries": 2})
	}
	t.Run("json", func(t *testing.T) { cpitest.RunJSON(t, bin, props, cfg) })
}

// pluginBinary is $COMPLEAT_BIN/cpi-aws when set, else cpi-aws built into
// the test's directory.
func pluginBinary(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("COMPLEAT_BIN"); dir != "" {
		p := filepath.Join(dir, "cpi-aws")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p := filepath.Join(t.TempDir(), "cpi-aws")
	out, err := exec.Command("go", "build", "-o", p, "./cmd/cpi-aws").CombinedOutput()
	if err != nil {
		t.Fatalf("build cpi-aws: %v\n%s", err, out)
	}
	return p
}

// liveCloud is real AWS, configured from the environment:
//
//	COMPLEAT_LIVE_AWS=1                 turns live mode on
//	AWS_REGION                          the region (required)
//	AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN)
//	                                    static keys; without them the default
//	                                    chain (profile, instance profile)
//	COMPLEAT_AWS_SUBNET_ID              a subnet the VMs go in (required)
//	COMPLEAT_AWS_AMI_ID                 an AMI in the region (required)
//	COMPLEAT_AWS_IP_BASE                first of 8 free addresses in the subnet
//	                                    (required)
//	COMPLEAT_AWS_INSTANCE_TYPE          default t3.micro
//
// It costs money: a few t3.micro instances and 1 GiB volumes for minutes.
func liveCloud(t *testing.T) *cloud {
	t.Helper()
	env := func(k string) string {
		v := os.Getenv(k)
		if v == "" && k != "AWS_ACCESS_KEY_ID" && k != "COMPLEAT_AWS_INSTANCE_TYPE" {
			t.Skipf("COMPLEAT_LIVE_AWS=1 but %s is not set (see docs/cpi/aws.md, live suite)", k)
		}
		return v
	}
	c := &cloud{
		region:       env("AWS_REGION"),
		subnet:       env("COMPLEAT_AWS_SUBNET_ID"),
		ami:          env("COMPLEAT_AWS_AMI_ID"),
		ipBase:       env("COMPLEAT_AWS_IP_BASE"),
		instanceType: env("COMPLEAT_AWS_INSTANCE_TYPE"),
	}
	if c.instanceType == "" {
		c.instanceType = "t3.micro"
	}
	p := map[string]any{"region": c.region, "poll_interval": "3s"}
	if key := env("AWS_ACCESS_KEY_ID"); key != "" {
		p["access_key_id"] = key
		p["secret_access_key"] = os.Getenv("AWS_SECRET_ACCESS_KEY")
		if tok := os.Getenv("AWS_SESSION_TOKEN"); tok != "" {
			p["session_token"] = tok
		}
	} else {
		p["credentials_source"] = CredentialsEnvOrProfile
	}
	c.props, _ = json.Marshal(p)
	cfg, err := config.LoadDefaultConfig(t.Context(), config.WithRegion(c.region))
	if err != nil {
		t.Fatalf("live aws: %v", err)
	}
	c.ec2 = ec2.NewFromConfig(cfg)
	return c
}

// userData is the settings document EC2 holds as the instance's user data:
// what the agent reads from IMDS.
func (c *cloud) userData(ctx context.Context, vm string) (json.RawMessage, error) {
	out, err := c.ec2.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{
		InstanceId: aws.String(vm), Attribute: types.InstanceAttributeNameUserData,
	})
	if err != nil {
		return nil, err
	}
	if out.UserData == nil {
		return nil, fmt.Errorf("instance %s has no user data", vm)
	}
	return base64.StdEncoding.DecodeString(aws.ToString(out.UserData.Value))
}
