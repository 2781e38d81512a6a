package aws

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// cloud is where a test runs: moto on loopback, or real AWS in live mode.
type cloud struct {
	// props are the plugin's properties (with credentials).
	props json.RawMessage
	// ec2 is a client of the test's own, to look behind the plugin's back.
	ec2    *ec2.Client
	region string
	ami    string
	subnet string
	// ipBase is the first manual address the suite hands out in subnet.
	ipBase       string
	instanceType string
	// endpoint is moto's URL ("" live).
	endpoint string
}

const testRegion = "us-east-1"

// startMoto starts moto_server on a free loopback port, waits until it
// answers and resets it; the server is killed when the test ends. Its
// request log goes to a file in the test's directory, shown only when the
// test fails.
func startMoto(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		t.Skip("moto_server is not on PATH: the AWS CPI is tested against moto's EC2 server (moto 5, pip install 'moto[server]'); set COMPLEAT_LIVE_AWS=1 for real AWS")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	logPath := filepath.Join(t.TempDir(), "moto.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start moto_server: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil && len(b) > 0 {
				if len(b) > 4096 {
					b = b[len(b)-4096:]
				}
				t.Logf("moto_server log (tail):\n%s", b)
			}
		}
	})
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(url + "/moto-api/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("moto_server exited before answering:\n%s", b)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("moto_server did not answer on %s within a minute", url)
		}
	}
	resp, err := http.Post(url+"/moto-api/reset", "application/json", nil)
	if err != nil {
		t.Fatalf("reset moto: %v", err)
	}
	resp.Body.Close()
	return url
}

// motoCloud starts moto and prepares what the suite needs there: a VPC with
// a subnet for the manual network and one of moto's bundled AMIs.
func motoCloud(t *testing.T) *cloud {
	t.Helper()
	url := startMoto(t)
	c := &cloud{region: testRegion, endpoint: url, ipBase: "10.20.1.10", instanceType: "t3.micro"}
	c.props = motoProps(url, nil)
	c.ec2 = ec2.New(ec2.Options{
		Region:           testRegion,
		BaseEndpoint:     aws.String(url),
		Credentials:      credentials.NewStaticCredentialsProvider("testing", "testing", ""),
		RetryMaxAttempts: 1,
		// moto's server may close an idle kept-alive connection while the
		// test reads an answer on it; the test's own looks use fresh ones.
		HTTPClient: awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
			tr.DisableKeepAlives = true
		}),
	})
	ctx := t.Context()
	vpc, err := c.ec2.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.20.0.0/16")})
	if err != nil {
		t.Fatalf("moto: create vpc: %v", err)
	}
	sn, err := c.ec2.CreateSubnet(ctx, &ec2.CreateSubnetInput{
		VpcId: vpc.Vpc.VpcId, CidrBlock: aws.String("10.20.0.0/16"), AvailabilityZone: aws.String(testRegion + "a"),
	})
	if err != nil {
		t.Fatalf("moto: create subnet: %v", err)
	}
	c.subnet = aws.ToString(sn.Subnet.SubnetId)
	imgs, err := c.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"amazon"}})
	if err != nil || len(imgs.Images) == 0 {
		t.Fatalf("moto: no bundled AMI (DescribeImages owner amazon): %v", err)
	}
	c.ami = aws.ToString(imgs.Images[0].ImageId)
	return c
}

// motoProps are the plugin's properties for moto at url: no retries (moto's
// bugs fail fast) and short polls, unless extra says otherwise.
func motoProps(url string, extra map[string]any) json.RawMessage {
	p := map[string]any{
		"region":            testRegion,
		"access_key_id":     "testing",
		"secret_access_key": "testing",
		"endpoint":          url,
		"max_retries":       0,
		"poll_interval":     "20ms",
	}
	for k, v := range extra {
		p[k] = v
	}
	b, _ := json.Marshal(p)
	return b
}

