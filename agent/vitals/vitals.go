// Package vitals samples the VM's resource figures from /proc and statfs:
// CPU shares since the previous sample, memory and swap, load averages,
// uptime, and the use of the system, ephemeral and persistent file systems.
package vitals

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/compleat/compleat/agent/protocol"
)

// Sampler samples vitals. Its zero value reads the real /proc; Disks names
// the file systems to report.
type Sampler struct {
	// Proc is the proc file system root (default /proc).
	Proc string
	// Disks maps a name ("system", "ephemeral", "persistent") to a path on
	// that file system; a path that is missing is left out.
	Disks map[string]string

	mu   sync.Mutex
	prev cpuTimes
}

type cpuTimes struct{ user, system, wait, total uint64 }

// Sample returns the current vitals. Figures that cannot be read are zero.
func (s *Sampler) Sample() protocol.Vitals {
	var v protocol.Vitals
	proc := s.Proc
	if proc == "" {
		proc = "/proc"
	}
	if ct, err := readCPU(filepath.Join(proc, "stat")); err == nil {
		s.mu.Lock()
		prev := s.prev
		s.prev = ct
		s.mu.Unlock()
		if dt := ct.total - prev.total; prev.total > 0 && dt > 0 {
			v.CPU = protocol.CPU{
				User:   round(100 * float64(ct.user-prev.user) / float64(dt)),
				System: round(100 * float64(ct.system-prev.system) / float64(dt)),
				Wait:   round(100 * float64(ct.wait-prev.wait) / float64(dt)),
			}
		} else if ct.total > 0 {
			v.CPU = protocol.CPU{
				User:   round(100 * float64(ct.user) / float64(ct.total)),
				System: round(100 * float64(ct.system) / float64(ct.total)),
				Wait:   round(100 * float64(ct.wait) / float64(ct.total)),
			}
		}
	}
	if mi, err := readMeminfo(filepath.Join(proc, "meminfo")); err == nil {
		if total := mi["MemTotal"]; total > 0 {
			used := total - mi["MemAvailable"]
			v.Mem = protocol.Usage{KB: used, Percent: round(100 * float64(used) / float64(total))}
		}
		if total := mi["SwapTotal"]; total > 0 {
			used := total - mi["SwapFree"]
			v.Swap = protocol.Usage{KB: used, Percent: round(100 * float64(used) / float64(total))}
		}
	}
	if b, err := os.ReadFile(filepath.Join(proc, "loadavg")); err == nil {
		f := strings.Fields(string(b))
		for i := 0; i < 3 && i < len(f); i++ {
			v.Load[i], _ = strconv.ParseFloat(f[i], 64)
		}
	}
	if b, err := os.ReadFile(filepath.Join(proc, "uptime")); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			up, _ := strconv.ParseFloat(f[0], 64)
			v.Uptime = int64(up)
		}
	}
	for name, path := range s.Disks {
		var st unix.Statfs_t
		if err := unix.Statfs(path, &st); err != nil || st.Blocks == 0 {
			continue
		}
		if v.Disk == nil {
			v.Disk = map[string]protocol.Disk{}
		}
		d := protocol.Disk{Percent: round(100 * float64(st.Blocks-st.Bfree) / float64(st.Blocks))}
		if st.Files > 0 {
			d.InodePercent = round(100 * float64(st.Files-st.Ffree) / float64(st.Files))
		}
		v.Disk[name] = d
	}
	return v
}

func round(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

func readCPU(path string) (cpuTimes, error) {
	f, err := os.Open(path)
	if err != nil {
		return cpuTimes{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[0] != "cpu" {
			continue
		}
		var n [10]uint64
		for i := 1; i < len(fields) && i <= 10; i++ {
			n[i-1], _ = strconv.ParseUint(fields[i], 10, 64)
		}
		// user nice system idle iowait irq softirq steal (guest is in user)
		var t cpuTimes
		t.user = n[0] + n[1]
		t.system = n[2] + n[5] + n[6]
		t.wait = n[4]
		for i := 0; i < 8; i++ {
			t.total += n[i]
		}
		return t, nil
	}
	return cpuTimes{}, fmt.Errorf("%s: no cpu line", path)
}

func readMeminfo(path string) (map[string]uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		m[k], _ = strconv.ParseUint(f[0], 10, 64)
	}
	return m, sc.Err()
}
