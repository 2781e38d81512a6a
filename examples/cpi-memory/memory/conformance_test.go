package memory_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/cpitest"
	"github.com/compleat/compleat/cpi/host"

	"example.com/cpi-memory/memory"
)

// config is the conformance suite's configuration for the memory cloud,
// whose VMs' settings land in settingsDir.
func config(settingsDir string) cpitest.Config {
	return cpitest.Config{
		// No images in memory: the stemcell is its cloud properties alone.
		Stemcell:                 cpi.CreateStemcellRequest{},
		VMCloudProperties:        json.RawMessage(`{"instance_type": "small"}`),
		DiskCloudProperties:      json.RawMessage(`{"type": "ssd"}`),
		InvalidVMCloudProperties: json.RawMessage(`{"instance_type": "small", "ephemeral_disk_size": "big"}`),
		InvalidField:             "ephemeral_disk_size",
		ManualNetworks:           cpitest.ManualNetworks("127.91.0.10"),
		VIPNetworks: func(i int) map[string]cpi.Network {
			return map[string]cpi.Network{"public": {Type: "vip", IP: fmt.Sprintf("127.92.0.%d", 10+i)}}
		},
		// How the suite reads the settings a VM was given when the plugin
		// runs as its own process.
		DeliveredSettings: func(_ context.Context, cid string) (json.RawMessage, error) {
			return os.ReadFile(filepath.Join(settingsDir, cid+".json"))
		},
	}
}

func properties(t *testing.T, settingsDir string) json.RawMessage {
	b, err := json.Marshal(memory.Properties{SettingsDir: settingsDir, DynamicPool: "127.90.0.2"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The suite in-process, over real gRPC.
func TestConformanceInProcess(t *testing.T) {
	dir := t.TempDir()
	cpitest.RunInProcess(t, func(t *testing.T) cpi.CPI {
		c, err := memory.New(properties(t, dir), slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}, config(dir))
}

// The suite against the plugin binary, built here from ./cmd/cpi-memory and
// started the way the director starts it.
func TestConformanceBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the plugin")
	}
	bin := buildPlugin(t)
	dir := t.TempDir()
	cpitest.RunBinary(t, bin, properties(t, dir), config(dir))
}

// buildPlugin builds ./cmd/cpi-memory into the test's directory.
func buildPlugin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cpi-memory")
	build := exec.Command("go", "build", "-o", bin, "./cmd/cpi-memory")
	build.Dir = ".." // the module's root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build cpi-memory: %v\n%s", err, out)
	}
	return bin
}

// The binary started with a misspelt property does not start, and the
// director's error says why.
func TestBinaryWithBadProperties(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the plugin")
	}
	_, err := host.Start(t.Context(), host.Config{
		Path:       buildPlugin(t),
		Properties: json.RawMessage(`{"settings_dir": "` + t.TempDir() + `", "dynamic_pol": "1.2.3.4"}`),
		Logger:     slog.New(slog.DiscardHandler),
	})
	if err == nil || !strings.Contains(err.Error(), "did not start: start: properties: dynamic_pol: unknown property") {
		t.Errorf("start with a misspelt property: %v", err)
	}
}

// A plugin that cannot start says why, in the error the director shows.
func TestBadPropertiesAreReported(t *testing.T) {
	_, err := memory.New(json.RawMessage(`{"settings_dir": "/tmp/x", "dynamic_pol": "1.2.3.4"}`), slog.New(slog.DiscardHandler))
	if err == nil || err.Error() != "properties: dynamic_pol: unknown property (known here: dynamic_pool, settings_dir)" {
		t.Errorf("New with a misspelt property: %v", err)
	}
}
