package action_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/agent/protocol"
)

func TestRunCommand(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	e := newEnv(t)
	os.WriteFile(filepath.Join(e.l.Base, "marker"), []byte("in the base dir\n"), 0o644)

	var res protocol.RunCommandResult
	err := e.call(t, protocol.MethodRunCommand, protocol.RunCommandRequest{Command: "cat marker; echo to-stderr >&2; echo $0; exit 3"}, &res)
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 3 || res.TimedOut {
		t.Errorf("exit %d timed out %v, want 3", res.ExitCode, res.TimedOut)
	}
	if string(res.Stdout) != "in the base dir\n/bin/sh\n" || string(res.Stderr) != "to-stderr\n" {
		t.Errorf("stdout %q stderr %q", res.Stdout, res.Stderr)
	}

	// Any bytes survive the trip; output past the bound is counted, not kept.
	err = e.call(t, protocol.MethodRunCommand, protocol.RunCommandRequest{Command: `printf '\000\377\n'; head -c 100000 /dev/zero | tr '\0' x >&2`, MaxOutput: 1000}, &res)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.Stdout, []byte{0, 0xff, '\n'}) {
		t.Errorf("binary stdout %q", res.Stdout)
	}
	if len(res.Stderr) != 1000 || res.StderrBytes != 100000 || res.ExitCode != 0 {
		t.Errorf("bounded stderr: kept %d of %d, exit %d", len(res.Stderr), res.StderrBytes, res.ExitCode)
	}

	// The timeout kills the command and what it started.
	began := time.Now()
	pidFile := filepath.Join(t.TempDir(), "child")
	err = e.call(t, protocol.MethodRunCommand, protocol.RunCommandRequest{Command: "sleep 600 & echo $! > " + pidFile + "; wait", Timeout: protocol.Duration(300 * time.Millisecond)}, &res)
	if err != nil {
		t.Fatal(err)
	}
	if !res.TimedOut || res.ExitCode != -1 {
		t.Errorf("timed out %v exit %d, want a timeout", res.TimedOut, res.ExitCode)
	}
	if took := time.Since(began); took > 20*time.Second {
		t.Errorf("a timed out command held the answer for %s", took)
	}
	if raw, err := os.ReadFile(pidFile); err == nil {
		pid := strings.TrimSpace(string(raw))
		deadline := time.Now().Add(5 * time.Second)
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("child %s of the timed out command still runs", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	} else {
		t.Errorf("the command did not start its child: %v", err)
	}

	// A background child that keeps the output open does not hold the
	// answer once the shell exited.
	began = time.Now()
	if err := e.call(t, protocol.MethodRunCommand, protocol.RunCommandRequest{Command: "sleep 600 & echo started"}, &res); err != nil {
		t.Fatal(err)
	}
	if string(res.Stdout) != "started\n" || res.ExitCode != 0 {
		t.Errorf("background child: %+v", res)
	}
	if took := time.Since(began); took > 20*time.Second {
		t.Errorf("a background child held the answer for %s", took)
	}

	for name, req := range map[string]protocol.RunCommandRequest{
		"empty":        {},
		"long timeout": {Command: "true", Timeout: protocol.RunCommandMaxTimeout + 1},
	} {
		if err := e.call(t, protocol.MethodRunCommand, req, nil); !errors.Is(err, protocol.ErrBadArguments) {
			t.Errorf("%s: %v, want bad_arguments", name, err)
		}
	}
}

// alive reports whether the process pid exists and is not a zombie.
func alive(pid string) bool {
	st, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	return err == nil && !strings.Contains(string(st), ") Z ")
}

