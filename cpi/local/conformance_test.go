package local

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/cpitest"
)

// conformanceConfig is the suite's configuration for a local CPI on
// dataDir. VMAlive checks the VM's agent process itself: running after
// create and reboot, gone (not just its directory) after delete.
func conformanceConfig(t *testing.T, dataDir string) cpitest.Config {
	var mu sync.Mutex
	lastPID := map[string]int{}
	return cpitest.Config{
		Stemcell:                 cpi.CreateStemcellRequest{ImagePath: placeholderImage(t)},
		VMCloudProperties:        json.RawMessage(`{"cpu": 1, "ram": 512}`),
		DiskCloudProperties:      json.RawMessage(`{"type": "directory"}`),
		InvalidVMCloudProperties: json.RawMessage(`{"ram": "lots"}`),
		InvalidField:             "ram",
		ManualNetworks:           cpitest.ManualNetworks("127.77.201.10"),
		VIPNetworks: func(i int) map[string]cpi.Network {
			return map[string]cpi.Network{"public": {Type: "vip", IP: fmt.Sprintf("127.78.201.%d", 10+i)}}
		},
		DeliveredSettings: func(_ context.Context, cid string) (json.RawMessage, error) {
			return os.ReadFile(filepath.Join(dataDir, "vms", cid, settingsFile))
		},
		VMAlive: func(t *testing.T, cid string) bool {
			mu.Lock()
			defer mu.Unlock()
			b, err := os.ReadFile(filepath.Join(dataDir, "vms", cid, pidFile))
			if err == nil {
				pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
				if err != nil {
					t.Fatalf("%s: %v", pidFile, err)
				}
				lastPID[cid] = pid
			}
			pid, ok := lastPID[cid]
			return ok && alive(pid)
		},
	}
}

// reapVMs deletes, at the end of the test, every VM left on dataDir by a
// plugin, so that no process outlives the test.
func reapVMs(t *testing.T, dataDir string) {
	t.Cleanup(func() {
		c, err := New(props(t, dataDir), WithLogger(testLogger(t)))
		if err != nil {
			t.Error(err)
			return
		}
		deleteAllVMs(t, c)
	})
}

func TestConformance(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	reapVMs(t, dataDir)
	cpitest.Run(t, func(t *testing.T) cpi.CPI { return newTestCPIOn(t, dataDir) }, conformanceConfig(t, dataDir))
}

func TestConformanceInProcess(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	reapVMs(t, dataDir)
	cpitest.RunInProcess(t, func(t *testing.T) cpi.CPI { return newTestCPIOn(t, dataDir) }, conformanceConfig(t, dataDir))
}

// The conformance suite against the plugin binary, also on manual
// networks.
func TestConformanceBinary(t *testing.T) {
	t.Parallel()
	bin := pluginBinary(t)
	dataDir := t.TempDir()
	reapVMs(t, dataDir)
	cfg := conformanceConfig(t, dataDir)
	t.Run("dynamic", func(t *testing.T) {
		cpitest.RunBinary(t, bin, props(t, dataDir), cfg)
	})
	t.Run("manual", func(t *testing.T) {
		cfg.Networks = cpitest.ManualNetworks("127.77.200.10")
		cpitest.RunBinary(t, bin, props(t, dataDir), cfg)
	})
}

// pluginBinary is $COMPLEAT_BIN/cpi-local when set, else cpi-local built
// once per test run beside the placeholder agent.
func pluginBinary(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("COMPLEAT_BIN"); dir != "" {
		p := filepath.Join(dir, "cpi-local")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	buildPlugin.Do(func() {
		p := filepath.Join(filepath.Dir(placeholderAgent), "cpi-local")
		out, err := exec.Command("go", "build", "-o", p, "./cmd/cpi-local").CombinedOutput()
		if err != nil {
			buildPlugin.err = fmt.Errorf("build cpi-local: %v\n%s", err, out)
			return
		}
		buildPlugin.path = p
	})
	if buildPlugin.err != nil {
		t.Fatal(buildPlugin.err)
	}
	return buildPlugin.path
}

var buildPlugin struct {
	sync.Once
	path string
	err  error
}
