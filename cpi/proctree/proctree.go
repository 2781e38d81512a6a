// Package proctree runs a local VM's agent as a detached process tree and
// ends that tree as a whole. It is the one copy of this machinery, used by
// the local CPI (cpi/local) and by the cloud simulators (sim/machine), which
// boot a local VM for every instance a simulated cloud API creates.
//
// Start launches the agent in a session of its own. With Spec.Isolate (root
// only; ProbeNamespace tells whether the kernel allows it) the agent also gets
// a mount namespace of its own, in which every mount is private and the VM's
// root directory is bind-mounted at /var/vcap, plus any further Spec.Binds
// (a simulated VM's /dev/disk). Nothing the VM mounts is seen by the host.
//
// A VM's processes are found again, by Members, from /proc alone: the agent
// and its descendants, the members of its session and their descendants,
// and every process in its mount namespace whose /var/vcap is the VM's root
// (which catches a grandchild that left the session and its parent). Stop
// sends SIGTERM to all of them, waits, then SIGKILL; processes forked
// meanwhile get the same signal.
package proctree

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

// VcapDir is where, in a VM's own mount namespace, the VM's root appears.
const VcapDir = "/var/vcap"

// Process identifies a running agent: its pid, its start time (to tell it
// from a later process that reuses the pid) and its mount namespace.
type Process struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"`
	MountNS   string `json:"mount_ns,omitempty"`
}

// Bind is a bind mount made in the VM's namespace: Source (a host path)
// appears at Target. Target must exist on the host; it is created when
// missing.
type Bind struct {
	Source string
	Target string
}

// Spec says how to start an agent.
type Spec struct {
	// Path and Args are the agent binary and its arguments.
	Path string
	Args []string
	// Env is the agent's environment (AgentEnv when nil).
	Env []string
	// Log receives the agent's stdout and stderr (appended; mode 0600).
	Log string
	// Root is the VM's root directory. With Isolate it is bind-mounted at
	// VcapDir and the agent runs in VcapDir; without, the agent runs in Root.
	Root string
	// Isolate gives the agent its own mount namespace (needs root).
	Isolate bool
	// Binds are further bind mounts in the namespace, made after Root's.
	// Only with Isolate.
	Binds []Bind
}

// Start starts the agent detached, in its own session (and namespace with
// Isolate), and returns its identity. The child is reaped when it exits
// while this process runs.
func Start(s Spec) (Process, error) {
	if len(s.Binds) > 0 && !s.Isolate {
		return Process{}, errors.New("bind mounts need an isolated vm (own mount namespace)")
	}
	logFile, err := os.OpenFile(s.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return Process{}, err
	}
	defer logFile.Close()
	newCmd := func() *exec.Cmd {
		cmd := exec.Command(s.Path, s.Args...)
		cmd.Dir = s.Root
		if s.Isolate {
			cmd.Dir = VcapDir
		}
		cmd.Stdout = logFile
		cmd.Stderr = logFile
		cmd.Env = s.Env
		if cmd.Env == nil {
			cmd.Env = AgentEnv()
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		return cmd
	}
	start := func(cmd *exec.Cmd) error { return cmd.Start() }
	if s.Isolate {
		binds := append([]Bind{{Source: s.Root, Target: VcapDir}}, s.Binds...)
		for _, b := range binds {
			if err := os.MkdirAll(b.Target, 0o755); err != nil {
				return Process{}, fmt.Errorf("create mount point %s: %w", b.Target, err)
			}
		}
		start = func(cmd *exec.Cmd) error { return startInNamespace(cmd, binds) }
	}
	cmd, err := startRetryingBusy(newCmd, start)
	if err != nil {
		return Process{}, err
	}
	go cmd.Wait() // reap the agent if it dies while this process runs

	p := Process{PID: cmd.Process.Pid}
	if st, err := ReadStat(p.PID); err == nil {
		p.StartTime = st.StartTime
	}
	if s.Isolate {
		p.MountNS, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", p.PID))
	}
	return p, nil
}

// busyRetries and busyWait bound how long Start waits for an agent binary
// that is busy (ETXTBSY): it was just written, and a process forked
// meanwhile (by this process, for another VM) still holds the writing
// descriptor until that child execs.
const (
	busyRetries = 50
	busyWait    = 20 * time.Millisecond
)

// startRetryingBusy starts a command made by newCmd, again while the
// binary is busy being written (an exec.Cmd is not reused).
func startRetryingBusy(newCmd func() *exec.Cmd, start func(*exec.Cmd) error) (*exec.Cmd, error) {
	for attempt := 0; ; attempt++ {
		cmd := newCmd()
		err := start(cmd)
		if err == nil || !errors.Is(err, syscall.ETXTBSY) || attempt == busyRetries {
			return cmd, err
		}
		time.Sleep(busyWait)
	}
}

// startInNamespace starts cmd in a new mount namespace with the binds made.
// The namespace is made by the OS thread that forks the child, locked to
// this goroutine; the thread then returns to the caller's namespace and is
// never unlocked, so the runtime discards it (or, for the main thread, parks
// it) and no other goroutine ever runs there.
func startInNamespace(cmd *exec.Cmd, binds []Bind) error {
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
		for _, b := range binds {
			if err := syscall.Mount(b.Source, b.Target, "", syscall.MS_BIND, ""); err != nil {
				errc <- fmt.Errorf("bind %s at %s: %w", b.Source, b.Target, err)
				return
			}
		}
		errc <- cmd.Start()
	}()
	return <-errc
}

