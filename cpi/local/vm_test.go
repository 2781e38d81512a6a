package local

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/proctree"
)

func TestVMLifecycle(t *testing.T) {
	ctx := context.Background()
	c := newTestCPI(t)
	sc := createStemcell(t, c)

	res, err := c.CreateVM(ctx, vmRequest(sc, "127.77.3.7", nil))
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Networks["default"].IP; got != "127.77.3.7" {
		t.Fatalf("manual network configured with ip %q, want 127.77.3.7", got)
	}
	dir := c.vmDir(res.CID)

	// The agent runs, with its pid where operators look for it, and it
	// listens on the VM's own address.
	pid := waitPID(t, filepath.Join(dir, pidFile))
	if !alive(pid) {
		t.Fatalf("agent %d is not running", pid)
	}
	addr := waitFile(t, filepath.Join(c.agentFiles(res.CID), "addr"))
	if host, _, _ := strings.Cut(addr, ":"); host != "127.77.3.7" {
		t.Fatalf("agent listens on %s, want the vm's address 127.77.3.7", addr)
	}
	if got := askVM(t, addr); got != res.CID {
		t.Fatalf("the process on %s says it is vm %q, want %q", addr, got, res.CID)
	}
	child := waitPID(t, filepath.Join(c.agentFiles(res.CID), "child.pid"))

	// Its own session: the agent leads it.
	if st, err := proctree.ReadStat(pid); err != nil || st.SID != pid {
		t.Fatalf("agent %d: session %d, want its own (%v)", pid, st.SID, err)
	}

	// The settings are the request's, with networks and vm set; only the
	// agent may read them.
	var settings map[string]json.RawMessage
	if err := readJSON(filepath.Join(dir, settingsFile), &settings); err != nil {
		t.Fatal(err)
	}
	if string(settings["agent_id"]) != `"agent-1"` || !strings.Contains(string(settings["mbus"]), "nats://127.0.0.1:4222") {
		t.Errorf("settings lost the request's keys: %s", settings)
	}
	var vm struct{ CID string }
	if err := json.Unmarshal(settings["vm"], &vm); err != nil || vm.CID != res.CID {
		t.Errorf("settings vm = %s", settings["vm"])
	}
	var nets map[string]cpi.Network
	if err := json.Unmarshal(settings["networks"], &nets); err != nil || nets["default"].IP != "127.77.3.7" || nets["default"].Gateway != "127.77.0.1" {
		t.Errorf("settings networks = %s", settings["networks"])
	}
	if st, _ := os.Stat(filepath.Join(dir, settingsFile)); st.Mode().Perm() != 0o600 {
		t.Errorf("settings.json mode %v, want 0600", st.Mode().Perm())
	}

	// The agent's environment is not the plugin's.
	t.Setenv("COMPLEAT_CPI_PROPERTIES", "secret")
	args := waitFile(t, filepath.Join(c.agentFiles(res.CID), "args.json"))
	if strings.Contains(args, "COMPLEAT_CPI_PROPERTIES") {
		t.Errorf("the agent inherited the plugin's environment: %s", args)
	}
	for _, want := range []string{`"--infrastructure","local"`, `"--settings-file","` + filepath.Join(dir, settingsFile) + `"`} {
		if !strings.Contains(args, want) {
			t.Errorf("agent command line %s lacks %s", args, want)
		}
	}

	if ok, err := c.HasVM(ctx, res.CID); err != nil || !ok {
		t.Fatalf("HasVM = %v, %v; want true", ok, err)
	}
	if err := c.SetVMMetadata(ctx, res.CID, map[string]string{"deployment": "d", "job": "web"}); err != nil {
		t.Fatal(err)
	}
	var md map[string]string
	if err := readJSON(filepath.Join(dir, metadataFile), &md); err != nil || md["job"] != "web" {
		t.Fatalf("metadata.json = %v, %v", md, err)
	}

	// Reboot: every old process ends, a new agent starts with the same
	// settings and address.
	if err := os.Remove(filepath.Join(c.agentFiles(res.CID), "addr")); err != nil {
		t.Fatal(err)
	}
	if err := c.RebootVM(ctx, res.CID); err != nil {
		t.Fatal(err)
	}
	if alive(pid) || alive(child) {
		t.Fatalf("after reboot, old agent %d alive=%v, its child %d alive=%v", pid, alive(pid), child, alive(child))
	}
	pid2 := waitPID(t, filepath.Join(dir, pidFile))
	if pid2 == pid || !alive(pid2) {
		t.Fatalf("after reboot agent pid %d (was %d), alive=%v", pid2, pid, alive(pid2))
	}
	addr = waitFile(t, filepath.Join(c.agentFiles(res.CID), "addr"))
	if got := askVM(t, addr); got != res.CID {
		t.Fatalf("after reboot the process on %s says %q", addr, got)
	}
	child2 := waitPID(t, filepath.Join(c.agentFiles(res.CID), "child.pid"))

	// Delete: the whole tree ends, the files go, the address is free.
	if err := c.DeleteVM(ctx, res.CID); err != nil {
		t.Fatal(err)
	}
	if alive(pid2) || alive(child2) {
		t.Fatalf("after delete, agent %d alive=%v, child %d alive=%v", pid2, alive(pid2), child2, alive(child2))
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("vm directory still there: %v", err)
	}
	if ok, err := c.HasVM(ctx, res.CID); err != nil || ok {
		t.Fatalf("HasVM after delete = %v, %v", ok, err)
	}
	if err := c.DeleteVM(ctx, res.CID); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := c.CreateVM(ctx, vmRequest(sc, "127.77.3.7", nil)); err != nil {
		t.Fatalf("address of a deleted vm not free again: %v", err)
	}
}

