package cli

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

func migrate(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := Run(context.Background(), Deps{Stdout: &out, Stderr: &out, Getenv: func(string) string { return "" }}, append([]string{"migrate-state"}, args...))
	return out.String(), err
}

func TestMigrateStateBadFlags(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--to", "etcd:https://127.0.0.1:2379"}, "--from: required"},
		{[]string{"--from", "zookeeper:x", "--to", "etcd:https://127.0.0.1:2379"}, `unknown backend "zookeeper"`},
		{[]string{"--from", "bbolt:" + filepath.Join(dir, "none.db"), "--to", "etcd:127.0.0.1:2379"}, "want https://HOST:PORT"},
		{[]string{"--from", "bbolt:" + filepath.Join(dir, "none.db"), "--to", "etcd:https://127.0.0.1:2379"}, "variables key"},
		{[]string{"--from", "bbolt:a.db", "--to", "bbolt:a.db"}, "the same state"},
	} {
		_, err := migrate(t, tc.args...)
		if ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: exit %d, %v; want 2 and %q", tc.args, ExitCode(err), err, tc.want)
		}
	}
}
