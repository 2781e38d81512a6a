package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/compleat/compleat/director/mbus"
)

// TestAgentIdentityRotation: a VM's user data holds a bootstrap certificate
// only, and once the agent has its identity (a certificate for a key it
// made, kept 0600 on its VM) the bus refuses the bootstrap one;
// rotate-agent-certs gives the agents new certificates, after which the
// bus refuses the old one and the agents still serve and answer; a
// recreate retires the old VM's identity with the VM.
func TestAgentIdentityRotation(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the sample's process files name /var/vcap paths, which a local VM has only in its own mount namespace (root)")
	}
	prefix := freeRange(t)
	d, data := deploySample(t, prefix, nil)
	ca, err := os.ReadFile(filepath.Join(data, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	addr, err := os.ReadFile(filepath.Join(data, "bus.addr"))
	if err != nil {
		t.Fatal(err)
	}
	busURL := "nats://" + strings.TrimSpace(string(addr))
	vm := d.findInstance(t, "web", "web", 0).VMCID
	type creds struct {
		Mbus struct {
			Cert string `json:"cert"`
			Key  string `json:"key"`
		} `json:"mbus"`
	}
	read := func(path string) creds {
		t.Helper()
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var c creds
		if err := json.Unmarshal(raw, &c); err != nil || c.Mbus.Cert == "" || c.Mbus.Key == "" {
			t.Fatalf("%s: no mbus cert and key (%v)", path, err)
		}
		return c
	}
	connects := func(c creds) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		nc, err := mbus.Connect(ctx, busURL, ca, []byte(c.Mbus.Cert), []byte(c.Mbus.Key), nats.MaxReconnects(0), nats.Name("identity test"))
		if err != nil {
			return false
		}
		nc.Close()
		return true
	}
	userData := read(filepath.Join(data, "vms", vm, "settings.json"))
	ownPath := filepath.Join(data, "vms", vm, "root", "bosh", "update_settings.json")
	own := read(ownPath)
	if fi, err := os.Stat(ownPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the agent's own key is kept in %s with mode %v, want 0600", ownPath, fi.Mode().Perm())
	}
	if strings.Contains(userData.Mbus.Key, own.Mbus.Key) {
		t.Fatal("the agent's key is the one in its user data")
	}
	if connects(userData) {
		t.Error("the bootstrap certificate of the user data still connects after the agent got its identity")
	}
	if !connects(own) {
		t.Fatal("the agent's own certificate does not connect")
	}

	d.run("-n", "-d", "web", "rotate-agent-certs")
	rotated := read(ownPath)
	if rotated.Mbus.Cert == own.Mbus.Cert || rotated.Mbus.Key == own.Mbus.Key {
		t.Fatal("rotate-agent-certs left the agent's certificate and key as they were")
	}
	if connects(own) {
		t.Error("the rotated-out certificate still connects")
	}
	if !connects(rotated) {
		t.Error("the new certificate does not connect")
	}
	// The agents reconnected with their new certificates and answer.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		out, err := d.command("-d", "web", "instances", "--ps", "--json").CombinedOutput()
		if err == nil && !strings.Contains(string(out), "agent_error") && strings.Count(string(out), `"job_state": "running"`) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agents after the rotation:\n%s", out)
		}
	}
	lbAnswers(t, "v1", 2)

	// A recreated instance's new VM has a new agent and identity: the old
	// VM's certificate is refused.
	d.run("-n", "-d", "web", "recreate", "web/0")
	if connects(rotated) {
		t.Error("the certificate of a deleted VM's agent still connects")
	}
	lbAnswers(t, "v1", 2)
}
