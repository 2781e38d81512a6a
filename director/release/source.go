package release

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/compleat/compleat/director/release/tgz"
)

// Source is a release source directory, loaded and checked.
type Source struct {
	// Dir is the directory's path.
	Dir string
	// Name is config/final.yml's name, else the directory's base name.
	Name     string
	Jobs     []*SourceJob     // sorted by name
	Packages []*SourcePackage // sorted by name
}

// SourceJob is one job of a release source directory.
type SourceJob struct {
	Spec *JobSpec
	// Files are job.MF (the spec) and templates/<src> for every template,
	// as they appear in the job tarball.
	Files []SourceFile
}

// SourcePackage is one package of a release source directory.
type SourcePackage struct {
	Spec *PackageSpec
	// Files are packaging and every file the spec's globs select, at their
	// paths relative to src/ or blobs/, as they appear in the package
	// tarball.
	Files []SourceFile
}

// SourceFile is one file of a job or package: Name in the tarball, Path on
// disk, Mode (only the executable bit counts) and the sha256 of its content.
type SourceFile struct {
	Name   string
	Path   string
	Mode   fs.FileMode
	SHA256 string
}

// Fingerprint is the job's fingerprint (see [JobFingerprint]).
func (j *SourceJob) Fingerprint() string { return JobFingerprint(digests(j.Files)) }

// Fingerprint is the package's fingerprint (see [PackageFingerprint]).
func (p *SourcePackage) Fingerprint() string {
	return PackageFingerprint(digests(p.Files), p.Spec.Dependencies)
}

// FileDigest is one file's contribution to a fingerprint.
type FileDigest struct {
	Name       string // path in the job or package tarball
	Executable bool
	SHA256     string // hex
}

func digests(files []SourceFile) []FileDigest {
	out := make([]FileDigest, len(files))
	for i, f := range files {
		out[i] = FileDigest{Name: f.Name, Executable: f.Mode&0o111 != 0, SHA256: f.SHA256}
	}
	return out
}

// JobFingerprint is the hex sha256 of the job's canonical listing: the line
// "compleat-job-v1", then one line "<name> <mode> <sha256>" per file sorted
// by name, where mode is 0755 for executables and 0644 otherwise.
func JobFingerprint(files []FileDigest) string {
	return fingerprint("compleat-job-v1", files, nil)
}

// PackageFingerprint is the hex sha256 of the package's canonical listing:
// the line "compleat-package-v1", the file lines as in [JobFingerprint],
// then "dependency <name>" per dependency, sorted.
func PackageFingerprint(files []FileDigest, dependencies []string) string {
	return fingerprint("compleat-package-v1", files, dependencies)
}

// CompiledPackageFingerprint is the fingerprint of a compiled package of a
// compiled release: as [PackageFingerprint] over its installed files, with
// the first line "compleat-compiled-package-v1".
func CompiledPackageFingerprint(files []FileDigest, dependencies []string) string {
	return fingerprint("compleat-compiled-package-v1", files, dependencies)
}

