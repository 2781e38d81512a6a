// Package releasetest builds release tarballs for tests, in the forms other
// tools write them.
package releasetest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/compleat/compleat/director/release"
)

// Digest selects how BOSHTarball writes release.MF's sha1 fields.
type Digest int

const (
	SHA1   Digest = iota // 40 hex digits, as most releases on bosh.io
	SHA256               // "sha256:<hex>", as newer bosh CLIs write
)

// BOSHTarball writes the release source directory dir as the bosh CLI's
// create-release --tarball would: entries under "./", job tarballs holding
// job.MF, monit and templates/, package tarballs holding packaging and the
// package's files, and release.MF with sha1 digests, BOSH-style (40 hex)
// fingerprints and no sizes. It returns the tarball's path.
func BOSHTarball(t testing.TB, dir, name, version string, digest Digest) string {
	t.Helper()
	src, err := release.LoadSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	type entry struct {
		Name         string   `yaml:"name"`
		Version      string   `yaml:"version"`
		Fingerprint  string   `yaml:"fingerprint"`
		SHA1         string   `yaml:"sha1"`
		Packages     []string `yaml:"packages,omitempty"`
		Dependencies []string `yaml:"dependencies"`
	}
	mf := struct {
		Name               string  `yaml:"name"`
		Version            string  `yaml:"version"`
		CommitHash         string  `yaml:"commit_hash"`
		UncommittedChanges bool    `yaml:"uncommitted_changes"`
		Jobs               []entry `yaml:"jobs"`
		Packages           []entry `yaml:"packages"`
	}{Name: name, Version: version, CommitHash: "0123abcd"}
	var outer []file
	sum := func(b []byte) string {
		if digest == SHA256 {
			s := sha256.Sum256(b)
			return "sha256:" + hex.EncodeToString(s[:])
		}
		s := sha1.Sum(b)
		return hex.EncodeToString(s[:])
	}
	fingerprint := func(b []byte) string {
		s := sha1.Sum(append([]byte("fingerprint\x00"), b...))
		return hex.EncodeToString(s[:])
	}
	for _, p := range src.Packages {
		inner := tgz(t, readFiles(t, p.Files))
		fp := fingerprint(inner)
		mf.Packages = append(mf.Packages, entry{Name: p.Spec.Name, Version: fp, Fingerprint: fp, SHA1: sum(inner), Dependencies: append([]string{}, p.Spec.Dependencies...)})
		outer = append(outer, file{name: "./packages/" + p.Spec.Name + ".tgz", data: inner})
	}
	for _, j := range src.Jobs {
		inner := tgz(t, readFiles(t, j.Files))
		fp := fingerprint(inner)
		mf.Jobs = append(mf.Jobs, entry{Name: j.Spec.Name, Version: fp, Fingerprint: fp, SHA1: sum(inner), Packages: append([]string{}, j.Spec.Packages...)})
		outer = append(outer, file{name: "./jobs/" + j.Spec.Name + ".tgz", data: inner})
	}
	mfData, err := yaml.Marshal(mf)
	if err != nil {
		t.Fatal(err)
	}
	all := append([]file{{name: "./", dir: true}, {name: "./release.MF", data: mfData}, {name: "./jobs/", dir: true}, {name: "./packages/", dir: true}}, outer...)
	out, err := os.CreateTemp(t.TempDir(), name+"-*.tgz")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := out.Write(tgz(t, all)); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Name()
}