func TestVMNotFound(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newTestCPI(t)
	for _, cid := range []string{"vm-0123456789abcdef", "../../etc", "", "disk-0123456789abcdef"} {
		if ok, err := c.HasVM(ctx, cid); ok || err != nil {
			t.Errorf("HasVM(%q) = %v, %v", cid, ok, err)
		}
		if err := c.DeleteVM(ctx, cid); err != nil {
			t.Errorf("DeleteVM(%q) = %v", cid, err)
		}
		if err := c.RebootVM(ctx, cid); !errors.Is(err, cpi.ErrVMNotFound) {
			t.Errorf("RebootVM(%q) = %v, want ErrVMNotFound", cid, err)
		}
		if err := c.SetVMMetadata(ctx, cid, nil); !errors.Is(err, cpi.ErrVMNotFound) {
			t.Errorf("SetVMMetadata(%q) = %v, want ErrVMNotFound", cid, err)
		}
		if _, err := c.GetDisks(ctx, cid); !errors.Is(err, cpi.ErrVMNotFound) {
			t.Errorf("GetDisks(%q) = %v, want ErrVMNotFound", cid, err)
		}
	}
	if _, err := c.CreateVM(ctx, vmRequest("sc-0123456789abcdef", "", nil)); !errors.Is(err, cpi.ErrStemcellNotFound) {
		t.Errorf("CreateVM on a missing stemcell = %v, want ErrStemcellNotFound", err)
	}
}

