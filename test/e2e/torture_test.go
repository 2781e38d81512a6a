//go:build torture

package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestTorture kills the director (and its CPI plugin: the whole process
// group, as a host crash would) with SIGKILL at random points of deploys
// that recreate every VM of the sample deployment on the local CPI
// (compile, VM deletion and creation, disk detach and attach, drain),
// restarts it on the same data directory and deploys again until the deploy
// succeeds. After each trial it checks that every VM in the cloud is
// recorded and every recorded VM is in the cloud (orphans), that every
// persistent disk is still there and attached to its instance (lost), and
// that the files written on the persistent disks before the first trial are
// unchanged. It prints one summary line:
//
//	torture: trials=N converged=N orphans=0 lost=0 checksums=ok ...
//
// Each trial inflicts one fault (see allFaults) while the deploy runs; the
// re-runs deploy as an operator would, with --fix from the second attempt.
// Run with `make torture` (TORTURE_TRIALS, default 40; TORTURE_FAULTS).
// With moto_server on PATH the director runs in production mode with its
// blobs in S3 (tortureDirector), and the rotation includes the blobstore.
func TestTorture(t *testing.T) {
	trials := 40
	if v, err := strconv.Atoi(os.Getenv("TORTURE_TRIALS")); err == nil && v > 0 {
		trials = v
	}
	bin := binaries(t)
	work := t.TempDir()
	data := filepath.Join(work, "data")
	t.Cleanup(func() { killAgents(data) })
	prefix := fmt.Sprintf("127.%d.", 100+(os.Getpid()+53)%100)
	stemcell := filepath.Join(work, "local.tgz")
	if out, err := exec.Command(filepath.Join(bin, "director"), "create-stemcell", "--agent", filepath.Join(bin, "agent"), "--tarball", stemcell).CombinedOutput(); err != nil {
		t.Fatalf("create-stemcell: %v\n%s", err, out)
	}
	start, moto := tortureDirector(t, bin, work, data, prefix)
	d := start()
	d.run("-n", "upload-release", "releases/web")
	d.run("-n", "upload-stemcell", stemcell)
	moved := func(name string, edit func(string) string) string {
		raw, err := os.ReadFile(filepath.Join(repoRoot(), "manifests", "local", name))
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(raw), "127.77.", prefix)
		if edit != nil {
			text = edit(text)
		}
		p := filepath.Join(work, name)
		writeFile(t, p, text)
		return p
	}
	d.run("-n", "update-cloud-config", moved("cloud-config.yml", nil))
	// Every web instance gets a persistent disk.
	manifest := moved("web.yml", func(s string) string {
		return strings.Replace(s, "  instances: 2\n", "  instances: 2\n  persistent_disk: 64\n", 1)
	})
	began := time.Now()
	d.deploy(manifest)
	firstDeploy := time.Since(began)
	// On failure the agents are killed by the cleanup above; on success
	// the deployment is deleted at the end.

	// Data on every persistent disk, written from the host into the local
	// CPI's disk directories.
	sums := map[string]string{}
	for _, disk := range dirNames(t, filepath.Join(data, "disks")) {
		buf := make([]byte, 64<<10)
		rand.Read(buf)
		p := filepath.Join(data, "disks", disk, "data", "torture.dat")
		if err := os.WriteFile(p, buf, 0o644); err != nil {
			t.Fatal(err)
		}
		sums[disk] = sha256hex(buf)
	}
	if len(sums) != 2 {
		t.Fatalf("%d persistent disks after the first deploy, want 2", len(sums))
	}

	// How long a recreating deploy takes bounds where the kill falls.
	began = time.Now()
	d.deploy(manifest, "--recreate")
	window := time.Since(began)

	lbAddr = prefix + "1.10:8080"
	var converged, orphans, lost, badSums, reruns, serving int
	var kills []string
	faults := tortureFaults(t, moto != nil)
	applied := map[string]int{}
	for trial := 1; trial <= trials; trial++ {
		fault := faults[(trial-1)%len(faults)]
		cli := d.command("-n", "--json", "deploy", manifest, "--recreate")
		if err := cli.Start(); err != nil {
			t.Fatal(err)
		}
		at := time.Duration(mrand.Int64N(int64(window)))
		time.Sleep(at)
		what := inflict(t, fault, d, data, moto)
		if fault == "director" {
			<-d.done
		}
		cli.Wait()
		applied[fault]++
		kills = append(kills, fault+"@"+at.Round(100*time.Millisecond).String())
		t.Logf("trial %d: %s after %s: %s", trial, fault, at.Round(time.Millisecond), what)

		if fault == "director" {
			d = start()
		}
		ok, n := converge(t, d, trial, []string{manifest})
		reruns += n
		if ok {
			converged++
		} else {
			t.Errorf("trial %d (%s after %s): no convergence in 5 deploys\n%s", trial, fault, at, tail(d.logs.String(), 40))
		}

		// Orphans: VMs in the cloud the director does not know, and VMs
		// it records that the cloud lacks.
		vms := d.run("-d", "web", "vms")
		cloudVMs := dirNames(t, filepath.Join(data, "vms"))
		for _, v := range cloudVMs {
			if !strings.Contains(vms, v) {
				orphans++
				t.Errorf("trial %d: VM %s is in the cloud, not in the director's records", trial, v)
			}
		}
		if n := strings.Count(vms, "vm-"); n != len(cloudVMs) || n != 3 {
			orphans += max(0, n-len(cloudVMs))
			t.Errorf("trial %d: %d VMs recorded, %d in the cloud, want 3", trial, n, len(cloudVMs))
		}
		// Lost disks: every disk written to is there, with its data,
		// attached to a live instance.
		disks := d.run("disks")
		for disk, sum := range sums {
			raw, err := os.ReadFile(filepath.Join(data, "disks", disk, "data", "torture.dat"))
			if err != nil {
				lost++
				t.Errorf("trial %d: disk %s lost: %v", trial, disk, err)
				continue
			}
			if sha256hex(raw) != sum {
				badSums++
				t.Errorf("trial %d: disk %s data changed", trial, disk)
			}
			if !strings.Contains(disks, disk) {
				lost++
				t.Errorf("trial %d: disk %s not in the director's records:\n%s", trial, disk, disks)
			}
		}
		if n := len(dirNames(t, filepath.Join(data, "disks"))); n != len(sums) {
			t.Errorf("trial %d: %d disks in the cloud, want %d", trial, n, len(sums))
			orphans += max(0, n-len(sums))
		}
		// The service: the lb answers from both web instances.
		if lbServes(2, 30*time.Second) {
			serving++
		} else {
			t.Errorf("trial %d (%s after %s): the lb does not answer from both web instances after the converging deploy\n%s",
				trial, fault, at, d.run("-d", "web", "instances", "--ps"))
		}
	}
	check := "ok"
	if badSums > 0 {
		check = strconv.Itoa(badSums) + "-changed"
	}
	var counts []string
	for _, f := range allFaults {
		if applied[f] > 0 {
			counts = append(counts, fmt.Sprintf("%s:%d", f, applied[f]))
		}
	}
	line := fmt.Sprintf("torture: trials=%d converged=%d orphans=%d lost=%d checksums=%s serving=%d reruns=%d faults=%s first_deploy=%s recreate_deploy=%s at=[%s]",
		trials, converged, orphans, lost, check, serving, reruns, strings.Join(counts, ","), firstDeploy.Round(time.Second), window.Round(time.Second), strings.Join(kills, " "))
	fmt.Println(line)
	t.Log(line)
	d.run("-n", "-d", "web", "delete-deployment", "--force")
}

