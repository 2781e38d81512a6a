//go:build torture

package e2e

import (
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestTortureOpenStack and TestTortureAzure are TestTorture on a simulated
// cloud (cloudsim, the cloud's CPI plugin, VMs that really boot agents,
// volumes and managed disks that are loop devices): deploys of the sample
// that recreate every VM are cut by a SIGKILL of the director's process
// group (every other trial) or of the CPI plugin alone; the director is
// restarted and deploys again (with --fix from the second attempt) until
// one succeeds. After each trial: every VM of the cloud's API is recorded
// and every recorded VM is in the cloud (orphans), both persistent disks
// are recorded (lost) and the data written on them from the VMs before the
// first trial is unchanged (checksums), and the lb answers from both web
// instances. Each prints one line:
//
//	torture(openstack): trials=N converged=N orphans=0 lost=0 checksums=ok ...
//
// TORTURE_CLOUD_TRIALS sets the number of trials (default 6).
func TestTortureOpenStack(t *testing.T) {
	tortureCloud(t, "openstack", func(t *testing.T, bin, work string, d *director) (deployArgs []string, servers func(*testing.T) []string) {
		sim := startOpenStackSim(t, bin, filepath.Join(work, "openstack"))
		d.run("-n", "update-cpi-config", filepath.Join(sim.dir, "cpi-config.yml"))
		d.run("-n", "upload-release", "releases/web")
		d.run("-n", "upload-stemcell", filepath.Join(sim.dir, "light-stemcell.tgz"))
		d.run("-n", "update-cloud-config", "manifests/openstack/cloud-config.yml")
		lbAddr = "127.82.1.10:8080"
		return []string{"manifests/openstack/web.yml"}, sim.servers
	})
}

func TestTortureAzure(t *testing.T) {
	tortureCloud(t, "azure", func(t *testing.T, bin, work string, d *director) (deployArgs []string, servers func(*testing.T) []string) {
		sim := startAzureSim(t, bin, filepath.Join(work, "azure"))
		cpiConfig, err := d.command("interpolate", "manifests/azure/cloudsim/cpi-config.yml", "-l", filepath.Join(sim.dir, "azure-vars.yml")).Output()
		if err != nil {
			t.Fatalf("interpolate the cpi config: %v", err)
		}
		cpiFile := filepath.Join(work, "cpi-config.yml")
		writeFile(t, cpiFile, string(cpiConfig))
		d.run("-n", "update-cpi-config", cpiFile)
		image := strings.Split(sim.env["COMPLEAT_AZURE_IMAGE"], ":")
		stemcell := filepath.Join(work, "azure-light.tgz")
		d.run("create-stemcell", "--light", "--name", "compleat-azure", "--format", "azure-light",
			"--cloud-property", "image.publisher="+image[0], "--cloud-property", "image.offer="+image[1],
			"--cloud-property", "image.sku="+image[2], "--cloud-property", "image.version="+image[3], "--tarball", stemcell)
		d.run("-n", "upload-release", "releases/web")
		d.run("-n", "upload-stemcell", stemcell)
		d.run("-n", "update-cloud-config", "manifests/azure/cloudsim/cloud-config.yml")
		disks := filepath.Join(work, "persistent-disk.yml")
		writeFile(t, disks, "- type: replace\n  path: /instance_groups/name=web/persistent_disk_type?\n  value: default\n")
		lbAddr = "127.81.1.10:8080"
		return []string{"manifests/azure/cloudsim/web.yml", "-o", disks}, sim.vms
	})
}

// tortureCloud runs the torture on the cloud setup prepares: it returns
// the deploy arguments (manifest and ops files) and how to list the
// cloud's VMs.
func tortureCloud(t *testing.T, cloud string, setup func(t *testing.T, bin, work string, d *director) ([]string, func(*testing.T) []string)) {
	if os.Geteuid() != 0 {
		t.Skip("the simulated clouds show volumes to VMs only as root (mount namespaces and loop devices)")
	}
	trials := 6
	if v, err := strconv.Atoi(os.Getenv("TORTURE_CLOUD_TRIALS")); err == nil && v > 0 {
		trials = v
	}
	bin := cloudBinaries(t)
	work := t.TempDir()
	data := filepath.Join(work, "data")
	d := startDirector(t, bin, data)
	t.Cleanup(func() {
		if out, err := d.command("-n", "-d", "web", "delete-deployment", "--force").CombinedOutput(); err != nil {
			t.Logf("cleanup: delete-deployment: %v\n%s", err, out)
		}
	})
	deployArgs, cloudVMs := setup(t, bin, work, d)
	withArgs := func(args ...string) []string { return append(slices.Clone(deployArgs), args...) }
	began := time.Now()
	d.deploy(deployArgs...)
	firstDeploy := time.Since(began)
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
	d.deploy(withArgs("--recreate")...)
	window := time.Since(began)

	var converged, orphans, lost, badSums, reruns, serving int
	var kills []string
	for trial := 1; trial <= trials; trial++ {
		fault := "director"
		if trial%2 == 0 {
			fault = "plugin"
		}
		cli := d.command(append([]string{"-n", "--json", "deploy"}, withArgs("--recreate")...)...)
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
		ok, n := converge(t, d, trial, deployArgs)
		reruns += n
		if ok {
			converged++
		} else {
			t.Errorf("trial %d (%s after %s): no convergence in 5 deploys\n%s", trial, fault, at, tail(d.logs.String(), 40))
		}

		// Orphans: VMs of the cloud the director does not record, and
		// recorded VMs the cloud lacks.
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
		servers := cloudVMs(t)
		for _, s := range servers {
			if !slices.Contains(recorded, s) {
				orphans++
				t.Errorf("trial %d: %s VM %s is not in the director's records", trial, cloud, s)
			}
		}
		for _, r := range recorded {
			if !slices.Contains(servers, r) {
				orphans++
				t.Errorf("trial %d: recorded VM %s is not in %s", trial, r, cloud)
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
	line := fmt.Sprintf("torture("+cloud+"): trials=%d converged=%d orphans=%d lost=%d checksums=%s serving=%d reruns=%d first_deploy=%s recreate_deploy=%s at=[%s]",
		trials, converged, orphans, lost, check, serving, reruns, firstDeploy.Round(time.Second), window.Round(time.Second), strings.Join(kills, " "))
	fmt.Println(line)
	t.Log(line)
}

// servers lists the Nova servers' ids.
func (s *openStackSim) servers(t *testing.T) []string {
	t.Helper()
	resp := s.novaDo(t, "GET", "/servers")
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

// vms lists the ARM ids of the simulated Azure's VMs (the resource group's
// VM list).
func (s *azureSim) vms(t *testing.T) []string {
	t.Helper()
	resp := s.armDo(t, "GET", "/subscriptions/"+s.env["AZURE_SUBSCRIPTION_ID"]+
		"/resourceGroups/compleat/providers/Microsoft.Compute/virtualMachines?api-version=2024-07-01")
	defer resp.Body.Close()
	var page struct {
		Value []struct {
			ID string `json:"id"`
		} `json:"value"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
		t.Fatalf("list VMs: %v", err)
	}
	var ids []string
	for _, v := range page.Value {
		ids = append(ids, v.ID)
	}
	return ids
}
