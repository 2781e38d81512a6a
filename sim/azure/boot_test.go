package azure_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/proctree"
	"github.com/compleat/compleat/sim/azure"
	"github.com/compleat/compleat/sim/machine"
)

// TestMain doubles as the agent the booter starts: run with
// --infrastructure azure, the test binary reads its user data from IMDS as
// the real agent does (Metadata: true, format=text, base64) and writes it,
// decoded, to <base>/probe, then lists /dev/disk/azure/scsi1 into
// <base>/luns every 20 ms.
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
	req, _ := http.NewRequest(http.MethodGet, *url+"/metadata/instance/compute/userData?api-version=2021-01-01&format=text", nil)
	req.Header.Set("Metadata", "true")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		fmt.Println(resp.Status, string(b))
		os.Exit(1)
	}
	doc, err := base64.StdEncoding.DecodeString(string(b))
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	os.WriteFile(filepath.Join(*base, "probe"), doc, 0o644)
	for {
		var lines []string
		entries, _ := os.ReadDir(filepath.Join(machine.DevDisk, "azure", "scsi1"))
		for _, e := range entries {
			lines = append(lines, e.Name())
		}
		os.WriteFile(filepath.Join(*base, "luns.new"), []byte(strings.Join(lines, "\n")), 0o644)
		os.Rename(filepath.Join(*base, "luns.new"), filepath.Join(*base, "luns"))
		time.Sleep(20 * time.Millisecond)
	}
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

// A VM created through cpi-azure boots at its private address; its agent
// reads the settings the plugin gave from IMDS user data; a persistent
// disk attached at LUN 1 appears at /dev/disk/azure/scsi1/lun1 (root
// only); a VM deleted through the ARM API stops.
func TestBoot(t *testing.T) {
	host, err := machine.NewHost(t.TempDir(), machine.WithStopTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	b := &azure.Booter{Host: host, Agent: exe, VolumeDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	s := newSimWith(t, b)
	b.SetServer(s)
	t.Cleanup(func() {
		for _, vm := range host.List() {
			host.Delete(context.Background(), vm.ID)
		}
		host.Close()
	})
	f := newFixtureOn(t, s, nil)
	res, err := f.c.CreateVM(f.ctx, f.request("agent-boot", "127.80.1.40"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the vm boots", func() bool { _, ok := host.Get(res.CID); return ok })
	vm, _ := host.Get(res.CID)
	if vm.IP != "127.80.1.40" || !vm.Running {
		t.Fatalf("vm %+v", vm)
	}
	probe := filepath.Join(vm.Dir, "root", "probe")
	waitFor(t, "the agent reads its settings", func() bool { return readFile(probe) != "" })
	var settings map[string]any
	if err := json.Unmarshal([]byte(readFile(probe)), &settings); err != nil {
		t.Fatalf("settings %q: %v", readFile(probe), err)
	}
	if settings["agent_id"] != "agent-boot" || settings["vm"].(map[string]any)["cid"] != res.CID {
		t.Errorf("the agent read %v", settings)
	}
	if d, _ := settings["disks"].(map[string]any); d["ephemeral"] != "/dev/disk/azure/scsi1/lun0" {
		t.Errorf("settings disks = %v, want the ephemeral disk at LUN 0", settings["disks"])
	}

	if host.Isolated() {
		disk, err := f.c.CreateDisk(f.ctx, cpi.CreateDiskRequest{SizeMB: 1024, VMCID: res.CID})
		if err != nil {
			t.Fatal(err)
		}
		hint, err := f.c.AttachDisk(f.ctx, res.CID, disk)
		if err != nil || hint.LUN != "1" {
			t.Fatalf("AttachDisk = %+v, %v", hint, err)
		}
		luns := filepath.Join(vm.Dir, "root", "luns")
		waitFor(t, "the disk appears at lun1", func() bool { return readFile(luns) == "lun1" })
		if err := f.c.DetachDisk(f.ctx, res.CID, disk); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the disk goes", func() bool { return readFile(luns) == "" })
		if err := f.c.DeleteDisk(f.ctx, disk); err != nil {
			t.Fatal(err)
		}
	} else {
		t.Log("not root: volumes are not shown to VMs (machine.ErrNoVolumes)")
	}

	// Deleted through the ARM API, as an operator (or Azure) would.
	token := armToken(t, s)
	req, _ := http.NewRequest(http.MethodDelete, s.URL()+res.CID+"?api-version=2024-07-01", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := httpsClient(s).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("DELETE vm: %s", resp.Status)
	}
	waitFor(t, "the vm stops", func() bool { _, ok := host.Get(res.CID); return !ok })
	if syscall.Kill(vm.PID, 0) == nil {
		if st, err := proctree.ReadStat(vm.PID); err == nil && st.Live() {
			t.Errorf("agent %d of a deleted vm runs", vm.PID)
		}
	}
}
