package cloudsim

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Bad command lines exit 2 naming what is wrong; help exits 0.
func TestUsage(t *testing.T) {
	agent := filepath.Join(t.TempDir(), "agent")
	os.WriteFile(agent, []byte("#!/bin/sh\n"), 0o755)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 2, "name a cloud"},
		{[]string{"gcp"}, 2, `unknown cloud "gcp"`},
		{[]string{"help"}, 0, "usage: cloudsim CLOUD"},
		{[]string{"aws"}, 2, "--data is required"},
		{[]string{"aws", "--data", t.TempDir(), "--agent", "/nonexistent/agent"}, 2, "not an executable file"},
		{[]string{"aws", "--data", t.TempDir(), "--agent", agent, "--zones", "0"}, 2, "--zones 0"},
		{[]string{"aws", "--data", t.TempDir(), "--agent", agent, "extra"}, 2, "unexpected arguments: extra"},
		{[]string{"aws", "--bogus"}, 2, "bogus"},
		{[]string{"aws", "-h"}, 0, "-vpc-cidr"},
	} {
		var stdout, stderr bytes.Buffer
		code := Main(context.Background(), tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("cloudsim %v: exit %d, stderr %q; want %d and %q", tc.args, code, stderr.String(), tc.code, tc.want)
		}
	}
}

// The env file is a shell file the cloud's clients read: sourced by sh,
// its values come back as written, quotes and all; only its owner may
// read it.
func TestWriteEnv(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cloud.env")
	vars := [][2]string{{"PLAIN", "http://127.0.0.1:4566"}, {"SPACED", "a b"}, {"QUOTED", "it's $HOME"}, {"EMPTY", ""}}
	if err := writeEnv(path, "a comment\non two lines", vars); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("env file mode %v (%v), want 0600", fi.Mode(), err)
	}
	out, err := exec.Command("sh", "-c", `. "$0" && printf '%s|%s|%s|%s' "$PLAIN" "$SPACED" "$QUOTED" "$EMPTY"`, path).CombinedOutput()
	if err != nil {
		t.Fatalf("sourcing the env file: %v\n%s", err, out)
	}
	if got, want := string(out), "http://127.0.0.1:4566|a b|it's $HOME|"; got != want {
		t.Fatalf("sourced values %q, want %q", got, want)
	}
}
