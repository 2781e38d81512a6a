package release

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/compleat/compleat/director/release/tgz"
)

// rawEntry is one tar entry written as is, without any check.
type rawEntry struct {
	hdr  tar.Header
	data []byte
}

func file(name string, data []byte) rawEntry {
	return rawEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))}, data: data}
}

func rawTarGz(t testing.TB, entries []rawEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	gz := gzip.NewWriter(&b)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		h := e.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil && !errors.Is(err, tar.ErrWriteTooLong) {
			t.Fatal(err)
		}
	}
	tw.Close()
	gz.Close()
	return b.Bytes()
}

// validEntries returns the entries of a valid release tarball built from
// the sample source.
func validEntries(t testing.TB) []rawEntry {
	t.Helper()
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"config/final.yml":            "name: demo\n",
		"jobs/app/spec":               "name: app\ntemplates: {ctl.tmpl: bin/ctl}\npackages: [app]\n",
		"jobs/app/templates/ctl.tmpl": "#!/bin/sh\n",
		"packages/app/spec":           "name: app\ndependencies: [lib]\nfiles: [app/*]\n",
		"packages/app/packaging*":     "cp app/* $BOSH_INSTALL_TARGET\n",
		"packages/lib/spec":           "name: lib\nfiles: [lib/*]\n",
		"packages/lib/packaging*":     "cp lib/* $BOSH_INSTALL_TARGET\n",
		"src/app/a":                   "a\n",
		"src/lib/l":                   "l\n",
	})
	_, out, err := Create(dir, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return readEntries(t, readFile(t, out))
}

func readEntries(t testing.TB, data []byte) []rawEntry {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var out []rawEntry
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out = append(out, rawEntry{hdr: *h, data: b})
	}
}

func entryIndex(t testing.TB, es []rawEntry, name string) int {
	for i, e := range es {
		if e.hdr.Name == name {
			return i
		}
	}
	t.Fatalf("no entry %s", name)
	return -1
}

// editManifest rewrites release.MF through fn.
func editManifest(t testing.TB, es []rawEntry, fn func(m *Manifest)) []rawEntry {
	i := entryIndex(t, es, ManifestFile)
	var m Manifest
	if err := yaml.Unmarshal(es[i].data, &m); err != nil {
		t.Fatal(err)
	}
	fn(&m)
	b, err := yaml.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	es[i] = file(ManifestFile, b)
	return es
}

// replaceInner replaces an inner tarball and fixes release.MF's size and
// sha256 for it, so only the inner content is wrong.
func replaceInner(t testing.TB, es []rawEntry, name string, inner []byte) []rawEntry {
	es[entryIndex(t, es, name)] = file(name, inner)
	sum := sha256.Sum256(inner)
	return editManifest(t, es, func(m *Manifest) {
		for i := range m.Packages {
			if "packages/"+m.Packages[i].Name+".tgz" == name {
				m.Packages[i].SHA256, m.Packages[i].Size = hex.EncodeToString(sum[:]), int64(len(inner))
			}
		}
		for i := range m.Jobs {
			if "jobs/"+m.Jobs[i].Name+".tgz" == name {
				m.Jobs[i].SHA256, m.Jobs[i].Size = hex.EncodeToString(sum[:]), int64(len(inner))
			}
		}
	})
}

