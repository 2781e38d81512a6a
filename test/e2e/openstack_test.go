package e2e

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/compleat/compleat/test/testbin"
)

// cloudBinaries is binaries plus cloudsim and the OpenStack and Azure
// plugins.
func cloudBinaries(t *testing.T) string {
	t.Helper()
	dir, err := testbin.Build(append(testbin.Core, testbin.Cloudsim, testbin.CPIOpenStack, testbin.CPIAzure)...)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// openStackSim is a running `cloudsim openstack`.
type openStackSim struct {
	dir, authURL, password string
}

func startOpenStackSim(t *testing.T, bin, dir string) *openStackSim {
	t.Helper()
	env := startCloudsim(t, bin, "openstack", dir, "")
	return &openStackSim{dir: dir, authURL: env["OS_AUTH_URL"], password: env["OS_PASSWORD"]}
}

// startCloudsim runs `cloudsim CLOUD` on dir (stopped by its PID at the
// end of the test) and returns the variables of the cloud.env it writes,
// once that file and, when not empty, ready exist.
func startCloudsim(t *testing.T, bin, cloud, dir, ready string) map[string]string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	logs := &syncBuffer{}
	cmd := exec.Command(filepath.Join(bin, "cloudsim"), cloud, "--data", dir, "--listen", addr,
		"--agent", filepath.Join(bin, "agent"), "--env-file", filepath.Join(dir, "cloud.env"), "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
			t.Errorf("cloudsim did not stop within 60s")
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		raw, err := os.ReadFile(filepath.Join(dir, "cloud.env"))
		readyErr := error(nil)
		if ready != "" {
			_, readyErr = os.Stat(ready)
		}
		if err == nil && readyErr == nil {
			env := map[string]string{}
			for _, line := range strings.Split(string(raw), "\n") {
				if k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "="); ok && !strings.HasPrefix(line, "#") {
					env[k] = strings.Trim(v, "'")
				}
			}
			return env
		}
		select {
		case <-done:
			t.Fatalf("cloudsim %s exited before it was ready:\n%s", cloud, logs)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("cloudsim %s not ready after 30s:\n%s", cloud, logs)
		}
	}
}

// nova calls the simulated Nova and returns the status.
func (s *openStackSim) nova(t *testing.T, method, path string) int {
	t.Helper()
	resp := s.novaDo(t, method, path)
	resp.Body.Close()
	return resp.StatusCode
}

// novaDo calls the simulated Nova as any OpenStack client does: a Keystone
// token first, then the compute endpoint. The caller closes the body.
func (s *openStackSim) novaDo(t *testing.T, method, path string) *http.Response {
	t.Helper()
	body := fmt.Sprintf(`{"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "admin",
		"domain": {"name": "Default"}, "password": %q}}}, "scope": {"project": {"name": "compleat", "domain": {"name": "Default"}}}}}`, s.password)
	resp, err := http.Post(s.authURL+"/auth/tokens", "application/json", bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	token := resp.Header.Get("X-Subject-Token")
	compute := strings.TrimSuffix(s.authURL, "/identity/v3") + "/compute/v2.1"
	req, _ := http.NewRequest(method, compute+path, nil)
	req.Header.Set("X-Auth-Token", token)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestOpenStackCloud deploys the web release through cpi-openstack onto
// the simulated OpenStack (cloudsim openstack), whose servers really boot:
// the lb answers from both web instances, a persistent disk keeps its data
// across a recreate, and a server deleted through the Nova API is
// resurrected.
func TestOpenStackCloud(t *testing.T) {
	if testing.Short() {
		t.Skip("runs cloudsim, the director, agents and cpi-openstack, and compiles releases/web")
	}
	if os.Geteuid() != 0 {
		t.Skip("the simulated OpenStack shows volumes to VMs only as root (mount namespaces and loop devices)")
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
	d.deploy("manifests/openstack/web.yml")
	lbAddr = "127.82.1.10:8080"
	lbAnswers(t, "v1", 2)

	find := func(group string, index int) instanceRow {
		t.Helper()
		return d.findInstance(t, "web", group, index)
	}
	web0 := find("web", 0)
	if got := sim.nova(t, "GET", "/servers/"+web0.VMCID); got != http.StatusOK {
		t.Fatalf("Nova has no server %s (web/0's vm cid): %d", web0.VMCID, got)
	}

	t.Run("persistent disk keeps its data across a recreate", func(t *testing.T) {
		d.run("-d", "web", "ssh", "web/0", "-c", "echo kept-across-recreate > /var/vcap/store/marker")
		d.run("-n", "-d", "web", "recreate", "web/0")
		after := find("web", 0)
		if after.VMCID == web0.VMCID {
			t.Fatalf("recreate kept server %s", web0.VMCID)
		}
		if out := d.run("-d", "web", "ssh", "web/0", "-c", "cat /var/vcap/store/marker"); !strings.Contains(out, "kept-across-recreate") {
			t.Errorf("the persistent disk lost its data across the recreate: %q", out)
		}
		if got := sim.nova(t, "GET", "/servers/"+web0.VMCID); got != http.StatusNotFound {
			t.Errorf("the old server %s answers %d after the recreate, want 404", web0.VMCID, got)
		}
	})

	t.Run("a server deleted through the Nova API is resurrected", func(t *testing.T) {
		web1 := find("web", 1)
		if got := sim.nova(t, "DELETE", "/servers/"+web1.VMCID); got != http.StatusNoContent {
			t.Fatalf("DELETE server %s: %d", web1.VMCID, got)
		}
		deadline := time.Now().Add(4 * time.Minute)
		for {
			now := find("web", 1)
			if now.VMCID != "" && now.VMCID != web1.VMCID && sim.nova(t, "GET", "/servers/"+now.VMCID) == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("web/1 not on a new server within 4 minutes of deleting %s:\ndirector log tail:\n%s", web1.VMCID, tail(d.logs.String(), 60))
			}
			time.Sleep(time.Second)
		}
		lbAnswers(t, "v1", 2)
	})
}
