// Package blobstoretest is the conformance suite every blobstore.Store
// implementation passes: call Run from the implementation's test with a
// function returning a fresh, empty store.
package blobstoretest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compleat/compleat/director/blobstore"
)

// Run runs the suite against stores made by newStore.
func Run(t *testing.T, newStore func(t *testing.T) blobstore.Store) {
	ctx := context.Background()

	t.Run("PutIsContentAddressed", func(t *testing.T) {
		s := newStore(t)
		data := []byte("hello blob")
		b, err := s.Put(ctx, bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if b.ID != digest(data) || b.SHA256 != digest(data) || b.Size != int64(len(data)) {
			t.Fatalf("blob = %+v, want id = sha256 = %s, size %d", b, digest(data), len(data))
		}
		if got := read(t, s, b.ID); !bytes.Equal(got, data) {
			t.Fatalf("read back %q", got)
		}
		again, err := s.Put(ctx, bytes.NewReader(data))
		if err != nil || again != b {
			t.Fatalf("second put of the same content = %+v, %v", again, err)
		}
	})

	t.Run("ListSeesEveryBlob", func(t *testing.T) {
		s := newStore(t)
		want := map[string]int64{}
		for _, data := range []string{"one", "two blobs", ""} {
			b, err := s.Put(ctx, strings.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			want[b.ID] = b.Size
		}
		if _, err := s.PutID(ctx, "logs-1", strings.NewReader("log"), ""); err != nil {
			t.Fatal(err)
		}
		want["logs-1"] = 3
		got := map[string]int64{}
		err := s.List(ctx, func(i blobstore.Info) error {
			if i.ModTime.IsZero() || time.Since(i.ModTime) > time.Hour {
				t.Errorf("blob %s: modification time %v", i.ID, i.ModTime)
			}
			got[i.ID] = i.Size
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(got, want) {
			t.Errorf("listed %v, want %v", got, want)
		}
		if err := s.Delete(ctx, "logs-1"); err != nil {
			t.Fatal(err)
		}
		stop := errors.New("stop")
		n := 0
		if err := s.List(ctx, func(blobstore.Info) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
			t.Errorf("a listing fn's error: %v after %d blobs, want it returned after 1", err, n)
		}
	})

	t.Run("ExistsAndDelete", func(t *testing.T) {
		s := newStore(t)
		b, err := s.Put(ctx, strings.NewReader("to delete"))
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := s.Exists(ctx, b.ID); err != nil || !ok {
			t.Fatalf("exists after put = %v, %v", ok, err)
		}
		if err := s.Delete(ctx, b.ID); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.Exists(ctx, b.ID); err != nil || ok {
			t.Fatalf("exists after delete = %v, %v", ok, err)
		}
		if err := s.Delete(ctx, b.ID); err != nil {
			t.Fatalf("deleting a missing blob: %v", err)
		}
	})

	t.Run("GetMissing", func(t *testing.T) {
		s := newStore(t)
		_, err := s.Get(ctx, "does-not-exist")
		if !errors.Is(err, blobstore.ErrNotFound) {
			t.Fatalf("get missing: %v, want ErrNotFound", err)
		}
		if ok, err := s.Exists(ctx, "does-not-exist"); err != nil || ok {
			t.Fatalf("exists missing = %v, %v", ok, err)
		}
	})

	t.Run("PutID", func(t *testing.T) {
		s := newStore(t)
		data := []byte("compiled package")
		b, err := s.PutID(ctx, "compiled-1", bytes.NewReader(data), digest(data))
		if err != nil {
			t.Fatal(err)
		}
		if b.ID != "compiled-1" || b.SHA256 != digest(data) || b.Size != int64(len(data)) {
			t.Fatalf("blob = %+v", b)
		}
		if got := read(t, s, "compiled-1"); !bytes.Equal(got, data) {
			t.Fatalf("read back %q", got)
		}
		// Replacing keeps one blob with the new content.
		if _, err := s.PutID(ctx, "compiled-1", strings.NewReader("v2"), ""); err != nil {
			t.Fatal(err)
		}
		if got := read(t, s, "compiled-1"); string(got) != "v2" {
			t.Fatalf("after replace: %q", got)
		}
	})

	t.Run("PutIDDigestMismatchStoresNothing", func(t *testing.T) {
		s := newStore(t)
		_, err := s.PutID(ctx, "upload-x", strings.NewReader("tampered"), digest([]byte("original")))
		if !errors.Is(err, blobstore.ErrDigestMismatch) {
			t.Fatalf("put with wrong digest: %v, want ErrDigestMismatch", err)
		}
		if ok, _ := s.Exists(ctx, "upload-x"); ok {
			t.Fatal("blob stored despite digest mismatch")
		}
	})

	t.Run("InvalidIDs", func(t *testing.T) {
		s := newStore(t)
		for _, id := range []string{"", "a", "../etc/passwd", "a/b", ".hidden", "x y", strings.Repeat("a", 201)} {
			if _, err := s.PutID(ctx, id, strings.NewReader("x"), ""); !errors.Is(err, blobstore.ErrInvalidID) {
				t.Errorf("put %q: %v, want ErrInvalidID", id, err)
			}
			if _, err := s.Get(ctx, id); !errors.Is(err, blobstore.ErrInvalidID) {
				t.Errorf("get %q: %v, want ErrInvalidID", id, err)
			}
			if err := s.Delete(ctx, id); !errors.Is(err, blobstore.ErrInvalidID) {
				t.Errorf("delete %q: %v, want ErrInvalidID", id, err)
			}
			if _, err := s.Exists(ctx, id); !errors.Is(err, blobstore.ErrInvalidID) {
				t.Errorf("exists %q: %v, want ErrInvalidID", id, err)
			}
		}
	})

	t.Run("LargeAndEmptyBlobs", func(t *testing.T) {
		s := newStore(t)
		big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
		b, err := s.Put(ctx, bytes.NewReader(big))
		if err != nil {
			t.Fatal(err)
		}
		if got := read(t, s, b.ID); !bytes.Equal(got, big) {
			t.Fatalf("large blob differs (%d bytes back)", len(got))
		}
		e, err := s.Put(ctx, bytes.NewReader(nil))
		if err != nil || e.Size != 0 {
			t.Fatalf("empty blob: %+v %v", e, err)
		}
		if got := read(t, s, e.ID); len(got) != 0 {
			t.Fatalf("empty blob read %d bytes", len(got))
		}
	})

	t.Run("ConcurrentPuts", func(t *testing.T) {
		s := newStore(t)
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Half the writers share content, half do not.
				data := fmt.Sprintf("blob %d", i%8)
				b, err := s.Put(ctx, strings.NewReader(data))
				if err == nil && b.ID != digest([]byte(data)) {
					err = fmt.Errorf("id %s for %q", b.ID, data)
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
		for i := range 8 {
			data := fmt.Sprintf("blob %d", i)
			if got := read(t, s, digest([]byte(data))); string(got) != data {
				t.Errorf("blob %d = %q", i, got)
			}
		}
	})

	t.Run("CanceledContext", func(t *testing.T) {
		s := newStore(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := s.Put(cctx, strings.NewReader("never")); err == nil {
			t.Fatal("put with a canceled context succeeded")
		}
		if ok, _ := s.Exists(ctx, digest([]byte("never"))); ok {
			t.Fatal("blob stored under a canceled context")
		}
	})
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func read(t *testing.T, s blobstore.Store, id string) []byte {
	t.Helper()
	rc, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", id, err)
	}
	return b
}
