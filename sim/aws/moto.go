package aws

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// motoFix is a sitecustomize module that makes moto behave as EC2 in two
// ways (addresses of terminated instances are freed; reboots are recorded
// for the watcher); see its comment.
//
//go:embed motofix/sitecustomize.py
var motoFix []byte

// ErrNoMoto: moto_server is not on PATH.
var ErrNoMoto = errors.New("moto_server is not on PATH (moto 5: pip install 'moto[server]')")

// Moto is a running moto_server: moto's standalone server, which answers
// the EC2 API (and others) as AWS documents it, keeping its state in
// memory.
type Moto struct {
	// URL is the server's endpoint, http://127.0.0.1:PORT.
	URL string
	// Reboots is the file to which moto appends the id of every instance
	// RebootInstances reboots (see Config.Reboots).
	Reboots string
	// PID is the server's process id; it leads its own process group.
	PID    int
	cmd    *exec.Cmd
	exited chan struct{}
	dir    string
}

// StartMoto starts moto_server on addr (a 127.x host:port; port 0 picks a
// free one) and returns once it answers. Its output is appended to
// dir/moto.log; dir/motofix holds the additions it loads (the address of a
// terminated instance is freed, as on EC2; reboots are appended to
// dir/reboots). The server leads a process
// group of its own, which Stop ends.
func StartMoto(ctx context.Context, addr, dir string) (*Moto, error) {
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		return nil, ErrNoMoto
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("moto address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("moto address %q: must be a loopback address", addr)
	}
	if port == "0" {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, err
		}
		port = strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
		l.Close()
	}
	fix := filepath.Join(dir, "motofix")
	if err := os.MkdirAll(fix, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(fix, "sitecustomize.py"), motoFix, 0o644); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "moto.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "-H", host, "-p", port)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	pythonPath := fix
	if p := os.Getenv("PYTHONPATH"); p != "" {
		pythonPath += string(os.PathListSeparator) + p
	}
	reboots := filepath.Join(dir, "reboots")
	if err := os.WriteFile(reboots, nil, 0o600); err != nil {
		return nil, err
	}
	cmd.Env = append(os.Environ(), "PYTHONPATH="+pythonPath, "COMPLEAT_MOTO_REBOOTS="+reboots)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start moto_server: %w", err)
	}
	m := &Moto{URL: "http://" + net.JoinHostPort(host, port), Reboots: reboots, PID: cmd.Process.Pid, cmd: cmd, exited: make(chan struct{}), dir: dir}
	go func() { _ = cmd.Wait(); close(m.exited) }()
	// For StopLeftoverMoto, should this process die without stopping it.
	_ = os.WriteFile(filepath.Join(dir, "moto.pid"), []byte(strconv.Itoa(m.PID)+"\n"), 0o644)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(m.URL + "/moto-api/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return m, nil
			}
		}
		select {
		case <-m.exited:
			return nil, fmt.Errorf("moto_server exited before answering (log: %s)", logPath)
		case <-ctx.Done():
			m.Stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			m.Stop()
			return nil, fmt.Errorf("moto_server did not answer on %s within a minute (log: %s)", m.URL, logPath)
		}
	}
}

// StopLeftoverMoto ends the moto_server a previous StartMoto on dir left
// running (its starter was killed): the process group of the pid in
// dir/moto.pid, if that process is still a moto_server leading its group.
// It reports whether it found one.
func StopLeftoverMoto(dir string) bool {
	raw, err := os.ReadFile(filepath.Join(dir, "moto.pid"))
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 1 {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), "moto_server") {
		return false
	}
	if pgid, err := syscall.Getpgid(pid); err != nil || pgid != pid {
		return false
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	_ = os.Remove(filepath.Join(dir, "moto.pid"))
	return true
}

// Stop ends the server's process group (SIGTERM, then SIGKILL after 5s)
// and waits for the server to exit.
func (m *Moto) Stop() {
	_ = syscall.Kill(-m.PID, syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-m.PID, syscall.SIGKILL)
		<-m.exited
	}
	// The group's other members (moto's reloader child, if any).
	_ = syscall.Kill(-m.PID, syscall.SIGKILL)
	_ = os.Remove(filepath.Join(m.dir, "moto.pid"))
}
