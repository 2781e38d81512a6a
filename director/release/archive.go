package release

import (
	"archive/tar"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/compleat/compleat/director/release/tgz"
)

// Errors of release verification; each is wrapped with the entry it is about.
var (
	// ErrSizeMismatch: a file's size differs from release.MF's.
	ErrSizeMismatch = errors.New("size does not match release.MF")
	// ErrDigestMismatch: a file's sha256 differs from release.MF's.
	ErrDigestMismatch = errors.New("sha256 does not match release.MF")
	// ErrFingerprintMismatch: a job's or package's content does not give
	// the fingerprint release.MF names.
	ErrFingerprintMismatch = errors.New("content does not match the fingerprint in release.MF")
	// ErrUnexpectedEntry: an entry release.MF does not account for.
	ErrUnexpectedEntry = errors.New("unexpected entry")
	// ErrMissingEntry: release.MF names a file the tarball lacks.
	ErrMissingEntry = errors.New("missing entry")
)

// Archive is a verified release tarball, unpacked into a private directory.
type Archive struct {
	Manifest *Manifest
	// Dir holds the unpacked jobs/<job>.tgz and packages/<pkg>.tgz; Close
	// removes it.
	Dir      string
	Jobs     []*ArchiveJob     // in release.MF order
	Packages []*ArchivePackage // in release.MF order
	// CompiledPackages are a compiled release's packages, in release.MF
	// order.
	CompiledPackages []*ArchiveCompiledPackage
}

// ArchiveCompiledPackage is compiled_packages/<name>.tgz of a compiled
// release: the package's installed files, compiled for Stemcell.
type ArchiveCompiledPackage struct {
	CompiledPackageEntry
	// Path is the verified tarball in the archive's directory.
	Path string
}

// compiledFingerprintOf checks a compiled package tarball (regular files
// and directories only, inside the limits) and computes its fingerprint.
func compiledFingerprintOf(file string, deps []string, lim tgz.Limits) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var files []FileDigest
	err = tgz.Walk(f, lim, func(e tgz.Entry, body io.Reader) error {
		switch e.Type {
		case tar.TypeDir:
			return nil
		case tar.TypeReg:
		default:
			return fmt.Errorf("%q: only regular files and directories are allowed in a compiled package: %w", e.Name, tgz.ErrEntryType)
		}
		h := sha256.New()
		if _, err := io.Copy(h, body); err != nil {
			return fmt.Errorf("%q: %w", e.Name, err)
		}
		files = append(files, FileDigest{Name: e.Name, Executable: e.Mode&0o111 != 0, SHA256: hex.EncodeToString(h.Sum(nil))})
		return nil
	})
	if err != nil {
		return "", err
	}
	return CompiledPackageFingerprint(files, deps), nil
}

// ArchiveJob is one verified job of an archive.
type ArchiveJob struct {
	JobEntry
	// Path is the job tarball on disk (inside Archive.Dir).
	Path string
	Job  *Job
}

// ArchivePackage is one verified package of an archive.
type ArchivePackage struct {
	PackageEntry
	// Path is the package tarball on disk (inside Archive.Dir).
	Path string
}

// Job is the content of a job tarball: its spec and template texts.
type Job struct {
	Spec *JobSpec
	// Templates maps a template's source name (a key of Spec.Templates) to
	// its text.
	Templates map[string][]byte
	// Monit is the job's monit file (BOSH jobs), nil when it has none. It
	// is an ERB template like the others.
	Monit []byte
}

// OpenOptions tune [OpenWith].
type OpenOptions struct {
	// TempDir is where the archive is unpacked; empty means os.TempDir().
	TempDir string
	// Limits bound the outer tarball and each package tarball; zero fields
	// take tgz.DefaultLimits' values.
	Limits tgz.Limits
	// JobLimits bound each job tarball (held in memory); a zero value means
	// DefaultJobLimits.
	JobLimits tgz.Limits
	// expect, when set, is every entry release.MF allows with its size (-1:
	// not declared): load refuses any other before writing a byte of it.
	expect map[string]int64
}

var errFound = errors.New("found")

