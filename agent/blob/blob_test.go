package blob_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/compleat/compleat/agent/applyspec"
	"github.com/compleat/compleat/agent/blob"
	"github.com/compleat/compleat/agent/protocol"
)

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

type server struct {
	*httptest.Server
	mu   sync.Mutex
	put  []byte
	hits int
}

func newServer(t *testing.T, content []byte) (*server, *blob.Store) {
	s := &server{}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("sig") != "s3cr3t" {
			http.Error(w, "bad signature", http.StatusForbidden)
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.hits++
		switch r.Method {
		case http.MethodGet:
			w.Write(content)
		case http.MethodPut:
			s.put, _ = io.ReadAll(r.Body)
			if r.Header.Get("X-Content-Sha256") != sum(s.put) {
				http.Error(w, "bad sum", http.StatusBadRequest)
				return
			}
			w.WriteHeader(http.StatusCreated)
		}
	}))
	t.Cleanup(s.Close)
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw}))
	client, err := blob.NewHTTPClient(ca)
	if err != nil {
		t.Fatal(err)
	}
	return s, &blob.Store{Client: client, CacheDir: filepath.Join(t.TempDir(), "blobs")}
}

func TestFetchVerifiesAndCaches(t *testing.T) {
	content := []byte("package bits")
	srv, st := newServer(t, content)
	b := applyspec.Blob{URL: srv.URL + "/blobs/1?expires=9&sig=s3cr3t", SHA256: sum(content)}
	p, err := st.Fetch(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); string(got) != string(content) {
		t.Fatalf("content %q", got)
	}
	if _, err := st.Fetch(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if srv.hits != 1 {
		t.Fatalf("%d downloads, want 1 (cached)", srv.hits)
	}
	if err := st.Remove(b.SHA256); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatal("removed blob still cached")
	}
	if err := st.Remove(b.SHA256); err != nil {
		t.Fatal(err)
	}
}

func TestFetchMismatchInstallsNothing(t *testing.T) {
	srv, st := newServer(t, []byte("tampered"))
	b := applyspec.Blob{URL: srv.URL + "/blobs/1?sig=s3cr3t", SHA256: sum([]byte("original"))}
	_, err := st.Fetch(context.Background(), b)
	if !errors.Is(err, protocol.ErrBlobMismatch) {
		t.Fatalf("err = %v, want blob mismatch", err)
	}
	entries, _ := os.ReadDir(st.CacheDir)
	if len(entries) != 0 {
		t.Fatalf("cache holds %d entries after a mismatch", len(entries))
	}
}

func TestErrorsNeverShowTheSignature(t *testing.T) {
	srv, st := newServer(t, nil)
	_, err := st.Fetch(context.Background(), applyspec.Blob{URL: srv.URL + "/blobs/1?sig=wrong-s3cr3t", SHA256: sum(nil)})
	if err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("err = %v", err)
	}
	srv.Close()
	_, err = st.Fetch(context.Background(), applyspec.Blob{URL: srv.URL + "/blobs/2?sig=s3cr3t", SHA256: sum([]byte("x"))})
	if err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("err = %v", err)
	}
}

func TestUntrustedServerRefused(t *testing.T) {
	srv, _ := newServer(t, []byte("x"))
	client, err := blob.NewHTTPClient("")
	if err != nil {
		t.Fatal(err)
	}
	st := &blob.Store{Client: client, CacheDir: t.TempDir()}
	if _, err := st.Fetch(context.Background(), applyspec.Blob{URL: srv.URL + "/b?sig=s3cr3t", SHA256: sum([]byte("x"))}); err == nil {
		t.Fatal("fetched from a server the blobstore ca did not sign")
	}
}

func TestUpload(t *testing.T) {
	srv, st := newServer(t, nil)
	p := filepath.Join(t.TempDir(), "c.tgz")
	os.WriteFile(p, []byte("compiled"), 0o600)
	got, size, err := st.Upload(context.Background(), protocol.Upload{URL: srv.URL + "/blobs/c?sig=s3cr3t"}, p)
	if err != nil {
		t.Fatal(err)
	}
	if got != sum([]byte("compiled")) || size != 8 || string(srv.put) != "compiled" {
		t.Fatalf("sum %s size %d put %q", got, size, srv.put)
	}
}
