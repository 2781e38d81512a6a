package aws

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/compleat/compleat/cpi/tarball"
	"github.com/compleat/compleat/sim/machine"
)

// makeStemcell writes a stemcell tarball as `director create-stemcell`
// does: stemcell.MF and an image, a tar.gz holding agent (none for a light
// stemcell).
func makeStemcell(t *testing.T, agent string) string {
	t.Helper()
	dir := t.TempDir()
	sc := filepath.Join(dir, "stemcell")
	os.Mkdir(sc, 0o755)
	os.WriteFile(filepath.Join(sc, "stemcell.MF"), []byte("name: compleat-local\nversion: \"7\"\noperating_system: linux\n"), 0o644)
	image, err := os.Create(filepath.Join(sc, "image"))
	if err != nil {
		t.Fatal(err)
	}
	if agent != "" {
		img := filepath.Join(dir, "image")
		os.Mkdir(img, 0o755)
		b, err := os.ReadFile(agent)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(img, "agent"), b, 0o755)
		if err := tarball.Create(image, img, nil); err != nil {
			t.Fatal(err)
		}
	}
	image.Close()
	out, err := os.Create(filepath.Join(dir, "stemcell.tgz"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := tarball.Create(out, sc, nil); err != nil {
		t.Fatal(err)
	}
	return out.Name()
}

// A stemcell registered as an AMI boots the agent it carries: instances of
// that AMI run the agent extracted from the stemcell, not --agent.
func TestRegisteredStemcellBootsItsAgent(t *testing.T) {
	ctx := context.Background()
	moto := startMoto(t)
	client := NewClient(moto.URL, "us-east-1")
	network, err := Setup(ctx, client, VPCCIDR, 1)
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	images := t.TempDir()
	img, err := RegisterStemcell(ctx, client, makeStemcell(t, exe), images)
	if err != nil {
		t.Fatal(err)
	}
	if img.Name != "compleat-local-7" || !strings.HasPrefix(img.AMI, "ami-") || img.Agent != filepath.Join(images, img.AMI, "agent") {
		t.Fatalf("image %+v", img)
	}
	described, err := client.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{img.AMI}})
	if err != nil || len(described.Images) != 1 || aws.ToString(described.Images[0].Name) != img.Name {
		t.Fatalf("describe %s: %v %+v", img.AMI, err, described)
	}
	if _, err := RegisterStemcell(ctx, client, makeStemcell(t, ""), images); err == nil || !strings.Contains(err.Error(), "light stemcell") {
		t.Fatalf("registering a light stemcell: %v", err)
	}

	host, err := machine.NewHost(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWatcher(Config{EC2: client, Region: "us-east-1", Host: host, Images: map[string]string{img.AMI: img.Agent}, VolumeDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.DeleteAll(context.Background()) })
	run := func(ami string) string {
		out, err := client.RunInstances(ctx, &ec2.RunInstancesInput{
			ImageId: aws.String(ami), InstanceType: types.InstanceTypeT3Small, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
			SubnetId: aws.String(network.Subnets[0].ID), UserData: aws.String("e30="), // {}
		})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(out.Instances[0].InstanceId)
	}
	id := run(img.AMI)
	other := run(network.AMI) // no agent for it: no --agent given
	if err := w.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	vm, ok := host.Get(id)
	if !ok || !vm.Running {
		t.Fatalf("no running vm for an instance of the stemcell's AMI: %+v", vm)
	}
	if got, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", vm.PID)); got != img.Agent {
		t.Fatalf("the vm runs %q, want the stemcell's agent %s", got, img.Agent)
	}
	waitFor(t, "the stemcell's agent reads its settings", func() bool { return readFile(filepath.Join(vm.Dir, "root", "probe")) == id+" {}" })
	if _, ok := host.Get(other); ok {
		t.Fatal("booted an instance of an AMI that names no agent")
	}
}