func fingerprint(kind string, files []FileDigest, deps []string) string {
	fs := append([]FileDigest(nil), files...)
	sort.Slice(fs, func(i, j int) bool { return fs[i].Name < fs[j].Name })
	ds := append([]string(nil), deps...)
	sort.Strings(ds)
	h := sha256.New()
	fmt.Fprintf(h, "%s\n", kind)
	for _, f := range fs {
		mode := "0644"
		if f.Executable {
			mode = "0755"
		}
		fmt.Fprintf(h, "%s %s %s\n", f.Name, mode, f.SHA256)
	}
	for _, d := range ds {
		fmt.Fprintf(h, "dependency %s\n", d)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// LoadSource reads and checks a release source directory: every job and
// package spec parses, names match directories, templates and packaging
// scripts exist, job packages and package dependencies exist without cycles,
// every file glob matches at least one file.
func LoadSource(dir string) (*Source, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("release directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("release directory %s: not a directory", dir)
	}
	src := &Source{Dir: dir, Name: filepath.Base(mustAbs(dir))}
	if name, err := finalName(dir); err != nil {
		return nil, err
	} else if name != "" {
		src.Name = name
	}
	if !ValidName(src.Name) {
		return nil, fmt.Errorf("release name %q is not valid: set name in %s", src.Name, filepath.Join(dir, "config", "final.yml"))
	}

	jobNames, err := subdirs(filepath.Join(dir, "jobs"))
	if err != nil {
		return nil, err
	}
	for _, n := range jobNames {
		j, err := loadJob(dir, n)
		if err != nil {
			return nil, err
		}
		src.Jobs = append(src.Jobs, j)
	}
	pkgNames, err := subdirs(filepath.Join(dir, "packages"))
	if err != nil {
		return nil, err
	}
	for _, n := range pkgNames {
		p, err := loadPackage(dir, n)
		if err != nil {
			return nil, err
		}
		src.Packages = append(src.Packages, p)
	}
	if len(src.Jobs) == 0 && len(src.Packages) == 0 {
		return nil, fmt.Errorf("release directory %s: no jobs/ and no packages/", dir)
	}

	var entries []PackageEntry
	known := map[string]bool{}
	for _, p := range src.Packages {
		known[p.Spec.Name] = true
		entries = append(entries, PackageEntry{Name: p.Spec.Name, Dependencies: p.Spec.Dependencies})
	}
	for _, p := range src.Packages {
		for _, d := range p.Spec.Dependencies {
			if !known[d] {
				return nil, fmt.Errorf("packages/%s/spec: dependency %q: no such package", p.Spec.Name, d)
			}
		}
	}
	if c := findCycle(entries); c != nil {
		return nil, fmt.Errorf("package dependency cycle: %s", joinArrow(c))
	}
	for _, j := range src.Jobs {
		for _, p := range j.Spec.Packages {
			if !known[p] {
				return nil, fmt.Errorf("jobs/%s/spec: package %q: no such package", j.Spec.Name, p)
			}
		}
	}
	return src, nil
}

func mustAbs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

func finalName(dir string) (string, error) {
	file := filepath.Join(dir, "config", "final.yml")
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var cfg struct {
		Name      string `yaml:"name"`
		FinalName string `yaml:"final_name"` // older bosh CLIs wrote this
	}
	dec := decodeLoose(data, &cfg)
	if dec != nil {
		return "", fmt.Errorf("%s: %w", file, dec)
	}
	if cfg.Name == "" {
		return cfg.FinalName, nil
	}
	return cfg.Name, nil
}

func subdirs(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

func loadJob(dir, name string) (*SourceJob, error) {
	jobDir := filepath.Join(dir, "jobs", name)
	specFile := path.Join("jobs", name, "spec")
	data, err := os.ReadFile(filepath.Join(jobDir, "spec"))
	if err != nil {
		return nil, fmt.Errorf("job %s: %w", name, err)
	}
	spec, err := ParseJobSpec(specFile, data)
	if err != nil {
		return nil, err
	}
	if spec.Name != name {
		return nil, fmt.Errorf("%s: field name: %q does not match the directory name %q", specFile, spec.Name, name)
	}
	j := &SourceJob{Spec: spec}
	f, err := sourceFile("job.MF", filepath.Join(jobDir, "spec"))
	if err != nil {
		return nil, err
	}
	j.Files = append(j.Files, f)
	monit := filepath.Join(jobDir, MonitFile)
	if _, err := os.Stat(monit); err == nil {
		f, err := sourceFile(MonitFile, monit)
		if err != nil {
			return nil, fmt.Errorf("job %s: %w", name, err)
		}
		j.Files = append(j.Files, f)
	}
	for _, t := range sortedKeys(spec.Templates) {
		f, err := sourceFile("templates/"+t, filepath.Join(jobDir, "templates", filepath.FromSlash(t)))
		if err != nil {
			return nil, fmt.Errorf("%s: template %q: %w", specFile, t, err)
		}
		j.Files = append(j.Files, f)
	}
	if _, err := j.Job(); err != nil {
		return nil, fmt.Errorf("jobs/%s: %w", name, err)
	}
	return j, nil
}

// Job reads the job's files as a [Job] and checks that the director can run
// it (see [Job.Runner]).
func (j *SourceJob) Job() (*Job, error) {
	job := &Job{Spec: j.Spec, Templates: map[string][]byte{}}
	for _, f := range j.Files {
		if f.Name != MonitFile && !strings.HasPrefix(f.Name, "templates/") {
			continue
		}
		data, err := os.ReadFile(f.Path)
		if err != nil {
			return nil, err
		}
		if f.Name == MonitFile {
			job.Monit = data
		} else {
			job.Templates[strings.TrimPrefix(f.Name, "templates/")] = data
		}
	}
	if _, err := job.Runner(); err != nil {
		return nil, err
	}
	return job, nil
}

func loadPackage(dir, name string) (*SourcePackage, error) {
	pkgDir := filepath.Join(dir, "packages", name)
	specFile := path.Join("packages", name, "spec")
	data, err := os.ReadFile(filepath.Join(pkgDir, "spec"))
	if err != nil {
		return nil, fmt.Errorf("package %s: %w", name, err)
	}
	spec, err := ParsePackageSpec(specFile, data)
	if err != nil {
		return nil, err
	}
	if spec.Name != name {
		return nil, fmt.Errorf("%s: field name: %q does not match the directory name %q", specFile, spec.Name, name)
	}
	p := &SourcePackage{Spec: spec}
	f, err := sourceFile("packaging", filepath.Join(pkgDir, "packaging"))
	if err != nil {
		return nil, fmt.Errorf("package %s: packaging script: %w", name, err)
	}
	p.Files = append(p.Files, f)

	files, err := matchFiles(dir, spec)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", specFile, err)
	}
	for _, rel := range sortedKeys(files) {
		if rel == "packaging" {
			return nil, fmt.Errorf("%s: a source file named %q would clash with the packaging script", specFile, rel)
		}
		f, err := sourceFile(rel, files[rel])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", specFile, err)
		}
		p.Files = append(p.Files, f)
	}
	return p, nil
}

// matchFiles returns the files selected by the spec's globs, by relative
// path, each resolved in src/ first, then blobs/.
func matchFiles(dir string, spec *PackageSpec) (map[string]string, error) {
	trees := map[string]map[string]string{}
	for _, t := range []string{"src", "blobs"} {
		files, err := listTree(filepath.Join(dir, t))
		if err != nil {
			return nil, err
		}
		trees[t] = files
	}
	var excluded []glob
	for _, g := range spec.ExcludedFiles {
		re, err := compileGlob(g)
		if err != nil {
			return nil, fmt.Errorf("field excluded_files: pattern %q: %w", g, err)
		}
		excluded = append(excluded, re)
	}
	out := map[string]string{}
	for _, g := range spec.Files {
		re, err := compileGlob(g)
		if err != nil {
			return nil, fmt.Errorf("field files: pattern %q: %w", g, err)
		}
		matched := 0
		for _, t := range []string{"src", "blobs"} {
			for _, rel := range sortedKeys(trees[t]) {
				if !re.Match(rel) {
					continue
				}
				matched++
				if _, ok := out[rel]; !ok {
					out[rel] = trees[t][rel]
				}
			}
		}
		if matched == 0 {
			if listed := blobsListed(dir, re); listed != "" {
				return nil, fmt.Errorf("field files: pattern %q matches no file under src/ or blobs/; config/blobs.yml lists %s, not downloaded: fetch the release's blobs into blobs/ first (bosh sync-blobs)", g, listed)
			}
			return nil, fmt.Errorf("field files: pattern %q matches no file under src/ or blobs/", g)
		}
	}
	for rel := range out {
		for _, re := range excluded {
			if re.Match(rel) {
				delete(out, rel)
				break
			}
		}
	}
	return out, nil
}

// listTree maps every regular file below root (following symbolic links to
// files, skipping dot-directories such as .git) by slash path to its path.
func listTree(root string) (map[string]string, error) {
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == root {
				return filepath.SkipDir
			}
			return err
		}
		if d.IsDir() {
			if p != root && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			return nil
		}
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		if !st.Mode().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		out[filepath.ToSlash(rel)] = p
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	return out, err
}

func sourceFile(name, p string) (SourceFile, error) {
	if err := tgz.CheckName(name); err != nil {
		return SourceFile{}, fmt.Errorf("file %q: %w", name, err)
	}
	f, err := os.Open(p)
	if err != nil {
		return SourceFile{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return SourceFile{}, err
	}
	if !st.Mode().IsRegular() {
		return SourceFile{}, fmt.Errorf("%s: not a regular file", p)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return SourceFile{}, fmt.Errorf("read %s: %w", p, err)
	}
	mode := fs.FileMode(0o644)
	if st.Mode()&0o111 != 0 {
		mode = 0o755
	}
	return SourceFile{Name: name, Path: p, Mode: mode, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// blobsListed returns a path of config/blobs.yml (BOSH's list of blobs kept
// in a blobstore, downloaded into blobs/ by bosh sync-blobs) that re
// matches, or "".
func blobsListed(dir string, re glob) string {
	data, err := os.ReadFile(filepath.Join(dir, "config", "blobs.yml"))
	if err != nil {
		return ""
	}
	var blobs map[string]any
	if decodeLoose(data, &blobs) != nil {
		return ""
	}
	for _, p := range sortedKeys(blobs) {
		if re.Match(p) {
			return p
		}
	}
	return ""
}
