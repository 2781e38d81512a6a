package machine

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi/proctree"
)

// TestMain doubles as the agent the tests boot: run with --infrastructure,
// the test binary asks its metadata service for /probe, writes the answer
// to <base>/probe, starts a child that sleeps and, every 20 ms, lists the
// links under /dev/disk/by-id into <base>/dev-disk.
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
	drive := fs.String("config-drive", "", "")
	base := fs.String("base-dir", proctree.VcapDir, "")
	fs.Parse(args)
	var answer []byte
	if *url != "" {
		resp, err := http.Get(*url + "/probe")
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		answer, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
	} else {
		answer, _ = os.ReadFile(filepath.Join(*drive, "openstack/latest/user_data"))
	}
	os.WriteFile(filepath.Join(*base, "probe"), answer, 0o644)
	child := exec.Command("sleep", "1000")
	child.Start()
	os.WriteFile(filepath.Join(*base, "child.pid"), []byte(fmt.Sprint(child.Process.Pid)), 0o644)
	for {
		var lines []string
		entries, _ := os.ReadDir(filepath.Join(DevDisk, "by-id"))
		for _, e := range entries {
			// As the agent does: resolve the link, then look for the
			// partition beside the disk.
			real, _ := filepath.EvalSymlinks(filepath.Join(DevDisk, "by-id", e.Name()))
			disk, _ := os.Stat(real)
			part, _ := os.Stat(real + "p1")
			lines = append(lines, fmt.Sprintf("%s %s %v %v", e.Name(), real, disk != nil && disk.Mode()&os.ModeDevice != 0, part != nil && part.Mode()&os.ModeDevice != 0))
		}
		os.WriteFile(filepath.Join(*base, "dev-disk.new"), []byte(strings.Join(lines, "\n")), 0o644)
		os.Rename(filepath.Join(*base, "dev-disk.new"), filepath.Join(*base, "dev-disk"))
		time.Sleep(20 * time.Millisecond)
	}
}