// expectedEntries reads release.MF from the tarball r without writing
// anything and returns the entries it lists with their declared sizes.
func expectedEntries(r io.Reader, lim tgz.Limits) (map[string]int64, error) {
	var mf []byte
	err := tgz.Walk(r, lim, func(e tgz.Entry, body io.Reader) error {
		if e.Name != ManifestFile || e.Type != tar.TypeReg {
			return nil
		}
		if e.Size > 1<<20 {
			return fmt.Errorf("entry %q: %d bytes, more than 1 MiB: %w", e.Name, e.Size, tgz.ErrTooLarge)
		}
		var err error
		if mf, err = io.ReadAll(body); err != nil {
			return err
		}
		return errFound
	})
	if err != nil && !errors.Is(err, errFound) {
		return nil, err
	}
	if mf == nil {
		return nil, fmt.Errorf("entry %q: %w", ManifestFile, ErrMissingEntry)
	}
	expect := map[string]int64{ManifestFile: int64(len(mf)), "license.tgz": -1}
	if IsBOSHManifest(mf) {
		var b boshManifest
		if err := decodeLoose(mf, &b); err != nil {
			return nil, fmt.Errorf("%s (BOSH form): %w", ManifestFile, err)
		}
		for dir, list := range map[string][]boshEntry{"jobs/": b.Jobs, "packages/": b.Packages, "compiled_packages/": b.CompiledPackages} {
			for _, e := range list {
				expect[dir+e.Name+".tgz"] = -1
			}
		}
		return expect, nil
	}
	m, err := ParseManifest(mf)
	if err != nil {
		return nil, err
	}
	for _, p := range m.Packages {
		expect["packages/"+p.Name+".tgz"] = p.Size
	}
	for _, p := range m.CompiledPackages {
		expect["compiled_packages/"+p.Name+".tgz"] = p.Size
	}
	for _, j := range m.Jobs {
		expect["jobs/"+j.Name+".tgz"] = j.Size
	}
	return expect, nil
}

// DefaultJobLimits bound a job tarball: templates are read into memory.
var DefaultJobLimits = tgz.Limits{MaxEntries: 1000, MaxFileSize: 4 << 20, MaxTotalSize: 32 << 20}

// Open verifies the release tarball file and unpacks it: see [OpenWith].
func Open(file string) (*Archive, error) { return OpenWith(file, OpenOptions{}) }

