package openstack

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/cpitest"
	simos "github.com/compleat/compleat/sim/openstack"
)

// BenchmarkHeavyStemcellUpload uploads a heavy stemcell's image (a sparse
// file) to the simulated Glance through the cpi-openstack binary, and
// reports the plugin process's peak resident memory (VmHWM): the image is
// streamed, so the peak stays flat as the image grows from 50 MB to
// 500 MB.
func BenchmarkHeavyStemcellUpload(b *testing.B) {
	bin := pluginBinary(b)
	for _, mb := range []int64{50, 500} {
		b.Run(fmt.Sprintf("%dMB", mb), func(b *testing.B) {
			c := startSim(b, simos.Config{})
			img := filepath.Join(b.TempDir(), "root.img")
			f, err := os.Create(img)
			if err != nil {
				b.Fatal(err)
			}
			// Sparse, with a little data at each end so the upload is not
			// all zeros.
			if _, err := f.WriteString("compleat stemcell image start"); err != nil {
				b.Fatal(err)
			}
			if _, err := f.WriteAt([]byte("end"), mb<<20-3); err != nil {
				b.Fatal(err)
			}
			f.Close()
			p := cpitest.StartBinary(b, bin, c.propsJSON(b, nil))
			req := cpi.CreateStemcellRequest{ImagePath: img, CloudProperties: json.RawMessage(`{"name": "bench", "version": "1", "disk_format": "raw"}`)}
			b.SetBytes(mb << 20)
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				cid, err := p.CreateStemcell(b.Context(), req)
				if err != nil {
					b.Fatal(err)
				}
				if err := p.DeleteStemcell(b.Context(), cid); err != nil {
					b.Fatal(err)
				}
			}
			elapsed := time.Since(start)
			b.StopTimer()
			hwm, err := peakRSS(p.PID())
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(hwm)/(1<<20), "plugin-peak-rss-MB")
			b.ReportMetric(float64(mb)*float64(b.N)/elapsed.Seconds(), "MB/s")
		})
	}
}

// peakRSS is a process's peak resident set size (VmHWM) in bytes.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}
