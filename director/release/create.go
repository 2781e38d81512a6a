package release

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/compleat/compleat/director/release/tgz"
)

// CreateOptions tune [Create].
type CreateOptions struct {
	// Name overrides the release name (config/final.yml's name, else the
	// directory's base name).
	Name string
	// Version sets the release version. Empty means a dev version: the
	// version already given to identical content, else the next "0+dev.N".
	Version string
	// Tarball is where to write the tarball. Empty means
	// <dir>/dev_releases/<name>/<name>-<version>.tgz.
	Tarball string
}

// DevReleasesDir is the directory, inside a release source directory, that
// records the dev versions given so far (dev_releases/<name>/index.yml)
// and holds the tarballs written by default.
const DevReleasesDir = "dev_releases"

// Create builds a release tarball from the source directory dir and returns
// its manifest and the tarball's path. The tarball is deterministic: the
// same source (and commit) gives byte-identical output.
func Create(dir string, opts CreateOptions) (*Manifest, string, error) {
	src, err := LoadSource(dir)
	if err != nil {
		return nil, "", err
	}
	if opts.Name != "" {
		if !ValidName(opts.Name) {
			return nil, "", fmt.Errorf("release name %q is not valid", opts.Name)
		}
		src.Name = opts.Name
	}
	if opts.Version != "" && !validVersion(opts.Version) {
		return nil, "", fmt.Errorf("release version %q is not valid: use letters, digits, '.', '+', '-', '_'", opts.Version)
	}

	work, err := os.MkdirTemp("", "compleat-release-*")
	if err != nil {
		return nil, "", err
	}
	defer os.RemoveAll(work)

	m := &Manifest{Name: src.Name, Jobs: []JobEntry{}, Packages: []PackageEntry{}}
	m.CommitHash, m.UncommittedChanges = gitState(dir)
	var files []tgz.File
	for _, p := range src.Packages {
		name := "packages/" + p.Spec.Name + ".tgz"
		sum, size, err := writeInner(filepath.Join(work, "p-"+p.Spec.Name), p.Files)
		if err != nil {
			return nil, "", fmt.Errorf("package %s: %w", p.Spec.Name, err)
		}
		fp := p.Fingerprint()
		deps := append([]string{}, p.Spec.Dependencies...)
		sort.Strings(deps)
		m.Packages = append(m.Packages, PackageEntry{
			Name: p.Spec.Name, Version: fp, Fingerprint: fp, SHA256: sum, Size: size, Dependencies: deps,
		})
		files = append(files, tgz.File{Name: name, Mode: 0o644, Path: filepath.Join(work, "p-"+p.Spec.Name)})
	}
	for _, j := range src.Jobs {
		name := "jobs/" + j.Spec.Name + ".tgz"
		sum, size, err := writeInner(filepath.Join(work, "j-"+j.Spec.Name), j.Files)
		if err != nil {
			return nil, "", fmt.Errorf("job %s: %w", j.Spec.Name, err)
		}
		fp := j.Fingerprint()
		pkgs := append([]string{}, j.Spec.Packages...)
		m.Jobs = append(m.Jobs, JobEntry{
			Name: j.Spec.Name, Version: fp, Fingerprint: fp, SHA256: sum, Size: size, Packages: pkgs,
		})
		files = append(files, tgz.File{Name: name, Mode: 0o644, Path: filepath.Join(work, "j-"+j.Spec.Name)})
	}

	m.Version = opts.Version
	if m.Version == "" {
		m.Version, err = devVersion(dir, m)
		if err != nil {
			return nil, "", err
		}
	}
	if err := m.Validate(); err != nil {
		return nil, "", fmt.Errorf("built manifest: %w", err)
	}
	mf, err := yaml.Marshal(m)
	if err != nil {
		return nil, "", err
	}
	files = append(files, tgz.File{Name: ManifestFile, Mode: 0o644, Data: mf})

	out := opts.Tarball
	if out == "" {
		out = filepath.Join(dir, DevReleasesDir, m.Name, m.Name+"-"+m.Version+".tgz")
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return nil, "", err
	}
	if err := writeAtomic(out, func(w io.Writer) error { return tgz.Write(w, files) }); err != nil {
		return nil, "", fmt.Errorf("write %s: %w", out, err)
	}
	return m, out, nil
}

// writeInner writes a job or package tarball and returns its sha256 and size.
func writeInner(file string, src []SourceFile) (string, int64, error) {
	files := make([]tgz.File, len(src))
	for i, f := range src {
		files[i] = tgz.File{Name: f.Name, Mode: f.Mode, Path: f.Path}
	}
	out, err := os.Create(file)
	if err != nil {
		return "", 0, err
	}
	defer out.Close()
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(out, h)}
	if err := tgz.Write(cw, files); err != nil {
		return "", 0, err
	}
	if err := out.Close(); err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), cw.n, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func writeAtomic(file string, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), ".tmp-"+filepath.Base(file)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := write(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}

// contentFingerprint identifies a release's content: its name and every
// job's and package's name and fingerprint.
func contentFingerprint(m *Manifest) string {
	h := sha256.New()
	fmt.Fprintf(h, "release %s\n", m.Name)
	for _, j := range m.Jobs {
		fmt.Fprintf(h, "job %s %s\n", j.Name, j.Fingerprint)
	}
	for _, p := range m.Packages {
		fmt.Fprintf(h, "package %s %s\n", p.Name, p.Fingerprint)
	}
	return hex.EncodeToString(h.Sum(nil))
}

type devIndex struct {
	Builds []devBuild `yaml:"builds"`
}

type devBuild struct {
	Version     string `yaml:"version"`
	Fingerprint string `yaml:"fingerprint"`
}

// devVersion returns the dev version recorded for the manifest's content,
// else records and returns the next one, "0+dev.<n+1>".
func devVersion(dir string, m *Manifest) (string, error) {
	file := filepath.Join(dir, DevReleasesDir, m.Name, "index.yml")
	var idx devIndex
	data, err := os.ReadFile(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return "", err
	default:
		if err := yaml.Unmarshal(data, &idx); err != nil {
			return "", fmt.Errorf("%s: %w", file, err)
		}
	}
	fp := contentFingerprint(m)
	next := 0
	for _, b := range idx.Builds {
		if b.Fingerprint == fp {
			return b.Version, nil
		}
		if n, ok := strings.CutPrefix(b.Version, "0+dev."); ok {
			if v, err := strconv.Atoi(n); err == nil && v > next {
				next = v
			}
		}
	}
	version := fmt.Sprintf("0+dev.%d", next+1)
	idx.Builds = append(idx.Builds, devBuild{Version: version, Fingerprint: fp})
	out, err := yaml.Marshal(&idx)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return "", err
	}
	if err := writeAtomic(file, func(w io.Writer) error { _, err := w.Write(out); return err }); err != nil {
		return "", fmt.Errorf("record dev version: %w", err)
	}
	return version, nil
}

// gitState returns the short commit hash of the git work tree holding dir
// and whether the release directory has uncommitted changes; "non-git" when
// dir is not in a git work tree or git is missing.
func gitState(dir string) (string, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "git", "-C", dir, "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "non-git", false
	}
	hash := strings.TrimSpace(string(out))
	status, err := exec.CommandContext(ctx, "git", "-C", dir, "status", "--porcelain", "--", ".", ":(exclude)"+DevReleasesDir).Output()
	if err != nil {
		return hash, false
	}
	return hash, len(strings.TrimSpace(string(status))) > 0
}
