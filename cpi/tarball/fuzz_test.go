package tarball_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compleat/compleat/cpi/tarball"
)

// FuzzExtractStaysInside builds archives of two arbitrary entries (names,
// link targets, types) and checks that, whatever Extract answers, nothing
// appears beside the target and no link inside it leads out.
func FuzzExtractStaysInside(f *testing.F) {
	f.Add("a", "", byte(tar.TypeReg), "b", "", byte(tar.TypeReg))
	f.Add("l", "..", byte(tar.TypeSymlink), "l/x", "", byte(tar.TypeReg))
	f.Add("d/l", "../..", byte(tar.TypeSymlink), "x", "d/l", byte(tar.TypeLink))
	f.Add("a/l1", "..", byte(tar.TypeSymlink), "l2", "a/l1/..", byte(tar.TypeSymlink))
	f.Add("/abs", "", byte(tar.TypeReg), "../up", "", byte(tar.TypeDir))
	f.Fuzz(func(t *testing.T, n1, l1 string, t1 byte, n2, l2 string, t2 byte) {
		parent := t.TempDir()
		target := filepath.Join(parent, "target")
		data, ok := tryBuild(entry{name: n1, link: l1, typ: t1, body: "x"}, entry{name: n2, link: l2, typ: t2, body: "y"})
		if !ok {
			t.Skip("tar cannot encode these headers")
		}
		_ = tarball.Extract(context.Background(), bytes.NewReader(data), target, tarball.Limits{MaxBytes: 1 << 20})
		entries, _ := os.ReadDir(parent)
		for _, e := range entries {
			if e.Name() != "target" {
				t.Fatalf("%q appeared beside the target", e.Name())
			}
		}
		filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.Type()&fs.ModeSymlink == 0 {
				return nil
			}
			real, err := filepath.EvalSymlinks(p)
			if err != nil {
				return nil // dangling inside is harmless
			}
			realTarget, _ := filepath.EvalSymlinks(target)
			if real != realTarget && !strings.HasPrefix(real, realTarget+string(filepath.Separator)) {
				t.Fatalf("link %s leads out to %s", p, real)
			}
			return nil
		})
	})
}

func tryBuild(entries ...entry) ([]byte, bool) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, false
		}
		if e.typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	if tw.Close() != nil || gz.Close() != nil {
		return nil, false
	}
	return buf.Bytes(), true
}
