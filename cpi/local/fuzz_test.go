package local

import (
	"archive/tar"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzExtractImage feeds crafted entries to the stemcell extraction: whether
// it accepts them or not, nothing may appear outside the target directory,
// and an accepted image has no link leading out.
func FuzzExtractImage(f *testing.F) {
	f.Add("a/b", byte(tar.TypeReg), "", "a/c", byte(tar.TypeSymlink), "b", "a/c/d", byte(tar.TypeReg), "")
	f.Add("x/b", byte(tar.TypeSymlink), "..", "a", byte(tar.TypeSymlink), "x/b/..", "a/escaped", byte(tar.TypeReg), "")
	f.Add("l", byte(tar.TypeSymlink), "../outside", "l/f", byte(tar.TypeReg), "", "h", byte(tar.TypeLink), "../outside/f")
	f.Add("d", byte(tar.TypeDir), "", "d/../../escaped", byte(tar.TypeReg), "", "./agent", byte(tar.TypeReg), "")
	f.Fuzz(func(t *testing.T, n1 string, t1 byte, l1 string, n2 string, t2 byte, l2 string, n3 string, t3 byte, l3 string) {
		parent := t.TempDir()
		outside := filepath.Join(parent, "outside")
		dst := filepath.Join(parent, "dst")
		for _, d := range []string{outside, dst} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		var entries []tarEntry
		for _, e := range []tarEntry{{name: n1, typ: t1, linkname: l1}, {name: n2, typ: t2, linkname: l2}, {name: n3, typ: t3, linkname: l3}} {
			if e.typ != tar.TypeReg && e.typ != tar.TypeDir && e.typ != tar.TypeSymlink && e.typ != tar.TypeLink {
				e.typ = tar.TypeReg
			}
			e.mode = 0o755
			if e.typ == tar.TypeReg {
				e.body = "x"
			}
			entries = append(entries, e)
		}
		img := filepath.Join(parent, "image.tgz")
		if !writeTGZQuiet(img, entries...) {
			t.Skip("tar cannot encode these entries")
		}
		err := extractImage(context.Background(), img, dst)
		got, _ := os.ReadDir(parent)
		for _, e := range got {
			switch e.Name() {
			case "outside", "dst", "image.tgz":
			default:
				t.Fatalf("%s appeared beside the target (err %v)", e.Name(), err)
			}
		}
		if in, _ := os.ReadDir(outside); len(in) != 0 {
			t.Fatalf("%v written outside (err %v)", in, err)
		}
		if err == nil {
			_ = filepath.WalkDir(dst, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.Type()&os.ModeSymlink != 0 {
					r, err := filepath.EvalSymlinks(p)
					if err != nil || !(r == dst || strings.HasPrefix(r, dst+"/")) {
						t.Fatalf("accepted link %s leads to %q (%v)", p, r, err)
					}
				}
				return nil
			})
		}
	})
}