// OpenWith verifies a release tarball from an untrusted source and unpacks
// its job and package tarballs into a new private directory. It checks that
// every entry stays inside its target (outer and inner tarballs), sizes are
// bounded and equal release.MF's, every sha256 and fingerprint matches, names
// are unique, dependencies exist without cycles and job specs parse. The
// caller must Close the archive.
func OpenWith(file string, opts OpenOptions) (*Archive, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("open release: %w", err)
	}
	defer f.Close()
	// release.MF first, whatever its place in the tarball (BOSH's come
	// last): a pass that writes nothing finds and checks it, so that the
	// unpacking pass writes only the entries it lists, at their sizes.
	expect, err := expectedEntries(f, opts.Limits)
	if err != nil {
		return nil, fmt.Errorf("release %s: %w", filepath.Base(file), err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	opts.expect = expect
	a, err := OpenReader(f, opts)
	if err != nil {
		return nil, fmt.Errorf("release %s: %w", filepath.Base(file), err)
	}
	return a, nil
}

// OpenReader is [OpenWith] on a stream.
func OpenReader(r io.Reader, opts OpenOptions) (*Archive, error) {
	if opts.JobLimits == (tgz.Limits{}) {
		opts.JobLimits = DefaultJobLimits
	}
	dir, err := os.MkdirTemp(opts.TempDir, "release-*")
	if err != nil {
		return nil, err
	}
	a := &Archive{Dir: dir}
	if err := a.load(r, opts); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

// Close removes the unpacked files.
func (a *Archive) Close() error { return os.RemoveAll(a.Dir) }

// Inspect verifies the release tarball file and returns its manifest.
func Inspect(file string) (*Manifest, error) {
	a, err := Open(file)
	if err != nil {
		return nil, err
	}
	defer a.Close()
	return a.Manifest, nil
}

func (a *Archive) load(r io.Reader, opts OpenOptions) error {
	root, err := os.OpenRoot(a.Dir)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, d := range []string{"jobs", "packages", "compiled_packages"} {
		if err := root.Mkdir(d, 0o700); err != nil {
			return err
		}
	}
	type seenFile struct {
		size int64
		sum  string
		sha1 string // for BOSH's release.MF
	}
	files := map[string]seenFile{}
	var mf []byte
	err = tgz.Walk(r, opts.Limits, func(e tgz.Entry, body io.Reader) error {
		switch {
		case e.Type == tar.TypeDir && (e.Name == "jobs" || e.Name == "packages" || e.Name == "compiled_packages"):
			return nil
		case e.Type != tar.TypeReg:
			return fmt.Errorf("entry %q: only regular files are allowed in a release tarball: %w", e.Name, tgz.ErrEntryType)
		case e.Name == ManifestFile:
			if e.Size > 1<<20 {
				return fmt.Errorf("entry %q: %d bytes, more than 1 MiB: %w", e.Name, e.Size, tgz.ErrTooLarge)
			}
			mf, err = io.ReadAll(body)
			return err
		case e.Name == "license.tgz":
			return nil // accepted, not used
		}
		dir, base := path.Split(e.Name)
		name, ok := strings.CutSuffix(base, ".tgz")
		if (dir != "jobs/" && dir != "packages/" && dir != "compiled_packages/") || !ok || !ValidName(name) {
			return fmt.Errorf("entry %q: %w: want release.MF, jobs/<name>.tgz, packages/<name>.tgz or compiled_packages/<name>.tgz", e.Name, ErrUnexpectedEntry)
		}
		if opts.expect != nil {
			size, listed := opts.expect[e.Name]
			if !listed {
				return fmt.Errorf("entry %q: %w: not listed in release.MF", e.Name, ErrUnexpectedEntry)
			}
			if size >= 0 && e.Size != size {
				return fmt.Errorf("entry %q: %d bytes, release.MF says %d: %w", e.Name, e.Size, size, ErrSizeMismatch)
			}
		}
		out, err := root.OpenFile(e.Name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("entry %q: %w", e.Name, err)
		}
		h, h1 := sha256.New(), sha1.New()
		n, err := io.Copy(io.MultiWriter(out, h, h1), body)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("entry %q: %w", e.Name, err)
		}
		files[e.Name] = seenFile{size: n, sum: hex.EncodeToString(h.Sum(nil)), sha1: hex.EncodeToString(h1.Sum(nil))}
		return nil
	})
	if err != nil {
		return err
	}
	if mf == nil {
		return fmt.Errorf("entry %q: %w", ManifestFile, ErrMissingEntry)
	}
	var m *Manifest
	if IsBOSHManifest(mf) {
		sums := map[string]FileSums{}
		for name, f := range files {
			sums[name] = FileSums{Size: f.size, SHA256: f.sum, SHA1: f.sha1}
		}
		m, err = convertBOSHManifest(mf, a.Dir, sums, opts)
	} else {
		m, err = ParseManifest(mf)
	}
	if err != nil {
		return err
	}
	a.Manifest = m

	check := func(name string, size int64, sum string) error {
		got, ok := files[name]
		if !ok {
			return fmt.Errorf("entry %q: %w", name, ErrMissingEntry)
		}
		delete(files, name)
		if got.size != size {
			return fmt.Errorf("entry %q: %d bytes, release.MF says %d: %w", name, got.size, size, ErrSizeMismatch)
		}
		if got.sum != sum {
			return fmt.Errorf("entry %q: sha256 %s, release.MF says %s: %w", name, got.sum, sum, ErrDigestMismatch)
		}
		return nil
	}
	for _, p := range m.Packages {
		name := "packages/" + p.Name + ".tgz"
		if err := check(name, p.Size, p.SHA256); err != nil {
			return err
		}
		fp, err := packageFingerprintOf(filepath.Join(a.Dir, filepath.FromSlash(name)), p.Dependencies, opts.Limits)
		if err != nil {
			return fmt.Errorf("entry %q: %w", name, err)
		}
		if fp != p.Fingerprint {
			return fmt.Errorf("entry %q: fingerprint %s, release.MF says %s: %w", name, fp, p.Fingerprint, ErrFingerprintMismatch)
		}
		a.Packages = append(a.Packages, &ArchivePackage{PackageEntry: p, Path: filepath.Join(a.Dir, filepath.FromSlash(name))})
	}
	for _, p := range m.CompiledPackages {
		name := "compiled_packages/" + p.Name + ".tgz"
		if err := check(name, p.Size, p.SHA256); err != nil {
			return err
		}
		fp, err := compiledFingerprintOf(filepath.Join(a.Dir, filepath.FromSlash(name)), p.Dependencies, opts.Limits)
		if err != nil {
			return fmt.Errorf("entry %q: %w", name, err)
		}
		if fp != p.Fingerprint {
			return fmt.Errorf("entry %q: fingerprint %s, release.MF says %s: %w", name, fp, p.Fingerprint, ErrFingerprintMismatch)
		}
		a.CompiledPackages = append(a.CompiledPackages, &ArchiveCompiledPackage{CompiledPackageEntry: p, Path: filepath.Join(a.Dir, filepath.FromSlash(name))})
	}
	for _, j := range m.Jobs {
		name := "jobs/" + j.Name + ".tgz"
		if err := check(name, j.Size, j.SHA256); err != nil {
			return err
		}
		p := filepath.Join(a.Dir, filepath.FromSlash(name))
		job, fp, err := readJobFile(p, opts.JobLimits)
		if err != nil {
			return fmt.Errorf("entry %q: %w", name, err)
		}
		if job.Spec.Name != j.Name {
			return fmt.Errorf("entry %q: job.MF names job %q", name, job.Spec.Name)
		}
		if !sameSet(job.Spec.Packages, j.Packages) {
			return fmt.Errorf("entry %q: job.MF packages %v differ from release.MF's %v", name, job.Spec.Packages, j.Packages)
		}
		if fp != j.Fingerprint {
			return fmt.Errorf("entry %q: fingerprint %s, release.MF says %s: %w", name, fp, j.Fingerprint, ErrFingerprintMismatch)
		}
		a.Jobs = append(a.Jobs, &ArchiveJob{JobEntry: j, Path: p, Job: job})
	}
	for name := range files {
		return fmt.Errorf("entry %q: %w: not listed in release.MF", name, ErrUnexpectedEntry)
	}
	return nil
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]int{}
	for _, s := range a {
		m[s]++
	}
	for _, s := range b {
		m[s]--
		if m[s] < 0 {
			return false
		}
	}
	return true
}