// ProbeNamespace checks that this process may make a mount namespace with
// private mounts, as Start does with Isolate, on a thread it then discards.
func ProbeNamespace() error {
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

// AgentEnv is an agent's environment: this process's PATH and the home and
// temporary directories, never this process's own environment, which may
// hold its configuration and credentials.
func AgentEnv() []string {
	// PATH is passed on (the host sets it explicitly), so packaging
	// scripts on local compile VMs find the host's toolchains.
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

// Stat is what this package reads from /proc/<pid>/stat.
type Stat struct {
	PID, PPID, SID int
	State          byte
	StartTime      uint64
}

// Live reports whether the process is neither a zombie nor dead.
func (s Stat) Live() bool { return s.State != 'Z' && s.State != 'X' }

// ReadStat reads /proc/<pid>/stat.
func ReadStat(pid int) (Stat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Stat{}, err
	}
	// The command name, in parentheses, may hold anything; fields follow
	// the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return Stat{}, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	st := Stat{PID: pid, State: f[0][0]}
	st.PPID, _ = strconv.Atoi(f[1])
	st.SID, _ = strconv.Atoi(f[3])
	st.StartTime, _ = strconv.ParseUint(f[19], 10, 64)
	return st, nil
}

// All lists every live (not zombie) process.
func All() []Stat {
	entries, _ := os.ReadDir("/proc")
	var out []Stat
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := ReadStat(pid); err == nil && st.Live() {
			out = append(out, st)
		}
	}
	return out
}

// Running reports whether the agent process p is alive: its pid exists, is
// not a zombie and was started when p was.
func (p Process) Running() bool {
	if p.PID <= 0 {
		return false
	}
	st, err := ReadStat(p.PID)
	return err == nil && st.Live() && (p.StartTime == 0 || st.StartTime == p.StartTime)
}