// BOSHCompiledTarball writes dir as a BOSH compiled release for stemcell
// ("os/version"), as `bosh export-release` would: each package compiled on
// this machine by running its packaging script with BOSH's environment
// (bash -x, as BOSH runs it; dependencies first, under BOSH_PACKAGES_DIR),
// its installed files in
// compiled_packages/<name>.tgz, release.MF listing compiled_packages with
// sha1 digests and no packages.
func BOSHCompiledTarball(t testing.TB, dir, name, version, stemcell string) string {
	t.Helper()
	src, err := release.LoadSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	pkgsDir := filepath.Join(work, "packages")
	done := map[string]bool{}
	type entry struct {
		Name         string   `yaml:"name"`
		Version      string   `yaml:"version"`
		Fingerprint  string   `yaml:"fingerprint"`
		SHA1         string   `yaml:"sha1"`
		Packages     []string `yaml:"packages,omitempty"`
		Dependencies []string `yaml:"dependencies"`
		Stemcell     string   `yaml:"stemcell,omitempty"`
	}
	mf := struct {
		Name               string  `yaml:"name"`
		Version            string  `yaml:"version"`
		CommitHash         string  `yaml:"commit_hash"`
		UncommittedChanges bool    `yaml:"uncommitted_changes"`
		Jobs               []entry `yaml:"jobs"`
		Packages           []entry `yaml:"packages"`
		CompiledPackages   []entry `yaml:"compiled_packages"`
	}{Name: name, Version: version, CommitHash: "0123abcd", Packages: []entry{}}
	var outer []file
	sha := func(b []byte) string { s := sha1.Sum(b); return hex.EncodeToString(s[:]) }
	var compile func(p *release.SourcePackage)
	byName := map[string]*release.SourcePackage{}
	for _, p := range src.Packages {
		byName[p.Spec.Name] = p
	}
	compile = func(p *release.SourcePackage) {
		if done[p.Spec.Name] {
			return
		}
		for _, d := range p.Spec.Dependencies {
			compile(byName[d])
		}
		done[p.Spec.Name] = true
		compileDir := filepath.Join(work, "compile", p.Spec.Name)
		install := filepath.Join(pkgsDir, p.Spec.Name)
		for _, d := range []string{compileDir, install} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for _, f := range p.Files {
			data, err := os.ReadFile(f.Path)
			if err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(compileDir, filepath.FromSlash(f.Name))
			os.MkdirAll(filepath.Dir(dst), 0o755) //nolint:errcheck // WriteFile reports
			if err := os.WriteFile(dst, data, f.Mode.Perm()); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.Command("bash", "-x", "packaging")
		cmd.Dir = compileDir
		cmd.Env = append(os.Environ(), "BOSH_COMPILE_TARGET="+compileDir, "BOSH_INSTALL_TARGET="+install,
			"BOSH_PACKAGE_NAME="+p.Spec.Name, "BOSH_PACKAGE_VERSION="+p.Fingerprint(), "BOSH_PACKAGES_DIR="+pkgsDir)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("compile %s: %v\n%s", p.Spec.Name, err, out)
		}
		files := []file{{name: "./", dir: true}}
		err := filepath.WalkDir(install, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(install, path)
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			files = append(files, file{name: "./" + filepath.ToSlash(rel), data: data, mode: int64(info.Mode().Perm())})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		inner := tgz(t, files)
		fp := sha(append([]byte("fingerprint\x00"), inner...))
		mf.CompiledPackages = append(mf.CompiledPackages, entry{Name: p.Spec.Name, Version: fp, Fingerprint: fp, SHA1: sha(inner),
			Dependencies: append([]string{}, p.Spec.Dependencies...), Stemcell: stemcell})
		outer = append(outer, file{name: "./compiled_packages/" + p.Spec.Name + ".tgz", data: inner})
	}
	for _, p := range src.Packages {
		compile(p)
	}
	for _, j := range src.Jobs {
		inner := tgz(t, readFiles(t, j.Files))
		fp := sha(append([]byte("fingerprint\x00"), inner...))
		mf.Jobs = append(mf.Jobs, entry{Name: j.Spec.Name, Version: fp, Fingerprint: fp, SHA1: sha(inner), Packages: append([]string{}, j.Spec.Packages...)})
		outer = append(outer, file{name: "./jobs/" + j.Spec.Name + ".tgz", data: inner})
	}
	mfData, err := yaml.Marshal(mf)
	if err != nil {
		t.Fatal(err)
	}
	all := append([]file{{name: "./", dir: true}, {name: "./release.MF", data: mfData}}, outer...)
	out := filepath.Join(t.TempDir(), name+"-"+version+"-compiled.tgz")
	if err := os.WriteFile(out, tgz(t, all), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

type file struct {
	name string
	data []byte
	mode int64
	dir  bool
}

func readFiles(t testing.TB, files []release.SourceFile) []file {
	t.Helper()
	out := []file{{name: "./", dir: true}}
	for _, f := range files {
		data, err := os.ReadFile(f.Path)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, file{name: "./" + f.Name, data: data, mode: int64(f.Mode.Perm())})
	}
	return out
}

func tgz(t testing.TB, files []file) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	dirs := map[string]bool{}
	for _, f := range files {
		if f.dir {
			dirs[f.name] = true
			if err := tw.WriteHeader(&tar.Header{Name: f.name, Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		// Parent directories first, as tar(1) writes them.
		for i := 2; i < len(f.name); i++ {
			if f.name[i] == '/' && !dirs[f.name[:i+1]] {
				dirs[f.name[:i+1]] = true
				if err := tw.WriteHeader(&tar.Header{Name: f.name[:i+1], Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
					t.Fatal(err)
				}
			}
		}
		mode := f.mode
		if mode == 0 {
			mode = 0o644
		}
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(f.data))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(fmt.Errorf("write %s: %w", f.name, err))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
