package azure

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/compleat/compleat/sim/machine"
)

// bootTimeout bounds one boot, reboot or delete of a local VM.
const bootTimeout = 2 * time.Minute

// Booter boots a local VM (sim/machine) for every VM the server creates:
// the stemcell's agent on the VM's private address, with Azure's IMDS
// serving the VM's user data, and every persistent data disk as an image
// file linked where Azure's udev rules put it (/dev/disk/azure/scsi1/lunN).
// It implements Hooks; set Server with SetServer before the first VM.
type Booter struct {
	Host *machine.Host
	// Agent is the agent binary every VM boots (light stemcells name a
	// marketplace image, which names no binary).
	Agent string
	// VolumeDir holds the image files of managed disks.
	VolumeDir string
	Logger    *slog.Logger

	mu  sync.Mutex // serialises what the hooks do
	srv *Server
}

var _ Hooks = (*Booter)(nil)

// SetServer tells the booter the server whose VMs it boots (the IMDS
// answers from the server's state).
func (b *Booter) SetServer(s *Server) { b.srv = s }

func (b *Booter) log() *slog.Logger {
	if b.Logger == nil {
		return slog.Default()
	}
	return b.Logger
}

// VMCreated boots the VM and attaches its persistent disks.
func (b *Booter) VMCreated(vm VM) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	if len(vm.PrivateIPs) == 0 {
		b.log().Error("vm has no private address; not booted", "vm", vm.ID)
		return
	}
	_, err := b.Host.Boot(ctx, machine.Spec{
		ID: vm.ID, Agent: b.Agent, IP: vm.PrivateIPs[0], Infrastructure: machine.Azure, Metadata: NewIMDS(b.srv, vm.ID),
	})
	if err != nil {
		b.log().Error("boot vm", "vm", vm.ID, "error", err)
		return
	}
	b.log().Info("vm booted", "vm", vm.Name, "ip", vm.PrivateIPs[0])
	b.syncDisks(ctx, vm)
}

// VMRestarted restarts the VM's agent.
func (b *Booter) VMRestarted(vm VM) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	if err := b.Host.Reboot(ctx, vm.ID); err != nil {
		b.log().Error("reboot vm", "vm", vm.ID, "error", err)
	}
}

// VMDisksChanged attaches and detaches volumes to match the VM's
// persistent data disks.
func (b *Booter) VMDisksChanged(vm VM) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	b.syncDisks(ctx, vm)
}

// VMDeleted stops the VM and removes it (its volumes are released; their
// images stay while the disks exist).
func (b *Booter) VMDeleted(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	if err := b.Host.Delete(ctx, id); err != nil && !errors.Is(err, machine.ErrNotFound) {
		b.log().Error("delete vm", "vm", id, "error", err)
	}
}

// DiskDeleted removes the disk's image file.
func (b *Booter) DiskDeleted(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := os.Remove(b.image(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		b.log().Error("remove disk image", "disk", id, "error", err)
	}
}

func (b *Booter) image(diskID string) string {
	name := diskID[strings.LastIndex(diskID, "/")+1:]
	return filepath.Join(b.VolumeDir, strings.ToLower(name)+".img")
}

// syncDisks shows the VM its persistent disks at their LUNs. Without an
// isolated VM (no root) volumes are not shown; the agent then has no
// persistent disk to mount.
func (b *Booter) syncDisks(ctx context.Context, vm VM) {
	if !b.Host.Isolated() {
		return
	}
	m, ok := b.Host.Get(vm.ID)
	if !ok {
		return
	}
	want := map[string]DataDisk{}
	for _, d := range vm.DataDisks {
		if d.Persistent {
			want[strings.ToLower(d.DiskID)] = d
		}
	}
	have := map[string]bool{}
	for _, v := range m.Volumes {
		have[v] = true
		if _, ok := want[v]; !ok {
			if err := b.Host.DetachVolume(ctx, vm.ID, v); err != nil {
				b.log().Error("detach volume", "vm", vm.ID, "disk", v, "error", err)
			}
		}
	}
	for id, d := range want {
		if have[id] {
			continue
		}
		img := b.image(id)
		if err := os.MkdirAll(b.VolumeDir, 0o755); err != nil {
			b.log().Error("volume dir", "error", err)
			return
		}
		if err := machine.CreateImage(img, int64(max(d.SizeGB, 1))<<30); err != nil {
			b.log().Error("disk image", "disk", id, "error", err)
			continue
		}
		if err := b.Host.AttachVolume(ctx, vm.ID, machine.Volume{ID: id, Image: img, Links: machine.AzureLUNLinks(d.LUN)}); err != nil {
			b.log().Error("attach volume", "vm", vm.ID, "disk", id, "lun", d.LUN, "error", err)
			continue
		}
		b.log().Info("disk attached", "vm", vm.Name, "disk", d.Name, "lun", d.LUN)
	}
}

// String names the booter in logs.
func (b *Booter) String() string { return fmt.Sprintf("azure booter (agent %s)", b.Agent) }
