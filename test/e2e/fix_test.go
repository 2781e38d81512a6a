package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestDeployFix kills the agent of web/1 (its job keeps serving) with the
// resurrector off: a deploy that changes web fails on the silent agent,
// and the same deploy with --fix recreates web/1 on a new VM, its
// persistent disk kept, and rolls the change out to both instances.
func TestDeployFix(t *testing.T) {
	d, data := deploySample(t, freeRange(t), func(m string) string {
		return strings.Replace(m, "  vm_type: default\n", "  vm_type: default\n  persistent_disk: 64\n", 1)
	})
	d.run("-n", "-d", "web", "update-resurrection", "off")
	web1 := func() instanceRow {
		t.Helper()
		return d.findInstance(t, "web", "web", 1)
	}
	before := web1()
	pid := agentPID(t, data, before.VMCID)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill web/1's agent %d: %v", pid, err)
	}

	manifest := filepath.Join(filepath.Dir(data), "web.yml")
	raw, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, manifest, strings.Replace(string(raw), "version: v1", "version: v2", 1))

	out, err := d.command("-n", "deploy", manifest).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "agent unresponsive") {
		t.Fatalf("deploy with web/1's agent dead: %v, want a failure naming the unresponsive agent\n%s", err, tail(string(out), 15))
	}
	if got := web1(); got.VMCID != before.VMCID {
		t.Fatalf("a failed deploy replaced web/1's VM %s with %s", before.VMCID, got.VMCID)
	}

	out, err = d.command("-n", "deploy", manifest, "--fix").CombinedOutput()
	if err != nil {
		t.Fatalf("deploy --fix: %v\n%s", err, tail(string(out), 30))
	}
	if !strings.Contains(string(out), "agent unresponsive") {
		t.Errorf("deploy --fix did not say why web/1 is recreated:\n%s", tail(string(out), 30))
	}
	after := web1()
	if after.VMCID == before.VMCID {
		t.Errorf("deploy --fix kept web/1 on VM %s", before.VMCID)
	}
	if len(after.DiskCIDs) != 1 || after.DiskCIDs[0] != before.DiskCIDs[0] {
		t.Errorf("web/1's disks %v after --fix, want %v kept", after.DiskCIDs, before.DiskCIDs)
	}
	lbAnswers(t, "v2", 2)
}
