package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestResurrectWeb kills a web VM's whole process tree behind the
// director's back and expects the health monitor to notice, the resurrector
// to recreate the instance on a new VM with its persistent disk (data
// intact), and the lb to answer throughout from the other instance. It
// reports the time from the kill to the replacement running.
func TestResurrectWeb(t *testing.T) {
	// The sample with a persistent disk on each web instance.
	d, data := deploySample(t, freeRange(t), func(m string) string {
		return strings.Replace(m, "  vm_type: default\n", "  vm_type: default\n  persistent_disk: 64\n", 1)
	})

	// web/0: its VM, its agent and its persistent disk, with a file on it.
	find := func(group string, index int) instanceRow {
		t.Helper()
		return d.findInstance(t, "web", group, index)
	}
	web0 := func() instanceRow { t.Helper(); return find("web", 0) }
	before := web0()
	if len(before.DiskCIDs) != 1 {
		t.Fatalf("web/0 has disks %v, want one", before.DiskCIDs)
	}
	diskData := filepath.Join(data, "disks", before.DiskCIDs[0], "data")
	marker := filepath.Join(diskData, "written-before-the-kill")
	if err := os.WriteFile(marker, []byte("still here\n"), 0o644); err != nil {
		t.Fatalf("write to web/0's persistent disk: %v", err)
	}

	// The lb is asked every 100 ms from now until the replacement runs.
	var asked, failed atomic.Int64
	var lastFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		client := &http.Client{Timeout: 2 * time.Second}
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			asked.Add(1)
			resp, err := client.Get("http://" + lbAddr + "/")
			if err != nil {
				failed.Add(1)
				lastFailure.Store(err.Error())
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				failed.Add(1)
				lastFailure.Store(resp.Status)
			}
		}
	}()
	stopPolling := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopPolling)

	killed := time.Now()
	n := killVM(t, data, before.VMCID)
	t.Logf("killed %d processes of VM %s (web/0)", n, before.VMCID)

	// The monitor's event, then the replacement running.
	type auditEvent struct {
		Time     time.Time         `json:"time"`
		Action   string            `json:"action"`
		Instance string            `json:"instance"`
		Result   string            `json:"result"`
		Error    string            `json:"error"`
		Context  map[string]string `json:"context"`
		TaskID   uint64            `json:"task_id"`
	}
	eventsOf := func(action string) []auditEvent {
		var evs []auditEvent
		out, err := d.command("--json", "-d", "web", "events", "--action", action).Output()
		if err == nil {
			json.Unmarshal(out, &evs)
		}
		return evs
	}
	okEvents := func(evs []auditEvent) []auditEvent {
		var out []auditEvent
		for _, e := range evs {
			if e.Result == "ok" {
				out = append(out, e)
			}
		}
		return out
	}
	var detected auditEvent
	deadline := time.Now().Add(60 * time.Second)
	for {
		if evs := eventsOf("unresponsive"); len(evs) > 0 {
			detected = evs[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no unresponsive event within 60s of the kill\ndirector log tail:\n%s", tail(d.logs.String(), 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if detected.Instance != "web/"+before.ID {
		t.Errorf("unresponsive event for %s, want web/%s", detected.Instance, before.ID)
	}
	t.Logf("detected %s after the kill (%s)", detected.Time.Sub(killed).Round(10*time.Millisecond), detected.Context["reason"])

	type health struct {
		Group  string `json:"group"`
		Index  int    `json:"index"`
		VMCID  string `json:"vm_cid"`
		Status string `json:"status"`
		Jobs   []struct {
			Name string `json:"name"`
		} `json:"jobs"`
	}
	// Running again: the resurrection (a task that ends when every process
	// of the new VM runs) is done, and the heartbeats of the new VM's agent
	// say its job runs.
	var replacedAt time.Time
	var after health
	deadline = time.Now().Add(120 * time.Second)
	for {
		evs := eventsOf("resurrect")
		if len(evs) > 0 && evs[0].Result != "ok" {
			t.Fatalf("resurrection failed: %+v\ndirector log tail:\n%s", evs[0], tail(d.logs.String(), 60))
		}
		if len(evs) > 0 && replacedAt.IsZero() {
			replacedAt = evs[0].Time
		}
		var hs []health
		if out, err := d.command("--json", "-d", "web", "health").Output(); err == nil && json.Unmarshal(out, &hs) == nil && !replacedAt.IsZero() {
			for _, h := range hs {
				if h.Group == "web" && h.Index == 0 && h.VMCID != before.VMCID && h.Status == "running" && len(h.Jobs) > 0 {
					after = h
				}
			}
		}
		if after.VMCID != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("web/0 not running on a new VM within 120s of the kill: %+v\nresurrect events: %+v\ndirector log tail:\n%s", hs, evs, tail(d.logs.String(), 60))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("web/0 running on VM %s %s after the kill (goal: 15s)", after.VMCID, replacedAt.Sub(killed).Round(10*time.Millisecond))
	if now := web0(); fmt.Sprint(now.IPs) != fmt.Sprint(before.IPs) {
		t.Errorf("web/0 moved from %v to %v", before.IPs, now.IPs)
	}
	// The poller stops first: with two backends taken in turn, two clients
	// asking at the same pace can each keep meeting the same backend.
	stopPolling()
	if !lbSees(lbAddr, "web/0", 30*time.Second) {
		t.Errorf("the lb never answered from web/0 again: lb status %s; web/0 itself (%v): %s", get("http://"+lbAddr+"/_lb/status"), before.IPs, get("http://"+before.IPs[0]+":8080/health"))
	}
	t.Logf("lb asked %d times during the resurrection, %d failed", asked.Load(), failed.Load())
	if failed.Load() > 0 {
		t.Errorf("the lb failed %d of %d requests during the resurrection (last: %v)", failed.Load(), asked.Load(), lastFailure.Load())
	}

	evs := eventsOf("resurrect")
	if len(evs) != 1 || evs[0].Result != "ok" || evs[0].Context["took"] == "" {
		t.Errorf("resurrect events: %+v", evs)
	}
	now := web0()
	if now.VMCID == before.VMCID || now.AgentID == before.AgentID || len(now.DiskCIDs) != 1 || now.DiskCIDs[0] != before.DiskCIDs[0] {
		t.Errorf("web/0 after the resurrection: %+v (before %+v)", now, before)
	}
	if got, err := os.ReadFile(marker); err != nil || string(got) != "still here\n" {
		t.Errorf("file on the persistent disk after the resurrection: %q, %v", got, err)
	}
	var disk struct {
		VMCID string `json:"vm_cid"`
	}
	if raw, err := os.ReadFile(filepath.Join(data, "disks", before.DiskCIDs[0], "disk.json")); err != nil || json.Unmarshal(raw, &disk) != nil || disk.VMCID != now.VMCID {
		t.Errorf("disk %s attached to %q, want the new VM %s (%v)", before.DiskCIDs[0], disk.VMCID, now.VMCID, err)
	}
	if _, err := os.Stat(filepath.Join(data, "vms", before.VMCID)); !os.IsNotExist(err) {
		t.Errorf("the dead VM's directory is still there: %v", err)
	}

	t.Run("cloud-check finds injected problems and --auto fixes them", func(t *testing.T) {
		d.run("-n", "-d", "web", "update-resurrection", "off")
		w0, w1, lb := web0(), find("web", 1), find("lb", 0)
		// web/1's VM deleted behind the director's back.
		killVM(t, data, w1.VMCID)
		removeVMDir(t, data, w1.VMCID)
		// web/0's disk detached behind its back (the local CPI's record).
		detachRecord(t, data, w0.DiskCIDs[0])
		// lb's agent stopped; its processes may go on.
		if pid := agentPID(t, data, lb.VMCID); syscall.Kill(pid, syscall.SIGKILL) != nil {
			t.Fatalf("kill lb's agent %d", pid)
		}
		time.Sleep(time.Second) // the bus notices the closed connection
		out, err := d.command("-d", "web", "cloud-check", "--report").CombinedOutput()
		if code := exitCode(err); code != 1 {
			t.Errorf("cloud-check --report with problems: exit %d", code)
		}
		for _, id := range []string{"missing_vm:" + w1.VMCID, "unattached_disk:" + w0.DiskCIDs[0], "unresponsive_agent:" + lb.VMCID} {
			if !strings.Contains(string(out), id) {
				t.Errorf("cloud-check --report does not list %s:\n%s", id, out)
			}
		}
		began := time.Now()
		d.run("-n", "-d", "web", "cloud-check", "--auto")
		t.Logf("cloud-check --auto fixed %d problems in %s", strings.Count(string(out), "id: "), time.Since(began).Round(10*time.Millisecond))
		if out := d.run("-d", "web", "cloud-check", "--report"); !strings.Contains(out, ": 0 problems") {
			t.Errorf("after --auto:\n%s", out)
		}
		lbAnswers(t, "v1", 2)
		if got, err := os.ReadFile(marker); err != nil || string(got) != "still here\n" {
			t.Errorf("file on web/0's disk after the reattach: %q, %v", got, err)
		}
		if n := len(okEvents(eventsOf("resurrect"))); n != 1 {
			t.Errorf("%d resurrections with resurrection off (want the first one only)", n)
		}
		if n := len(eventsOf("meltdown")); n != 0 {
			t.Errorf("a meltdown with resurrection off: %+v", eventsOf("meltdown"))
		}
		d.run("-n", "-d", "web", "update-resurrection", "on")
	})

	t.Run("two of three killed at once: meltdown, no resurrection", func(t *testing.T) {
		w0, w1 := web0(), find("web", 1)
		resurrections := len(okEvents(eventsOf("resurrect")))
		meltdowns, overs := len(eventsOf("meltdown")), len(eventsOf("meltdown-over"))
		killVM(t, data, w0.VMCID)
		killVM(t, data, w1.VMCID)
		deadline := time.Now().Add(60 * time.Second)
		for len(eventsOf("meltdown")) == meltdowns {
			if time.Now().After(deadline) {
				t.Fatalf("no meltdown event within 60s; resurrect events: %+v", eventsOf("resurrect"))
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("meltdown: %+v", eventsOf("meltdown")[0].Context)
		time.Sleep(10 * time.Second)
		if n := len(okEvents(eventsOf("resurrect"))); n != resurrections {
			t.Errorf("%d resurrections during the meltdown", n-resurrections)
		}
		// The operator fixes it with cloud-check; the meltdown ends.
		d.run("-n", "-d", "web", "cloud-check", "--auto")
		lbAnswers(t, "v1", 2)
		deadline = time.Now().Add(30 * time.Second)
		for len(eventsOf("meltdown-over")) == overs && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		if len(eventsOf("meltdown-over")) == overs {
			t.Error("no meltdown-over event after the fix")
		}
	})

	t.Run("a hung agent is resurrected after the timeout", func(t *testing.T) {
		w1 := find("web", 1)
		resurrections := len(okEvents(eventsOf("resurrect")))
		meltdowns := len(eventsOf("meltdown"))
		// web/0's resurrection above counts as down for the meltdown guard
		// for a minute (the window): let it pass.
		if wait := time.Until(replacedAt.Add(65 * time.Second)); wait > 0 {
			time.Sleep(wait)
		}
		// SIGSTOP: the agent keeps its bus connection but says nothing,
		// so only the 15 s timeout finds it.
		pid := agentPID(t, data, w1.VMCID)
		hung := time.Now()
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(90 * time.Second)
		for len(okEvents(eventsOf("resurrect"))) == resurrections {
			if time.Now().After(deadline) {
				syscall.Kill(pid, syscall.SIGCONT)
				t.Fatalf("no resurrection within 90s of the hang: %+v", eventsOf("resurrect"))
			}
			time.Sleep(200 * time.Millisecond)
		}
		evs := eventsOf("unresponsive")
		last := evs[0]
		t.Logf("hung agent: unresponsive after %s (%s), resurrected %s after the hang",
			last.Time.Sub(hung).Round(10*time.Millisecond), last.Context["reason"], okEvents(eventsOf("resurrect"))[0].Time.Sub(hung).Round(10*time.Millisecond))
		if r := okEvents(eventsOf("resurrect"))[0]; r.TaskID > 0 {
			t.Logf("resurrection task %d took %s", r.TaskID, r.Context["took"])
		}
		if n := len(eventsOf("meltdown")); n != meltdowns {
			t.Errorf("a meltdown with one instance hung: %+v", eventsOf("meltdown")[0])
		}
		if !strings.HasPrefix(last.Context["reason"], "no heartbeat for") {
			t.Errorf("hung agent found by %q, want the timeout", last.Context["reason"])
		}
		if now := find("web", 1); now.VMCID == w1.VMCID {
			t.Errorf("web/1 still on its hung VM %s", w1.VMCID)
		}
		lbAnswers(t, "v1", 2)
	})
}

// agentPID reads a local VM's agent pid.
func agentPID(t *testing.T, data, cid string) int {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(data, "vms", cid, "agent.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatalf("agent.pid of %s: %v", cid, err)
	}
	return pid
}

// removeVMDir deletes a local VM's directory, as if the VM vanished from
// the cloud; its processes must be dead and nothing may be mounted under it
// in this mount namespace.
func removeVMDir(t *testing.T, data, cid string) {
	t.Helper()
	dir := filepath.Join(data, "vms", cid)
	mounts, _ := os.ReadFile("/proc/self/mounts")
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], dir) {
			t.Fatalf("%s is mounted under the VM's directory", f[1])
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
}

// detachRecord makes the local CPI's record of a disk say it is attached
// to no VM.
func detachRecord(t *testing.T, data, disk string) {
	t.Helper()
	path := filepath.Join(data, "disks", disk, "disk.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(raw, &rec); err != nil {
		t.Fatal(err)
	}
	delete(rec, "vm_cid")
	raw, _ = json.Marshal(rec)
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

// killVM kills every process of a local VM: those in its agent's session
// and, where the VM has a mount namespace of its own, every process in it.
// It returns how many it killed.
func killVM(t *testing.T, data, cid string) int {
	t.Helper()
	pid := agentPID(t, data, cid)
	sid := sessionOf(pid)
	self, _ := os.Readlink("/proc/self/ns/mnt")
	ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if sid <= 0 {
		t.Fatalf("agent %d of VM %s is not running", pid, cid)
	}
	killed := map[int]bool{}
	for round := 0; round < 5; round++ {
		found := false
		procs, _ := os.ReadDir("/proc")
		for _, p := range procs {
			q, err := strconv.Atoi(p.Name())
			if err != nil || q == os.Getpid() {
				continue
			}
			mine := sessionOf(q) == sid
			if !mine && ns != "" && ns != self {
				other, _ := os.Readlink(filepath.Join("/proc", p.Name(), "ns", "mnt"))
				mine = other == ns
			}
			if mine && syscall.Kill(q, syscall.SIGKILL) == nil {
				killed[q], found = true, true
			}
		}
		if !found {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return len(killed)
}

// sessionOf reads a live process's session id from /proc (0 when gone or a
// zombie).
func sessionOf(pid int) int {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:]) // state ppid pgrp session ...
	if len(f) < 4 || f[0] == "Z" {
		return 0
	}
	sid, _ := strconv.Atoi(f[3])
	return sid
}

// freeRange picks a 127.n.0.0/16 where the sample's addresses are free:
// other tests and local directors use 127.77., 127.1xx. and 127.2xx.
func freeRange(t *testing.T) string {
	t.Helper()
	for n := 30 + os.Getpid()%40; n < 100; n++ {
		if n == 77 || n == 78 {
			continue
		}
		free := true
		for _, a := range []string{"1.10:8080", "1.20:8080", "2.20:8080", "1.21:8080", "2.21:8080"} {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.%d.%s", n, a))
			if err != nil {
				free = false
				break
			}
			ln.Close()
		}
		if free {
			return fmt.Sprintf("127.%d.", n)
		}
	}
	t.Fatal("no free 127.n.0.0/16 range")
	return ""
}

// lbSees asks the lb until an answer comes from instance name.
func lbSees(addr, name string, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if strings.HasSuffix(strings.TrimSpace(get("http://"+addr+"/")), " "+name) {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// get answers a GET's status and body, or the error.
func get(url string) string {
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get(url)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.Status + " " + strings.TrimSpace(string(body))
}
