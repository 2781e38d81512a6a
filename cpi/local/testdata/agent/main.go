// Command agent is a placeholder agent for the local CPI's tests: a real
// process that reports what it sees and listens on its VM's address.
//
// It writes, under <base-dir>/agent/: args.json (its command line, working
// directory and environment), addr (the address it listens on), child.pid
// (a child it keeps running) and, when asked, escaped.pid (a grandchild that
// left its session and parent). Connecting to addr answers the VM's cid.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"
)

type settings struct {
	AgentID  string               `json:"agent_id"`
	VM       struct{ CID string } `json:"vm"`
	Networks map[string]struct {
		IP string `json:"ip"`
	} `json:"networks"`
	Env struct {
		Placeholder struct {
			IgnoreTerm bool `json:"ignore_term"`
			Escape     bool `json:"escape"`
		} `json:"placeholder"`
	} `json:"env"`
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "sleep" {
		for {
			time.Sleep(time.Hour)
		}
	}
	if len(os.Args) > 1 && os.Args[1] == "escape" {
		// Start a grandchild in a session of its own, then leave it an
		// orphan: only its mount namespace still ties it to the VM.
		cmd := exec.Command(os.Args[0], "sleep")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			fail(err)
		}
		fmt.Println(cmd.Process.Pid)
		os.Exit(0)
	}
	flag.String("infrastructure", "", "")
	settingsFile := flag.String("settings-file", "", "")
	baseDir := flag.String("base-dir", "", "")
	flag.Parse()

	var s settings
	b, err := os.ReadFile(*settingsFile)
	if err != nil {
		fail(err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		fail(err)
	}
	if s.Env.Placeholder.IgnoreTerm {
		signal.Ignore(syscall.SIGTERM)
	}
	out := filepath.Join(*baseDir, "agent")
	if err := os.MkdirAll(out, 0o755); err != nil {
		fail(err)
	}
	wd, _ := os.Getwd()
	write(out, "args.json", mustJSON(map[string]any{"args": os.Args, "cwd": wd, "env": os.Environ()}))

	child := exec.Command(os.Args[0], "sleep")
	if err := child.Start(); err != nil {
		fail(err)
	}
	write(out, "child.pid", []byte(strconv.Itoa(child.Process.Pid)))

	if s.Env.Placeholder.Escape {
		pid, err := exec.Command(os.Args[0], "escape").Output()
		if err != nil {
			fail(err)
		}
		write(out, "escaped.pid", pid)
	}

	names := make([]string, 0, len(s.Networks))
	for n := range s.Networks {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) > 0 {
		ln, err := net.Listen("tcp", net.JoinHostPort(s.Networks[names[0]].IP, "0"))
		if err != nil {
			fail(err)
		}
		write(out, "addr", []byte(ln.Addr().String()))
		for {
			conn, err := ln.Accept()
			if err != nil {
				fail(err)
			}
			fmt.Fprintln(conn, s.VM.CID)
			conn.Close()
		}
	}
	select {}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		fail(err)
	}
	return b
}

// write writes a file atomically, so a reader never sees it half written.
func write(dir, name string, b []byte) {
	tmp := filepath.Join(dir, "."+name)
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		fail(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "placeholder agent:", err)
	os.Exit(1)
}