func TestCreateVMRejectsBadRequests(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newTestCPI(t)
	sc := createStemcell(t, c)
	for _, tc := range []struct {
		name  string
		edit  func(*cpi.CreateVMRequest)
		field string
	}{
		{"unknown cloud property", func(r *cpi.CreateVMRequest) { r.CloudProperties = json.RawMessage(`{"instance_type":"m5.large"}`) }, "instance_type"},
		{"ram not a number", func(r *cpi.CreateVMRequest) { r.CloudProperties = json.RawMessage(`{"ram":"lots"}`) }, "ram"},
		{"negative cpu", func(r *cpi.CreateVMRequest) { r.CloudProperties = json.RawMessage(`{"cpu":-1}`) }, "cpu"},
		{"manual ip outside loopback", func(r *cpi.CreateVMRequest) {
			r.Networks = map[string]cpi.Network{"default": {Type: "manual", IP: "10.0.0.5"}}
		}, "networks.default.ip"},
		{"unknown network type", func(r *cpi.CreateVMRequest) {
			r.Networks = map[string]cpi.Network{"n": {Type: "overlay"}}
		}, "networks.n.type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := vmRequest(sc, "", nil)
			tc.edit(&req)
			_, err := c.CreateVM(ctx, req)
			var e *cpi.Error
			if !errors.Is(err, cpi.ErrInvalidCloudProperties) || !errors.As(err, &e) || e.Field != tc.field {
				t.Fatalf("CreateVM = %v, want ErrInvalidCloudProperties naming %s", err, tc.field)
			}
		})
	}
	entries, _ := os.ReadDir(c.dir(kindVM))
	if len(entries) != 0 {
		t.Fatalf("rejected requests left %d vm directories", len(entries))
	}
	// Cloud properties as CalculateVMCloudProperties computes them are
	// accepted.
	cp, err := c.CalculateVMCloudProperties(ctx, cpi.VMResources{CPU: 2, RAMMB: 1024, EphemeralDiskSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	req := vmRequest(sc, "", nil)
	req.CloudProperties = cp
	if _, err := c.CreateVM(ctx, req); err != nil {
		t.Fatalf("CreateVM with calculated cloud properties %s: %v", cp, err)
	}
}

func TestManualAddressHeldByAnotherVM(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newTestCPI(t)
	sc := createStemcell(t, c)
	first, err := c.CreateVM(ctx, vmRequest(sc, "127.77.9.9", nil))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateVM(ctx, vmRequest(sc, "127.77.9.9", nil))
	if err == nil || !strings.Contains(err.Error(), first.CID) {
		t.Fatalf("second vm on 127.77.9.9: %v, want an error naming %s", err, first.CID)
	}
}

// Eight concurrent creates, through two CPI values on one data directory
// (as two plugin processes would be), get eight distinct addresses.
func TestConcurrentCreateVM(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dataDir := t.TempDir()
	a := newTestCPIOn(t, dataDir)
	b := newTestCPIOn(t, dataDir)
	sc := createStemcell(t, a)

	var wg sync.WaitGroup
	results := make([]cpi.CreateVMResult, 8)
	errs := make([]error, 8)
	for i := range 8 {
		c := a
		if i%2 == 1 {
			c = b
		}
		wg.Go(func() { results[i], errs[i] = c.CreateVM(ctx, vmRequest(sc, "", nil)) })
	}
	wg.Wait()
	cids, ips := map[string]bool{}, map[string]bool{}
	rng := netip.MustParsePrefix("127.79.0.0/24")
	for i, r := range results {
		if errs[i] != nil {
			t.Fatalf("create %d: %v", i, errs[i])
		}
		ip := r.Networks["default"].IP
		if cids[r.CID] || ips[ip] {
			t.Fatalf("duplicate cid %s or ip %s in %v", r.CID, ip, results)
		}
		cids[r.CID], ips[ip] = true, true
		if addr, err := netip.ParseAddr(ip); err != nil || !rng.Contains(addr) || addr == rng.Addr() {
			t.Fatalf("dynamic ip %q outside the usable dynamic range %s", ip, rng)
		}
		if r.Networks["default"].Netmask != "255.255.255.0" {
			t.Errorf("dynamic netmask %q", r.Networks["default"].Netmask)
		}
	}
	// Every VM's agent really listens on its own address.
	for _, r := range results {
		addr := waitFile(t, filepath.Join(a.agentFiles(r.CID), "addr"))
		if host, _, _ := strings.Cut(addr, ":"); host != r.Networks["default"].IP {
			t.Fatalf("vm %s listens on %s, want %s", r.CID, addr, r.Networks["default"].IP)
		}
		if got := askVM(t, addr); got != r.CID {
			t.Fatalf("%s answers %q, want %q", addr, got, r.CID)
		}
	}
}

// A new CPI on the same data directory (a restarted plugin) knows the VMs,
// their addresses and their processes.
func TestRestartKnowsVMs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dataDir := t.TempDir()
	old := newTestCPIOn(t, dataDir)
	sc := createStemcell(t, old)
	res, err := old.CreateVM(ctx, vmRequest(sc, "", nil))
	if err != nil {
		t.Fatal(err)
	}
	pid := waitPID(t, filepath.Join(old.vmDir(res.CID), pidFile))
	child := waitPID(t, filepath.Join(old.agentFiles(res.CID), "child.pid"))

	c := newTestCPIOn(t, dataDir)
	if ok, err := c.HasVM(ctx, res.CID); err != nil || !ok {
		t.Fatalf("restarted plugin: HasVM = %v, %v", ok, err)
	}
	other, err := c.CreateVM(ctx, vmRequest(sc, "", nil))
	if err != nil {
		t.Fatal(err)
	}
	if other.Networks["default"].IP == res.Networks["default"].IP {
		t.Fatalf("restarted plugin handed out %s again", res.Networks["default"].IP)
	}
	if err := c.RebootVM(ctx, res.CID); err != nil {
		t.Fatal(err)
	}
	if alive(pid) || alive(child) {
		t.Fatalf("reboot by the restarted plugin left agent %d (%v) or child %d (%v)", pid, alive(pid), child, alive(child))
	}
	pid = waitPID(t, filepath.Join(c.vmDir(res.CID), pidFile))
	if err := c.DeleteVM(ctx, res.CID); err != nil {
		t.Fatal(err)
	}
	if alive(pid) {
		t.Fatalf("agent %d survived delete", pid)
	}
}