// The faults a trial can inflict while a recreating deploy runs:
//
//   - director: SIGKILL the director's whole process group (director, its
//     embedded bus and its CPI plugin), as a host crash would; it is then
//     restarted on the same data directory.
//   - plugin: SIGKILL the CPI plugin process alone, mid-call or between
//     calls; the director keeps running.
//   - agent: SIGKILL one VM's agent; the VM's jobs keep running.
//   - vm: SIGKILL everything of one VM (agent and jobs), as a VM that dies.
//   - freeze: SIGSTOP the director's process group (API, bus and plugin
//     unreachable: agents lose their bus connection) for 2-10 s, then
//     SIGCONT. The bus is embedded in the director, so it cannot restart on
//     its own; the director trials restart it.
//   - blobstore: SIGSTOP the S3 server holding the blobs (moto_server) for
//     2-10 s, then SIGCONT: compile uploads, blob downloads by agents and
//     the director's own reads stall and fail meanwhile. Only with
//     moto_server on PATH (see tortureDirector).
var allFaults = []string{"director", "plugin", "agent", "vm", "freeze", "blobstore"}

// tortureDirector returns how to start (and restart) the director the
// trials torture. With moto_server on PATH it is a production director
// (`serve --config`, the example of docs/operations.md) whose blobstore is
// S3 on a moto_server of its own, which the blobstore fault stops; without
// it, `serve --dev` and no blobstore fault. Either way the local CPI keeps
// its VMs and disks under data, as the checks expect.
func tortureDirector(t *testing.T, bin, work, data, prefix string) (start func() *director, moto *exec.Cmd) {
	if _, err := exec.LookPath("moto_server"); err != nil {
		t.Logf("moto_server not on PATH: dev director, blobs on disk, no blobstore fault")
		return func() *director { return startDirector(t, bin, data) }, nil
	}
	port := freePort(t)
	moto = exec.Command("moto_server", "-H", "127.0.0.1", "-p", strconv.Itoa(port))
	motoLog, err := os.Create(filepath.Join(work, "moto.log"))
	if err != nil {
		t.Fatal(err)
	}
	moto.Stdout, moto.Stderr = motoLog, motoLog
	moto.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := moto.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-moto.Process.Pid, syscall.SIGCONT)
		syscall.Kill(-moto.Process.Pid, syscall.SIGKILL)
		moto.Wait()
		motoLog.Close()
	})
	s3 := fmt.Sprintf("http://127.0.0.1:%d", port)
	// The bucket: moto takes an unsigned PUT.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		req, _ := http.NewRequest(http.MethodPut, s3+"/compleat-blobs", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("moto_server: no bucket after a minute: %v", err)
		}
	}
	doc, err := os.ReadFile(filepath.Join(repoRoot(), "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	apiPort, busPort := freePort(t), freePort(t)
	cfg := strings.NewReplacer(":25555", fmt.Sprintf(":%d", apiPort), ":4222", fmt.Sprintf(":%d", busPort),
		"/var/lib/compleat/cpi", data, "/var/lib/compleat", data, "/etc/compleat", work, "127.77.", prefix,
		"  type: fs ", fmt.Sprintf("  type: s3\n  s3: {bucket: compleat-blobs, endpoint: %q, path_style: true, access_key_id: torture, secret_access_key: torture}\n ", s3),
	).Replace(yamlBlockAfter(t, string(doc), "### Production on one machine"))
	if !strings.Contains(cfg, "type: s3") || !strings.Contains(cfg, "data_dir: "+data+",") {
		t.Fatalf("the documented example changed shape:\n%s", cfg)
	}
	token := "torture-admin-token-0123456789abcdef"
	writeFile(t, filepath.Join(work, "admin.token"), token+"\n")
	file := filepath.Join(work, "director.yml")
	writeFile(t, file, cfg)
	target := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	t.Logf("production director, blobs in S3 on moto_server pid %d", moto.Process.Pid)
	return func() *director {
		return startProduction(t, bin, file, target, token, filepath.Join(data, "ca.pem"))
	}, moto
}

// tortureFaults is the rotation of faults the trials take in turn:
// TORTURE_FAULTS (comma-separated), or by default a director kill every
// other trial and the other faults in between (40 trials: 20 director
// kills, 5 of each other fault).
func tortureFaults(t *testing.T, s3 bool) []string {
	v := os.Getenv("TORTURE_FAULTS")
	if v == "" {
		var out []string
		for _, f := range allFaults[1:] {
			if f == "blobstore" && !s3 {
				continue
			}
			out = append(out, "director", f)
		}
		return out
	}
	var out []string
	for _, f := range strings.Split(v, ",") {
		if !slices.Contains(allFaults, f) {
			t.Fatalf("TORTURE_FAULTS: unknown fault %q (known: %s)", f, strings.Join(allFaults, ","))
		}
		if f == "blobstore" && !s3 {
			t.Fatalf("TORTURE_FAULTS: the blobstore fault needs moto_server on PATH")
		}
		out = append(out, f)
	}
	return out
}

// inflict applies fault to the running director d and the VMs under data,
// choosing every process by its PID, and says what it hit.
func inflict(t *testing.T, fault string, d *director, data string, moto *exec.Cmd) string {
	switch fault {
	case "director":
		syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		return fmt.Sprintf("director group %d", d.cmd.Process.Pid)
	case "plugin":
		for _, pid := range childrenOf(d.cmd.Process.Pid) {
			if strings.HasPrefix(processName(pid), "cpi-") {
				syscall.Kill(pid, syscall.SIGKILL)
				return fmt.Sprintf("plugin %s pid %d", processName(pid), pid)
			}
		}
		return "no plugin running"
	case "agent", "vm":
		var live []string
		for _, cid := range dirNames(t, filepath.Join(data, "vms")) {
			raw, err := os.ReadFile(filepath.Join(data, "vms", cid, "agent.pid"))
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(raw))); err == nil && perr == nil && sessionOf(pid) > 0 {
				live = append(live, cid)
			}
		}
		if len(live) == 0 {
			return "no agent running"
		}
		cid := live[mrand.IntN(len(live))]
		if fault == "agent" {
			pid := agentPID(t, data, cid)
			syscall.Kill(pid, syscall.SIGKILL)
			return fmt.Sprintf("agent pid %d of VM %s", pid, cid)
		}
		return fmt.Sprintf("VM %s: %d processes", cid, killVM(t, data, cid))
	case "freeze":
		pause := 2*time.Second + time.Duration(mrand.Int64N(int64(8*time.Second)))
		syscall.Kill(-d.cmd.Process.Pid, syscall.SIGSTOP)
		time.Sleep(pause)
		syscall.Kill(-d.cmd.Process.Pid, syscall.SIGCONT)
		return fmt.Sprintf("director group stopped for %s", pause.Round(100*time.Millisecond))
	case "blobstore":
		pause := 2*time.Second + time.Duration(mrand.Int64N(int64(8*time.Second)))
		syscall.Kill(-moto.Process.Pid, syscall.SIGSTOP)
		time.Sleep(pause)
		syscall.Kill(-moto.Process.Pid, syscall.SIGCONT)
		return fmt.Sprintf("S3 blobstore (moto_server group %d) stopped for %s", moto.Process.Pid, pause.Round(100*time.Millisecond))
	}
	t.Fatalf("unknown fault %q", fault)
	return ""
}

