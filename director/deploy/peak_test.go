package deploy

import (
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"testing"
)

// ResetPeakRSS returns the memory the process no longer uses to the system
// and restarts the kernel's count of its peak resident set (VmHWM) from
// the current resident set, so that the peak a benchmark then reports is
// its own and not that of a benchmark run before it in the same process.
// It reports whether the count was restarted (Linux: /proc/self/clear_refs).
func ResetPeakRSS() bool {
	debug.FreeOSMemory()
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// ReportPeakRSS reports the process's peak resident set in MB (VmHWM of
// /proc/self/status) as peak-rss-MB, or as process-peak-rss-MB when reset
// is false (the count could not be restarted, so the figure may be an
// earlier benchmark's). Nothing is reported where /proc is absent.
func ReportPeakRSS(b *testing.B, reset bool) {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return
	}
	for line := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb float64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%f", &kb); err != nil {
				return
			}
			unit := "peak-rss-MB"
			if !reset {
				unit = "process-peak-rss-MB"
			}
			b.ReportMetric(kb/1024, unit)
		}
	}
}
