package aws

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/compleat/compleat/sim/machine"
)

// Config configures a Watcher.
type Config struct {
	// EC2 is the client of the cloud to watch (moto).
	EC2 *ec2.Client
	// Region is the client's region (for the metadata service).
	Region string
	// Host boots the instances' VMs.
	Host *machine.Host
	// Agent is the agent binary every instance boots, whatever its AMI.
	Agent string
	// Images maps an AMI to the agent binary its instances boot instead.
	Images map[string]string
	// VolumeDir holds the volumes' images, <id>.img (created when missing).
	VolumeDir string
	// Reboots is the file moto appends rebooted instances' ids to (Moto.Reboots);
	// "" when reboots are not seen.
	Reboots string
	// Poll is how often the watcher looks at EC2 (default 250ms).
	Poll   time.Duration
	Logger *slog.Logger
}

// Watcher makes EC2's instances real: it polls DescribeInstances and
// DescribeVolumes and
//
//   - boots a VM (sim/machine) for every running instance, at its private
//     address, with its own IMDSv2 serving the instance's user data;
//   - stops the VM when the instance is stopping or stopped, boots it again
//     when it runs again (with the user data as it is then), and deletes it
//     when the instance is shutting down, terminated or gone;
//   - shows a VM every EBS volume attached to its instance that is not
//     deleted with the instance (persistent disks), as a loop device backed
//     by <VolumeDir>/<vol>.img at the NVMe by-id name the agent looks for,
//     and takes it away on detach; the image of a deleted volume is removed.
//
// An instance whose VM cannot boot (an address outside 127.0.0.0/8, no agent)
// is logged once and left alone.
type Watcher struct {
	cfg Config

	mu     sync.Mutex
	vms    map[string]*instanceVM // by instance id
	failed map[string]bool        // instances whose VM could not boot
	// deletes are VM deletions under way: a VM's processes get the stop
	// timeout to end, which must not hold up the boots of other VMs.
	deletes sync.WaitGroup
	// rebootsRead is how much of cfg.Reboots has been read.
	rebootsRead int64
}

type instanceVM struct {
	imds     *IMDS
	stopped  bool
	deleting bool
}

