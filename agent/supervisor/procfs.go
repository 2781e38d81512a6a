package supervisor

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times; it is 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// usage is the CPU time and resident memory of a process group.
type usage struct {
	cpu time.Duration
	rss uint64
}

// groupUsage sums CPU time and resident memory over the members of each
// process group in pgids (a process and the children it forked), in one
// pass over /proc. Groups it cannot read are missing from the result.
func groupUsage(pgids []int) map[int]usage {
	out := map[int]usage{}
	if len(pgids) == 0 {
		return out
	}
	want := map[int]bool{}
	for _, g := range pgids {
		want[g] = true
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	page := uint64(os.Getpagesize())
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses and may
		// contain spaces: state is field 3, pgrp 5, utime 14, stime 15,
		// rss (pages) 24.
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 22 {
			continue
		}
		pgrp, _ := strconv.Atoi(f[2])
		if !want[pgrp] {
			continue
		}
		ut, _ := strconv.ParseUint(f[11], 10, 64)
		st, _ := strconv.ParseUint(f[12], 10, 64)
		rss, _ := strconv.ParseUint(f[21], 10, 64)
		u := out[pgrp]
		u.cpu += time.Duration(ut+st) * time.Second / clockTicks
		u.rss += rss * page
		out[pgrp] = u
	}
	return out
}

// procStartTime reads when a process started (clock ticks since boot, field
// 22 of /proc/<pid>/stat); with the pid it identifies a process across pid
// reuse. ok is false for a process that is gone or a zombie.
func procStartTime(pid int) (start uint64, ok bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return 0, false
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	return start, err == nil
}
