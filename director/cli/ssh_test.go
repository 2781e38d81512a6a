package cli

import (
	"bytes"
	"context"
	"testing"

	"github.com/compleat/compleat/director/api"
)

func TestLogsAndSSHUsage(t *testing.T) {
	env := map[string]string{"DIRECTOR_TARGET": "https://127.0.0.1:1", "DIRECTOR_TOKEN": "x"}
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"logs", "web/0"}, ExitUsage},     // no -d
		{[]string{"-d", "web", "logs"}, ExitUsage}, // no instance
		{[]string{"-d", "web", "logs", "web/0", "--num", "-1"}, ExitUsage},
		{[]string{"-d", "web", "logs", "web/0", "--dir", "/nonexistent/dir"}, ExitUsage},
		{[]string{"-d", "web", "ssh", "web/0", "-c", " "}, ExitUsage},
		{[]string{"-d", "web", "ssh", "web/0", "-c", "true", "--timeout", "-1s"}, ExitUsage},
		{[]string{"-d", "web", "ssh"}, ExitUsage},
		{[]string{"-d", "web", "ssh", "web/0", "-c", "true"}, ExitFailed}, // nothing listens
	} {
		var out bytes.Buffer
		err := Run(context.Background(), Deps{Stdout: &out, Stderr: &out, Getenv: func(k string) string { return env[k] }}, tc.args)
		if got := ExitCode(err); got != tc.want {
			t.Errorf("%v: exit %d (%v), want %d", tc.args, got, err, tc.want)
		}
	}
}

func TestPrintCommandPrefixesAndFails(t *testing.T) {
	var stdout, stderr bytes.Buffer
	a := &app{d: Deps{Stdout: &stdout, Stderr: &stderr}}
	err := a.printCommand(api.SSHResult{Results: []api.CommandResult{
		{Instance: "web/a", ExitCode: 0, Stdout: "one\ntwo", StdoutBytes: 7},
		{Instance: "web/b", ExitCode: 3, Stderr: "bad\n", StderrBytes: 2 << 20},
		{Instance: "web/c", ExitCode: -1, Error: "no vm"},
	}})
	if ExitCode(err) != ExitFailed || err.Error() != "the command failed on 2 of 3 instances: web/b, web/c" {
		t.Errorf("err = %v", err)
	}
	if got := stdout.String(); got != "web/a: one\nweb/a: two\n" {
		t.Errorf("stdout %q", got)
	}
	want := "web/b: bad\nweb/b: stderr cut: 4 B of 2.0 MiB shown\nweb/b: exit status 3\nweb/c: could not run: no vm\n"
	if got := stderr.String(); got != want {
		t.Errorf("stderr\n got %q\nwant %q", got, want)
	}
}