// childrenOf lists the pids whose parent is pid.
func childrenOf(pid int) []int {
	var out []int
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		child, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", p.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		_, rest, ok := strings.Cut(string(st), ") ")
		if f := strings.Fields(rest); ok && len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

func processName(pid int) string {
	raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(raw))
}

// lbServes reports whether the lb answers from want distinct web instances
// within d.
func lbServes(want int, d time.Duration) bool {
	client := &http.Client{Timeout: 2 * time.Second}
	seen := map[string]bool{}
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := client.Get("http://" + lbAddr + "/")
		if err != nil {
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if _, name, ok := strings.Cut(strings.TrimSpace(string(body)), " "); ok && resp.StatusCode == 200 {
			seen[name] = true
			if len(seen) >= want {
				return true
			}
		}
	}
	return false
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// converge deploys what args name (a manifest and its ops files) as an
// operator would after a fault: again, and from the second attempt with
// --fix (recreating VMs whose agent does not answer), until a deploy
// succeeds, at most 5 times. It reports whether one did and how many ran.
func converge(t *testing.T, d *director, trial int, args []string) (bool, int) {
	t.Helper()
	for attempt := 1; attempt <= 5; attempt++ {
		cmd := append([]string{"-n", "--json", "deploy"}, args...)
		if attempt > 1 {
			cmd = append(cmd, "--fix")
		}
		out, err := d.command(cmd...).CombinedOutput()
		if err == nil {
			return true, attempt
		}
		t.Logf("trial %d: deploy after the fault, attempt %d: %v\n%s", trial, attempt, err, tail(string(out), 10))
	}
	return false, 5
}
