package host_test

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"testing"
)

// cpuTicks is the CPU time (user and system, all threads) a process has
// used, in clock ticks of 10 ms (USER_HZ is 100 on Linux), from
// /proc/PID/stat; ok is false where it cannot be read.
func cpuTicks(pid string) (ticks uint64, ok bool) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	// After the name: state is field 3, utime field 14, stime field 15.
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return 0, false
	}
	u, err1 := strconv.ParseUint(string(f[11]), 10, 64)
	s, err2 := strconv.ParseUint(string(f[12]), 10, 64)
	return u + s, err1 == nil && err2 == nil
}

// cpuSplit measures where a benchmark's calls spend CPU: in the host (this
// process) and in the plugin process pid. Call it before the loop and the
// function it returns after: it reports host-cpu-µs/op and plugin-cpu-µs/op.
// With 10 ms ticks, run enough calls (a few seconds) for the figures to
// mean something.
func cpuSplit(b *testing.B, pid int) func() {
	h0, ok1 := cpuTicks("self")
	p0, ok2 := cpuTicks(fmt.Sprint(pid))
	return func() {
		h1, ok3 := cpuTicks("self")
		p1, ok4 := cpuTicks(fmt.Sprint(pid))
		if !(ok1 && ok2 && ok3 && ok4) || b.N == 0 {
			return
		}
		const tickµs = 10000
		b.ReportMetric(float64(h1-h0)*tickµs/float64(b.N), "host-cpu-µs/op")
		b.ReportMetric(float64(p1-p0)*tickµs/float64(b.N), "plugin-cpu-µs/op")
	}
}
