package local

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// vcapDir is where, in a VM's own mount namespace, the VM's root/ appears.
const vcapDir = "/var/vcap"

// agentProcess identifies a running agent: its pid, its start time (to tell
// it from a later process that reuses the pid) and its mount namespace.
type agentProcess struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"`
	MountNS   string `json:"mount_ns,omitempty"`
}

// startAgent starts the VM's agent detached in its own session, with stdout
// and stderr appended to the VM's agent.log. With isolate, the agent gets its
// own mount namespace, in which every mount is private (nothing propagates to
// or from the host) and rootDir is bind-mounted at /var/vcap.
func (c *CPI) startAgent(agentPath, vmDir, rootDir string, isolate bool) (agentProcess, error) {
	base := rootDir
	if isolate {
		base = vcapDir
	}
	logFile, err := os.OpenFile(filepath.Join(vmDir, agentLogFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return agentProcess{}, err
	}
	defer logFile.Close()
	cmd := exec.Command(agentPath,
		"--infrastructure", "local",
		"--settings-file", filepath.Join(vmDir, settingsFile),
		"--base-dir", base)
	cmd.Dir = base
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = agentEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}

	if !isolate {
		if err := cmd.Start(); err != nil {
			return agentProcess{}, err
		}
	} else {
		if err := os.MkdirAll(vcapDir, 0o755); err != nil {
			return agentProcess{}, fmt.Errorf("create mount point %s: %w", vcapDir, err)
		}
		if err := startInNamespace(cmd, rootDir); err != nil {
			return agentProcess{}, err
		}
	}
	go cmd.Wait() // reap the agent if it dies while this plugin runs

	p := agentProcess{PID: cmd.Process.Pid}
	if st, err := readStat(p.PID); err == nil {
		p.StartTime = st.startTime
	}
	if isolate {
		p.MountNS, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", p.PID))
	}
	return p, nil
}

// startInNamespace starts cmd in a new mount namespace where rootDir is
// bind-mounted at /var/vcap. The namespace is made by the OS thread that
// forks the child, locked to this goroutine; the thread then returns to the
// plugin's namespace and is never unlocked, so the runtime discards it (or,
// for the main thread, parks it) and no other goroutine ever runs there.
func startInNamespace(cmd *exec.Cmd, rootDir string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/mnt")
		if err != nil {
			errc <- fmt.Errorf("open mount namespace: %w", err)
			return
		}
		defer home.Close()
		if err := syscall.Unshare(syscall.CLONE_NEWNS); err != nil {
			errc <- fmt.Errorf("new mount namespace: %w", err)
			return
		}
		// Leave the namespace before the thread ends or parks, so that
		// neither it nor /proc/self (the main thread's view) pins the
		// VM's mounts. Should that fail, the thread is still never used
		// again, and this package reads its own mounts through
		// /proc/thread-self.
		defer unix.Setns(int(home.Fd()), unix.CLONE_NEWNS)
		if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
			errc <- fmt.Errorf("make mounts private: %w", err)
			return
		}
		if err := syscall.Mount(rootDir, vcapDir, "", syscall.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind %s at %s: %w", rootDir, vcapDir, err)
			return
		}
		errc <- cmd.Start()
	}()
	return <-errc
}

// probeNamespace checks that this process may make a mount namespace with
// private mounts, as startInNamespace does, on a thread it then discards.
func probeNamespace() error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/mnt")
		if err != nil {
			errc <- err
			return
		}
		defer home.Close()
		if err := syscall.Unshare(syscall.CLONE_NEWNS); err != nil {
			errc <- fmt.Errorf("new mount namespace: %w", err)
			return
		}
		defer unix.Setns(int(home.Fd()), unix.CLONE_NEWNS)
		if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
			errc <- fmt.Errorf("make mounts private: %w", err)
			return
		}
		errc <- nil
	}()
	return <-errc
}

