package peakrss

import (
	"runtime"
	"testing"
)

var sink []byte

// After a Reset the peak follows what the process touches: with 64 MB
// touched it is at least 64 MB and at least the resident set; restarted
// once they are released, it is the resident set of then.
func TestPeakFollowsAnAllocation(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("VmHWM is Linux's")
	}
	if !Reset() {
		t.Skip("/proc/self/clear_refs cannot be written here")
	}
	sink = make([]byte, 64<<20)
	for i := range len(sink) / 4096 {
		sink[i*4096] = 1
	}
	after, ok := Read()
	if !ok {
		t.Fatal("VmHWM not read")
	}
	if rss := residentMB(t); after < 64 || after < rss-1 {
		t.Errorf("peak %.1f MB with 64 MB touched, resident set %.1f MB", after, rss)
	}
	sink = nil
	runtime.GC()
	if !Reset() {
		t.Fatal("second Reset failed")
	}
	// Restarted, the peak is the resident set of now (how much of the 64 MB
	// the runtime gave back depends on GODEBUG=madvdontneed).
	again, _ := Read()
	rss := residentMB(t)
	if again > rss+8 {
		t.Errorf("peak %.1f MB after the count restarted, resident set %.1f MB (peak before %.1f MB)", again, rss, after)
	}
}

// residentMB is the process's resident set now (VmRSS).
func residentMB(t *testing.T) float64 {
	mb, ok := statusMB("VmRSS")
	if !ok {
		t.Fatal("VmRSS not read")
	}
	return mb
}
