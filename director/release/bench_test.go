package release

import (
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkCreate measures building a release tarball with a 4 MiB blob.
func BenchmarkCreate(b *testing.B) {
	dir := sampleSource(b)
	writeTree(b, dir, map[string]string{"blobs/big.bin": strings.Repeat("0123456789abcdef", 1<<18)})
	out := filepath.Join(b.TempDir(), "r.tgz")
	b.ResetTimer()
	for range b.N {
		if _, _, err := Create(dir, CreateOptions{Version: "1", Tarball: out}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpen measures verifying and unpacking that tarball.
func BenchmarkOpen(b *testing.B) {
	dir := sampleSource(b)
	writeTree(b, dir, map[string]string{"blobs/big.bin": strings.Repeat("0123456789abcdef", 1<<18)})
	out := filepath.Join(b.TempDir(), "r.tgz")
	if _, _, err := Create(dir, CreateOptions{Version: "1", Tarball: out}); err != nil {
		b.Fatal(err)
	}
	tmp := b.TempDir()
	b.ResetTimer()
	for range b.N {
		a, err := OpenWith(out, OpenOptions{TempDir: tmp})
		if err != nil {
			b.Fatal(err)
		}
		a.Close()
	}
}