func TestRunCommandCancel(t *testing.T) {
	e := newEnv(t)
	id := e.start(t, protocol.MethodRunCommand, protocol.RunCommandRequest{Command: "sleep 600"})
	time.Sleep(100 * time.Millisecond)
	if err := e.call(t, protocol.MethodCancelTask, protocol.TaskRequest{AgentTaskID: id}, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := e.call(t, protocol.MethodGetTask, protocol.TaskRequest{AgentTaskID: id}, nil)
		if errors.Is(err, protocol.ErrCanceled) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("run_command not cancelled: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTailLogs(t *testing.T) {
	e := newEnv(t)
	web := filepath.Join(e.l.SysLog(), "web")
	os.MkdirAll(web, 0o755)
	os.MkdirAll(filepath.Join(e.l.SysLog(), "db"), 0o755)
	appendTo := func(path, s string) {
		t.Helper()
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(s)
		f.Close()
	}
	stdout := filepath.Join(web, "webapp.stdout.log")
	appendTo(stdout, "one\ntwo\nthree\n")
	appendTo(filepath.Join(web, "webapp.stderr.log"), "")
	appendTo(filepath.Join(web, "webapp.stdout.log.1"), "rotated\n")
	appendTo(filepath.Join(e.l.SysLog(), "db", "db.stdout.log"), "db line\n")
	os.Symlink("/etc/passwd", filepath.Join(web, "sneaky.log"))

	tail := func(req protocol.TailLogsRequest) (map[string]string, protocol.TailLogsResult) {
		t.Helper()
		var res protocol.TailLogsResult
		if err := e.call(t, protocol.MethodTailLogs, req, &res); err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, c := range res.Chunks {
			got[c.File] += string(c.Data)
		}
		return got, res
	}

	got, res := tail(protocol.TailLogsRequest{Jobs: []string{"web"}, Initial: true, Lines: 2})
	if len(got) != 1 || got["web/webapp.stdout.log"] != "two\nthree\n" {
		t.Fatalf("initial two lines: %q", got)
	}
	if _, ok := res.Positions["web/webapp.stderr.log"]; !ok || len(res.Positions) != 2 {
		t.Fatalf("positions %v: want the two web logs (not the rotated copy, not the link)", res.Positions)
	}

	// Nothing new, nothing answered; then only what was appended, the
	// unfinished line held back until it ends.
	if got, res = tail(protocol.TailLogsRequest{Jobs: []string{"web"}, Positions: res.Positions}); len(got) != 0 {
		t.Fatalf("nothing appended, got %q", got)
	}
	appendTo(stdout, "four\nfi")
	got, res = tail(protocol.TailLogsRequest{Jobs: []string{"web"}, Positions: res.Positions})
	if got["web/webapp.stdout.log"] != "four\n" {
		t.Fatalf("after append: %q", got)
	}
	appendTo(stdout, "ve\n")
	got, res = tail(protocol.TailLogsRequest{Jobs: []string{"web"}, Positions: res.Positions})
	if got["web/webapp.stdout.log"] != "five\n" {
		t.Fatalf("after the line ended: %q", got)
	}

	// A rotated file is read from its start; a new file likewise.
	os.Rename(stdout, stdout+".1")
	appendTo(stdout, "after rotation\n")
	appendTo(filepath.Join(web, "drain.stdout.log"), "drained\n")
	got, res = tail(protocol.TailLogsRequest{Jobs: []string{"web"}, Positions: res.Positions})
	if got["web/webapp.stdout.log"] != "after rotation\n" || got["web/drain.stdout.log"] != "drained\n" {
		t.Fatalf("after rotation: %q", got)
	}

	// Answers are bounded; the rest comes with the next calls.
	appendTo(stdout, strings.Repeat("0123456789\n", 100))
	var all strings.Builder
	for i := 0; i < 20; i++ {
		got, res = tail(protocol.TailLogsRequest{Jobs: []string{"web"}, Positions: res.Positions, MaxBytes: 100})
		n := 0
		for _, s := range got {
			n += len(s)
		}
		if n > 100 {
			t.Fatalf("answer of %d bytes, bound 100", n)
		}
		all.WriteString(got["web/webapp.stdout.log"])
	}
	if all.String() != strings.Repeat("0123456789\n", 100) {
		t.Fatalf("bounded reads lost or repeated data: %d bytes", all.Len())
	}

	// Every job when none is named.
	got, _ = tail(protocol.TailLogsRequest{Initial: true, Lines: 1})
	if got["db/db.stdout.log"] != "db line\n" {
		t.Fatalf("all jobs: %q", got)
	}
	if err := e.call(t, protocol.MethodTailLogs, protocol.TailLogsRequest{Jobs: []string{"../etc"}}, nil); !errors.Is(err, protocol.ErrBadArguments) {
		t.Fatalf("bad job name: %v", err)
	}
}
