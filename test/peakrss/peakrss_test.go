package peakrss

import (
	"runtime"
	"testing"
)

var sink []byte

// After a Reset the peak follows what the process touches: it grows by
// about what a new allocation makes resident.
func TestPeakFollowsAnAllocation(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("VmHWM is Linux's")
	}
	if !Reset() {
		t.Skip("/proc/self/clear_refs cannot be written here")
	}
	before, ok := Read()
	if !ok {
		t.Fatal("VmHWM not read")
	}
	sink = make([]byte, 64<<20)
	for i := range len(sink) / 4096 {
		sink[i*4096] = 1
	}
	after, _ := Read()
	sink = nil
	if after-before < 60 {
		t.Errorf("peak %.1f MB before touching 64 MB, %.1f MB after", before, after)
	}
	runtime.GC()
	if !Reset() {
		t.Fatal("second Reset failed")
	}
	if again, _ := Read(); again > after-30 {
		t.Errorf("peak %.1f MB after the memory was released and the count restarted (was %.1f MB)", again, after)
	}
}
