package tgz

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"github.com/compleat/compleat/cpi/tarball"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type raw struct {
	h    tar.Header
	data string
}

func reg(name, data string) raw {
	return raw{tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))}, data}
}

func build(t *testing.T, es ...raw) []byte {
	t.Helper()
	var b bytes.Buffer
	gz := gzip.NewWriter(&b)
	tw := tar.NewWriter(gz)
	for _, e := range es {
		h := e.h
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, e.data)
	}
	tw.Close()
	gz.Close()
	return b.Bytes()
}

func TestWriteIsDeterministic(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	os.WriteFile(p, []byte("from disk"), 0o700)
	files := []File{
		{Name: "b/c/d.txt", Mode: 0o600, Data: []byte("d")},
		{Name: "a", Mode: 0o755, Data: []byte("a")},
		{Name: "b/x", Path: p, Mode: 0o700},
	}
	one, err := Bytes(files)
	if err != nil {
		t.Fatal(err)
	}
	os.Chtimes(p, time0(), time0())
	two, err := Bytes([]File{files[2], files[0], files[1]})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(one, two) {
		t.Fatal("same files in another order or with another mtime gave other bytes")
	}
	var got []string
	err = Walk(bytes.NewReader(one), DefaultLimits, func(e Entry, body io.Reader) error {
		b, _ := io.ReadAll(body)
		got = append(got, e.Name+" "+e.Mode.String()+" "+string(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "a -rwxr-xr-x a|b -rwxr-xr-x |b/c -rwxr-xr-x |b/c/d.txt -rw-r--r-- d|b/x -rwxr-xr-x from disk"
	if g := strings.Join(got, "|"); g != want {
		t.Errorf("entries:\n got %s\nwant %s", g, want)
	}
	// Owners and times are fixed.
	tr := tar.NewReader(mustGz(t, one))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" || !h.ModTime.Equal(modTime) {
			t.Errorf("%s: uid %d gid %d uname %q gname %q mtime %v", h.Name, h.Uid, h.Gid, h.Uname, h.Gname, h.ModTime)
		}
	}
}

func TestWriteRejectsBadNames(t *testing.T) {
	t.Parallel()
	for _, n := range []string{"../x", "/abs", "a/../b", "", "a//b", "./a"} {
		if _, err := Bytes([]File{{Name: n, Data: []byte("x")}}); err == nil {
			t.Errorf("name %q accepted", n)
		}
	}
	if _, err := Bytes([]File{{Name: "a", Data: nil}, {Name: "a", Data: nil}}); err == nil {
		t.Error("duplicate accepted")
	}
	if _, err := Bytes([]File{{Name: "a", Data: nil}, {Name: "a/b", Data: nil}}); err == nil {
		t.Error("file and directory of the same name accepted")
	}
}

func TestWalkRefusesEscapes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		es   []raw
		is   error
		msg  string
	}{
		{"dotdot", []raw{reg("../x", "x")}, ErrUnsafePath, `entry "../x"`},
		{"absolute", []raw{reg("/tmp/x", "x")}, ErrUnsafePath, "absolute path"},
		{"symlink out", []raw{{tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../x"}, ""}}, ErrLinkEscape, `entry "l"`},
		{"symlink deep out", []raw{{tar.Header{Name: "a/b/l", Typeflag: tar.TypeSymlink, Linkname: "../../../x"}, ""}}, ErrLinkEscape, "symbolic link"},
		{"symlink to root", []raw{{tar.Header{Name: "a/l", Typeflag: tar.TypeSymlink, Linkname: ".."}, ""}}, ErrLinkEscape, "symbolic link"},
		{"hard link out", []raw{{tar.Header{Name: "l", Typeflag: tar.TypeLink, Linkname: "../x"}, ""}}, ErrLinkEscape, "hard link"},
		{"hard link to later", []raw{{tar.Header{Name: "l", Typeflag: tar.TypeLink, Linkname: "f"}, ""}, reg("f", "x")}, ErrLinkEscape, "not an earlier regular file"},
		{"write through symlink", []raw{{tar.Header{Name: "d", Typeflag: tar.TypeSymlink, Linkname: "sub"}, ""}, reg("d/x", "x")}, ErrUnsafePath, `parent "d" is not a directory`},
		{"link through link", []raw{{tar.Header{Name: "d", Typeflag: tar.TypeSymlink, Linkname: "sub"}, ""}, {tar.Header{Name: "e", Typeflag: tar.TypeSymlink, Linkname: "d/../.."}, ""}}, ErrLinkEscape, "symbolic link"},
		{"dotdot inside target", []raw{{tar.Header{Name: "q/r/s/l", Typeflag: tar.TypeSymlink, Linkname: "x/../../y"}, ""}}, ErrLinkEscape, `".." inside the target`},
		{"physical climb through a link", []raw{
			{tar.Header{Name: "d/x/l", Typeflag: tar.TypeSymlink, Linkname: "../../d"}, ""},
			{tar.Header{Name: "m", Typeflag: tar.TypeSymlink, Linkname: "d/x/l/y"}, ""}}, ErrLinkEscape, `goes through link "d/x/l"`},
		{"link placed where another link goes", []raw{
			{tar.Header{Name: "m", Typeflag: tar.TypeSymlink, Linkname: "a/b/c"}, ""},
			{tar.Header{Name: "a/b", Typeflag: tar.TypeSymlink, Linkname: "../z"}, ""}}, ErrLinkEscape, `another link's target goes through "a/b"`},
		{"file over an implied directory", []raw{reg("a/b", "x"), reg("a", "y")}, ErrDuplicate, `entry "a"`},
		{"fifo", []raw{{tar.Header{Name: "p", Typeflag: tar.TypeFifo}, ""}}, ErrEntryType, `entry "p"`},
		{"duplicate", []raw{reg("a", "1"), reg("a", "2")}, ErrDuplicate, `entry "a"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			outer := t.TempDir()
			dir := filepath.Join(outer, "in")
			os.Mkdir(dir, 0o755)
			err := Walk(bytes.NewReader(build(t, c.es...)), DefaultLimits, func(Entry, io.Reader) error { return nil })
			if !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("error %v, want %v containing %q", err, c.is, c.msg)
			}
			if _, err := os.Stat(filepath.Join(outer, "x")); err == nil {
				t.Error("wrote outside the target")
			}
		})
	}
}

func TestWalkAndExtractKeepInsideLinksAndModes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data := build(t,
		raw{tar.Header{Name: "./bin/", Typeflag: tar.TypeDir, Mode: 0o755}, ""},
		raw{tar.Header{Name: "./bin/run", Typeflag: tar.TypeReg, Mode: 0o755, Size: 2}, "#!"},
		raw{tar.Header{Name: "lib/current", Typeflag: tar.TypeSymlink, Linkname: "../bin/run"}, ""},
		raw{tar.Header{Name: "lib/hard", Typeflag: tar.TypeLink, Linkname: "./bin/run"}, ""},
	)
	if err := Walk(bytes.NewReader(data), DefaultLimits, func(Entry, io.Reader) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := tarball.Extract(context.Background(), bytes.NewReader(data), dir, tarball.Limits{}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "bin", "run"))
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("bin/run: %v %v", st, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "lib", "current")); err != nil || string(b) != "#!" {
		t.Errorf("symlink: %q %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "lib", "hard")); err != nil || string(b) != "#!" {
		t.Errorf("hard link: %q %v", b, err)
	}
}

func TestWalkLimits(t *testing.T) {
	t.Parallel()
	data := build(t, reg("a", "12345"), reg("b", "1"))
	err := Walk(bytes.NewReader(data), Limits{MaxEntries: 1, MaxFileSize: 10, MaxTotalSize: 1 << 20}, func(Entry, io.Reader) error { return nil })
	if !errors.Is(err, ErrTooManyFiles) {
		t.Errorf("entries: %v", err)
	}
	err = Walk(bytes.NewReader(data), Limits{MaxEntries: 10, MaxFileSize: 4, MaxTotalSize: 1 << 20}, func(Entry, io.Reader) error { return nil })
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), `entry "a"`) {
		t.Errorf("file size: %v", err)
	}
}

func mustGz(t *testing.T, b []byte) io.Reader {
	gz, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return gz
}

func time0() time.Time { return time.Unix(12345, 0) }
