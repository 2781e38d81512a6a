package openstack

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/sim/machine"
	simos "github.com/compleat/compleat/sim/openstack"
)

// agentBinary is $COMPLEAT_BIN/agent when set, else the agent built into
// the test's directory.
func agentBinary(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("COMPLEAT_BIN"); dir != "" {
		p := filepath.Join(dir, "agent")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p := filepath.Join(t.TempDir(), "agent")
	out, err := exec.Command("go", "build", "-o", p, "github.com/compleat/compleat/agent").CombinedOutput()
	if err != nil {
		t.Fatalf("build the agent: %v\n%s", err, out)
	}
	return p
}

// bootingSim is a simulated cloud whose servers boot the agent through
// the shared machinery.
func bootingSim(t *testing.T) (*testCloud, *machine.Host) {
	t.Helper()
	if live() {
		t.Skip("boots local VMs in the simulated cloud; not run live")
	}
	dir := t.TempDir()
	host, err := machine.NewHost(filepath.Join(dir, "host"), machine.WithStopTimeout(time.Second), machine.WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = host.Close() })
	booter := &simos.MachineBooter{Host: host, Agent: agentBinary(t), Dir: filepath.Join(dir, "agents")}
	if err := os.MkdirAll(booter.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return startSim(t, simos.Config{Booter: booter}), host
}

// agentSettings is a settings document the agent accepts (its bus does
// not answer: the test looks at what the agent read, not what it did).
func agentSettings(agentID string) json.RawMessage {
	b, _ := json.Marshal(map[string]any{
		"agent_id":  agentID,
		"mbus":      map[string]string{"url": "nats://127.0.0.1:1", "ca_cert": "CA", "cert": "CERT", "key": "KEY"},
		"blobstore": map[string]string{"ca_cert": "BCA"},
		"env":       map[string]any{"bosh": map[string]any{}},
	})
	return b
}

// readSettings waits for the settings the VM's agent read and cached.
func readSettings(t *testing.T, vm machine.VM) map[string]any {
	t.Helper()
	path := filepath.Join(vm.Dir, "root", "bosh", "settings.json")
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			return m
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(vm.Dir, "agent.log"))
			t.Fatalf("the agent of VM %s read no settings in 30s (%v); its log:\n%s", vm.ID, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Servers boot through the shared machinery; the agent reads its settings
// from the config drive or, without one, the metadata service, as on
// OpenStack, takes its vm cid from meta_data.json, and sees an attached
// volume at its virtio by-id name.
func TestServersBootAndTheAgentReadsItsSettings(t *testing.T) {
	c, host := bootingSim(t)
	for _, drive := range []string{"", "cdrom"} {
		t.Run("config_drive="+drive, func(t *testing.T) {
			p := c.newCPI(t, map[string]any{"config_drive": drive})
			req := c.vmRequest(t, p, map[string]int{"": 0, "cdrom": 1}[drive])
			req.AgentSettings = agentSettings(req.AgentID)
			res, err := p.CreateVM(t.Context(), req)
			if err != nil {
				t.Fatalf("CreateVM: %v", err)
			}
			vm, ok := host.Get(res.CID)
			if !ok || vm.IP != req.Networks["default"].IP {
				t.Fatalf("no VM booted for server %s at %s: %+v", res.CID, req.Networks["default"].IP, vm)
			}
			_, statErr := os.Stat(filepath.Join(vm.Dir, "config-drive", "openstack", "latest", "user_data"))
			if (drive != "") != (statErr == nil) {
				t.Errorf("config drive present = %v, want %v", statErr == nil, drive != "")
			}
			s := readSettings(t, vm)
			vmDoc, _ := s["vm"].(map[string]any)
			if s["agent_id"] != req.AgentID || vmDoc["cid"] != res.CID || vmDoc["name"] != "vm-"+req.AgentID {
				t.Errorf("the agent read agent_id %v, vm %v; want %s, cid %s", s["agent_id"], vmDoc, req.AgentID, res.CID)
			}
			nets, _ := s["networks"].(map[string]any)
			def, _ := nets["default"].(map[string]any)
			if def["ip"] != req.Networks["default"].IP || def["mac"] == nil || !strings.HasPrefix(def["mac"].(string), "fa:16:3e:") {
				t.Errorf("the agent read network %v, want its ip and the port's MAC", def)
			}

			// A soft reboot restarts the VM's agent.
			if err := p.RebootVM(t.Context(), res.CID); err != nil {
				t.Fatalf("RebootVM: %v", err)
			}
			deadline := time.Now().Add(30 * time.Second)
			for {
				log, _ := os.ReadFile(filepath.Join(vm.Dir, "agent.log"))
				if n := strings.Count(string(log), "agent starting"); n >= 2 {
					break
				} else if time.Now().After(deadline) {
					t.Fatalf("the agent started %d times, want a second start after RebootVM; its log:\n%s", n, log)
				}
				time.Sleep(20 * time.Millisecond)
			}

			if !host.Isolated() {
				t.Log("not root or no mount namespaces: volumes are not shown to VMs here")
				return
			}
			disk, err := p.CreateDisk(t.Context(), cpi.CreateDiskRequest{SizeMB: 1024, VMCID: res.CID})
			if err != nil {
				t.Fatal(err)
			}
			hint, err := p.AttachDisk(t.Context(), res.CID, disk)
			if err != nil {
				t.Fatal(err)
			}
			link := filepath.Join(vm.Dir, "dev-disk", machine.OpenStackVolumeLinks(hint.VolumeID)[0])
			if _, err := os.Lstat(link); err != nil {
				t.Errorf("volume %s is not at its virtio name in the VM: %v", disk, err)
			}
			if err := p.DetachDisk(t.Context(), res.CID, disk); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(link); err == nil {
				t.Errorf("volume %s still linked after DetachDisk", disk)
			}
			if err := p.DeleteVM(t.Context(), res.CID); err != nil {
				t.Fatal(err)
			}
			if _, ok := host.Get(res.CID); ok {
				t.Errorf("VM %s still on the host after DeleteVM", res.CID)
			}
		})
	}
}

// A heavy stemcell whose image is a local stemcell's image (a tgz holding
// the agent) is streamed to Glance, and its servers boot that agent.
func TestHeavyStemcellBootsItsOwnAgent(t *testing.T) {
	c, host := bootingSim(t)
	p := c.newCPI(t, nil)
	img := filepath.Join(t.TempDir(), "image")
	writeAgentImage(t, img, agentBinary(t))
	stemcell, err := p.CreateStemcell(t.Context(), cpi.CreateStemcellRequest{ImagePath: img,
		CloudProperties: json.RawMessage(`{"name": "compleat-openstack", "version": "2", "disk_format": "raw"}`)})
	if err != nil {
		t.Fatal(err)
	}
	req := c.vmRequest(t, p, 0)
	req.StemcellCID = stemcell
	req.AgentSettings = agentSettings(req.AgentID)
	res, err := p.CreateVM(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	vm, ok := host.Get(res.CID)
	if !ok {
		t.Fatalf("no VM for server %s", res.CID)
	}
	var rec struct {
		Agent string `json:"agent"`
	}
	b, err := os.ReadFile(filepath.Join(vm.Dir, "vm.json"))
	if err != nil || json.Unmarshal(b, &rec) != nil {
		t.Fatalf("vm.json: %v %s", err, b)
	}
	if !strings.Contains(rec.Agent, stemcell) {
		t.Errorf("the VM runs agent %s, want the one taken out of image %s", rec.Agent, stemcell)
	}
	if s := readSettings(t, vm); s["agent_id"] != req.AgentID {
		t.Errorf("the image's agent read agent_id %v, want %s", s["agent_id"], req.AgentID)
	}
}

// writeAgentImage writes a local stemcell's image: a tgz holding the agent
// as the executable "agent".
func writeAgentImage(t *testing.T, path, agent string) {
	t.Helper()
	data, err := os.ReadFile(agent)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	if err := tw.WriteHeader(&tar.Header{Name: "agent", Mode: 0o755, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(tw.Close(), gz.Close(), f.Close()); err != nil {
		t.Fatal(err)
	}
}