// agentEnv is the agent's environment: the plugin's PATH and the home and
// temporary directories, never the plugin's own environment, which holds its
// properties.
func agentEnv() []string {
	// The plugin's own PATH is passed on (the host sets it explicitly), so
	// packaging scripts on local compile VMs find the host's toolchains.
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	env := []string{"PATH=" + path}
	for _, k := range []string{"HOME", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// procStat is what the local CPI reads from /proc/<pid>/stat.
type procStat struct {
	pid, ppid, sid int
	state          byte
	startTime      uint64
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// The command name, in parentheses, may hold anything; fields follow
	// the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	st := procStat{pid: pid, state: f[0][0]}
	st.ppid, _ = strconv.Atoi(f[1])
	st.sid, _ = strconv.Atoi(f[3])
	st.startTime, _ = strconv.ParseUint(f[19], 10, 64)
	return st, nil
}

// allProcs lists every live (not zombie) process.
func allProcs() []procStat {
	entries, _ := os.ReadDir("/proc")
	var out []procStat
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readStat(pid); err == nil && st.state != 'Z' && st.state != 'X' {
			out = append(out, st)
		}
	}
	return out
}

// running reports whether the agent process p is alive: its pid exists, is
// not a zombie and was started when p was.
func (p agentProcess) running() bool {
	if p.PID <= 0 {
		return false
	}
	st, err := readStat(p.PID)
	return err == nil && st.state != 'Z' && st.state != 'X' && (p.StartTime == 0 || st.startTime == p.StartTime)
}

// vmProcesses finds every process that belongs to the VM whose agent is p
// and whose root directory is rootDir:
//   - the agent and its descendants (by parent pid), while the agent runs;
//   - the members of the agent's session, and their descendants;
//   - with a mount namespace, every process in it: same namespace and, as a
//     guard against a reused namespace id, the VM's root at /var/vcap.
func vmProcesses(p agentProcess, rootDir string) []int {
	procs := allProcs()
	self := os.Getpid()
	agentUp := p.running()
	// leaderGone: the agent's pid is free, or still held by the agent's own
	// unreaped corpse. Either way nobody else leads a session of that id.
	leader, err := readStat(p.PID)
	leaderGone := err != nil || ((leader.state == 'Z' || leader.state == 'X') && leader.startTime == p.StartTime)
	var rootStat syscall.Stat_t
	rootOK := syscall.Stat(rootDir, &rootStat) == nil

	member := map[int]bool{}
	for _, st := range procs {
		switch {
		case st.pid == self || st.pid == 1:
		case agentUp && st.pid == p.PID:
			member[st.pid] = true
		case p.PID > 0 && st.sid == p.PID && (agentUp || (leaderGone && st.startTime >= p.StartTime)):
			// While the session has members its id cannot be reused, so
			// when the leader is gone its former members are still ours.
			member[st.pid] = true
		case p.MountNS != "" && rootOK && inNamespace(st.pid, p.MountNS, rootStat):
			member[st.pid] = true
		}
	}
	// Add descendants of members.
	children := map[int][]int{}
	for _, st := range procs {
		children[st.ppid] = append(children[st.ppid], st.pid)
	}
	queue := make([]int, 0, len(member))
	for pid := range member {
		queue = append(queue, pid)
	}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, child := range children[pid] {
			if !member[child] && child != self {
				member[child] = true
				queue = append(queue, child)
			}
		}
	}
	out := make([]int, 0, len(member))
	for pid := range member {
		out = append(out, pid)
	}
	slices.Sort(out)
	return out
}

func inNamespace(pid int, ns string, root syscall.Stat_t) bool {
	got, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if err != nil || got != ns {
		return false
	}
	var st syscall.Stat_t
	if syscall.Stat(fmt.Sprintf("/proc/%d/root%s", pid, vcapDir), &st) != nil {
		return false
	}
	return st.Dev == root.Dev && st.Ino == root.Ino
}

// stopVM ends every process of the VM: SIGTERM, up to timeout for them to
// exit, then SIGKILL. Processes that appear meanwhile (forked by a dying
// parent) get the same signal.
func stopVM(ctx context.Context, p agentProcess, rootDir string, timeout time.Duration) error {
	if signalUntilGone(ctx, p, rootDir, syscall.SIGTERM, timeout) {
		return nil
	}
	if signalUntilGone(ctx, p, rootDir, syscall.SIGKILL, 5*time.Second) {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return fmt.Errorf("processes %v survived SIGKILL", vmProcesses(p, rootDir))
}

// signalUntilGone sends sig to every process of the VM, including ones that
// appear while it waits, until none is left (true) or timeout passes.
func signalUntilGone(ctx context.Context, p agentProcess, rootDir string, sig syscall.Signal, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	signalled := map[int]bool{}
	for {
		pids := vmProcesses(p, rootDir)
		if len(pids) == 0 {
			return true
		}
		for _, pid := range pids {
			if !signalled[pid] {
				_ = syscall.Kill(pid, sig)
				signalled[pid] = true
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// unmountUnder detaches every mount of this plugin's namespace at or below
// dir, deepest first, so that removing dir never deletes through a mount
// (a disk an agent bind-mounted without a namespace of its own).
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/thread-self/mountinfo")
	if err != nil {
		return nil // no /proc: nothing we could have mounted either
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			points = append(points, mp)
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	var errs []error
	for _, mp := range points {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of
// /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
