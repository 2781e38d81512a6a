package blobstore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/compleat/compleat/director/blobstore"
	"github.com/compleat/compleat/director/blobstore/blobstoretest"
)

func TestFS(t *testing.T) {
	t.Parallel()
	blobstoretest.Run(t, func(t *testing.T) blobstore.Store {
		s, err := blobstore.NewFS(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestFSLeavesNoTempFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := blobstore.NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a, err := s.Put(ctx, strings.NewReader("a"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, a.ID[:2], a.ID)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("blob %s: %v, mode %v; want 0600", a.ID, err, fi.Mode().Perm())
	}
	s.PutID(ctx, "xy", strings.NewReader("b"), "0000")
	// A shard that cannot be made (a file in the way) fails the put and
	// leaves nothing behind either.
	if err := os.WriteFile(filepath.Join(dir, "zz"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if !blobstore.ValidID("zzblocked") {
		t.Fatal("zzblocked is not a valid id")
	}
	if _, err := s.PutID(ctx, "zzblocked", strings.NewReader("c"), ""); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("put into a shard blocked by a file: %v, want it refused", err)
	}
	left, _ := os.ReadDir(filepath.Join(dir, "tmp"))
	if len(left) != 0 {
		t.Fatalf("%d files left in tmp", len(left))
	}
}

// newFakeS3 starts an in-process S3 server and returns options for a new
// bucket on it.
func newFakeS3(t *testing.T) blobstore.S3Options {
	t.Helper()
	srv := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	t.Cleanup(srv.Close)
	bucket := "blobs"
	client := s3.New(s3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(srv.URL),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider("key", "secret", ""),
	})
	if _, err := client.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatal(err)
	}
	return blobstore.S3Options{
		Bucket: bucket, Prefix: "director/", Endpoint: srv.URL, PathStyle: true,
		AccessKeyID: "key", SecretAccessKey: "secret", TempDir: t.TempDir(),
	}
}

func TestS3(t *testing.T) {
	t.Parallel()
	blobstoretest.Run(t, func(t *testing.T) blobstore.Store {
		s, err := blobstore.NewS3(newFakeS3(t))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestS3UsesPrefix(t *testing.T) {
	t.Parallel()
	opts := newFakeS3(t)
	s, err := blobstore.NewS3(opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutID(context.Background(), "abc", strings.NewReader("x"), ""); err != nil {
		t.Fatal(err)
	}
	other := opts
	other.Prefix = "elsewhere/"
	s2, _ := blobstore.NewS3(other)
	if ok, err := s2.Exists(context.Background(), "abc"); err != nil || ok {
		t.Fatalf("blob visible under another prefix: %v %v", ok, err)
	}
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

type signedServer struct {
	url    string
	store  *blobstore.FS
	signer *blobstore.Signer
	now    *time.Time
}

func newSignedServer(t *testing.T) *signedServer {
	store, err := blobstore.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	signer := blobstore.NewSigner([]byte("0123456789abcdef0123456789abcdef")).WithClock(func() time.Time { return now })
	mux := http.NewServeMux()
	mux.Handle("/blobs/", blobstore.NewHandler(store, signer, nil))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &signedServer{url: srv.URL, store: store, signer: signer, now: &now}
}

func do(t *testing.T, method, u string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestSignedGetAndPut(t *testing.T) {
	t.Parallel()
	s := newSignedServer(t)
	data := []byte("compiled package bytes")

	put, err := s.signer.URL(s.url, http.MethodPut, "compiled-7", time.Minute, sum(data))
	if err != nil {
		t.Fatal(err)
	}
	code, body := do(t, http.MethodPut, put, data)
	if code != http.StatusCreated {
		t.Fatalf("put: %d %s", code, body)
	}
	var b blobstore.Blob
	if err := json.Unmarshal(body, &b); err != nil || b.ID != "compiled-7" || b.SHA256 != sum(data) || b.Size != int64(len(data)) {
		t.Fatalf("put answer %s (%v)", body, err)
	}

	get, _ := s.signer.URL(s.url, http.MethodGet, "compiled-7", time.Minute, "")
	code, body = do(t, http.MethodGet, get, nil)
	if code != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("get: %d %q", code, body)
	}

	missing, _ := s.signer.URL(s.url, http.MethodGet, "nothing-here", time.Minute, "")
	if code, _ := do(t, http.MethodGet, missing, nil); code != http.StatusNotFound {
		t.Errorf("get missing: %d, want 404", code)
	}
}

func TestSignedURLRefusals(t *testing.T) {
	t.Parallel()
	s := newSignedServer(t)
	data := []byte("blob")
	b, err := s.store.Put(context.Background(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	get, _ := s.signer.URL(s.url, http.MethodGet, b.ID, time.Minute, "")
	put, _ := s.signer.URL(s.url, http.MethodPut, "upload-1", time.Minute, sum(data))

	tamper := func(u string, fn func(q url.Values, p *string)) string {
		pu, _ := url.Parse(u)
		q := pu.Query()
		fn(q, &pu.Path)
		pu.RawQuery = q.Encode()
		return pu.String()
	}
	other, _ := s.store.Put(context.Background(), strings.NewReader("other"))
	cases := []struct {
		name, method, url string
		body              []byte
		code              int
		msg               string
	}{
		{"no signature", http.MethodGet, s.url + "/blobs/" + b.ID, nil, 403, "invalid blob URL signature"},
		{"other blob id", http.MethodGet, tamper(get, func(q url.Values, p *string) { *p = "/blobs/" + other.ID }), nil, 403, "invalid blob URL signature"},
		{"extended expiry", http.MethodGet, tamper(get, func(q url.Values, p *string) { q.Set("expires", "9999999999") }), nil, 403, "invalid blob URL signature"},
		{"flipped signature", http.MethodGet, tamper(get, func(q url.Values, p *string) {
			sig := []byte(q.Get("signature"))
			sig[0] ^= 1
			q.Set("signature", string(sig))
		}), nil, 403, "invalid blob URL signature"},
		{"GET URL used for PUT", http.MethodPut, get, data, 403, "invalid blob URL signature"},
		{"PUT URL used for GET", http.MethodGet, put, nil, 403, "invalid blob URL signature"},
		{"sha256 removed from PUT", http.MethodPut, tamper(put, func(q url.Values, p *string) { q.Del("sha256") }), []byte("evil"), 403, "invalid blob URL signature"},
		{"body with another digest", http.MethodPut, put, []byte("evil"), 400, "blob sha256 mismatch"},
		{"DELETE", http.MethodDelete, get, nil, 405, "method not allowed"},
		{"bad id", http.MethodGet, s.url + "/blobs/..%2f..%2fetc", nil, 404, "not found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := do(t, c.method, c.url, c.body)
			if code != c.code || !strings.Contains(string(body), c.msg) {
				t.Fatalf("%d %q, want %d %q", code, body, c.code, c.msg)
			}
		})
	}
	if ok, _ := s.store.Exists(context.Background(), "upload-1"); ok {
		t.Error("a refused upload was stored")
	}

	// Expiry: the same URL works until its time has passed.
	if code, _ := do(t, http.MethodGet, get, nil); code != 200 {
		t.Fatalf("fresh URL refused: %d", code)
	}
	*s.now = s.now.Add(61 * time.Second)
	if code, body := do(t, http.MethodGet, get, nil); code != 403 || !strings.Contains(string(body), "expired") {
		t.Fatalf("expired URL: %d %q", code, body)
	}
	// A signer with another key refuses it even before expiry.
	foreign := blobstore.NewSigner([]byte("another key, another director..."))
	u, _ := foreign.URL(s.url, http.MethodGet, b.ID, time.Hour, "")
	if code, _ := do(t, http.MethodGet, u, nil); code != 403 {
		t.Errorf("foreign signature: %d", code)
	}
}

func TestSignedPutSizeLimit(t *testing.T) {
	t.Parallel()
	store, _ := blobstore.NewFS(t.TempDir())
	signer := blobstore.NewSigner([]byte("k"))
	h := blobstore.NewHandler(store, signer, nil)
	h.MaxPutSize = 10
	srv := httptest.NewServer(h)
	defer srv.Close()
	u, _ := signer.URL(srv.URL, http.MethodPut, "big-1", time.Minute, "")
	if code, _ := do(t, http.MethodPut, u, bytes.Repeat([]byte("x"), 100)); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized put: %d", code)
	}
	if ok, _ := store.Exists(context.Background(), "big-1"); ok {
		t.Fatal("oversized body stored")
	}
}

func benchmarkPut(b *testing.B, s blobstore.Store) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := range b.N {
		data[0] = byte(i) // a new blob each time
		if _, err := s.Put(context.Background(), bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFSPut stores 4 MiB blobs in the filesystem store.
func BenchmarkFSPut(b *testing.B) {
	s, err := blobstore.NewFS(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	benchmarkPut(b, s)
}

// BenchmarkS3Put stores 4 MiB blobs in the S3 store (in-process server).
func BenchmarkS3Put(b *testing.B) {
	srv := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	defer srv.Close()
	client := s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider("key", "secret", "")})
	if _, err := client.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String("blobs")}); err != nil {
		b.Fatal(err)
	}
	s, err := blobstore.NewS3(blobstore.S3Options{Bucket: "blobs", Endpoint: srv.URL, PathStyle: true,
		AccessKeyID: "key", SecretAccessKey: "secret", TempDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	benchmarkPut(b, s)
}

// A PUT URL is single-use: replaying it (within its lifetime) cannot replace
// the blob it stored, so a compiled package cannot be swapped afterwards.
func TestSignedPutIsSingleUse(t *testing.T) {
	t.Parallel()
	s := newSignedServer(t)
	good, evil := []byte("compiled package"), []byte("poisoned package")
	put, err := s.signer.URL(s.url, http.MethodPut, "compiled-8", time.Hour, "")
	if err != nil {
		t.Fatal(err)
	}
	if code, body := do(t, http.MethodPut, put, good); code != http.StatusCreated {
		t.Fatalf("first put: %d %s", code, body)
	}
	if code, body := do(t, http.MethodPut, put, evil); code != http.StatusConflict || !strings.Contains(string(body), "single-use") {
		t.Errorf("replayed put: %d %s, want 409", code, body)
	}
	get, _ := s.signer.URL(s.url, http.MethodGet, "compiled-8", time.Minute, "")
	if code, body := do(t, http.MethodGet, get, nil); code != http.StatusOK || !bytes.Equal(body, good) {
		t.Errorf("after the replay: %d %q, want the first upload", code, body)
	}
}