// maliciousCorpus is every hostile tarball with the error it must produce:
// a sentinel (or nil) and a message fragment naming the entry.
func maliciousCorpus(t testing.TB) []struct {
	name    string
	archive []byte
	is      error
	msg     string
} {
	type c = struct {
		name    string
		archive []byte
		is      error
		msg     string
	}
	var out []c
	add := func(name string, es []rawEntry, is error, msg string) {
		out = append(out, c{name, rawTarGz(t, es), is, msg})
	}

	add("tar-slip", append(validEntries(t), file("../../evil", []byte("x"))),
		tgz.ErrUnsafePath, `entry "../../evil": ".." in path`)
	add("tar-slip inside", append(validEntries(t), file("jobs/../../evil", []byte("x"))),
		tgz.ErrUnsafePath, `entry "jobs/../../evil": ".." in path`)
	add("absolute path", append(validEntries(t), file("/etc/evil", []byte("x"))),
		tgz.ErrUnsafePath, `entry "/etc/evil": absolute path`)
	add("symlink escape", append(validEntries(t),
		rawEntry{hdr: tar.Header{Name: "jobs/evil.tgz", Typeflag: tar.TypeSymlink, Linkname: "../../../etc/passwd"}}),
		tgz.ErrLinkEscape, `entry "jobs/evil.tgz": symbolic link to "../../../etc/passwd"`)
	add("absolute symlink", append(validEntries(t),
		rawEntry{hdr: tar.Header{Name: "evil", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}}),
		tgz.ErrLinkEscape, `entry "evil": symbolic link to "/etc/passwd"`)
	add("hard link escape", append(validEntries(t),
		rawEntry{hdr: tar.Header{Name: "evil", Typeflag: tar.TypeLink, Linkname: "/etc/passwd"}}),
		tgz.ErrLinkEscape, `entry "evil": hard link to "/etc/passwd"`)
	add("in-archive link", append(validEntries(t),
		rawEntry{hdr: tar.Header{Name: "jobs/x.tgz", Typeflag: tar.TypeSymlink, Linkname: "app.tgz"}}),
		tgz.ErrEntryType, `entry "jobs/x.tgz": only regular files`)
	add("device file", append(validEntries(t),
		rawEntry{hdr: tar.Header{Name: "dev", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}}),
		tgz.ErrEntryType, `entry "dev": type "3"`)

	es := validEntries(t)
	add("size lie", editManifest(t, es, func(m *Manifest) { m.Packages[0].Size-- }),
		ErrSizeMismatch, `entry "packages/app.tgz": `)
	es = validEntries(t)
	add("sha mismatch", editManifest(t, es, func(m *Manifest) { m.Jobs[0].SHA256 = strings.Repeat("0", 64) }),
		ErrDigestMismatch, `entry "jobs/app.tgz": sha256 `)
	es = validEntries(t)
	add("dependency cycle", editManifest(t, es, func(m *Manifest) { m.Packages[1].Dependencies = []string{"app"} }),
		nil, "package dependency cycle: app -> lib -> app")
	es = validEntries(t)
	add("missing dependency", editManifest(t, es, func(m *Manifest) { m.Packages[1].Dependencies = []string{"ghost"} }),
		nil, `package "lib": dependency "ghost" is not in the release`)
	es = validEntries(t)
	add("duplicate package", editManifest(t, es, func(m *Manifest) { m.Packages = append(m.Packages, m.Packages[1]) }),
		nil, `package "lib" listed twice`)
	es = validEntries(t)
	add("duplicate entry", append(es, es[entryIndex(t, es, "jobs/app.tgz")]),
		tgz.ErrDuplicate, `entry "jobs/app.tgz": duplicate entry`)
	es = validEntries(t)
	add("unlisted entry", append(es, file("packages/extra.tgz", []byte("x"))),
		ErrUnexpectedEntry, `entry "packages/extra.tgz": unexpected entry: not listed`)
	es = validEntries(t)
	add("unexpected name", append(es, file("notes.txt", []byte("x"))),
		ErrUnexpectedEntry, `entry "notes.txt": unexpected entry`)
	es = validEntries(t)
	es = append(es[:entryIndex(t, es, "packages/lib.tgz")], es[entryIndex(t, es, "packages/lib.tgz")+1:]...)
	add("missing package", es, ErrMissingEntry, `entry "packages/lib.tgz": missing entry`)
	es = validEntries(t)
	add("no manifest", es[:entryIndex(t, es, ManifestFile)], ErrMissingEntry, `entry "release.MF": missing entry`)
	es = validEntries(t)
	es[entryIndex(t, es, ManifestFile)] = file(ManifestFile, []byte("name: [\n"))
	add("manifest not yaml", es, nil, "release.MF: yaml:")

	// Inner tarballs: the manifest's size and digest are right, the
	// content is hostile or wrong.
	es = validEntries(t)
	add("inner tar-slip", replaceInner(t, es, "packages/lib.tgz", rawTarGz(t, []rawEntry{
		file("packaging", []byte("x")), file("../../../tmp/evil", []byte("x"))})),
		tgz.ErrUnsafePath, `entry "packages/lib.tgz": entry "../../../tmp/evil"`)
	es = validEntries(t)
	add("inner link escape", replaceInner(t, es, "packages/lib.tgz", rawTarGz(t, []rawEntry{
		file("packaging", []byte("x")),
		{hdr: tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../../x"}}})),
		tgz.ErrLinkEscape, `entry "packages/lib.tgz": entry "l": symbolic link`)
	es = validEntries(t)
	add("fingerprint lie", replaceInner(t, es, "packages/lib.tgz", rawTarGz(t, []rawEntry{
		file("packaging", []byte("echo different")), file("lib/l", []byte("l\n"))})),
		ErrFingerprintMismatch, `entry "packages/lib.tgz": fingerprint`)
	es = validEntries(t)
	add("no packaging", replaceInner(t, es, "packages/lib.tgz", rawTarGz(t, []rawEntry{file("lib/l", []byte("l\n"))})),
		ErrMissingEntry, `entry "packages/lib.tgz": no packaging script`)
	es = validEntries(t)
	add("bad job spec", replaceInner(t, es, "jobs/app.tgz", rawTarGz(t, []rawEntry{
		file("job.MF", []byte("name: app\ntemplates: [oops]\n"))})),
		nil, `entry "jobs/app.tgz": job.MF: yaml:`)
	es = validEntries(t)
	add("job template missing", replaceInner(t, es, "jobs/app.tgz", rawTarGz(t, []rawEntry{
		file("job.MF", []byte("name: app\ntemplates: {ctl.tmpl: bin/ctl}\npackages: [app]\n"))})),
		ErrMissingEntry, `entry "jobs/app.tgz": templates/ctl.tmpl: missing entry`)
	es = validEntries(t)
	add("job template escapes", replaceInner(t, es, "jobs/app.tgz", rawTarGz(t, []rawEntry{
		file("job.MF", []byte("name: app\ntemplates: {ctl.tmpl: /etc/cron.d/x}\npackages: [app]\n")),
		file("templates/ctl.tmpl", []byte("x"))})),
		nil, `entry "jobs/app.tgz": job.MF: field templates: "ctl.tmpl" destination "/etc/cron.d/x": absolute path`)

	// A header claiming more bytes than the stream holds.
	es = validEntries(t)
	full := rawTarGz(t, es)
	raw, _ := io.ReadAll(mustGunzip(t, full))
	var cut bytes.Buffer
	gz := gzip.NewWriter(&cut)
	gz.Write(raw[:len(raw)/2])
	gz.Close()
	out = append(out, c{"truncated", cut.Bytes(), nil, "unexpected EOF"})
	out = append(out, c{"not gzip", []byte("PK\x03\x04 zip file"), nil, "not a gzip stream"})
	return out
}

func mustGunzip(t testing.TB, b []byte) io.Reader {
	gz, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return gz
}

func TestOpenRejectsMaliciousArchives(t *testing.T) {
	t.Parallel()
	// The unmodified archive opens, so every failure below is the mutation's.
	if a, err := OpenReader(bytes.NewReader(rawTarGz(t, validEntries(t))), OpenOptions{TempDir: t.TempDir()}); err != nil {
		t.Fatalf("valid archive: %v", err)
	} else {
		a.Close()
	}
	outside := t.TempDir()
	for _, c := range maliciousCorpus(t) {
		t.Run(c.name, func(t *testing.T) {
			tmp := filepath.Join(outside, "tmp")
			os.MkdirAll(tmp, 0o755)
			a, err := OpenReader(bytes.NewReader(c.archive), OpenOptions{TempDir: tmp})
			if err == nil {
				a.Close()
				t.Fatal("accepted")
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("error %q is not %v", err, c.is)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Errorf("error %q does not contain %q", err, c.msg)
			}
			// Nothing is left behind and nothing escaped.
			left, _ := os.ReadDir(tmp)
			if len(left) != 0 {
				t.Errorf("left %d entries in the temp dir", len(left))
			}
			for _, p := range []string{"evil", "tmp/evil"} {
				if _, err := os.Stat(filepath.Join(outside, p)); err == nil {
					t.Errorf("%s written outside", p)
				}
			}
		})
	}
}

func TestOpenEnforcesLimits(t *testing.T) {
	t.Parallel()
	data := rawTarGz(t, validEntries(t))
	_, err := OpenReader(bytes.NewReader(data), OpenOptions{TempDir: t.TempDir(),
		Limits: tgz.Limits{MaxEntries: 100, MaxFileSize: 100, MaxTotalSize: 1 << 20}})
	if !errors.Is(err, tgz.ErrTooLarge) || !strings.Contains(err.Error(), "over the limit of 100 bytes") {
		t.Errorf("file size limit: %v", err)
	}
	_, err = OpenReader(bytes.NewReader(data), OpenOptions{TempDir: t.TempDir(),
		Limits: tgz.Limits{MaxEntries: 2, MaxFileSize: 1 << 20, MaxTotalSize: 1 << 20}})
	if !errors.Is(err, tgz.ErrTooManyFiles) {
		t.Errorf("entry limit: %v", err)
	}
	_, err = OpenReader(bytes.NewReader(data), OpenOptions{TempDir: t.TempDir(),
		Limits: tgz.Limits{MaxEntries: 100, MaxFileSize: 1 << 20, MaxTotalSize: 3000}})
	if !errors.Is(err, tgz.ErrTooLarge) {
		t.Errorf("total size limit: %v", err)
	}
	// A gzip bomb: 64 MiB of zeros in one entry, total limit 1 MiB.
	var bomb bytes.Buffer
	gz := gzip.NewWriter(&bomb)
	tw := tar.NewWriter(gz)
	tw.WriteHeader(&tar.Header{Name: "packages/x.tgz", Typeflag: tar.TypeReg, Mode: 0o644, Size: 64 << 20})
	tw.Write(make([]byte, 64<<20))
	tw.Close()
	gz.Close()
	_, err = OpenReader(bytes.NewReader(bomb.Bytes()), OpenOptions{TempDir: t.TempDir(),
		Limits: tgz.Limits{MaxEntries: 100, MaxFileSize: 1 << 40, MaxTotalSize: 1 << 20}})
	if !errors.Is(err, tgz.ErrTooLarge) {
		t.Errorf("gzip bomb: %v", err)
	}
}
