package vitals_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/compleat/compleat/agent/vitals"
)

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSampleFromProcFiles reads a /proc laid out with known figures.
func TestSampleFromProcFiles(t *testing.T) {
	proc := t.TempDir()
	write(t, proc, "stat", "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4 5\n")
	write(t, proc, "meminfo", "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    750 kB\nSwapTotal:       200 kB\nSwapFree:        150 kB\n")
	write(t, proc, "loadavg", "0.50 0.25 0.10 1/100 1234\n")
	write(t, proc, "uptime", "3600.42 7000.00\n")
	s := &vitals.Sampler{Proc: proc, Disks: map[string]string{"system": "/", "missing": filepath.Join(proc, "nope")}}
	v := s.Sample()
	if v.CPU.User != 10 || v.CPU.System != 5 || v.CPU.Wait != 5 {
		t.Fatalf("cpu %+v", v.CPU)
	}
	if v.Mem.KB != 250 || v.Mem.Percent != 25 || v.Swap.KB != 50 || v.Swap.Percent != 25 {
		t.Fatalf("mem %+v swap %+v", v.Mem, v.Swap)
	}
	if v.Load != [3]float64{0.5, 0.25, 0.1} || v.Uptime != 3600 {
		t.Fatalf("load %v uptime %d", v.Load, v.Uptime)
	}
	if _, ok := v.Disk["system"]; !ok {
		t.Fatal("no system disk figure")
	}
	if _, ok := v.Disk["missing"]; ok {
		t.Fatal("figure for a missing path")
	}
	// A second sample reports the shares since the first.
	write(t, proc, "stat", "cpu  200 0 50 850 50 0 0 0 0 0\n")
	if v := s.Sample(); v.CPU.User != 66.7 || v.CPU.System != 0 {
		t.Fatalf("cpu delta %+v", v.CPU)
	}
}

func TestSampleRealProc(t *testing.T) {
	v := (&vitals.Sampler{}).Sample()
	if v.Mem.KB == 0 || v.Uptime == 0 {
		t.Fatalf("real vitals look empty: %+v", v)
	}
}
