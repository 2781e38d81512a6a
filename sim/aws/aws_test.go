package aws

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/compleat/compleat/cpi/proctree"
	"github.com/compleat/compleat/sim/machine"
)

// TestMain doubles as the agent the watcher boots: run with
// --infrastructure aws, the test binary reads its settings through IMDSv2
// as the real agent does (token, user data, instance id) and writes
// "<instance id> <user data>" to <base>/probe, then lists /dev/disk/by-id
// into <base>/dev-disk every 20 ms.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "--infrastructure" {
		fakeAgent(os.Args[1:])
		return
	}
	os.Exit(m.Run())
}

func fakeAgent(args []string) {
	fs := flag.NewFlagSet("agent", flag.ExitOnError)
	fs.String("infrastructure", "", "")
	url := fs.String("metadata-url", "", "")
	base := fs.String("base-dir", proctree.VcapDir, "")
	fs.Parse(args)
	do := func(method, path, header, value string) string {
		req, _ := http.NewRequest(method, *url+path, nil)
		req.Header.Set(header, value)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			fmt.Println(path, resp.Status)
			os.Exit(1)
		}
		return string(b)
	}
	token := do(http.MethodPut, "/latest/api/token", "X-aws-ec2-metadata-token-ttl-seconds", "300")
	ud := do(http.MethodGet, "/latest/user-data", "X-aws-ec2-metadata-token", token)
	id := do(http.MethodGet, "/latest/meta-data/instance-id", "X-aws-ec2-metadata-token", token)
	os.WriteFile(filepath.Join(*base, "probe"), []byte(id+" "+ud), 0o644)
	for {
		var lines []string
		entries, _ := os.ReadDir(filepath.Join(machine.DevDisk, "by-id"))
		for _, e := range entries {
			lines = append(lines, e.Name())
		}
		os.WriteFile(filepath.Join(*base, "dev-disk.new"), []byte(strings.Join(lines, "\n")), 0o644)
		os.Rename(filepath.Join(*base, "dev-disk.new"), filepath.Join(*base, "dev-disk"))
		time.Sleep(20 * time.Millisecond)
	}
}

// startMoto starts moto for one test, or skips the test without it.
func startMoto(t *testing.T) *Moto {
	t.Helper()
	m, err := StartMoto(context.Background(), "127.0.0.1:0", t.TempDir())
	if err == ErrNoMoto {
		t.Skip("moto_server is not on PATH: the AWS simulator runs moto's EC2 server (moto 5, pip install 'moto[server]')")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	return m
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// An instance run through the EC2 API becomes a VM at its private address
// whose agent reads its user data and instance id through IMDSv2; an EBS
// volume attached to it appears at its NVMe name; stop, start and terminate
// reach the VM; a deleted volume's image goes.
func TestWatcher(t *testing.T) {
	ctx := context.Background()
	moto := startMoto(t)
	client := NewClient(moto.URL, "us-east-1")
	network, err := Setup(ctx, client, VPCCIDR, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(network.Subnets) != 2 || network.Subnets[0].CIDR != "127.80.1.0/24" || !strings.HasPrefix(network.AMI, "ami-") {
		t.Fatalf("network %+v", network)
	}
	host, err := machine.NewHost(t.TempDir(), machine.WithStopTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	w, err := NewWatcher(Config{EC2: client, Region: "us-east-1", Host: host, Agent: exe, VolumeDir: t.TempDir(), Reboots: moto.Reboots})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.DeleteAll(context.Background()); host.Close() })
	sync := func() {
		t.Helper()
		if err := w.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		w.Wait()
	}

	run, err := client.RunInstances(ctx, &ec2.RunInstancesInput{
		ImageId: aws.String(network.AMI), InstanceType: types.InstanceTypeT3Small, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		SubnetId: aws.String(network.Subnets[0].ID), PrivateIpAddress: aws.String("127.80.1.20"),
		UserData: aws.String("eyJhZ2VudF9pZCI6ImEtMSJ9"), // {"agent_id":"a-1"}
	})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(run.Instances[0].InstanceId)
	sync()
	vm, ok := host.Get(id)
	if !ok || !vm.Running || vm.IP != "127.80.1.20" {
		t.Fatalf("after run: vm %+v %v", vm, ok)
	}
	probe := filepath.Join(vm.Dir, "root", "probe")
	waitFor(t, "the agent reads its settings", func() bool { return readFile(probe) != "" })
	if got := readFile(probe); got != id+` {"agent_id":"a-1"}` {
		t.Fatalf("the agent read %q", got)
	}

	if host.Isolated() {
		vol, err := client.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1)})
		if err != nil {
			t.Fatal(err)
		}
		volID := aws.ToString(vol.VolumeId)
		if _, err := client.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: vol.VolumeId, InstanceId: aws.String(id), Device: aws.String("/dev/sdf")}); err != nil {
			t.Fatal(err)
		}
		sync()
		nvme := "nvme-Amazon_Elastic_Block_Store_" + strings.ReplaceAll(volID, "-", "")
		listing := filepath.Join(vm.Dir, "root", "dev-disk")
		waitFor(t, "the volume appears", func() bool { return readFile(listing) == nvme })
		if fi, err := os.Stat(filepath.Join(w.cfg.VolumeDir, volID+".img")); err != nil || fi.Size() != 1<<30 {
			t.Fatalf("volume image: %v", err)
		}
		if _, err := client.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: vol.VolumeId, InstanceId: aws.String(id)}); err != nil {
			t.Fatal(err)
		}
		sync()
		waitFor(t, "the volume goes", func() bool { return readFile(listing) == "" })
		if _, err := client.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: vol.VolumeId}); err != nil {
			t.Fatal(err)
		}
		sync()
		if _, err := os.Stat(filepath.Join(w.cfg.VolumeDir, volID+".img")); !os.IsNotExist(err) {
			t.Fatalf("image of a deleted volume: %v", err)
		}
	}

	// RebootInstances reboots the VM: a new agent reads its settings again.
	before, _ := host.Get(id)
	os.Remove(probe)
	if _, err := client.RebootInstances(ctx, &ec2.RebootInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	sync()
	waitFor(t, "the rebooted agent reads its settings", func() bool { return readFile(probe) != "" })
	if after, _ := host.Get(id); !after.Running || after.PID == before.PID || alive(before.PID) {
		t.Fatalf("after reboot: agent %d (running %v), before %d", after.PID, after.Running, before.PID)
	}

	if _, err := client.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	sync()
	if vm, _ := host.Get(id); vm.Running {
		t.Fatal("vm of a stopped instance runs")
	}
	os.Remove(probe)
	if _, err := client.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	sync()
	waitFor(t, "the restarted agent reads its settings", func() bool { return readFile(probe) != "" })

	last, _ := host.Get(id)
	if _, err := client.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	sync()
	if _, ok := host.Get(id); ok {
		t.Fatal("vm of a terminated instance is left")
	}
	if alive(last.PID) {
		t.Fatalf("agent %d of a terminated instance runs", last.PID)
	}

	// As on EC2, the address of a terminated instance is free again (moto
	// needs the correction StartMoto loads for this): a recreated VM gets
	// its address back.
	again, err := client.RunInstances(ctx, &ec2.RunInstancesInput{
		ImageId: aws.String(network.AMI), InstanceType: types.InstanceTypeT3Small, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		SubnetId: aws.String(network.Subnets[0].ID), PrivateIpAddress: aws.String("127.80.1.20"),
	})
	if err != nil {
		t.Fatalf("run an instance at the address of a terminated one: %v", err)
	}
	sync()
	if vm, ok := host.Get(aws.ToString(again.Instances[0].InstanceId)); !ok || !vm.Running {
		t.Fatalf("no vm for the instance that took the address over: %+v", vm)
	}
}

