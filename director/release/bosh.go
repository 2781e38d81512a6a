package release

import (
	"fmt"
	"path/filepath"
	"strings"
)

// BOSH release tarballs. A tarball made by the bosh CLI (create-release
// --tarball, or a final release downloaded from bosh.io) lists its jobs and
// packages in release.MF with a `sha1` digest each, either 40 hex digits
// (SHA-1) or "sha256:<64 hex>", and no size; its fingerprints are BOSH's
// own. Open accepts such a tarball: each inner tarball must match its
// digest, and is then checked exactly as ours are (job.MF, monit file,
// templates, packaging script, dependencies). The manifest is recorded in
// Compleat's form: sizes and sha256 from the verified files, and
// fingerprints (which are also the job and package versions) computed by
// Compleat from the content, so the same job uploaded from a source
// directory or a BOSH tarball is the same job to the compiled-package
// cache and the planner. The release's own name and version are kept.
//
// A compiled release (compiled_packages, each naming the "os/version" of
// the stemcell it was compiled on) is recorded the same way; its packages'
// fingerprints are computed from the compiled content (see
// [CompiledPackageFingerprint]).

// FileSums are the digests of one entry of a release tarball.
type FileSums struct {
	Size   int64
	SHA256 string
	SHA1   string
}

type boshEntry struct {
	Name         string   `yaml:"name"`
	Version      string   `yaml:"version"`
	Fingerprint  string   `yaml:"fingerprint"`
	SHA1         string   `yaml:"sha1"`
	Packages     []string `yaml:"packages"`
	Dependencies []string `yaml:"dependencies"`
	Stemcell     string   `yaml:"stemcell"`
}

type boshManifest struct {
	Name               string      `yaml:"name"`
	Version            string      `yaml:"version"`
	CommitHash         string      `yaml:"commit_hash"`
	UncommittedChanges bool        `yaml:"uncommitted_changes"`
	Jobs               []boshEntry `yaml:"jobs"`
	Packages           []boshEntry `yaml:"packages"`
	CompiledPackages   []boshEntry `yaml:"compiled_packages"`
	License            *boshEntry  `yaml:"license"`
}

// IsBOSHManifest reports whether release.MF is in BOSH's form (digests in
// sha1 fields) rather than Compleat's (sha256 and size).
func IsBOSHManifest(mf []byte) bool {
	var probe struct {
		Jobs             []map[string]any `yaml:"jobs"`
		Packages         []map[string]any `yaml:"packages"`
		CompiledPackages []map[string]any `yaml:"compiled_packages"`
	}
	if decodeLoose(mf, &probe) != nil {
		return false
	}
	for _, list := range [][]map[string]any{probe.Jobs, probe.Packages, probe.CompiledPackages} {
		for _, e := range list {
			if _, ok := e["sha1"]; ok {
				return true
			}
		}
	}
	return false
}

// checkDigest compares a BOSH digest ("<sha1 hex>" or "sha256:<hex>") with
// a file's sums.
func checkDigest(digest string, got FileSums) error {
	want := strings.ToLower(strings.TrimSpace(digest))
	switch {
	case strings.HasPrefix(want, "sha256:"):
		if strings.TrimPrefix(want, "sha256:") != got.SHA256 {
			return fmt.Errorf("sha256 %s, release.MF says %s: %w", got.SHA256, want, ErrDigestMismatch)
		}
	case len(want) == 40:
		if want != got.SHA1 {
			return fmt.Errorf("sha1 %s, release.MF says %s: %w", got.SHA1, want, ErrDigestMismatch)
		}
	default:
		return fmt.Errorf("field sha1: %q is neither 40 hex digits nor sha256:<64 hex digits>", digest)
	}
	return nil
}

func convertBOSHManifest(mf []byte, dir string, files map[string]FileSums, opts OpenOptions) (*Manifest, error) {
	var b boshManifest
	if err := decodeStrict(mf, &b); err != nil {
		return nil, fmt.Errorf("%s (BOSH form): %w", ManifestFile, err)
	}
	m := &Manifest{Name: b.Name, Version: b.Version, CommitHash: b.CommitHash, UncommittedChanges: b.UncommittedChanges, Jobs: []JobEntry{}, Packages: []PackageEntry{}}
	if m.CommitHash == "" {
		m.CommitHash = "non-git"
	}
	verify := func(kind string, e boshEntry) (FileSums, string, error) {
		if !ValidName(e.Name) {
			return FileSums{}, "", fmt.Errorf("%s: %s: invalid name %q", ManifestFile, kind, e.Name)
		}
		name := kind + "/" + e.Name + ".tgz"
		got, ok := files[name]
		if !ok {
			return FileSums{}, "", fmt.Errorf("entry %q: %w", name, ErrMissingEntry)
		}
		if err := checkDigest(e.SHA1, got); err != nil {
			return FileSums{}, "", fmt.Errorf("entry %q: %w", name, err)
		}
		return got, filepath.Join(dir, filepath.FromSlash(name)), nil
	}
	for _, p := range b.Packages {
		got, file, err := verify("packages", p)
		if err != nil {
			return nil, err
		}
		fp, err := packageFingerprintOf(file, p.Dependencies, opts.Limits)
		if err != nil {
			return nil, fmt.Errorf("entry %q: %w", "packages/"+p.Name+".tgz", err)
		}
		deps := append([]string{}, p.Dependencies...)
		m.Packages = append(m.Packages, PackageEntry{Name: p.Name, Version: fp, Fingerprint: fp, SHA256: got.SHA256, Size: got.Size, Dependencies: deps})
	}
	for _, p := range b.CompiledPackages {
		got, file, err := verify("compiled_packages", p)
		if err != nil {
			return nil, err
		}
		fp, err := compiledFingerprintOf(file, p.Dependencies, opts.Limits)
		if err != nil {
			return nil, fmt.Errorf("entry %q: %w", "compiled_packages/"+p.Name+".tgz", err)
		}
		m.CompiledPackages = append(m.CompiledPackages, CompiledPackageEntry{Name: p.Name, Version: fp, Fingerprint: fp, SHA256: got.SHA256, Size: got.Size,
			Dependencies: append([]string{}, p.Dependencies...), Stemcell: p.Stemcell})
	}
	for _, j := range b.Jobs {
		got, file, err := verify("jobs", j)
		if err != nil {
			return nil, err
		}
		jl := opts.JobLimits
		if jl.MaxEntries == 0 {
			jl = DefaultJobLimits
		}
		_, fp, err := readJobFile(file, jl)
		if err != nil {
			return nil, fmt.Errorf("entry %q: %w", "jobs/"+j.Name+".tgz", err)
		}
		m.Jobs = append(m.Jobs, JobEntry{Name: j.Name, Version: fp, Fingerprint: fp, SHA256: got.SHA256, Size: got.Size, Packages: append([]string{}, j.Packages...)})
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", ManifestFile, err)
	}
	return m, nil
}
