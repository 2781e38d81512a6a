//go:build torture

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestTortureOpenStack is TestTorture on the simulated OpenStack (cloudsim
// openstack, cpi-openstack, servers that really boot agents, volumes that
// are loop devices): deploys of the sample that recreate every server are
// cut by a SIGKILL of the director's process group (every other trial) or
// of the CPI plugin alone; the director is restarted and deploys again
// (with --fix from the second attempt) until one succeeds. After each trial:
// every Nova server is recorded and every recorded VM is a Nova server
// (orphans), both persistent disks are recorded (lost) and the data
// written on them before the first trial is unchanged (checksums), and the
// lb answers from both web instances. It prints one line:
//
//	torture(openstack): trials=N converged=N orphans=0 lost=0 checksums=ok ...
//
// TORTURE_CLOUD_TRIALS sets the number of trials (default 6).
func TestTortureOpenStack(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the simulated OpenStack shows volumes to VMs only as root (mount namespaces and loop devices)")
	}
	trials := 6
	if v, err := strconv.Atoi(os.Getenv("TORTURE_CLOUD_TRIALS")); err == nil && v > 0 {
		trials = v
	}
	bin := cloudBinaries(t)
	work := t.TempDir()
	sim := startOpenStackSim(t, bin, filepath.Join(work, "openstack"))
	data := filepath.Join(work, "data")
	d := startDirector(t, bin, data)
	t.Cleanup(func() {
		if out, err := d.command("-n", "-d", "web", "delete-deployment", "--force").CombinedOutput(); err != nil {
			t.Logf("cleanup: delete-deployment: %v\n%s", err, out)
		}
	})
	d.run("-n", "update-cpi-config", filepath.Join(sim.dir, "cpi-config.yml"))
	d.run("-n", "upload-release", "releases/web")
	d.run("-n", "upload-stemcell", filepath.Join(sim.dir, "light-stemcell.tgz"))
	d.run("-n", "update-cloud-config", "manifests/openstack/cloud-config.yml")
	manifest := "manifests/openstack/web.yml"
	began := time.Now()
	d.deploy(manifest)
	firstDeploy := time.Since(began)
	lbAddr = "127.82.1.10:8080"
	lbAnswers(t, "v1", 2)

	// Data on each web instance's persistent disk, written on the VM.
	markers := func() map[string]string {
		out := d.run("-d", "web", "ssh", "web", "-c", "cat /var/vcap/store/torture")
		got := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if k, v, ok := strings.Cut(line, ": "); ok && strings.HasPrefix(k, "web/") {
				got[k] = strings.TrimSpace(v)
			}
		}
		return got
	}
	d.run("-d", "web", "ssh", "web", "-c", "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /var/vcap/store/torture")
	sums := markers()
	if len(sums) != 2 {
		t.Fatalf("markers on %d web instances, want 2: %v", len(sums), sums)
	}

	began = time.Now()
	d.deploy(manifest, "--recreate")
	window := time.Since(began)

	var converged, orphans, lost, badSums, reruns, serving int
	var kills []string
	for trial := 1; trial <= trials; trial++ {
		fault := "director"
		if trial%2 == 0 {
			fault = "plugin"
		}
		cli := d.command("-n", "--json", "deploy", manifest, "--recreate")
		if err := cli.Start(); err != nil {
			t.Fatal(err)
		}
		at := time.Duration(mrand.Int64N(int64(window)))
		time.Sleep(at)
		what := inflict(t, fault, d, data, nil)
		if fault == "director" {
			<-d.done
		}
		cli.Wait()
		kills = append(kills, fault+"@"+at.Round(100*time.Millisecond).String())
		t.Logf("trial %d: %s after %s: %s", trial, fault, at.Round(time.Millisecond), what)
		if fault == "director" {
			d = startDirector(t, bin, data)
		}
		ok := false
		for attempt := 1; attempt <= 5 && !ok; attempt++ {
			reruns++
			args := []string{"-n", "--json", "deploy", manifest}
			if attempt > 1 {
				args = append(args, "--fix")
			}
			out, err := d.command(args...).CombinedOutput()
			if err == nil {
				ok = true
				break
			}
			t.Logf("trial %d: deploy after the fault, attempt %d: %v\n%s", trial, attempt, err, tail(string(out), 10))
		}
		if ok {
			converged++
		} else {
			t.Errorf("trial %d (%s after %s): no convergence in 5 deploys\n%s", trial, fault, at, tail(d.logs.String(), 40))
		}

		// Orphans: Nova servers the director does not record, and
		// recorded VMs Nova lacks.
		var vms []struct {
			CID string `json:"cid"`
		}
		if err := json.Unmarshal([]byte(d.run("--json", "-d", "web", "vms")), &vms); err != nil {
			t.Fatal(err)
		}
		var recorded []string
		for _, v := range vms {
			recorded = append(recorded, v.CID)
		}
		servers := sim.servers(t)
		for _, s := range servers {
			if !slices.Contains(recorded, s) {
				orphans++
				t.Errorf("trial %d: Nova server %s is not in the director's records", trial, s)
			}
		}
		for _, r := range recorded {
			if !slices.Contains(servers, r) {
				orphans++
				t.Errorf("trial %d: recorded VM %s is no Nova server", trial, r)
			}
		}
		if len(recorded) != 3 {
			t.Errorf("trial %d: %d VMs recorded, want 3", trial, len(recorded))
		}
		// Lost disks and changed data.
		var disks []struct {
			CID      string `json:"cid"`
			Orphaned bool   `json:"orphaned"`
		}
		if err := json.Unmarshal([]byte(d.run("--json", "disks")), &disks); err != nil {
			t.Fatal(err)
		}
		if attached := slices.DeleteFunc(disks, func(x struct {
			CID      string `json:"cid"`
			Orphaned bool   `json:"orphaned"`
		}) bool {
			return x.Orphaned
		}); len(attached) != 2 {
			lost += max(0, 2-len(attached))
			t.Errorf("trial %d: %d persistent disks recorded, want 2: %+v", trial, len(attached), attached)
		}
		if got := markers(); len(got) != 2 {
			lost += 2 - len(got)
			t.Errorf("trial %d: markers on %v, want both web instances", trial, got)
		} else {
			for k, v := range got {
				if sums[k] != v {
					badSums++
					t.Errorf("trial %d: %s's data changed: %q, was %q", trial, k, v, sums[k])
				}
			}
		}
		if lbServes(2, 60*time.Second) {
			serving++
		} else {
			t.Errorf("trial %d (%s after %s): the lb does not answer from both web instances", trial, fault, at)
		}
	}
	check := "ok"
	if badSums > 0 {
		check = strconv.Itoa(badSums) + "-changed"
	}
	line := fmt.Sprintf("torture(openstack): trials=%d converged=%d orphans=%d lost=%d checksums=%s serving=%d reruns=%d first_deploy=%s recreate_deploy=%s at=[%s]",
		trials, converged, orphans, lost, check, serving, reruns, firstDeploy.Round(time.Second), window.Round(time.Second), strings.Join(kills, " "))
	fmt.Println(line)
	t.Log(line)
}

// servers lists the Nova servers' ids, as any OpenStack client does: a
// Keystone token, then GET /servers on the compute endpoint.
func (s *openStackSim) servers(t *testing.T) []string {
	t.Helper()
	body := fmt.Sprintf(`{"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "admin",
		"domain": {"name": "Default"}, "password": %q}}}, "scope": {"project": {"name": "compleat", "domain": {"name": "Default"}}}}}`, s.password)
	resp, err := http.Post(s.authURL+"/auth/tokens", "application/json", bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	req, _ := http.NewRequest("GET", strings.TrimSuffix(s.authURL, "/identity/v3")+"/compute/v2.1/servers", nil)
	req.Header.Set("X-Auth-Token", resp.Header.Get("X-Subject-Token"))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Servers []struct {
			ID string `json:"id"`
		} `json:"servers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatalf("GET /servers: %v", err)
	}
	var ids []string
	for _, s := range list.Servers {
		ids = append(ids, s.ID)
	}
	return ids
}