// Members finds every process that belongs to the VM whose agent is p and
// whose root directory is root:
//   - the agent and its descendants (by parent pid), while the agent runs;
//   - the members of the agent's session, and their descendants;
//   - with a mount namespace, every process in it: same namespace and, as a
//     guard against a reused namespace id, the VM's root at /var/vcap.
func Members(p Process, root string) []int {
	procs := All()
	self := os.Getpid()
	agentUp := p.Running()
	// leaderGone: the agent's pid is free, or still held by the agent's own
	// unreaped corpse. Either way nobody else leads a session of that id.
	leader, err := ReadStat(p.PID)
	leaderGone := err != nil || (!leader.Live() && leader.StartTime == p.StartTime)
	var rootStat syscall.Stat_t
	rootOK := syscall.Stat(root, &rootStat) == nil

	member := map[int]bool{}
	for _, st := range procs {
		switch {
		case st.PID == self || st.PID == 1:
		case agentUp && st.PID == p.PID:
			member[st.PID] = true
		case p.PID > 0 && st.SID == p.PID && (agentUp || (leaderGone && st.StartTime >= p.StartTime)):
			// While the session has members its id cannot be reused, so
			// when the leader is gone its former members are still ours.
			member[st.PID] = true
		case p.MountNS != "" && rootOK && inNamespace(st.PID, p.MountNS, rootStat):
			member[st.PID] = true
		}
	}
	// Add descendants of members.
	children := map[int][]int{}
	for _, st := range procs {
		children[st.PPID] = append(children[st.PPID], st.PID)
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
	if syscall.Stat(fmt.Sprintf("/proc/%d/root%s", pid, VcapDir), &st) != nil {
		return false
	}
	return st.Dev == root.Dev && st.Ino == root.Ino
}

// Stop ends every process of the VM: SIGTERM, up to timeout for them to
// exit, then SIGKILL. Processes that appear meanwhile (forked by a dying
// parent) get the same signal.
func Stop(ctx context.Context, p Process, root string, timeout time.Duration) error {
	if signalUntilGone(ctx, p, root, syscall.SIGTERM, timeout) {
		return nil
	}
	if signalUntilGone(ctx, p, root, syscall.SIGKILL, 5*time.Second) {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return fmt.Errorf("processes %v survived SIGKILL", Members(p, root))
}

// signalUntilGone sends sig to every process of the VM, including ones that
// appear while it waits, until none is left (true) or timeout passes.
func signalUntilGone(ctx context.Context, p Process, root string, sig syscall.Signal, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	signalled := map[int]bool{}
	for {
		pids := Members(p, root)
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

// mountPoints lists the mount points of this thread's mount namespace.
func mountPoints() ([]string, error) {
	f, err := os.Open("/proc/thread-self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) >= 5 {
			points = append(points, unescapeMountinfo(fields[4]))
		}
	}
	return points, sc.Err()
}

// MountedAt reports whether something is mounted at dir in this thread's
// mount namespace.
func MountedAt(dir string) (bool, error) {
	points, err := mountPoints()
	return slices.Contains(points, dir), err
}

// UnmountUnder detaches every mount of this process's namespace at or below
// dir, deepest first, so that removing dir never deletes through a mount
// (a disk an agent bind-mounted without a namespace of its own).
func UnmountUnder(dir string) error {
	all, err := mountPoints()
	if err != nil {
		return nil // no /proc: nothing we could have mounted either
	}
	var points []string
	for _, mp := range all {
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

// ReleaseLoops detaches every loop device backed by the image file, as an
// agent that was killed before it could unmount its disk leaves them. A
// device still mounted somewhere is marked to detach itself when it is last
// unmounted. Without root there are no such devices to release.
func ReleaseLoops(image string) error {
	var img syscall.Stat_t
	if err := syscall.Stat(image, &img); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	devices, _ := filepath.Glob("/sys/block/loop*")
	var errs []error
	for _, d := range devices {
		dev := "/dev/" + filepath.Base(d)
		fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue // not ours to look at (no root), or gone
		}
		info, err := unix.IoctlLoopGetStatus64(fd)
		if err == nil && info.Device == uint64(img.Dev) && info.Inode == img.Ino {
			// On a device still in use the kernel sets autoclear instead.
			if err := unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0); err != nil && !errors.Is(err, unix.ENXIO) {
				errs = append(errs, fmt.Errorf("release %s (backed by %s): %w", dev, image, err))
			}
		}
		unix.Close(fd)
	}
	return errors.Join(errs...)
}
