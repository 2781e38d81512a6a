package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A release tarball is unpacked only after its release.MF is read, wherever
// it stands: an entry it does not list, or one larger than it declares, is
// refused before a byte of it is written. The entries here claim 4 GiB and
// carry none of it: unpacking them first would end in a read error instead.
func TestReleaseManifestIsCheckedBeforeWriting(t *testing.T) {
	t.Parallel()
	valid := validEntries(t)
	mf := entryIndex(t, valid, ManifestFile)
	withMFFirst := append([]rawEntry{valid[mf]}, append(append([]rawEntry{}, valid[:mf]...), valid[mf+1:]...)...)
	huge := func(name string) rawEntry {
		e := file(name, []byte("only a little"))
		e.hdr.Size = 4 << 30
		return e
	}
	open := func(es []rawEntry) error {
		path := filepath.Join(t.TempDir(), "release.tgz")
		if err := os.WriteFile(path, truncatedTarGz(t, es), 0o600); err != nil {
			t.Fatal(err)
		}
		a, err := OpenWith(path, OpenOptions{TempDir: t.TempDir()})
		if err == nil {
			a.Close()
		}
		return err
	}
	// release.MF last, as in BOSH's tarballs, still opens.
	last := append(append(append([]rawEntry{}, valid[:mf]...), valid[mf+1:]...), valid[mf])
	if err := open(last); err != nil {
		t.Fatalf("release.MF last: %v", err)
	}
	if err := open(append(append([]rawEntry{}, withMFFirst...), huge("packages/unlisted.tgz"))); !errors.Is(err, ErrUnexpectedEntry) {
		t.Errorf("unlisted 4 GiB entry: %v, want ErrUnexpectedEntry before writing", err)
	}
	var es []rawEntry
	listed := ""
	for _, e := range withMFFirst {
		if listed == "" && e.hdr.Typeflag == tar.TypeReg && strings.HasPrefix(e.hdr.Name, "packages/") {
			listed = e.hdr.Name
			continue
		}
		es = append(es, e)
	}
	if err := open(append(es, huge(listed))); !errors.Is(err, ErrSizeMismatch) {
		t.Errorf("%s claiming 4 GiB: %v, want ErrSizeMismatch before writing", listed, err)
	}
	if err := open(withMFFirst[1:]); !errors.Is(err, ErrMissingEntry) {
		t.Errorf("no release.MF: %v", err)
	}
}

// truncatedTarGz writes entries as rawTarGz does, except that the last one
// may carry less data than its header says: the stream just ends.
func truncatedTarGz(t testing.TB, entries []rawEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	gz := gzip.NewWriter(&b)
	tw := tar.NewWriter(gz)
	for i, e := range entries {
		h := e.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
		if i == len(entries)-1 && int64(len(e.data)) < h.Size {
			tw.Flush() // reports the short entry; the stream ends here
			gz.Close()
			return b.Bytes()
		}
	}
	tw.Close()
	gz.Close()
	return b.Bytes()
}
