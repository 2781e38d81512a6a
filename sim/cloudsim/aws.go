package cloudsim

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	simaws "github.com/compleat/compleat/sim/aws"
	"github.com/compleat/compleat/sim/machine"
)

// runAWS runs moto's EC2 server and the watcher that boots its instances:
// the simulated AWS.
func runAWS(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c common
	var motoAddr, region, vpc string
	var zones int
	var poll time.Duration
	var stemcells stringList
	fs := flag.NewFlagSet("cloudsim aws", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.register(fs)
	fs.StringVar(&motoAddr, "moto", "127.0.0.1:0", "address moto's server listens on (loopback; port 0 picks one)")
	fs.StringVar(&region, "region", "us-east-1", "the region")
	fs.StringVar(&vpc, "vpc-cidr", simaws.VPCCIDR, "the simulated VPC: a /16 in 127.0.0.0/8")
	fs.IntVar(&zones, "zones", 2, "zones with a subnet of the VPC (127.X.<n>.0/24, n from 1)")
	fs.DurationVar(&poll, "poll", 250*time.Millisecond, "how often the watcher looks at EC2")
	fs.Var(&stemcells, "stemcell", "a local stemcell tarball to register as an AMI whose instances boot its agent (repeatable; the first one's AMI is COMPLEAT_AWS_AMI)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := c.check(); err != nil {
		return err
	}
	if zones < 1 || zones > 6 {
		return &UsageError{fmt.Errorf("--zones %d: want 1 to 6", zones)}
	}
	logger := c.logger(stderr).With("cloud", "aws")

	host, err := machine.NewHost(filepath.Join(c.data, "machines"), machine.WithLogger(logger))
	if err != nil {
		return err
	}
	defer host.Close()
	// moto keeps its state in memory: VMs of an earlier run belong to a
	// cloud that is gone.
	left, err := host.Leftovers()
	if err != nil {
		return err
	}
	for _, id := range left {
		if err := host.Delete(ctx, id); err != nil {
			return fmt.Errorf("delete vm %s of an earlier run: %w", id, err)
		}
	}
	if err := os.RemoveAll(filepath.Join(c.data, "volumes")); err != nil {
		return err
	}

	if simaws.StopLeftoverMoto(c.data) {
		logger.Warn("stopped the moto_server an earlier cloudsim left running")
	}
	moto, err := simaws.StartMoto(ctx, motoAddr, c.data)
	if err != nil {
		return err
	}
	defer moto.Stop()
	client := simaws.NewClient(moto.URL, region)
	network, err := simaws.Setup(ctx, client, vpc, zones)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Join(c.data, "images")); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(c.data, "images"), 0o755); err != nil {
		return err
	}
	images := map[string]string{}
	var registered []simaws.Image
	for _, sc := range stemcells {
		img, err := simaws.RegisterStemcell(ctx, client, sc, filepath.Join(c.data, "images"))
		if err != nil {
			return err
		}
		images[img.AMI] = img.Agent
		registered = append(registered, img)
	}
	w, err := simaws.NewWatcher(simaws.Config{
		EC2: client, Region: region, Host: host, Agent: c.agent, Images: images, Reboots: moto.Reboots,
		VolumeDir: filepath.Join(c.data, "volumes"), Poll: poll, Logger: logger,
	})
	if err != nil {
		return err
	}
	defer func() {
		if err := w.DeleteAll(context.WithoutCancel(ctx)); err != nil {
			logger.Error("delete vms", "error", err)
		}
	}()

	b, _ := json.MarshalIndent(struct {
		simaws.Network
		Stemcells []simaws.Image `json:"stemcells,omitempty"`
	}{network, registered}, "", "  ")
	if err := os.WriteFile(filepath.Join(c.data, "network.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	// The AMI light stemcells name: the first registered stemcell's, else
	// the one every instance boots --agent from.
	ami := network.AMI
	if len(registered) > 0 {
		ami = registered[0].AMI
	}
	vars := [][2]string{
		{"AWS_ENDPOINT_URL", moto.URL},
		{"AWS_ACCESS_KEY_ID", simaws.AccessKeyID},
		{"AWS_SECRET_ACCESS_KEY", simaws.SecretAccessKey},
		{"AWS_DEFAULT_REGION", region},
		{"AWS_REGION", region},
		{"COMPLEAT_AWS_AMI", ami},
		{"COMPLEAT_AWS_VPC", network.VPC},
	}
	for i, sn := range network.Subnets {
		vars = append(vars, [2]string{fmt.Sprintf("COMPLEAT_AWS_SUBNET_%d", i+1), sn.ID}, [2]string{fmt.Sprintf("COMPLEAT_AWS_AZ_%d", i+1), sn.AZ})
	}
	comment := fmt.Sprintf("The simulated AWS of cloudsim (pid %d): moto's EC2 server, VMs booted on this machine.\nSource it, then use the aws CLI or SDKs as usual: aws ec2 describe-instances", os.Getpid())
	if err := writeEnv(c.envFile, comment, vars); err != nil {
		return fmt.Errorf("write %s: %w", c.envFile, err)
	}
	defer os.Remove(c.envFile)
	fmt.Fprintf(stdout, "Simulated AWS ready: EC2 at %s (moto pid %d), region %s\n  vpc %s %s, ami %s (light stemcells: ami_id)\n  env . %s\n",
		moto.URL, moto.PID, region, network.VPC, vpc, ami, c.envFile)
	for _, img := range registered {
		fmt.Fprintf(stdout, "  image %s %s boots the stemcell's agent\n", img.AMI, img.Name)
	}
	for _, sn := range network.Subnets {
		fmt.Fprintf(stdout, "  subnet %s %s in %s\n", sn.ID, sn.CIDR, sn.AZ)
	}

	err = w.Run(ctx)
	if errors.Is(err, context.Canceled) {
		logger.Info("stopping: deleting every vm, then moto")
		return nil
	}
	return err
}