func newHost(t *testing.T, opts ...Option) *Host {
	t.Helper()
	h, err := NewHost(t.TempDir(), append([]Option{WithStopTimeout(time.Second)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, v := range h.List() {
			if err := h.Delete(context.Background(), v.ID); err != nil {
				t.Error(err)
			}
		}
		h.Close()
	})
	return h
}

func agentPath(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// waitFor polls the file under the VM's root until it satisfies ok.
func waitFor(t *testing.T, path string, ok func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil && ok(string(b)) {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %q (%v) after 20s", path, b, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func nonEmpty(s string) bool { return s != "" }

func metadata(id string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/probe" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, "metadata of %s", id)
	})
}

func alive(pid int) bool {
	st, err := proctree.ReadStat(pid)
	return err == nil && st.Live()
}

// The lifecycle of a VM: its agent reads the VM's own metadata service,
// a reboot starts a new agent, Kill ends the whole tree, Start boots it
// again, Delete removes everything.
func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	h := newHost(t)
	var vms []VM
	for _, id := range []string{"i-0000000000000001", "i-0000000000000002"} {
		vm, err := h.Boot(ctx, Spec{ID: id, Agent: agentPath(t), IP: "127.80.1.20", Infrastructure: AWS, Metadata: metadata(id)})
		if err != nil {
			t.Fatal(err)
		}
		if !vm.Running || vm.PID == 0 || !strings.HasPrefix(vm.MetadataURL, "http://127.0.0.1:") {
			t.Fatalf("booted %+v", vm)
		}
		vms = append(vms, vm)
	}
	root := func(vm VM, name string) string { return filepath.Join(vm.Dir, rootDirName, name) }
	for _, vm := range vms {
		if got := waitFor(t, root(vm, "probe"), nonEmpty); got != "metadata of "+vm.ID {
			t.Fatalf("vm %s read %q from its metadata service", vm.ID, got)
		}
	}
	if _, err := h.Boot(ctx, Spec{ID: vms[0].ID, Agent: agentPath(t), IP: "127.80.1.21", Infrastructure: AWS, Metadata: metadata("x")}); err == nil {
		t.Fatal("booted a second vm with the same id")
	}

	vm := vms[0]
	child := 0
	fmt.Sscan(waitFor(t, root(vm, "child.pid"), nonEmpty), &child)
	os.Remove(root(vm, "probe"))
	if err := h.Reboot(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, root(vm, "probe"), nonEmpty)
	if alive(vm.PID) || alive(child) {
		t.Fatalf("agent %d or its child %d survived the reboot", vm.PID, child)
	}
	after, _ := h.Get(vm.ID)
	if !after.Running || after.PID == vm.PID {
		t.Fatalf("after reboot %+v, want a new running agent", after)
	}

	fmt.Sscan(waitFor(t, root(vm, "child.pid"), func(s string) bool { return s != fmt.Sprint(child) }), &child)
	if err := h.Kill(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	if alive(after.PID) || alive(child) {
		t.Fatalf("agent %d or its child %d survived kill", after.PID, child)
	}
	if got, _ := h.Get(vm.ID); got.Running {
		t.Fatalf("killed vm still running: %+v", got)
	}
	if other, _ := h.Get(vms[1].ID); !other.Running {
		t.Fatal("killing one vm ended another")
	}
	os.Remove(root(vm, "probe"))
	if err := h.Start(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, root(vm, "probe"), nonEmpty)

	if err := h.Delete(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(vm.Dir); !os.IsNotExist(err) {
		t.Fatalf("vm directory left after delete: %v", err)
	}
	if _, ok := h.Get(vm.ID); ok {
		t.Fatal("deleted vm still listed")
	}
	if resp, err := http.Get(vm.MetadataURL + "/probe"); err == nil {
		resp.Body.Close()
		t.Fatal("metadata service still answers after delete")
	}
	if err := h.Delete(ctx, vm.ID); err != nil {
		t.Fatalf("second delete: %v", err)
	}
}

// A VM given a config drive finds its files there.
func TestConfigDrive(t *testing.T) {
	h := newHost(t)
	vm, err := h.Boot(context.Background(), Spec{ID: "5a3f6c2e-8b1d-4e7a-9f00-123456789abc", Agent: agentPath(t), IP: "127.81.0.5", Infrastructure: OpenStack,
		ConfigDrive: map[string][]byte{"openstack/latest/user_data": []byte(`{"agent_id":"a"}`)}})
	if err != nil {
		t.Fatal(err)
	}
	if got := waitFor(t, filepath.Join(vm.Dir, rootDirName, "probe"), nonEmpty); got != `{"agent_id":"a"}` {
		t.Fatalf("agent read %q from the config drive", got)
	}
}

// Bad specs are refused, naming what is wrong, and leave nothing.
func TestBootRefusesBadSpecs(t *testing.T) {
	h := newHost(t)
	good := Spec{ID: "i-1", Agent: agentPath(t), IP: "127.80.1.20", Infrastructure: AWS, Metadata: metadata("i-1")}
	for name, tc := range map[string]struct {
		edit func(*Spec)
		want string
	}{
		"link-local ip":  {func(s *Spec) { s.IP = "169.254.169.254" }, "127.0.0.0/8"},
		"private ip":     {func(s *Spec) { s.IP = "10.0.0.5" }, "127.0.0.0/8"},
		"relative agent": {func(s *Spec) { s.Agent = "agent" }, "absolute"},
		"no settings":    {func(s *Spec) { s.Metadata = nil }, "no settings"},
		"infrastructure": {func(s *Spec) { s.Infrastructure = "gcp" }, "gcp"},
		"drive escape":   {func(s *Spec) { s.ConfigDrive = map[string][]byte{"../x": nil} }, "../x"},
	} {
		s := good
		tc.edit(&s)
		_, err := h.Boot(context.Background(), s)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %q", name, err, tc.want)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(h.dir, "vms")); len(entries) != 0 {
		t.Fatalf("refused boots left %d directories", len(entries))
	}
}

// An attached volume appears under the VM's own /dev/disk at the cloud's
// names as a loop device backed by its image, and nowhere else; detach and
// delete release the device.
func TestVolumes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: volumes are loop devices in the vm's own mount namespace")
	}
	ctx := context.Background()
	h := newHost(t)
	if !h.Isolated() {
		t.Skip("no mount namespaces here")
	}
	vm, err := h.Boot(ctx, Spec{ID: "i-0000000000000003", Agent: agentPath(t), IP: "127.80.1.22", Infrastructure: AWS, Metadata: metadata("i-3")})
	if err != nil {
		t.Fatal(err)
	}
	image := filepath.Join(t.TempDir(), "vol.img")
	if err := CreateImage(image, 64<<20); err != nil {
		t.Fatal(err)
	}
	vol := Volume{ID: "vol-0123456789abcdef0", Image: image, Links: AWSVolumeLinks("vol-0123456789abcdef0")}
	if err := h.AttachVolume(ctx, vm.ID, vol); err != nil {
		t.Fatal(err)
	}
	if err := h.AttachVolume(ctx, vm.ID, vol); err != nil {
		t.Fatalf("attach again: %v", err)
	}
	listing := waitFor(t, filepath.Join(vm.Dir, rootDirName, "dev-disk"), func(s string) bool { return strings.Contains(s, "vol0123456789abcdef0") })
	name := "nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0"
	if listing != name+" /dev/disk/devices/disk0 true true" {
		t.Fatalf("the vm sees %q, want its disk and partition as block devices", listing)
	}
	if n := loopsBackedBy(image); n != 2 {
		t.Fatalf("%d loop devices backed by the image, want 2 (disk and partition)", n)
	}
	if _, err := os.Lstat(filepath.Join(DevDisk, "by-id", name)); err == nil {
		t.Fatal("the host's /dev/disk shows the vm's volume")
	}
	if got, _ := h.Get(vm.ID); len(got.Volumes) != 1 || got.Volumes[0] != vol.ID {
		t.Fatalf("volumes %v", got.Volumes)
	}
	if err := h.DetachVolume(ctx, vm.ID, vol.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, filepath.Join(vm.Dir, rootDirName, "dev-disk"), func(s string) bool { return !strings.Contains(s, "vol0123456789abcdef0") })
	if n := loopsBackedBy(image); n != 0 {
		t.Fatalf("%d loop devices still backed by the image after detach", n)
	}

	// Delete releases what is still attached.
	if err := h.AttachVolume(ctx, vm.ID, vol); err != nil {
		t.Fatal(err)
	}
	if err := h.Delete(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	if n := loopsBackedBy(image); n != 0 {
		t.Fatalf("%d loop devices still backed by the image after delete", n)
	}
	if _, err := os.Stat(image); err != nil {
		t.Fatalf("delete removed the volume's image: %v", err)
	}
}

func loopsBackedBy(image string) int {
	n := 0
	matches, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, m := range matches {
		if b, _ := os.ReadFile(m); strings.TrimSpace(string(b)) == image {
			n++
		}
	}
	return n
}

// Without isolation the agent works in <vm>/root and volumes are refused.
func TestWithoutIsolation(t *testing.T) {
	h := newHost(t, WithoutIsolation())
	vm, err := h.Boot(context.Background(), Spec{ID: "i-4", Agent: agentPath(t), IP: "127.80.1.23", Infrastructure: AWS, Metadata: metadata("i-4")})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, filepath.Join(vm.Dir, rootDirName, "probe"), nonEmpty)
	image := filepath.Join(t.TempDir(), "vol.img")
	CreateImage(image, 1<<20)
	err = h.AttachVolume(context.Background(), vm.ID, Volume{ID: "vol-1", Image: image, Links: AWSVolumeLinks("vol-1")})
	if err == nil || !strings.Contains(err.Error(), "isolated") {
		t.Fatalf("attach without isolation: %v", err)
	}
}

// A VM of an earlier Host on the same directory is found and deleted.
func TestLeftovers(t *testing.T) {
	dir := t.TempDir()
	h1, err := NewHost(dir)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := h1.Boot(context.Background(), Spec{ID: "i-5", Agent: agentPath(t), IP: "127.80.1.24", Infrastructure: AWS, Metadata: metadata("i-5")})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, filepath.Join(vm.Dir, rootDirName, "probe"), nonEmpty)
	h1.Close()
	h2, err := NewHost(dir)
	if err != nil {
		t.Fatal(err)
	}
	left, err := h2.Leftovers()
	if err != nil || len(left) != 1 || left[0] != "i-5" {
		t.Fatalf("leftovers %v %v", left, err)
	}
	if err := h2.Delete(context.Background(), "i-5"); err != nil {
		t.Fatal(err)
	}
	if alive(vm.PID) {
		t.Fatal("leftover agent survived delete")
	}
	if left, _ := h2.Leftovers(); len(left) != 0 {
		t.Fatalf("leftovers after delete: %v", left)
	}
}

