package host_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi/host"
)

// hostHelper is a host process for TestNoOrphanWhenHostIsKilled: it starts
// the plugin from a goroutine locked to a thread that then exits (the trap
// a parent-death signal sets), proves the plugin survived that, prints the
// plugin's pid and waits to be killed.
func hostHelper() {
	type started struct {
		p   *host.Plugin
		err error
	}
	// Keep the main goroutine on the main thread, so that the goroutine
	// below runs on another thread, which the runtime ends with it (the
	// main thread would only be parked).
	runtime.LockOSThread()
	ch := make(chan started)
	go func() {
		runtime.LockOSThread() // this thread dies with the goroutine
		p, err := host.Start(context.Background(), host.Config{Path: os.Getenv("CPI_HOST_HELPER")})
		ch <- started{p, err}
	}()
	s := <-ch
	if s.err != nil {
		fmt.Println("error", s.err)
		os.Exit(1)
	}
	first := s.p.PID()
	time.Sleep(200 * time.Millisecond) // let the runtime end the thread
	if _, err := s.p.Info(context.Background()); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	if s.p.PID() != first {
		fmt.Println("error plugin died with the thread that started it")
		os.Exit(1)
	}
	fmt.Println("plugin", s.p.PID())
	select {}
}

func TestNoOrphanWhenHostIsKilled(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("parent-death signal is Linux only")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "CPI_HOST_HELPER="+fakePlugin)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "plugin ") || strings.HasPrefix(sc.Text(), "error ") {
				line <- sc.Text()
				return
			}
		}
		line <- "eof"
	}()
	var pid int
	select {
	case l := <-line:
		p, err := strconv.Atoi(strings.TrimPrefix(l, "plugin "))
		if err != nil {
			t.Fatalf("host helper said %q", l)
		}
		pid = p
	case <-time.After(30 * time.Second):
		t.Fatal("host helper did not start its plugin")
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	if !running(pid) {
		t.Fatalf("plugin %d is not running while its host is", pid)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	waitGone(t, pid)
}