func alive(pid int) bool {
	st, err := proctree.ReadStat(pid)
	return err == nil && st.Live()
}

// An instance outside 127.0.0.0/8 gets no VM, and the watcher goes on.
func TestWatcherRefusesNonLoopbackInstances(t *testing.T) {
	ctx := context.Background()
	moto := startMoto(t)
	client := NewClient(moto.URL, "us-east-1")
	network, err := Setup(ctx, client, VPCCIDR, 1)
	if err != nil {
		t.Fatal(err)
	}
	vpc, _ := client.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.9.0.0/16")})
	sn, _ := client.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: vpc.Vpc.VpcId, CidrBlock: aws.String("10.9.1.0/24")})
	host, _ := machine.NewHost(t.TempDir())
	exe, _ := os.Executable()
	w, _ := NewWatcher(Config{EC2: client, Region: "us-east-1", Host: host, Agent: exe, VolumeDir: t.TempDir()})
	t.Cleanup(func() { w.DeleteAll(context.Background()) })
	run, err := client.RunInstances(ctx, &ec2.RunInstancesInput{
		ImageId: aws.String(network.AMI), InstanceType: types.InstanceTypeT3Small, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		SubnetId: sn.Subnet.SubnetId,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := host.Get(aws.ToString(run.Instances[0].InstanceId)); ok {
		t.Fatal("booted a vm at a non-loopback address")
	}
}

// IMDSv2 as EC2 answers it: a token first, GETs without one are 401, a
// proxied token request is 403, a bad TTL 400.
func TestIMDS(t *testing.T) {
	srv := httptest.NewServer(NewIMDS(Instance{ID: "i-1", PrivateIP: "127.80.1.5", AvailabilityZone: "us-east-1a", UserData: []byte("ud")}))
	defer srv.Close()
	call := func(method, path string, header map[string]string) (int, string) {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := call("GET", "/latest/user-data", nil); code != 401 {
		t.Errorf("GET without a token: %d, want 401", code)
	}
	if code, _ := call("PUT", "/latest/api/token", nil); code != 400 {
		t.Errorf("token without ttl: %d, want 400", code)
	}
	if code, _ := call("PUT", "/latest/api/token", map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "21601"}); code != 400 {
		t.Errorf("token with ttl 21601: %d, want 400", code)
	}
	if code, _ := call("PUT", "/latest/api/token", map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "60", "X-Forwarded-For": "1.2.3.4"}); code != 403 {
		t.Errorf("proxied token request: %d, want 403", code)
	}
	code, tok := call("PUT", "/latest/api/token", map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "60"})
	if code != 200 || tok == "" {
		t.Fatalf("token: %d %q", code, tok)
	}
	auth := map[string]string{"X-aws-ec2-metadata-token": tok}
	for path, want := range map[string]string{
		"/latest/user-data":                             "ud",
		"/latest/meta-data/instance-id":                 "i-1",
		"/latest/meta-data/local-ipv4":                  "127.80.1.5",
		"/latest/meta-data/placement/availability-zone": "us-east-1a",
	} {
		if code, got := call("GET", path, auth); code != 200 || got != want {
			t.Errorf("GET %s: %d %q, want %q", path, code, got, want)
		}
	}
	if code, _ := call("GET", "/latest/meta-data/nothing", auth); code != 404 {
		t.Errorf("unknown path: %d, want 404", code)
	}
	if code, _ := call("GET", "/latest/user-data", map[string]string{"X-aws-ec2-metadata-token": "forged"}); code != 401 {
		t.Errorf("forged token: %d, want 401", code)
	}
}
