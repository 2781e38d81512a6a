// Package peakrss measures a benchmark's peak resident set: the kernel's
// high-water mark of the process's resident memory (VmHWM in
// /proc/self/status), restarted at the benchmark's start so that the
// figure is the benchmark's own and not that of one run before it in the
// same test process. Linux only; elsewhere nothing is reported.
package peakrss

import (
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"testing"
)

// Reset returns the memory the process no longer uses to the system and
// restarts the count of its peak resident set from the current resident
// set (writing 5 to /proc/self/clear_refs). It reports whether the count
// was restarted.
func Reset() bool {
	debug.FreeOSMemory()
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// Report reports the peak resident set in MB as peak-rss-MB, or, when
// reset is false (Reset could not restart the count), as
// process-peak-rss-MB: the peak of the whole test process so far.
func Report(b *testing.B, reset bool) {
	mb, ok := Read()
	if !ok {
		return
	}
	unit := "peak-rss-MB"
	if !reset {
		unit = "process-peak-rss-MB"
	}
	b.ReportMetric(mb, unit)
}

// Read is the peak resident set in MB since the last Reset (or the
// process's start); ok is false where it cannot be read.
func Read() (mb float64, ok bool) { return statusMB("VmHWM") }

// statusMB is a field of /proc/self/status given in kB, in MB.
func statusMB(field string) (mb float64, ok bool) {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(raw)) {
		if v, found := strings.CutPrefix(line, field+":"); found {
			var kb float64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%f", &kb); err != nil {
				return 0, false
			}
			return kb / 1024, true
		}
	}
	return 0, false
}
