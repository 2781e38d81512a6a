package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPluginKilledDuringCreateVM SIGKILLs the cpi-local plugin the moment
// the first VM of a deploy exists in the cloud (its directory appears in
// the local CPI's data dir, before the plugin recorded its agent), before
// the agent has sent a heartbeat. The deploy fails with the outcome
// unknown; the next deploy finds the VM the killed call made through
// ListVMs (by its agent-id tag), deletes it, agent included, and converges
// with exactly one VM and one agent per instance.
func TestPluginKilledDuringCreateVM(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the director, agents and the local CPI, and compiles releases/web")
	}
	bin := binaries(t)
	work := t.TempDir()
	data := filepath.Join(work, "data")
	t.Cleanup(func() { killAgents(data) })
	prefix := fmt.Sprintf("127.%d.", 100+(os.Getpid()+89)%100)
	stemcell := filepath.Join(work, "local.tgz")
	if out, err := exec.Command(filepath.Join(bin, "director"), "create-stemcell", "--agent", filepath.Join(bin, "agent"), "--tarball", stemcell).CombinedOutput(); err != nil {
		t.Fatalf("create-stemcell: %v\n%s", err, out)
	}
	d := startDirector(t, bin, data)
	d.run("-n", "upload-release", "releases/web")
	d.run("-n", "upload-stemcell", stemcell)
	moved := func(name string) string {
		raw, err := os.ReadFile(filepath.Join(repoRoot(), "manifests", "local", name))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(work, name)
		writeFile(t, p, strings.ReplaceAll(string(raw), "127.77.", prefix))
		return p
	}
	d.run("-n", "update-cloud-config", moved("cloud-config.yml"))
	manifest := moved("web.yml")
	t.Cleanup(func() {
		if out, err := d.command("-n", "-d", "web", "delete-deployment", "--force").CombinedOutput(); err != nil {
			t.Logf("cleanup: delete-deployment: %v\n%s", err, out)
		}
	})

	// The first VM of the deploy (a compile VM: nothing is compiled yet)
	// is where the plugin dies.
	cmd := d.command("-n", "--json", "deploy", manifest)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	before := map[string]bool{}
	for _, v := range vmDirs(t, data) {
		before[v] = true
	}
	killed := make(chan int, 1)
	go func() {
		deadline := time.Now().Add(5 * time.Minute)
		for time.Now().Before(deadline) {
			for _, v := range vmDirs(t, data) {
				if before[v] {
					continue
				}
				if _, err := os.Stat(filepath.Join(data, "vms", v, "agent.pid")); err == nil {
					continue // a compile VM or one whose creation finished: wait for a fresh one
				}
				if pid := pluginPID(d.cmd.Process.Pid); pid > 0 {
					syscall.Kill(pid, syscall.SIGKILL)
					killed <- pid
					return
				}
			}
			time.Sleep(200 * time.Microsecond)
		}
		killed <- 0
	}()
	sc := bufio.NewScanner(out)
	var last string
	for sc.Scan() {
		last = sc.Text()
	}
	cmd.Wait()
	pid := <-killed
	if pid == 0 {
		t.Fatal("no VM appeared to kill the plugin on")
	}
	t.Logf("killed cpi-local (pid %d) during CreateVM; the deploy ended with: %s", pid, last)

	// The next deploy converges: one VM per instance, nothing leaked.
	d.deploy(manifest)
	lbAddr = prefix + "1.10:8080"
	lbAnswers(t, "v1", 2)
	if vms := vmDirs(t, data); len(vms) != 3 {
		t.Errorf("%d VMs in the cloud after the converging deploy, want 3: %v", len(vms), vms)
	}
	if n := strings.Count(d.run("-d", "web", "vms"), "vm-"); n != 3 {
		t.Errorf("%d VMs recorded, want 3", n)
	}
	if agents := agents(data); len(agents) != 3 {
		t.Errorf("%d agents running, want 3", len(agents))
	}
}

// pluginPID is the pid of the cpi-local child of the director process.
func pluginPID(director int) int {
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", p.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(raw)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || !strings.Contains(s[:i], "(cpi-local") {
			continue
		}
		if f := strings.Fields(s[i+1:]); len(f) > 1 && f[1] == strconv.Itoa(director) {
			return pid
		}
	}
	return 0
}
