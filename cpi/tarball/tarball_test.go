package tarball_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/compleat/compleat/cpi/tarball"
)

type entry struct {
	name, link string
	typ        byte
	body       string
	mode       int64
}

func build(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, Size: int64(len(e.body))}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func TestExtractGoodArchive(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "target")
	data := build(t,
		entry{name: "./", typ: tar.TypeDir, mode: 0o755},
		entry{name: "bin/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "bin/run", typ: tar.TypeReg, body: "#!/bin/sh\n", mode: 0o4755},
		entry{name: "lib/libx.so.1", typ: tar.TypeReg, body: "elf"},
		entry{name: "lib/libx.so", typ: tar.TypeSymlink, link: "libx.so.1"},
		entry{name: "lib/up", typ: tar.TypeSymlink, link: "../bin/run"},
		entry{name: "hard", typ: tar.TypeLink, link: "bin/run"},
	)
	if err := tarball.Extract(context.Background(), bytes.NewReader(data), dir, tarball.Limits{}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "bin/run"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o755 || fi.Mode()&os.ModeSetuid != 0 {
		t.Fatalf("mode %v: want 0755 without setuid", fi.Mode())
	}
	if b, err := os.ReadFile(filepath.Join(dir, "lib/up")); err != nil || string(b) != "#!/bin/sh\n" {
		t.Fatalf("lib/up: %q %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "hard")); err != nil || string(b) != "#!/bin/sh\n" {
		t.Fatalf("hard: %q %v", b, err)
	}
}

// TestExtractRefusesMaliciousArchives feeds archives that try to write
// outside the target and checks that nothing lands outside.
func TestExtractRefusesMaliciousArchives(t *testing.T) {
	t.Parallel()
	for name, entries := range map[string][]entry{
		"dotdot":               {{name: "../evil", typ: tar.TypeReg, body: "x"}},
		"nested dotdot":        {{name: "a/../../evil", typ: tar.TypeReg, body: "x"}},
		"absolute":             {{name: "/tmp/evil", typ: tar.TypeReg, body: "x"}},
		"absolute symlink":     {{name: "l", typ: tar.TypeSymlink, link: "/etc"}},
		"climbing symlink":     {{name: "a/l", typ: tar.TypeSymlink, link: "../../outside"}},
		"write through link":   {{name: "l", typ: tar.TypeSymlink, link: "."}, {name: "l/../evil", typ: tar.TypeReg, body: "x"}},
		"hard link out":        {{name: "h", typ: tar.TypeLink, link: "../outside"}},
		"absolute hard link":   {{name: "h", typ: tar.TypeLink, link: "/etc/passwd"}},
		"device":               {{name: "dev", typ: tar.TypeChar}},
		"fifo":                 {{name: "fifo", typ: tar.TypeFifo}},
		"link chain out":       {{name: "a/l1", typ: tar.TypeSymlink, link: ".."}, {name: "l2", typ: tar.TypeSymlink, link: "a/l1/.."}},
		"link to link outside": {{name: "d/x", typ: tar.TypeSymlink, link: "y"}, {name: "d/y", typ: tar.TypeSymlink, link: "../.."}},
		"hard link to a symlink": {
			{name: "a/b/l", typ: tar.TypeSymlink, link: "../x"},
			{name: "l2", typ: tar.TypeLink, link: "a/b/l"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "target")
			err := tarball.Extract(context.Background(), bytes.NewReader(build(t, entries...)), dir, tarball.Limits{})
			if err == nil {
				t.Fatal("malicious archive extracted without error")
			}
			if !errors.Is(err, tarball.ErrUnsafe) && !errors.Is(err, os.ErrPermission) {
				t.Logf("error (not ErrUnsafe but refused): %v", err)
			}
			if _, err := os.Lstat(filepath.Join(parent, "evil")); err == nil {
				t.Fatal("a file was written outside the target")
			}
			if _, err := os.Lstat(filepath.Join(dir, "l2")); err == nil {
				t.Fatal("a link leading out was left behind")
			}
		})
	}
}

func TestExtractLimits(t *testing.T) {
	t.Parallel()
	data := build(t, entry{name: "big", typ: tar.TypeReg, body: "0123456789"})
	if err := tarball.Extract(context.Background(), bytes.NewReader(data), t.TempDir(), tarball.Limits{MaxBytes: 5}); err == nil {
		t.Fatal("archive over the size limit extracted")
	}
	if err := tarball.Extract(context.Background(), bytes.NewReader([]byte("not gzip")), t.TempDir(), tarball.Limits{}); err == nil {
		t.Fatal("garbage extracted")
	}
}

func TestCreateRoundTrip(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "bin"), 0o755)
	os.WriteFile(filepath.Join(src, "bin", "app"), []byte("app"), 0o755)
	os.Symlink("bin/app", filepath.Join(src, "app"))
	os.MkdirAll(filepath.Join(src, "skip"), 0o755)
	os.WriteFile(filepath.Join(src, "skip", "x"), []byte("x"), 0o644)
	var buf bytes.Buffer
	if err := tarball.Create(&buf, src, func(n string) bool { return n != "skip" }); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if err := tarball.Extract(context.Background(), &buf, dst, tarball.Limits{}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "app")); err != nil || string(b) != "app" {
		t.Fatalf("app: %q %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(dst, "bin", "app")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("bin/app: %v %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(dst, "skip")); err == nil {
		t.Fatal("excluded entry archived")
	}
}