// NewWatcher returns a watcher; Run starts it.
func NewWatcher(cfg Config) (*Watcher, error) {
	if cfg.EC2 == nil || cfg.Host == nil {
		return nil, errors.New("aws watcher: needs an EC2 client and a machine host")
	}
	if cfg.Agent == "" && len(cfg.Images) == 0 {
		return nil, errors.New("aws watcher: no agent binary to boot")
	}
	if !filepath.IsAbs(cfg.VolumeDir) {
		return nil, fmt.Errorf("aws watcher: volume directory %q must be absolute", cfg.VolumeDir)
	}
	if err := os.MkdirAll(cfg.VolumeDir, 0o700); err != nil {
		return nil, fmt.Errorf("aws watcher: %w", err)
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 250 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Watcher{cfg: cfg, vms: map[string]*instanceVM{}, failed: map[string]bool{}}, nil
}

// Run syncs every Poll until ctx ends; a failed sync is logged and tried
// again. It returns ctx's error.
func (w *Watcher) Run(ctx context.Context) error {
	t := time.NewTicker(w.cfg.Poll)
	defer t.Stop()
	var last string
	for {
		if err := w.Sync(ctx); err != nil && ctx.Err() == nil && err.Error() != last {
			w.cfg.Logger.Warn("sync with ec2", "error", err)
			last = err.Error()
		} else if err == nil {
			last = ""
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Sync makes the VMs match EC2 once.
func (w *Watcher) Sync(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	instances, err := w.instances(ctx)
	if err != nil {
		return err
	}
	volumes, err := w.volumes(ctx)
	if err != nil {
		return err
	}
	var errs []error
	seen := map[string]bool{}
	for _, inst := range instances {
		id := aws.ToString(inst.InstanceId)
		seen[id] = true
		if err := w.syncInstance(ctx, inst, volumes); err != nil {
			errs = append(errs, err)
		}
	}
	for id := range w.vms {
		if !seen[id] {
			errs = append(errs, w.delete(ctx, id))
		}
	}
	errs = append(errs, w.removeDeletedVolumes(volumes), w.reboot(ctx))
	return errors.Join(errs...)
}

// reboot reboots the VMs of the instances moto recorded as rebooted since
// the last look.
func (w *Watcher) reboot(ctx context.Context) error {
	if w.cfg.Reboots == "" {
		return nil
	}
	f, err := os.Open(w.cfg.Reboots)
	if err != nil {
		return fmt.Errorf("reboots: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(w.rebootsRead, io.SeekStart); err != nil {
		return fmt.Errorf("reboots: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return fmt.Errorf("reboots: %w", err)
	}
	// Only whole lines: moto may be writing the next.
	end := bytes.LastIndexByte(b, '\n') + 1
	w.rebootsRead += int64(end)
	var errs []error
	for _, id := range strings.Fields(string(b[:end])) {
		if vm, ok := w.vms[id]; ok && !vm.stopped && !vm.deleting {
			errs = append(errs, w.cfg.Host.Reboot(ctx, id))
		}
	}
	return errors.Join(errs...)
}

func (w *Watcher) instances(ctx context.Context) ([]types.Instance, error) {
	var out []types.Instance
	p := ec2.NewDescribeInstancesPaginator(w.cfg.EC2, &ec2.DescribeInstancesInput{})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("describe instances: %w", err)
		}
		for _, r := range page.Reservations {
			out = append(out, r.Instances...)
		}
	}
	return out, nil
}

func (w *Watcher) volumes(ctx context.Context) (map[string]types.Volume, error) {
	out := map[string]types.Volume{}
	p := ec2.NewDescribeVolumesPaginator(w.cfg.EC2, &ec2.DescribeVolumesInput{})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("describe volumes: %w", err)
		}
		for _, v := range page.Volumes {
			out[aws.ToString(v.VolumeId)] = v
		}
	}
	return out, nil
}

func (w *Watcher) syncInstance(ctx context.Context, inst types.Instance, volumes map[string]types.Volume) error {
	id := aws.ToString(inst.InstanceId)
	var state types.InstanceStateName
	if inst.State != nil {
		state = inst.State.Name
	}
	vm, known := w.vms[id]
	switch state {
	case types.InstanceStateNameRunning:
		if w.failed[id] || (known && vm.deleting) {
			return nil
		}
		if !known {
			if _, err := w.boot(ctx, inst); err != nil {
				var ec2Err *ec2Error
				if errors.As(err, &ec2Err) {
					return err // EC2 did not answer: the next sync tries again
				}
				w.failed[id] = true
				w.cfg.Logger.Error("instance runs without a vm", "instance", id, "error", err)
				return nil
			}
		} else if vm.stopped {
			if ud, err := w.userData(ctx, id); err == nil {
				vm.imds.SetUserData(ud)
			}
			if err := w.cfg.Host.Start(ctx, id); err != nil {
				return err
			}
			vm.stopped = false
		}
		return w.syncVolumes(ctx, inst, volumes)
	case types.InstanceStateNameStopping, types.InstanceStateNameStopped:
		if known && !vm.stopped && !vm.deleting {
			if err := w.cfg.Host.Stop(ctx, id); err != nil {
				return err
			}
			vm.stopped = true
		}
	case types.InstanceStateNameShuttingDown, types.InstanceStateNameTerminated:
		delete(w.failed, id)
		if known {
			return w.delete(ctx, id)
		}
	}
	return nil
}

// boot boots the VM of a running instance.
func (w *Watcher) boot(ctx context.Context, inst types.Instance) (*instanceVM, error) {
	id := aws.ToString(inst.InstanceId)
	agent := w.cfg.Agent
	if a, ok := w.cfg.Images[aws.ToString(inst.ImageId)]; ok {
		agent = a
	}
	if agent == "" {
		return nil, fmt.Errorf("no agent binary for image %s", aws.ToString(inst.ImageId))
	}
	ud, err := w.userData(ctx, id)
	if err != nil {
		return nil, &ec2Error{err}
	}
	info := Instance{
		ID: id, ImageID: aws.ToString(inst.ImageId), InstanceType: string(inst.InstanceType),
		PrivateIP: aws.ToString(inst.PrivateIpAddress), Region: w.cfg.Region, UserData: ud,
	}
	if inst.Placement != nil {
		info.AvailabilityZone = aws.ToString(inst.Placement.AvailabilityZone)
	}
	imds := NewIMDS(info)
	if _, err := w.cfg.Host.Boot(ctx, machine.Spec{
		ID: id, Agent: agent, IP: info.PrivateIP, Infrastructure: machine.AWS, Metadata: imds,
	}); err != nil {
		return nil, err
	}
	vm := &instanceVM{imds: imds}
	w.vms[id] = vm
	return vm, nil
}

// ec2Error is a failed EC2 call on the way to a boot: worth another try,
// unlike a boot the machinery refused.
type ec2Error struct{ error }

func (e *ec2Error) Unwrap() error { return e.error }

// userData reads an instance's user data (nil when it has none).
func (w *Watcher) userData(ctx context.Context, id string) ([]byte, error) {
	out, err := w.cfg.EC2.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{
		InstanceId: aws.String(id), Attribute: types.InstanceAttributeNameUserData,
	})
	if err != nil {
		return nil, fmt.Errorf("user data of %s: %w", id, err)
	}
	if out.UserData == nil || out.UserData.Value == nil {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(aws.ToString(out.UserData.Value))
	if err != nil {
		return nil, fmt.Errorf("user data of %s: not base64: %w", id, err)
	}
	return b, nil
}

// delete starts deleting the VM of an instance that is gone, in the
// background; w.mu is held. A deletion that fails is tried again at the
// next sync.
func (w *Watcher) delete(ctx context.Context, id string) error {
	vm := w.vms[id]
	if vm == nil || vm.deleting {
		return nil
	}
	vm.deleting = true
	w.deletes.Add(1)
	go func() {
		defer w.deletes.Done()
		err := w.cfg.Host.Delete(context.WithoutCancel(ctx), id)
		w.mu.Lock()
		defer w.mu.Unlock()
		if err != nil {
			vm.deleting = false
			w.cfg.Logger.Error("delete the vm of a terminated instance", "instance", id, "error", err)
			return
		}
		if w.vms[id] == vm {
			delete(w.vms, id)
		}
	}()
	return nil
}

// syncVolumes shows the VM of a running instance its persistent volumes:
// those attached (or attaching) that are not deleted with the instance.
func (w *Watcher) syncVolumes(ctx context.Context, inst types.Instance, volumes map[string]types.Volume) error {
	id := aws.ToString(inst.InstanceId)
	want := map[string]bool{}
	for _, bd := range inst.BlockDeviceMappings {
		if bd.Ebs == nil || aws.ToBool(bd.Ebs.DeleteOnTermination) || aws.ToString(bd.DeviceName) == aws.ToString(inst.RootDeviceName) {
			continue
		}
		if s := bd.Ebs.Status; s == types.AttachmentStatusAttached || s == types.AttachmentStatusAttaching {
			want[aws.ToString(bd.Ebs.VolumeId)] = true
		}
	}
	vm, ok := w.cfg.Host.Get(id)
	if !ok {
		return nil
	}
	var errs []error
	have := map[string]bool{}
	for _, vol := range vm.Volumes {
		have[vol] = true
		if !want[vol] {
			errs = append(errs, w.cfg.Host.DetachVolume(ctx, id, vol))
		}
	}
	for vol := range want {
		if have[vol] {
			continue
		}
		v, ok := volumes[vol]
		if !ok {
			continue
		}
		image := w.image(vol)
		if err := machine.CreateImage(image, int64(aws.ToInt32(v.Size))<<30); err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, w.cfg.Host.AttachVolume(ctx, id, machine.Volume{ID: vol, Image: image, Links: machine.AWSVolumeLinks(vol)}))
	}
	return errors.Join(errs...)
}

func (w *Watcher) image(vol string) string { return filepath.Join(w.cfg.VolumeDir, vol+".img") }

// removeDeletedVolumes removes the images of volumes EC2 no longer has.
func (w *Watcher) removeDeletedVolumes(volumes map[string]types.Volume) error {
	entries, err := os.ReadDir(w.cfg.VolumeDir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if filepath.Ext(name) != ".img" {
			continue
		}
		vol := name[:len(name)-len(".img")]
		if v, ok := volumes[vol]; ok && v.State != types.VolumeStateDeleted {
			continue
		}
		if err := os.Remove(filepath.Join(w.cfg.VolumeDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Wait waits for the deletions under way.
func (w *Watcher) Wait() { w.deletes.Wait() }

// DeleteAll deletes every VM the watcher booted, all at once, and waits
// (the cloud is going away).
func (w *Watcher) DeleteAll(ctx context.Context) error {
	w.mu.Lock()
	for id := range w.vms {
		_ = w.delete(ctx, id)
	}
	w.mu.Unlock()
	w.deletes.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.vms) > 0 {
		ids := make([]string, 0, len(w.vms))
		for id := range w.vms {
			ids = append(ids, id)
		}
		return fmt.Errorf("vms of instances %v could not be deleted (see the log)", ids)
	}
	return nil
}
