package release

import (
	"bytes"
	"testing"

	"github.com/compleat/compleat/director/release/tgz"
)

// FuzzOpen feeds arbitrary bytes to the release reader: it must return an
// archive or an error, never panic, hang or write outside its directory.
// Seeds are a valid release and the malicious corpus; crashers found by
// `go test -fuzz FuzzOpen` land in testdata/fuzz/FuzzOpen and stay there as
// regression cases.
func FuzzOpen(f *testing.F) {
	f.Add(rawTarGz(f, validEntries(f)))
	for _, c := range maliciousCorpus(f) {
		f.Add(c.archive)
	}
	lim := tgz.Limits{MaxEntries: 64, MaxFileSize: 1 << 20, MaxTotalSize: 4 << 20}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := OpenReader(bytes.NewReader(data), OpenOptions{TempDir: t.TempDir(), Limits: lim, JobLimits: lim})
		if err == nil {
			if a.Manifest == nil {
				t.Fatal("archive without manifest")
			}
			a.Close()
		}
	})
}

// FuzzParseJobSpec: job specs come from uploaded releases.
func FuzzParseJobSpec(f *testing.F) {
	f.Add([]byte("name: app\ntemplates: {a: bin/a}\npackages: [p]\nproperties: {port: {default: 1}}\nprovides: [{name: l, type: t, properties: [port]}]\n"))
	f.Add([]byte("name: [\n"))
	f.Add([]byte("templates: {../a: /b}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseJobSpec("job.MF", data)
		if err == nil && s.Validate() != nil {
			t.Fatal("parsed spec does not validate")
		}
	})
}