// packageFingerprintOf checks a package tarball (regular files and
// directories only, a packaging script at its root) and computes its
// fingerprint.
func packageFingerprintOf(file string, deps []string, lim tgz.Limits) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var files []FileDigest
	hasPackaging := false
	err = tgz.Walk(f, lim, func(e tgz.Entry, body io.Reader) error {
		switch e.Type {
		case tar.TypeDir:
			return nil
		case tar.TypeReg:
		default:
			return fmt.Errorf("%q: only regular files and directories are allowed in a package: %w", e.Name, tgz.ErrEntryType)
		}
		h := sha256.New()
		if _, err := io.Copy(h, body); err != nil {
			return fmt.Errorf("%q: %w", e.Name, err)
		}
		if e.Name == "packaging" {
			hasPackaging = true
		}
		files = append(files, FileDigest{Name: e.Name, Executable: e.Mode&0o111 != 0, SHA256: hex.EncodeToString(h.Sum(nil))})
		return nil
	})
	if err != nil {
		return "", err
	}
	if !hasPackaging {
		return "", fmt.Errorf("no packaging script: %w", ErrMissingEntry)
	}
	return PackageFingerprint(files, deps), nil
}

// ReadJob reads and checks a job tarball (as stored in a release or the
// blobstore): job.MF parses, every template the spec names is present, and
// nothing else is.
func ReadJob(r io.Reader) (*Job, error) {
	j, _, err := readJob(r, DefaultJobLimits)
	return j, err
}

func readJobFile(file string, lim tgz.Limits) (*Job, string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	return readJob(f, lim)
}

func readJob(r io.Reader, lim tgz.Limits) (*Job, string, error) {
	contents := map[string][]byte{}
	var files []FileDigest
	err := tgz.Walk(r, lim, func(e tgz.Entry, body io.Reader) error {
		switch e.Type {
		case tar.TypeDir:
			return nil
		case tar.TypeReg:
		default:
			return fmt.Errorf("%q: only regular files and directories are allowed in a job: %w", e.Name, tgz.ErrEntryType)
		}
		if e.Name != "job.MF" && e.Name != MonitFile && !strings.HasPrefix(e.Name, "templates/") {
			return fmt.Errorf("%q: %w: want job.MF, monit or a file under templates/", e.Name, ErrUnexpectedEntry)
		}
		data, err := io.ReadAll(body)
		if err != nil {
			return fmt.Errorf("%q: %w", e.Name, err)
		}
		sum := sha256.Sum256(data)
		contents[e.Name] = data
		files = append(files, FileDigest{Name: e.Name, Executable: e.Mode&0o111 != 0, SHA256: hex.EncodeToString(sum[:])})
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	mf, ok := contents["job.MF"]
	if !ok {
		return nil, "", fmt.Errorf("job.MF: %w", ErrMissingEntry)
	}
	spec, err := ParseJobSpec("job.MF", mf)
	if err != nil {
		return nil, "", err
	}
	job := &Job{Spec: spec, Templates: map[string][]byte{}, Monit: contents[MonitFile]}
	for src := range spec.Templates {
		data, ok := contents["templates/"+src]
		if !ok {
			return nil, "", fmt.Errorf("templates/%s: %w: job.MF lists it", src, ErrMissingEntry)
		}
		job.Templates[src] = data
	}
	for name := range contents {
		if t, ok := strings.CutPrefix(name, "templates/"); ok {
			if _, listed := spec.Templates[t]; !listed {
				return nil, "", fmt.Errorf("%q: %w: not listed in job.MF templates", name, ErrUnexpectedEntry)
			}
		}
	}
	if _, err := job.Runner(); err != nil {
		return nil, "", err
	}
	return job, JobFingerprint(files), nil
}
