package compile_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compleat/compleat/agent/applyspec"
	"github.com/compleat/compleat/agent/compile"
	"github.com/compleat/compleat/agent/install"
	"github.com/compleat/compleat/agent/layout"
	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/cpi/tarball"
)

// blobstore is a stateful fake: blobs by sha256 in a directory, uploads by
// URL.
type blobstore struct {
	dir     string
	uploads map[string][]byte
}

func (b *blobstore) Fetch(_ context.Context, bl applyspec.Blob) (string, error) {
	p := filepath.Join(b.dir, bl.SHA256)
	if _, err := os.Stat(p); err != nil {
		return "", err
	}
	return p, nil
}

func (b *blobstore) Upload(_ context.Context, u protocol.Upload, path string) (string, int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", 0, err
	}
	b.uploads[u.URL] = data
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:]), int64(len(data)), nil
}

func (b *blobstore) add(t *testing.T, files map[string]string) applyspec.Blob {
	t.Helper()
	src := t.TempDir()
	for name, content := range files {
		p := filepath.Join(src, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(content), 0o755)
	}
	var buf bytes.Buffer
	if err := tarball.Create(&buf, src, nil); err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(buf.Bytes())
	sum := hex.EncodeToString(s[:])
	os.WriteFile(filepath.Join(b.dir, sum), buf.Bytes(), 0o600)
	return applyspec.Blob{URL: "https://blobs.invalid/" + sum, SHA256: sum}
}

func setup(t *testing.T) (*compile.Compiler, *blobstore, layout.Layout) {
	l := layout.Layout{Base: t.TempDir()}
	if err := l.Ensure(); err != nil {
		t.Fatal(err)
	}
	bs := &blobstore{dir: t.TempDir(), uploads: map[string][]byte{}}
	c := &compile.Compiler{
		Layout:   l,
		Blobs:    bs,
		Packages: &install.Installer{Layout: l, Blobs: bs},
		Environ:  append(os.Environ(), "SECRET_TOKEN=do-not-pass"),
	}
	return c, bs, l
}

const packaging = `set -e
test "$BOSH_PACKAGE_NAME" = app
test "$BOSH_PACKAGE_VERSION" = 1.0
test "$BOSH_COMPILE_TARGET" = "$PWD"
test -z "$SECRET_TOKEN"
mkdir -p "$BOSH_INSTALL_TARGET/bin"
cat "$BOSH_PACKAGES_DIR/lib/lib.txt" src/main.txt > "$BOSH_INSTALL_TARGET/bin/app"
echo compiled
`

func TestCompilePackage(t *testing.T) {
	c, bs, l := setup(t)
	lib := bs.add(t, map[string]string{"lib.txt": "lib+"})
	src := bs.add(t, map[string]string{"packaging": packaging, "src/main.txt": "main"})
	res, err := c.Compile(context.Background(), protocol.CompilePackageRequest{
		Name: "app", Version: "1.0", Source: src,
		Dependencies: []applyspec.Package{{Name: "lib", Version: "2", Blob: lib}},
		Upload:       protocol.Upload{URL: "https://blobs.invalid/upload/app"},
	})
	if err != nil {
		t.Fatal(err)
	}
	data := bs.uploads["https://blobs.invalid/upload/app"]
	s := sha256.Sum256(data)
	if res.SHA256 != hex.EncodeToString(s[:]) || res.Size != int64(len(data)) {
		t.Fatalf("result %+v does not describe the upload", res)
	}
	if !strings.Contains(res.LogTail, "compiled") {
		t.Fatalf("log tail %q", res.LogTail)
	}
	out := t.TempDir()
	if err := tarball.Extract(context.Background(), bytes.NewReader(data), out, tarball.Limits{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "bin", "app")); string(b) != "lib+main" {
		t.Fatalf("compiled content %q", b)
	}
	if _, err := os.Stat(filepath.Join(l.SysLog(), "compile", "app.log")); err != nil {
		t.Fatal("no packaging log kept")
	}
}

func TestCompileFailureReturnsLogTail(t *testing.T) {
	c, bs, _ := setup(t)
	src := bs.add(t, map[string]string{"packaging": "echo building\necho 'cc: error: boom' >&2\nexit 3\n"})
	_, err := c.Compile(context.Background(), protocol.CompilePackageRequest{
		Name: "app", Version: "1.0", Source: src, Upload: protocol.Upload{URL: "https://x/u"},
	})
	if !errors.Is(err, protocol.ErrFailed) || !strings.Contains(err.Error(), "cc: error: boom") || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("err = %v", err)
	}
	var exc *protocol.Exception
	if !errors.As(err, &exc) || !strings.Contains(exc.Log, "cc: error: boom") {
		t.Fatalf("exception log %+v", exc)
	}
	if len(bs.uploads) != 0 {
		t.Fatal("failed compilation uploaded")
	}
}

func TestCompileBadArguments(t *testing.T) {
	c, _, _ := setup(t)
	_, err := c.Compile(context.Background(), protocol.CompilePackageRequest{Name: "../x", Version: "1"})
	if !errors.Is(err, protocol.ErrBadArguments) {
		t.Fatalf("err = %v", err)
	}
}

// TestHostToolchainIsUsable compiles a real Go program with the host's go
// command, found through the agent's PATH, as on the local CPI.
func TestHostToolchainIsUsable(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go on PATH")
	}
	if testing.Short() {
		t.Skip("builds a Go program")
	}
	c, bs, _ := setup(t)
	cache, _ := exec.Command(goBin, "env", "GOCACHE").Output()
	c.Environ = []string{"PATH=" + filepath.Dir(goBin) + ":/usr/bin:/bin", "HOME=" + t.TempDir(), "GOTOOLCHAIN=local", "GOCACHE=" + strings.TrimSpace(string(cache))}
	src := bs.add(t, map[string]string{
		"packaging":   "set -e\ncd src\nCGO_ENABLED=0 go build -o \"$BOSH_INSTALL_TARGET/bin/hello\" .\n",
		"src/go.mod":  "module hello\n\ngo 1.21\n",
		"src/main.go": "package main\n\nfunc main() { println(\"hello\") }\n",
	})
	res, err := c.Compile(context.Background(), protocol.CompilePackageRequest{Name: "hello", Version: "1", Source: src, Upload: protocol.Upload{URL: "https://x/hello"}})
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	tarball.Extract(context.Background(), bytes.NewReader(bs.uploads["https://x/hello"]), out, tarball.Limits{})
	if fi, err := os.Stat(filepath.Join(out, "bin", "hello")); err != nil || fi.Mode().Perm()&0o100 == 0 {
		t.Fatalf("compiled binary missing: %v (log: %s)", err, res.LogTail)
	}
}
