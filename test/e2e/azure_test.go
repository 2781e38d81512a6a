package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// azureSim is a running `cloudsim azure`.
type azureSim struct {
	dir string
	env map[string]string // cloud.env
}

func startAzureSim(t *testing.T, bin, dir string) *azureSim {
	t.Helper()
	env := startCloudsim(t, bin, "azure", dir, filepath.Join(dir, "azure-vars.yml"))
	return &azureSim{dir: dir, env: env}
}

// arm calls the simulated Resource Manager as any client does with the
// variables of cloud.env and returns the status.
func (s *azureSim) arm(t *testing.T, method, id string) int {
	t.Helper()
	resp := s.armDo(t, method, id+"?api-version=2024-07-01")
	resp.Body.Close()
	return resp.StatusCode
}

// armDo sends a request to the simulated Resource Manager (path and query
// after its endpoint) as any client does: a token from the authority host
// (OAuth2 client credentials), then the request, trusting
// REQUESTS_CA_BUNDLE. The caller closes the body.
func (s *azureSim) armDo(t *testing.T, method, pathQuery string) *http.Response {
	t.Helper()
	pem, err := os.ReadFile(s.env["REQUESTS_CA_BUNDLE"])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	resp, err := client.PostForm(s.env["AZURE_AUTHORITY_HOST"]+s.env["AZURE_TENANT_ID"]+"/oauth2/v2.0/token", url.Values{
		"grant_type": {"client_credentials"}, "client_id": {s.env["AZURE_CLIENT_ID"]}, "client_secret": {s.env["AZURE_CLIENT_SECRET"]},
		"scope": {"https://management.azure.com/.default"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	req, _ := http.NewRequest(method, strings.TrimSuffix(s.env["AZURE_RESOURCE_MANAGER_ENDPOINT"], "/")+pathQuery, nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestAzureCloud deploys the web release through cpi-azure onto the
// simulated Azure (cloudsim azure), whose VMs really boot: the lb answers
// from both web instances, a persistent disk (a managed disk the agent
// finds by its LUN) keeps its data across a recreate, and a VM deleted
// through the ARM API is resurrected.
func TestAzureCloud(t *testing.T) {
	if testing.Short() {
		t.Skip("runs cloudsim, the director, agents and cpi-azure, and compiles releases/web")
	}
	if os.Geteuid() != 0 {
		t.Skip("the simulated Azure shows managed disks to VMs only as root (mount namespaces and loop devices)")
	}
	bin := cloudBinaries(t)
	work := t.TempDir()
	sim := startAzureSim(t, bin, filepath.Join(work, "azure"))
	data := filepath.Join(work, "data")
	d := startDirector(t, bin, data)
	t.Cleanup(func() {
		if out, err := d.command("-n", "-d", "web", "delete-deployment", "--force").CombinedOutput(); err != nil {
			t.Logf("cleanup: delete-deployment: %v\n%s", err, out)
		}
	})
	cpiConfig, err := d.command("interpolate", "manifests/azure/cloudsim/cpi-config.yml", "-l", filepath.Join(sim.dir, "azure-vars.yml")).Output()
	if err != nil {
		t.Fatalf("interpolate the cpi config: %v", err)
	}
	cpiFile := filepath.Join(work, "cpi-config.yml")
	if err := os.WriteFile(cpiFile, cpiConfig, 0o600); err != nil {
		t.Fatal(err)
	}
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
	if err := os.WriteFile(disks, []byte("- type: replace\n  path: /instance_groups/name=web/persistent_disk_type?\n  value: default\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.deploy("manifests/azure/cloudsim/web.yml", "-o", disks)
	lbAddr = "127.81.1.10:8080"
	lbAnswers(t, "v1", 2)

	find := func(group string, index int) instanceRow {
		t.Helper()
		return d.findInstance(t, "web", group, index)
	}
	web0 := find("web", 0)
	if !strings.HasPrefix(web0.VMCID, "/subscriptions/"+sim.env["AZURE_SUBSCRIPTION_ID"]+"/resourceGroups/compleat/providers/Microsoft.Compute/virtualMachines/") {
		t.Fatalf("web/0's vm cid %q is not an ARM id of a VM", web0.VMCID)
	}
	if got := sim.arm(t, "GET", web0.VMCID); got != http.StatusOK {
		t.Fatalf("Resource Manager has no VM %s (web/0's vm cid): %d", web0.VMCID, got)
	}

	t.Run("persistent disk keeps its data across a recreate", func(t *testing.T) {
		d.run("-d", "web", "ssh", "web/0", "-c", "echo kept-across-recreate > /var/vcap/store/marker")
		d.run("-n", "-d", "web", "recreate", "web/0")
		after := find("web", 0)
		if after.VMCID == web0.VMCID {
			t.Fatalf("recreate kept VM %s", web0.VMCID)
		}
		if out := d.run("-d", "web", "ssh", "web/0", "-c", "cat /var/vcap/store/marker"); !strings.Contains(out, "kept-across-recreate") {
			t.Errorf("the persistent disk lost its data across the recreate: %q", out)
		}
		if got := sim.arm(t, "GET", web0.VMCID); got != http.StatusNotFound {
			t.Errorf("the old VM %s answers %d after the recreate, want 404", web0.VMCID, got)
		}
	})

	t.Run("a VM deleted through the ARM API is resurrected", func(t *testing.T) {
		web1 := find("web", 1)
		if got := sim.arm(t, "DELETE", web1.VMCID); got != http.StatusAccepted {
			t.Fatalf("DELETE VM %s: %d", web1.VMCID, got)
		}
		deadline := time.Now().Add(4 * time.Minute)
		for {
			now := find("web", 1)
			if now.VMCID != "" && now.VMCID != web1.VMCID && sim.arm(t, "GET", now.VMCID) == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("web/1 not on a new VM within 4 minutes of deleting %s:\ndirector log tail:\n%s", web1.VMCID, tail(d.logs.String(), 60))
			}
			time.Sleep(time.Second)
		}
		lbAnswers(t, "v1", 2)
	})
}