// newCPI is a plugin on the cloud, logging through t. Its HTTP client
// opens a connection per request: moto's server may close an idle
// kept-alive connection while an answer is read on it, which the tests,
// running without retries (max_retries 0), would report as a failure of
// the call (a later option replaces the client).
func (c *cloud) newCPI(t *testing.T, opts ...Option) *CPI {
	t.Helper()
	fresh := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) { tr.DisableKeepAlives = true })
	impl, err := New(t.Context(), c.props, append([]Option{WithLogger(testLogger(t)), WithHTTPClient(fresh)}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return impl
}

// instanceState is the instance's state as EC2 tells the test.
func (c *cloud) instanceState(t *testing.T, id string) types.InstanceStateName {
	t.Helper()
	out, err := c.ec2.DescribeInstances(t.Context(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil || len(out.Reservations) == 0 || len(out.Reservations[0].Instances) == 0 {
		return ""
	}
	return out.Reservations[0].Instances[0].State.Name
}

// lightStemcell is a light stemcell's image (an empty file) and cloud
// properties naming the cloud's AMI.
func (c *cloud) lightStemcell(t *testing.T) (string, json.RawMessage) {
	t.Helper()
	img := filepath.Join(t.TempDir(), "image")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	props, _ := json.Marshal(map[string]any{
		"name": "compleat-aws-ubuntu", "version": "1.0",
		"ami": map[string]string{c.region: c.ami},
	})
	return img, props
}

// testLogger writes the plugin's log through t.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// ctx is a bounded context for one test step.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// liveInstances counts the instances of the agent that are not terminated.
func (c *cloud) liveInstances(t *testing.T, agentID string) int {
	t.Helper()
	out, err := c.ec2.DescribeInstances(t.Context(), &ec2.DescribeInstancesInput{Filters: []types.Filter{
		{Name: aws.String("tag:compleat:agent_id"), Values: []string{agentID}},
	}})
	if err != nil {
		t.Fatalf("describe instances: %v", err)
	}
	n := 0
	for _, r := range out.Reservations {
		for _, i := range r.Instances {
			if i.State.Name != types.InstanceStateNameTerminated {
				n++
			}
		}
	}
	return n
}

// instance is the instance as EC2 tells the test.
func (c *cloud) instance(t *testing.T, id string) types.Instance {
	t.Helper()
	out, err := c.ec2.DescribeInstances(t.Context(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil || len(out.Reservations) == 0 || len(out.Reservations[0].Instances) == 0 {
		t.Fatalf("describe instance %s: %v", id, err)
	}
	return out.Reservations[0].Instances[0]
}

// volumeOf is the volume as EC2 tells the test.
func (c *cloud) volumeOf(t *testing.T, id string) types.Volume {
	t.Helper()
	out, err := c.ec2.DescribeVolumes(t.Context(), &ec2.DescribeVolumesInput{VolumeIds: []string{id}})
	if err != nil || len(out.Volumes) == 0 {
		t.Fatalf("describe volume %s: %v", id, err)
	}
	return out.Volumes[0]
}

// subnetVPC is the VPC of the cloud's subnet.
func (c *cloud) subnetVPC(t *testing.T) string {
	t.Helper()
	out, err := c.ec2.DescribeSubnets(t.Context(), &ec2.DescribeSubnetsInput{SubnetIds: []string{c.subnet}})
	if err != nil || len(out.Subnets) == 0 {
		t.Fatalf("describe subnet %s: %v", c.subnet, err)
	}
	return aws.ToString(out.Subnets[0].VpcId)
}

// createInstanceProfile creates an IAM instance profile in moto with a
// signed Query API call (the module has no IAM client).
func (c *cloud) createInstanceProfile(t *testing.T, name string) {
	t.Helper()
	body := "Action=CreateInstanceProfile&Version=2010-05-08&InstanceProfileName=" + name
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, c.endpoint+"/", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	sum := sha256.Sum256([]byte(body))
	creds := aws.Credentials{AccessKeyID: "testing", SecretAccessKey: "testing"}
	if err := v4.NewSigner().SignHTTP(t.Context(), creds, req, hex.EncodeToString(sum[:]), "iam", testRegion, time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("moto: create instance profile: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("moto: create instance profile: %s\n%s", resp.Status, b)
	}
}
