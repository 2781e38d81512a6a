package local

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The environment that makes this test binary run TestUnprivileged's body
// as an unprivileged child: the path of the placeholder agent.
const unprivilegedAgentEnv = "CPI_LOCAL_TEST_UNPRIVILEGED_AGENT"

// Without root the local CPI still works: no mount namespace, the agent
// told to use <vm dir>/root, its processes ended by DeleteVM. As root, the
// test runs itself again as the user nobody.
func TestUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		unprivilegedBody(t)
		return
	}
	shared, err := os.MkdirTemp("", "cpi-local-unprivileged-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shared) })
	const nobody = 65534
	self := filepath.Join(shared, "local.test")
	if err := copyExecutable(os.Args[0], self); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(shared, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(work, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^TestUnprivileged$", "-test.v", "-test.count=1")
	cmd.Dir = work
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + work, "TMPDIR=" + work, unprivilegedAgentEnv + "=" + placeholderAgent}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	// Whatever happened, no process of the child's VMs outlives the test.
	reapAll(t, work)
	t.Logf("as uid %d:\n%s", nobody, out)
	if err != nil || !strings.Contains(string(out), "--- PASS: TestUnprivileged") {
		t.Fatalf("unprivileged run failed: %v", err)
	}
}

func unprivilegedBody(t *testing.T) {
	ctx := context.Background()
	c := newTestCPI(t)
	if c.isolate {
		t.Fatal("mount namespaces chosen without root")
	}
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
	addr := waitFile(t, filepath.Join(c.agentFiles(res.CID), "addr"))
	if got := askVM(t, addr); got != res.CID {
		t.Fatalf("%s answers %q", addr, got)
	}
	pid := waitPID(t, filepath.Join(c.vmDir(res.CID), pidFile))
	child := waitPID(t, filepath.Join(c.agentFiles(res.CID), "child.pid"))
	if err := c.RebootVM(ctx, res.CID); err != nil {
		t.Fatal(err)
	}
	if alive(pid) || alive(child) {
		t.Fatalf("after reboot agent %d alive=%v, child %d alive=%v", pid, alive(pid), child, alive(child))
	}
	pid = waitPID(t, filepath.Join(c.vmDir(res.CID), pidFile))
	if err := c.DeleteVM(ctx, res.CID); err != nil {
		t.Fatal(err)
	}
	if alive(pid) {
		t.Fatalf("agent %d survived delete", pid)
	}
	t.Logf("uid %d: vm %s ran as pid %d on %s", os.Geteuid(), res.CID, pid, addr)
}

// reapAll deletes the VMs of every data directory the child left under dir.
func reapAll(t *testing.T, dir string) {
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() && d.Name() == "vms" {
			c, err := New(props(t, filepath.Dir(p)), WithLogger(testLogger(t)))
			if err == nil {
				deleteAllVMs(t, c)
			}
			return filepath.SkipDir
		}
		return nil
	})
}

func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