// A volume attached to a second VM before the first lets go keeps the
// second VM's device when the first detaches (a recreate: the cloud
// detaches from the old instance after attaching to the new one).
func TestVolumeMovesBetweenVMs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: volumes are loop devices in the vm's own mount namespace")
	}
	ctx := context.Background()
	h := newHost(t)
	if !h.Isolated() {
		t.Skip("no mount namespaces here")
	}
	image := filepath.Join(t.TempDir(), "vol.img")
	if err := CreateImage(image, 16<<20); err != nil {
		t.Fatal(err)
	}
	vol := Volume{ID: "vol-0aaaaaaaaaaaaaaaa", Image: image, Links: AWSVolumeLinks("vol-0aaaaaaaaaaaaaaaa")}
	for _, id := range []string{"i-a", "i-b"} {
		vm, err := h.Boot(ctx, Spec{ID: id, Agent: agentPath(t), IP: "127.80.1.30", Infrastructure: AWS, Metadata: metadata(id)})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.AttachVolume(ctx, id, vol); err != nil {
			t.Fatal(err)
		}
		waitFor(t, filepath.Join(vm.Dir, rootDirName, "dev-disk"), func(s string) bool { return strings.HasSuffix(s, "true true") })
	}
	if n := loopsBackedBy(image); n != 4 {
		t.Fatalf("%d loop devices backed by the image, want 4", n)
	}
	if err := h.DetachVolume(ctx, "i-a", vol.ID); err != nil {
		t.Fatal(err)
	}
	b, _ := h.Get("i-b")
	if n := loopsBackedBy(image); n != 2 || len(b.Volumes) != 1 {
		t.Fatalf("after detach from i-a: %d loop devices backed by the image, i-b has %v; want i-b's 2", n, b.Volumes)
	}
	listing := waitFor(t, filepath.Join(b.Dir, rootDirName, "dev-disk"), nonEmpty)
	if !strings.HasSuffix(listing, "true true") {
		t.Fatalf("i-b sees %q after i-a let go", listing)
	}
}
