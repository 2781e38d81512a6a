package e2e

import (
	"errors"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestJobsRunAsVcap: an agent running as root runs its jobs' processes as
// BOSH's unprivileged vcap user (made if missing), and the director's keys
// in its data directory are out of their reach.
func TestJobsRunAsVcap(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("jobs run as vcap only when the agent runs as root")
	}
	d, data := deploySample(t, freeRange(t), nil)
	vcap, err := user.Lookup("vcap")
	if err != nil {
		t.Fatalf("the agents did not make the vcap user: %v", err)
	}
	vm := d.findInstance(t, "web", "web", 0).VMCID
	pids, _ := filepath.Glob(filepath.Join(data, "vms", vm, "root", "sys", "run", "web", "*.pid"))
	if len(pids) == 0 {
		t.Fatalf("no pid file of the web job on %s", vm)
	}
	for _, p := range pids {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		status, err := os.ReadFile(filepath.Join("/proc", strings.Fields(string(raw))[0], "status")) // "pid start-time"
		if err != nil {
			t.Fatalf("process of %s: %v", p, err)
		}
		for _, line := range strings.Split(string(status), "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" && f[1] != vcap.Uid {
				t.Errorf("%s: the web process runs as uid %s, want vcap (%s)", p, f[1], vcap.Uid)
			}
		}
	}
	// What the job's user can read of the director's data directory: none
	// of its keys.
	uid, _ := strconv.Atoi(vcap.Uid)
	gid, _ := strconv.Atoi(vcap.Gid)
	for _, key := range []string{"ca.key", "state.db.key", "blobs.key", "state.db"} {
		path := filepath.Join(data, key)
		if _, err := os.Stat(path); err != nil {
			t.Errorf("%s: %v", key, err)
			continue
		}
		cat := exec.Command("cat", path)
		cat.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}}
		out, err := cat.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || !strings.Contains(string(out), "Permission denied") {
			t.Errorf("the job user reads the director's %s: %v\n%.80s", key, err, out)
		}
	}
}
