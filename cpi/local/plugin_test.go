package local

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi/cpitest"
)

// The plugin binary dies (SIGKILL) between calls: its VMs keep running, and
// the plugin the host starts again on the next call knows them and can
// delete them.
func TestPluginKilledVMsLiveOn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bin := pluginBinary(t)
	dataDir := t.TempDir()
	reapVMs(t, dataDir)
	p := cpitest.StartBinary(t, bin, props(t, dataDir))

	sc, err := p.CreateStemcell(ctx, conformanceConfig(t, dataDir).Stemcell)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := p.CreateVM(ctx, vmRequest(sc, "127.77.6.6", nil))
	if err != nil {
		t.Fatal(err)
	}
	agent := waitPID(t, filepath.Join(dataDir, "vms", vm.CID, pidFile))
	addr := waitFile(t, filepath.Join(dataDir, "vms", vm.CID, rootDirName, "agent", "addr"))

	plugin := p.PID()
	if plugin == 0 {
		t.Fatal("no plugin process")
	}
	if err := syscall.Kill(plugin, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); alive(plugin); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("plugin did not die")
		}
	}
	if !alive(agent) {
		t.Fatal("the vm's agent died with the plugin")
	}
	if got := askVM(t, addr); got != vm.CID {
		t.Fatalf("%s answers %q", addr, got)
	}

	if ok, err := p.HasVM(ctx, vm.CID); err != nil || !ok {
		t.Fatalf("HasVM through the restarted plugin = %v, %v", ok, err)
	}
	if p.PID() == plugin {
		t.Fatal("the host did not start a new plugin")
	}
	if err := p.DeleteVM(ctx, vm.CID); err != nil {
		t.Fatal(err)
	}
	if alive(agent) {
		t.Fatalf("agent %d survived DeleteVM through the restarted plugin", agent)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "vms", vm.CID)); !os.IsNotExist(err) {
		t.Fatalf("vm directory left: %v", err)
	}
}

// Two plugin processes on one data directory, creating VMs at the same
// time, never hand out the same address: the lock is the data directory's,
// not a process's.
func TestTwoPluginsShareAddresses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bin := pluginBinary(t)
	dataDir := t.TempDir()
	reapVMs(t, dataDir)
	a := cpitest.StartBinary(t, bin, props(t, dataDir))
	b := cpitest.StartBinary(t, bin, props(t, dataDir))
	sc, err := a.CreateStemcell(ctx, conformanceConfig(t, dataDir).Stemcell)
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	ips := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		p := a
		if i%2 == 1 {
			p = b
		}
		wg.Go(func() {
			res, err := p.CreateVM(ctx, vmRequest(sc, "", nil))
			ips[i], errs[i] = res.Networks["default"].IP, err
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("create %d: %v", i, errs[i])
		}
		if seen[ips[i]] || ips[i] == "" {
			t.Fatalf("address %q handed out twice: %v", ips[i], ips)
		}
		seen[ips[i]] = true
	}
}
