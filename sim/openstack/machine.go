package openstack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/compleat/compleat/cpi/tarball"
	"github.com/compleat/compleat/sim/machine"
)

// MachineBooter boots the cloud's servers with the shared boot machinery
// (sim/machine): each server is a local VM running a stemcell's agent
// with --infrastructure openstack, which reads its settings from the
// server's config drive (when it has one) or metadata service, and sees
// its Cinder volumes under /dev/disk/by-id/virtio-<id[:20]>.
type MachineBooter struct {
	Host *machine.Host
	// Agent is the agent binary of images without data (light stemcells'
	// images). An image uploaded to Glance that is a local stemcell's
	// image (a tgz holding an executable "agent") boots its own agent.
	Agent string
	// AgentArgs are further arguments for every agent.
	AgentArgs []string
	// Dir holds the agents taken out of uploaded images.
	Dir string
}

var _ Booter = (*MachineBooter)(nil)

// opTimeout bounds one machine operation the cloud starts in the
// background (reboot, delete, volume attach).
const opTimeout = 2 * time.Minute

// Boot boots the server's VM and returns once its agent has started.
func (b *MachineBooter) Boot(ctx context.Context, vm VM) error {
	agent := b.Agent
	if vm.ImagePath != "" {
		a, err := b.imageAgent(ctx, vm.ImageID, vm.ImagePath)
		if err != nil {
			return err
		}
		if a != "" {
			agent = a
		}
	}
	if agent == "" {
		return errors.New("the image has no agent to boot (and the simulator was given none for light images)")
	}
	_, err := b.Host.Boot(ctx, machine.Spec{
		ID: vm.ID, Agent: agent, IP: vm.IP, Infrastructure: machine.OpenStack,
		Metadata: vm.Metadata, ConfigDrive: vm.ConfigDrive, AgentArgs: b.AgentArgs,
	})
	return err
}

// imageAgent returns the agent inside an uploaded image, extracted once
// per image ("" when the image is no local stemcell's image).
func (b *MachineBooter) imageAgent(ctx context.Context, imageID, path string) (string, error) {
	if b.Dir == "" {
		return "", nil
	}
	dir := filepath.Join(b.Dir, imageID)
	agent := filepath.Join(dir, "agent")
	if fi, err := os.Stat(agent); err == nil && fi.Mode().IsRegular() {
		return agent, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	magic, _ := bufio.NewReader(f).Peek(2)
	if len(magic) < 2 || magic[0] != 0x1f || magic[1] != 0x8b {
		return "", nil // a real disk image: boot the configured agent
	}
	tmp, err := os.MkdirTemp(b.Dir, ".extract-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if err := tarball.ExtractFile(ctx, path, tmp, tarball.Limits{MaxBytes: 1 << 30, MaxEntries: 64}); err != nil {
		return "", fmt.Errorf("image %s: %w", imageID, err)
	}
	if fi, err := os.Stat(filepath.Join(tmp, "agent")); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o100 == 0 {
		return "", nil
	}
	if err := os.Rename(tmp, dir); err != nil && !errors.Is(err, os.ErrExist) {
		return "", err
	}
	return agent, nil
}

// Reboot restarts the VM.
func (b *MachineBooter) Reboot(id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	return b.Host.Reboot(ctx, id)
}

// Delete stops the VM and removes it; a VM that does not exist is no
// error.
func (b *MachineBooter) Delete(id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := b.Host.Delete(ctx, id); err != nil && !errors.Is(err, machine.ErrNotFound) {
		return err
	}
	return nil
}

// AttachVolume shows the VM the volume as a block device at its virtio
// names.
func (b *MachineBooter) AttachVolume(id, path, volumeID, _ string) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	return b.Host.AttachVolume(ctx, id, machine.Volume{ID: volumeID, Image: path, Links: machine.OpenStackVolumeLinks(volumeID)})
}

// DetachVolume takes the volume away from the VM.
func (b *MachineBooter) DetachVolume(id, volumeID string) error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	return b.Host.DetachVolume(ctx, id, volumeID)
}
