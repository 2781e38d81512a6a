package release

import (
	"fmt"
	"strings"
)

// ManifestFile is the name of the release manifest at the root of a release
// tarball.
const ManifestFile = "release.MF"

// Manifest is release.MF: what a release tarball holds.
type Manifest struct {
	Name    string `yaml:"name" json:"name"`
	Version string `yaml:"version" json:"version"`
	// CommitHash is the source directory's git commit, or "non-git".
	CommitHash string `yaml:"commit_hash" json:"commit_hash"`
	// UncommittedChanges is true when the git work tree was dirty.
	UncommittedChanges bool           `yaml:"uncommitted_changes" json:"uncommitted_changes"`
	Jobs               []JobEntry     `yaml:"jobs" json:"jobs"`
	Packages           []PackageEntry `yaml:"packages" json:"packages"`
	// CompiledPackages make a compiled release: packages already compiled
	// for one stemcell, deployed on it without compiling.
	CompiledPackages []CompiledPackageEntry `yaml:"compiled_packages,omitempty" json:"compiled_packages,omitempty"`
}

// CompiledPackageEntry describes compiled_packages/<name>.tgz.
type CompiledPackageEntry struct {
	Name         string   `yaml:"name" json:"name"`
	Version      string   `yaml:"version" json:"version"`
	Fingerprint  string   `yaml:"fingerprint" json:"fingerprint"`
	SHA256       string   `yaml:"sha256" json:"sha256"`
	Size         int64    `yaml:"size" json:"size"`
	Dependencies []string `yaml:"dependencies" json:"dependencies"`
	// Stemcell is the "os/version" the package was compiled on.
	Stemcell string `yaml:"stemcell" json:"stemcell"`
}

// JobEntry describes jobs/<name>.tgz in a release tarball.
type JobEntry struct {
	Name string `yaml:"name" json:"name"`
	// Version equals Fingerprint: an unchanged job keeps its version.
	Version     string `yaml:"version" json:"version"`
	Fingerprint string `yaml:"fingerprint" json:"fingerprint"`
	// SHA256 is the hex digest of the job tarball.
	SHA256 string `yaml:"sha256" json:"sha256"`
	// Size is the job tarball's length in bytes.
	Size int64 `yaml:"size" json:"size"`
	// Packages repeats the job spec's packages.
	Packages []string `yaml:"packages" json:"packages"`
}

// PackageEntry describes packages/<name>.tgz in a release tarball.
type PackageEntry struct {
	Name         string   `yaml:"name" json:"name"`
	Version      string   `yaml:"version" json:"version"`
	Fingerprint  string   `yaml:"fingerprint" json:"fingerprint"`
	SHA256       string   `yaml:"sha256" json:"sha256"`
	Size         int64    `yaml:"size" json:"size"`
	Dependencies []string `yaml:"dependencies" json:"dependencies"`
}

// Job returns the entry of the named job.
func (m *Manifest) Job(name string) (JobEntry, bool) {
	for _, j := range m.Jobs {
		if j.Name == name {
			return j, true
		}
	}
	return JobEntry{}, false
}

// Package returns the entry of the named package.
func (m *Manifest) Package(name string) (PackageEntry, bool) {
	for _, p := range m.Packages {
		if p.Name == name {
			return p, true
		}
	}
	return PackageEntry{}, false
}

// ParseManifest decodes and checks release.MF: names valid and unique,
// digests well formed, job packages and package dependencies present,
// dependencies free of cycles.
func ParseManifest(data []byte) (*Manifest, error) {
	var m Manifest
	if err := decodeStrict(data, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", ManifestFile, err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", ManifestFile, err)
	}
	return &m, nil
}