// A VM whose agent died is a failed VM that still exists; deleting it
// works and ends what is left of it.
func TestDeadAgent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newTestCPI(t)
	sc := createStemcell(t, c)
	res, err := c.CreateVM(ctx, vmRequest(sc, "", nil))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(c.vmDir(res.CID), pidFile))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	child := waitPID(t, filepath.Join(c.agentFiles(res.CID), "child.pid"))
	// What an operator does to break a VM.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); alive(pid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("agent did not die")
		}
	}
	if ok, err := c.HasVM(ctx, res.CID); err != nil || !ok {
		t.Fatalf("HasVM of a vm whose agent died = %v, %v; want true", ok, err)
	}
	if !alive(child) {
		t.Fatalf("the agent's child %d died with it; the test needs an orphan", child)
	}
	if err := c.DeleteVM(ctx, res.CID); err != nil {
		t.Fatal(err)
	}
	if alive(child) {
		t.Fatalf("orphaned child %d of the dead agent survived delete", child)
	}
}

// A VM whose processes ignore SIGTERM is ended by SIGKILL.
func TestDeleteVMEscalatesToKill(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newTestCPI(t)
	c.stopTimeout = 200 * time.Millisecond
	sc := createStemcell(t, c)
	res, err := c.CreateVM(ctx, vmRequest(sc, "", map[string]any{"placeholder": map[string]any{"ignore_term": true}}))
	if err != nil {
		t.Fatal(err)
	}
	pid := waitPID(t, filepath.Join(c.vmDir(res.CID), pidFile))
	waitFile(t, filepath.Join(c.agentFiles(res.CID), "addr")) // SIGTERM is ignored by now
	if err := c.DeleteVM(ctx, res.CID); err != nil {
		t.Fatal(err)
	}
	if alive(pid) {
		t.Fatalf("agent %d ignoring SIGTERM survived delete", pid)
	}
}

// A stemcell whose agent cannot start fails CreateVM and leaves nothing.
func TestCreateVMAgentDoesNotStart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newTestCPI(t)
	sc := createStemcell(t, c)
	// Break the agent: a file the kernel cannot execute.
	if err := os.WriteFile(filepath.Join(c.path(kindStemcell, sc), agentFile), []byte("\x00\x01garbage"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := c.CreateVM(ctx, vmRequest(sc, "127.77.4.4", nil))
	if !errors.Is(err, cpi.ErrVMCreationFailed) {
		t.Fatalf("CreateVM = %v, want ErrVMCreationFailed", err)
	}
	if entries, _ := os.ReadDir(c.dir(kindVM)); len(entries) != 0 {
		t.Fatalf("failed create left %d vm directories", len(entries))
	}
}

// stemcellProcesses lists the live processes running the stemcell's agent.
func stemcellProcesses(c *CPI, sc string) []int {
	agent := filepath.Join(c.path(kindStemcell, sc), agentFile)
	var out []int
	for _, st := range proctree.All() {
		if exe, err := os.Readlink("/proc/" + strconv.Itoa(st.PID) + "/exe"); err == nil && exe == agent {
			out = append(out, st.PID)
		}
	}
	return out
}

// A reboot racing a delete never leaves an agent running: either the
// delete comes first and the reboot finds no VM, or the delete stops the
// agent the reboot started.
func TestRebootRacingDelete(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newTestCPI(t)
	c.stopTimeout = 500 * time.Millisecond
	sc := createStemcell(t, c)
	for range 5 {
		res, err := c.CreateVM(ctx, vmRequest(sc, "", nil))
		if err != nil {
			t.Fatal(err)
		}
		waitFile(t, filepath.Join(c.agentFiles(res.CID), "addr"))
		var wg sync.WaitGroup
		var rebootErr, deleteErr error
		wg.Go(func() { rebootErr = c.RebootVM(ctx, res.CID) })
		wg.Go(func() { deleteErr = c.DeleteVM(ctx, res.CID) })
		wg.Wait()
		if deleteErr != nil {
			t.Fatal(deleteErr)
		}
		if rebootErr != nil && !errors.Is(rebootErr, cpi.ErrVMNotFound) {
			t.Fatalf("reboot: %v", rebootErr)
		}
		if left := stemcellProcesses(c, sc); len(left) != 0 {
			t.Fatalf("processes %v of the deleted vm still run (reboot error: %v)", left, rebootErr)
		}
	}
}
