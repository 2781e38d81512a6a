package stemcell

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"github.com/compleat/compleat/cpi/tarball"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/director/release/tgz"
)

func fakeAgent(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agent-bin")
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho agent \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCreateLocalRoundTrip(t *testing.T) {
	t.Parallel()
	agent := fakeAgent(t)
	out := filepath.Join(t.TempDir(), "stemcells", "local.tgz")
	m, err := CreateLocal(agent, out, LocalOptions{Version: "7"})
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != DefaultLocalName || m.Version != "7" || m.OperatingSystem != DefaultLocalOS || !m.HasFormat(FormatLocal) {
		t.Fatalf("manifest = %+v", m)
	}
	first, _ := os.ReadFile(out)
	// Deterministic: the same agent gives the same bytes, whatever its mtime.
	os.Chtimes(agent, m0, m0)
	if _, err := CreateLocal(agent, out, LocalOptions{Version: "7"}); err != nil {
		t.Fatal(err)
	}
	second, _ := os.ReadFile(out)
	if !bytes.Equal(first, second) {
		t.Fatal("same agent gave different stemcell bytes")
	}

	dir := t.TempDir()
	s, err := Open(out, dir)
	if err != nil {
		t.Fatal(err)
	}
	if s.Light() || s.ImagePath != filepath.Join(dir, "image") || s.Manifest.SHA256 != m.SHA256 {
		t.Fatalf("stemcell = %+v", s)
	}
	// The image is what the local CPI unpacks: an executable agent at its root.
	vm := t.TempDir()
	img, _ := os.Open(s.ImagePath)
	defer img.Close()
	if err := tarball.Extract(context.Background(), img, vm, tarball.Limits{}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(vm, "agent"))
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("agent in image: %v %v", st, err)
	}
	want, _ := os.ReadFile(agent)
	got, _ := os.ReadFile(filepath.Join(vm, "agent"))
	if !bytes.Equal(want, got) {
		t.Fatal("agent in image differs from the binary")
	}
}

func TestLightStemcell(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "light.tgz")
	err := CreateLight(out, Manifest{
		Name: "bosh-aws-xen-hvm-ubuntu-jammy-go_agent", Version: "1.200", OperatingSystem: "ubuntu-jammy",
		APIVersion: 3, StemcellFormats: []string{"aws-light"},
		CloudProperties: map[string]any{"ami": map[string]any{"us-east-1": "ami-0123456789abcdef0"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s, err := Open(out, dir)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Light() || s.Manifest.CloudProperties["ami"].(map[string]any)["us-east-1"] != "ami-0123456789abcdef0" {
		t.Fatalf("stemcell = %+v", s.Manifest)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("light stemcell left %d files", len(left))
	}
	err = CreateLight(out, Manifest{Name: "x", Version: "1", OperatingSystem: "y", StemcellFormats: []string{"aws-light"}})
	if err == nil || !strings.Contains(err.Error(), "cloud_properties") {
		t.Errorf("light stemcell without cloud properties: %v", err)
	}
}

type entry struct {
	h    tar.Header
	data []byte
}

func reg(name string, data []byte, mode int64) entry {
	return entry{tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(data))}, data}
}

func tgzOf(t *testing.T, es ...entry) []byte {
	var b bytes.Buffer
	gz := gzip.NewWriter(&b)
	tw := tar.NewWriter(gz)
	for _, e := range es {
		h := e.h
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		tw.Write(e.data)
	}
	tw.Close()
	gz.Close()
	return b.Bytes()
}

func TestOpenRejects(t *testing.T) {
	t.Parallel()
	goodMF := []byte("name: s\nversion: \"1\"\noperating_system: linux\napi_version: 2\nstemcell_formats: [local-tgz]\ncloud_properties: {}\n")
	noAgent := tgzOf(t, reg("README", []byte("x"), 0o644))
	notExec := tgzOf(t, reg("agent", []byte("x"), 0o644))
	cases := []struct {
		name string
		data []byte
		is   error
		msg  string
	}{
		{"tar-slip", tgzOf(t, reg(ManifestFile, goodMF, 0o644), reg("../image", []byte("x"), 0o644)), tgz.ErrUnsafePath, `entry "../image"`},
		{"absolute", tgzOf(t, reg("/image", []byte("x"), 0o644)), tgz.ErrUnsafePath, "absolute path"},
		{"symlink image", tgzOf(t, reg(ManifestFile, goodMF, 0o644), entry{tar.Header{Name: "image", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}, nil}), tgz.ErrLinkEscape, `entry "image"`},
		{"extra entry", tgzOf(t, reg(ManifestFile, goodMF, 0o644), reg("extra", nil, 0o644)), nil, `entry "extra": unexpected entry`},
		{"no manifest", tgzOf(t, reg(ImageFile, noAgent, 0o644)), nil, `entry "stemcell.MF": missing`},
		{"bad manifest field", tgzOf(t, reg(ManifestFile, []byte("name: s\nversion: \"1\"\noperating_system: linux\nstemcell_formats: []\nimage_url: x\n"), 0o644), reg(ImageFile, noAgent, 0o644)), nil, "field image_url not found"},
		{"no formats", tgzOf(t, reg(ManifestFile, []byte("name: s\nversion: \"1\"\noperating_system: linux\n"), 0o644), reg(ImageFile, noAgent, 0o644)), nil, "field stemcell_formats: empty"},
		{"image digest lie", tgzOf(t, reg(ManifestFile, append(goodMF, []byte("sha256: "+strings.Repeat("0", 64)+"\n")...), 0o644), reg(ImageFile, noAgent, 0o644)), ErrDigestMismatch, `entry "image": sha256`},
		{"no agent", tgzOf(t, reg(ManifestFile, goodMF, 0o644), reg(ImageFile, noAgent, 0o644)), ErrNoAgent, `entry "image"`},
		{"agent not executable", tgzOf(t, reg(ManifestFile, goodMF, 0o644), reg(ImageFile, notExec, 0o644)), ErrNoAgent, `entry "image"`},
		{"image escapes", tgzOf(t, reg(ManifestFile, goodMF, 0o644), reg(ImageFile, tgzOf(t, reg("agent", []byte("x"), 0o755), reg("../../x", []byte("x"), 0o644)), 0o644)), tgz.ErrUnsafePath, `entry "image": entry "../../x"`},
		{"light without cloud properties", tgzOf(t, reg(ManifestFile, goodMF, 0o644), reg(ImageFile, nil, 0o644)), nil, "light stemcell"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "s.tgz")
			os.WriteFile(p, c.data, 0o644)
			dir := t.TempDir()
			_, err := Open(p, dir)
			if err == nil {
				t.Fatal("accepted")
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("%v is not %v", err, c.is)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Errorf("%q does not contain %q", err, c.msg)
			}
			if left, _ := os.ReadDir(dir); len(left) != 0 {
				t.Errorf("left %d files in the target", len(left))
			}
		})
	}
}

var m0 = time.Unix(1234567, 0)