// Validate checks the manifest's internal consistency.
func (m *Manifest) Validate() error {
	if !ValidName(m.Name) {
		return fmt.Errorf("field name: invalid release name %q", m.Name)
	}
	if !validVersion(m.Version) {
		return fmt.Errorf("field version: invalid version %q", m.Version)
	}
	pkgs := map[string]PackageEntry{}
	for i, p := range m.Packages {
		if !ValidName(p.Name) {
			return fmt.Errorf("packages[%d]: invalid package name %q", i, p.Name)
		}
		if _, dup := pkgs[p.Name]; dup {
			return fmt.Errorf("packages[%d]: package %q listed twice", i, p.Name)
		}
		if err := checkEntry(p.Fingerprint, p.SHA256, p.Size); err != nil {
			return fmt.Errorf("package %q: %w", p.Name, err)
		}
		pkgs[p.Name] = p
	}
	all := append([]PackageEntry{}, m.Packages...)
	for i, p := range m.CompiledPackages {
		if !ValidName(p.Name) {
			return fmt.Errorf("compiled_packages[%d]: invalid package name %q", i, p.Name)
		}
		if _, dup := pkgs[p.Name]; dup {
			return fmt.Errorf("compiled_packages[%d]: package %q listed twice", i, p.Name)
		}
		if err := checkEntry(p.Fingerprint, p.SHA256, p.Size); err != nil {
			return fmt.Errorf("compiled package %q: %w", p.Name, err)
		}
		os, version, ok := strings.Cut(p.Stemcell, "/")
		if !ok || os == "" || version == "" {
			return fmt.Errorf("compiled package %q: field stemcell: want os/version, got %q", p.Name, p.Stemcell)
		}
		entry := PackageEntry{Name: p.Name, Fingerprint: p.Fingerprint, Dependencies: p.Dependencies}
		pkgs[p.Name] = entry
		all = append(all, entry)
	}
	for _, p := range all {
		for _, d := range p.Dependencies {
			if _, ok := pkgs[d]; !ok {
				return fmt.Errorf("package %q: dependency %q is not in the release", p.Name, d)
			}
		}
	}
	if cycle := findCycle(all); cycle != nil {
		return fmt.Errorf("package dependency cycle: %s", joinArrow(cycle))
	}
	jobs := map[string]bool{}
	for i, j := range m.Jobs {
		if !ValidName(j.Name) {
			return fmt.Errorf("jobs[%d]: invalid job name %q", i, j.Name)
		}
		if jobs[j.Name] {
			return fmt.Errorf("jobs[%d]: job %q listed twice", i, j.Name)
		}
		jobs[j.Name] = true
		if err := checkEntry(j.Fingerprint, j.SHA256, j.Size); err != nil {
			return fmt.Errorf("job %q: %w", j.Name, err)
		}
		for _, p := range j.Packages {
			if _, ok := pkgs[p]; !ok {
				return fmt.Errorf("job %q: package %q is not in the release", j.Name, p)
			}
		}
	}
	return nil
}

func checkEntry(fingerprint, sha string, size int64) error {
	if !isHex64(fingerprint) {
		return fmt.Errorf("field fingerprint: want 64 hex digits, got %q", fingerprint)
	}
	if !isHex64(sha) {
		return fmt.Errorf("field sha256: want 64 hex digits, got %q", sha)
	}
	if size <= 0 {
		return fmt.Errorf("field size: want a positive byte count, got %d", size)
	}
	return nil
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// validVersion accepts versions like "1", "1.2.3", "0+dev.4", "2.0-rc.1".
func validVersion(v string) bool {
	if v == "" || len(v) > 64 {
		return false
	}
	for _, c := range v {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '.' || c == '+' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// findCycle returns the names along one dependency cycle, first name
// repeated at the end, or nil. Unknown dependencies are ignored.
func findCycle(pkgs []PackageEntry) []string {
	deps := map[string][]string{}
	var names []string
	for _, p := range pkgs {
		deps[p.Name] = p.Dependencies
		names = append(names, p.Name)
	}
	const (
		unseen = iota
		onStack
		done
	)
	state := map[string]int{}
	var stack []string
	var visit func(n string) []string
	visit = func(n string) []string {
		state[n] = onStack
		stack = append(stack, n)
		for _, d := range deps[n] {
			if _, known := deps[d]; !known {
				continue
			}
			switch state[d] {
			case onStack:
				for i, s := range stack {
					if s == d {
						return append(append([]string{}, stack[i:]...), d)
					}
				}
			case unseen:
				if c := visit(d); c != nil {
					return c
				}
			}
		}
		stack = stack[:len(stack)-1]
		state[n] = done
		return nil
	}
	for _, n := range names {
		if state[n] == unseen {
			if c := visit(n); c != nil {
				return c
			}
		}
	}
	return nil
}

func joinArrow(s []string) string {
	out := ""
	for i, n := range s {
		if i > 0 {
			out += " -> "
		}
		out += n
	}
	return out
}
