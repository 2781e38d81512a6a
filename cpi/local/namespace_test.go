package local

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/proctree"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: a mount namespace per VM")
	}
}

// mountedAt reports whether this process's namespace has a mount at dir.
func mountedAt(t *testing.T, dir string) bool {
	t.Helper()
	mounted, err := proctree.MountedAt(dir)
	if err != nil {
		t.Fatal(err)
	}
	return mounted
}

// With root, each VM has a private /var/vcap: its own root/ directory,
// which the host's /var/vcap never shows, and every process in its mount
// namespace ends with it.
func TestPrivateVarVcap(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	c := newTestCPI(t)
	sc := createStemcell(t, c)
	hostBefore, _ := os.ReadDir(proctree.VcapDir)

	var vms []cpi.CreateVMResult
	for range 2 {
		res, err := c.CreateVM(ctx, vmRequest(sc, "", map[string]any{"placeholder": map[string]any{"escape": true}}))
		if err != nil {
			t.Fatal(err)
		}
		vms = append(vms, res)
	}
	for _, res := range vms {
		// The agent was told /var/vcap, wrote there, and its files landed
		// in the VM's own root/.
		args := waitFile(t, filepath.Join(c.agentFiles(res.CID), "args.json"))
		var a struct{ Args []string }
		if err := json.Unmarshal([]byte(args), &a); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(a.Args[len(a.Args)-2:], " "); got != "--base-dir /var/vcap" {
			t.Fatalf("agent args end with %q, want --base-dir /var/vcap", got)
		}
		// The agent listens on its own address, so this is its own
		// answer, from its own /var/vcap.
		addr := waitFile(t, filepath.Join(c.agentFiles(res.CID), "addr"))
		if got := askVM(t, addr); got != res.CID {
			t.Fatalf("%s answers %q, want %q", addr, got, res.CID)
		}
	}
	// Nothing leaked to the host: no mount at /var/vcap, no files in it.
	if mountedAt(t, proctree.VcapDir) {
		t.Fatal("a vm's /var/vcap mount is visible on the host")
	}
	hostAfter, _ := os.ReadDir(proctree.VcapDir)
	if len(hostAfter) != len(hostBefore) {
		t.Fatalf("host /var/vcap changed: %v -> %v", hostBefore, hostAfter)
	}

	// A grandchild that left the agent's session and parent is found
	// through the namespace, and ends with the VM; the other VM is intact.
	escaped := waitPID(t, filepath.Join(c.agentFiles(vms[0].CID), "escaped.pid"))
	otherEscaped := waitPID(t, filepath.Join(c.agentFiles(vms[1].CID), "escaped.pid"))
	st, err := proctree.ReadStat(escaped)
	if err != nil || st.SID != escaped {
		t.Fatalf("escaped process %d: session %d (%v), want its own", escaped, st.SID, err)
	}
	if err := c.DeleteVM(ctx, vms[0].CID); err != nil {
		t.Fatal(err)
	}
	if alive(escaped) {
		t.Fatalf("process %d in the vm's namespace survived delete", escaped)
	}
	if !alive(otherEscaped) {
		t.Fatalf("deleting one vm killed process %d of another", otherEscaped)
	}
	addr := waitFile(t, filepath.Join(c.agentFiles(vms[1].CID), "addr"))
	if got := askVM(t, addr); got != vms[1].CID {
		t.Fatalf("other vm answers %q", got)
	}
}

// Without a namespace (as without root) the agent works in <vm dir>/root.
func TestWithoutNamespace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newTestCPI(t)
	c.isolate = false
	sc := createStemcell(t, c)
	res, err := c.CreateVM(ctx, vmRequest(sc, "", nil))
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(c.vmDir(res.CID), rootDirName)
	args := waitFile(t, filepath.Join(c.agentFiles(res.CID), "args.json"))
	if !strings.Contains(args, `"--base-dir","`+root+`"`) {
		t.Fatalf("agent args %s, want --base-dir %s", args, root)
	}
	pid := waitPID(t, filepath.Join(c.vmDir(res.CID), pidFile))
	self, _ := os.Readlink("/proc/thread-self/ns/mnt")
	if ns, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/mnt"); ns != self {
		t.Fatalf("agent in mount namespace %s, want the host's %s", ns, self)
	}
	addr := waitFile(t, filepath.Join(c.agentFiles(res.CID), "addr"))
	if got := askVM(t, addr); got != res.CID {
		t.Fatalf("%s answers %q", addr, got)
	}
	child := waitPID(t, filepath.Join(c.agentFiles(res.CID), "child.pid"))
	if err := c.DeleteVM(ctx, res.CID); err != nil {
		t.Fatal(err)
	}
	if alive(pid) || alive(child) {
		t.Fatalf("after delete agent %d alive=%v, child %d alive=%v", pid, alive(pid), child, alive(child))
	}
}
