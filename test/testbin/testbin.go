// Package testbin builds the project's binaries for the suites that run
// them as processes (test/e2e, test/zdt, director/app): each binary once per
// test process, into one temporary directory, or none when $COMPLEAT_BIN
// names a directory that holds them already.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
)

// Target is one binary: its file name, the module directory it is built
// in (relative to the repository root) and its package there.
type Target struct{ Name, Module, Pkg string }

// The binaries the suites run.
var (
	Director     = Target{"director", ".", "./director"}
	Agent        = Target{"agent", ".", "./agent"}
	CPILocal     = Target{"cpi-local", "cpi/local", "./cmd/cpi-local"}
	CPIOpenStack = Target{"cpi-openstack", "cpi/openstack", "./cmd/cpi-openstack"}
	CPIAzure     = Target{"cpi-azure", "cpi/azure", "./cmd/cpi-azure"}
	Cloudsim     = Target{"cloudsim", "sim", "./cmd/cloudsim"}
	// Core are what a dev director deploying on the local CPI needs.
	Core = []Target{Director, Agent, CPILocal}
)

// Root is the repository's root directory.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

var (
	mu    sync.Mutex
	dir   string
	built = map[string]error{}
)

// Build returns the directory holding the targets: $COMPLEAT_BIN when set,
// else this process's build directory, into which each target not built
// yet is built now (a failed build fails again at once).
func Build(targets ...Target) (string, error) {
	if d := os.Getenv("COMPLEAT_BIN"); d != "" {
		return d, nil
	}
	mu.Lock()
	defer mu.Unlock()
	if dir == "" {
		d, err := os.MkdirTemp("", "compleat-test-bin-")
		if err != nil {
			return "", err
		}
		dir = d
	}
	for _, t := range targets {
		err, done := built[t.Name]
		if !done {
			cmd := exec.Command("go", "build", "-o", filepath.Join(dir, t.Name), t.Pkg)
			cmd.Dir = filepath.Join(Root(), t.Module)
			if out, berr := cmd.CombinedOutput(); berr != nil {
				err = fmt.Errorf("go build %s (in %s): %v\n%s", t.Pkg, t.Module, berr, out)
			}
			built[t.Name] = err
		}
		if err != nil {
			return "", err
		}
	}
	return dir, nil
}

// Cleanup removes the build directory (call it from TestMain after m.Run).
func Cleanup() {
	mu.Lock()
	defer mu.Unlock()
	if dir != "" {
		os.RemoveAll(dir)
		dir, built = "", map[string]error{}
	}
}
