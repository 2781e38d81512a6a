package release_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compleat/compleat/director/release"
	"github.com/compleat/compleat/director/release/releasetest"
)

func kvRelease() string {
	return filepath.Join("..", "..", "test", "e2e", "testdata", "kv-release")
}

// A BOSH tarball (entries under "./", release.MF with sha1 or sha256:
// digests, BOSH fingerprints, no sizes) opens as the same jobs and packages
// as the source directory it was made from.
func TestOpenBOSHTarball(t *testing.T) {
	_, ours, err := release.Create(kvRelease(), release.CreateOptions{Tarball: filepath.Join(t.TempDir(), "kv.tgz")})
	if err != nil {
		t.Fatal(err)
	}
	want, err := release.Inspect(ours)
	if err != nil {
		t.Fatal(err)
	}
	if want.Name != "kv" {
		t.Errorf("name from config/final.yml's final_name = %q, want kv", want.Name)
	}
	for _, d := range []releasetest.Digest{releasetest.SHA1, releasetest.SHA256} {
		a, err := release.Open(releasetest.BOSHTarball(t, kvRelease(), "kv", "12", d))
		if err != nil {
			t.Fatalf("digest %d: %v", d, err)
		}
		m := a.Manifest
		if m.Name != "kv" || m.Version != "12" || len(m.Jobs) != 2 || len(m.Packages) != 2 {
			t.Fatalf("manifest %+v", m)
		}
		for _, j := range m.Jobs {
			w, _ := want.Job(j.Name)
			if j.Fingerprint != w.Fingerprint {
				t.Errorf("job %s: fingerprint %s, from the source directory %s", j.Name, j.Fingerprint, w.Fingerprint)
			}
		}
		for _, p := range m.Packages {
			w, _ := want.Package(p.Name)
			if p.Fingerprint != w.Fingerprint || strings.Join(p.Dependencies, ",") != strings.Join(w.Dependencies, ",") {
				t.Errorf("package %s: %+v, from the source directory %+v", p.Name, p, w)
			}
		}
		if string(a.Jobs[0].Job.Monit) == "" {
			t.Errorf("job %s lost its monit file", a.Jobs[0].Name)
		}
		a.Close()
	}
}

// rewrite copies a tarball, passing release.MF through edit.
func rewrite(t *testing.T, in string, edit func(string) string) string {
	t.Helper()
	f, err := os.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		if h.Name == "./release.MF" {
			body = []byte(edit(string(body)))
			h.Size = int64(len(body))
		}
		tw.WriteHeader(h) //nolint:errcheck // test
		tw.Write(body)    //nolint:errcheck // test
	}
	tw.Close()
	zw.Close()
	out := filepath.Join(t.TempDir(), "edited.tgz")
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// A BOSH compiled release opens with its compiled packages, their stemcell
// and dependencies; the jobs need no source package.
func TestOpenBOSHCompiledRelease(t *testing.T) {
	t.Parallel()
	a, err := release.Open(releasetest.BOSHCompiledTarball(t, kvRelease(), "kv", "3", "linux/1"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	m := a.Manifest
	if len(m.Packages) != 0 || len(m.CompiledPackages) != 2 || len(a.CompiledPackages) != 2 {
		t.Fatalf("manifest %+v", m)
	}
	var summary strings.Builder
	if err := release.WriteSummary(&summary, m); err != nil || !strings.Contains(summary.String(), "2 compiled packages") || !strings.Contains(summary.String(), "linux/1") {
		t.Errorf("summary (%v):\n%s", err, summary.String())
	}
	for _, p := range m.CompiledPackages {
		if p.Stemcell != "linux/1" || len(p.Fingerprint) != 64 {
			t.Errorf("compiled package %+v", p)
		}
		if p.Name == "kv-server" && strings.Join(p.Dependencies, ",") != "kv-lib" {
			t.Errorf("kv-server dependencies %v", p.Dependencies)
		}
	}
}

func TestOpenBOSHTarballRefusals(t *testing.T) {
	t.Parallel()
	good := releasetest.BOSHTarball(t, kvRelease(), "kv", "1", releasetest.SHA1)
	cases := []struct {
		name string
		edit func(string) string
		want string
	}{
		{"wrong sha1", func(s string) string {
			i := strings.Index(s, "sha1: ")
			return s[:i+6] + "0000000000000000000000000000000000000000" + s[i+46:]
		}, "release.MF says 0000"},
		{"malformed digest", func(s string) string {
			i := strings.Index(s, "sha1: ")
			return s[:i+6] + "md5:abc" + s[i+46:]
		}, "neither 40 hex digits nor sha256"},
		{"compiled release", func(s string) string {
			return s + "compiled_packages:\n- name: kv-lib\n  version: x\n  fingerprint: x\n  sha1: 0000000000000000000000000000000000000000\n  stemcell: ubuntu-jammy/1.1\n  dependencies: []\n"
		}, `entry "compiled_packages/kv-lib.tgz": missing entry`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := release.Open(rewrite(t, good, c.edit))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Open = %v, want %q", err, c.want)
			}
		})
	}
}
