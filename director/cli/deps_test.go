package cli_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestCLILinksNoServerParts: the command line talks to the director through
// its API (director/apiv1) and links neither the state store (bbolt, etcd)
// nor the server's packages.
func TestCLILinksNoServerParts(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list the package's dependencies")
	}
	out, err := exec.Command(goBin, "list", "-deps", "github.com/compleat/compleat/director/cli").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	forbidden := []string{"go.etcd.io/bbolt", "go.etcd.io/etcd/client/v3", "github.com/compleat/compleat/director/store",
		"github.com/compleat/compleat/director/api", "github.com/compleat/compleat/director/deploy",
		"github.com/compleat/compleat/director/task", "github.com/compleat/compleat/director/health"}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == f {
				t.Errorf("director/cli depends on %s", dep)
			}
		}
	}
}
