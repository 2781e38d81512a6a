package app_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/director/app"
	"github.com/compleat/compleat/director/store"
)

// A data directory that holds a state file must still hold the director's
// CA and variables key: with one missing the director refuses to start,
// naming the file, and writes no new one (a new CA would cut every agent
// off, a new key would leave every variable unreadable).
func TestMissingCAOrKeyRefusesToStart(t *testing.T) {
	for _, missing := range []string{"ca.pem", "ca.key", "state.db.key"} {
		t.Run(missing, func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "data")
			if err := os.MkdirAll(data, 0o700); err != nil {
				t.Fatal(err)
			}
			st, err := store.Open(filepath.Join(data, "state.db"), store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			st.Close()
			for _, f := range []string{"ca.pem", "ca.key"} {
				if err := os.WriteFile(filepath.Join(data, f), []byte("kept"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Remove(filepath.Join(data, missing)); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			// A director that does start serves until ctx ends; the
			// deadline only turns that failure into a quick one.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err = app.Run(ctx, []string{"serve", "--dev", "--data", data, "--listen", "127.0.0.1:0"}, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), missing) {
				t.Fatalf("start without %s: %v\n%s", missing, err, stderr.String())
			}
			if _, err := os.Stat(filepath.Join(data, missing)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s was regenerated", missing)
			}
		})
	}
}
