package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compleat/compleat/director/app"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/store/etcdtest"
)

func migrate(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := app.Run(context.Background(), append([]string{"migrate-state"}, args...), &out, &out)
	return out.String(), err
}

// bbolt → etcd → bbolt through the command; a full target is refused with
// exit 2 until --force.
func TestMigrateStateRoundTrip(t *testing.T) {
	srv := etcdtest.Start(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "state.db")
	s, err := store.Open(src, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Update(func(tx *store.Tx) error {
		if _, err := tx.CreateTask(store.Task{Type: "deploy", Args: json.RawMessage(`{"x":1}`)}); err != nil {
			return err
		}
		return tx.PutVariable(store.Variable{Name: "/pw", Type: "password", Value: json.RawMessage(`"s"`)})
	})
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	etcd := "etcd:" + srv.Endpoint
	out, err := migrate(t, "--from", "bbolt:"+src, "--to", etcd, "--prefix", "/m/")
	if err != nil {
		t.Fatalf("to etcd: %v\n%s", err, out)
	}
	if !strings.Contains(out, "Copied 2 records and 1 sequences") {
		t.Errorf("output %q", out)
	}
	back := filepath.Join(dir, "back.db")
	if out, err := migrate(t, "--from", etcd, "--to", "bbolt:"+back, "--prefix", "/m/", "--variables-key", src+".key"); err != nil {
		t.Fatalf("back to bbolt: %v\n%s", err, out)
	}
	s, err = store.Open(back, store.Options{KeyPath: src + ".key"})
	if err != nil {
		t.Fatal(err)
	}
	err = s.View(func(tx *store.Tx) error {
		v, err := tx.Variable("/pw")
		if err == nil && string(v.Value) != `"s"` {
			t.Errorf("variable after round trip = %s", v.Value)
		}
		return err
	})
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	_, err = migrate(t, "--from", "bbolt:"+src, "--to", etcd, "--prefix", "/m/")
	if app.ExitCode(err) != 2 || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("onto a full target: exit %d, %v", app.ExitCode(err), err)
	}
	if out, err := migrate(t, "--from", "bbolt:"+src, "--to", etcd, "--prefix", "/m/", "--force"); err != nil {
		t.Fatalf("--force: %v\n%s", err, out)
	}
}
