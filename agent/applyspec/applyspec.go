// Package applyspec defines the apply spec: what the director tells an agent
// its VM must run. The director builds it from the deployment plan and sends it
// with the agent's "apply" (and "prepare") methods; the agent installs exactly
// the jobs and packages it names, each fetched from its signed URL and checked
// against its sha256 before use.
//
// On the VM, under the base directory (/var/vcap):
//
//	data/packages/<name>/<version>/   one directory per package version
//	packages/<name> -> data/packages/<name>/<version>
//	data/jobs/<name>/<sha256>/        one directory per rendered job
//	jobs/<name> -> data/jobs/<name>/<sha256>
//
// so that versions live side by side and an apply switches symlinks.
package applyspec

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
)

// Spec is the desired state of one VM.
type Spec struct {
	Deployment string `json:"deployment"`
	// Name is the instance group's name, ID the instance's uuid, Index its
	// index in the group.
	Name      string `json:"name"`
	ID        string `json:"id"`
	Index     int    `json:"index"`
	AZ        string `json:"az,omitempty"`
	Bootstrap bool   `json:"bootstrap,omitempty"`

	Networks map[string]Network `json:"networks,omitempty"`
	Jobs     []Job              `json:"jobs"`
	Packages []Package          `json:"packages"`

	// PersistentDisk describes the instance's persistent disk, if any.
	PersistentDisk *Disk `json:"persistent_disk,omitempty"`
}

// Network is one network the instance is on.
type Network struct {
	Type    string   `json:"type,omitempty"`
	IP      string   `json:"ip"`
	Netmask string   `json:"netmask,omitempty"`
	Gateway string   `json:"gateway,omitempty"`
	DNS     []string `json:"dns,omitempty"`
	Default []string `json:"default,omitempty"`
}

// Job is one rendered job: a tar.gz of the directory as it must appear at
// <base>/jobs/<name>/ (bin/..., config/processes.yml, ...).
type Job struct {
	Name string `json:"name"`
	// Version is the release job's fingerprint; informative.
	Version string `json:"version,omitempty"`
	Blob    Blob   `json:"blob"`
}

// Package is one compiled package: a tar.gz of its install target.
type Package struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Blob    Blob   `json:"blob"`
}

// Blob is a blob the agent fetches: a signed URL (GET) and the sha256 the
// content must have.
type Blob struct {
	URL    string `json:"url"`
	SHA256 string `json:"sha256"`
	// Size in bytes; 0 when unknown.
	Size int64 `json:"size,omitempty"`
}

// Disk is an instance's persistent disk.
type Disk struct {
	CID    string `json:"cid"`
	SizeMB int64  `json:"size_mb,omitempty"`
}

var (
	nameRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	sha256RE  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	versionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.+-]*$`)
)

// Validate checks that names are safe as path components, hashes are sha256
// hex, and names are unique.
func (s *Spec) Validate() error {
	seen := map[string]bool{}
	for i, j := range s.Jobs {
		if !nameRE.MatchString(j.Name) {
			return fmt.Errorf("jobs[%d].name %q: not a valid name", i, j.Name)
		}
		if seen["job/"+j.Name] {
			return fmt.Errorf("jobs[%d].name %q: duplicate", i, j.Name)
		}
		seen["job/"+j.Name] = true
		if err := j.Blob.validate(); err != nil {
			return fmt.Errorf("jobs[%d] (%s).blob: %w", i, j.Name, err)
		}
	}
	for i, p := range s.Packages {
		if !nameRE.MatchString(p.Name) {
			return fmt.Errorf("packages[%d].name %q: not a valid name", i, p.Name)
		}
		if !versionRE.MatchString(p.Version) {
			return fmt.Errorf("packages[%d] (%s).version %q: not a valid version", i, p.Name, p.Version)
		}
		if seen["pkg/"+p.Name] {
			return fmt.Errorf("packages[%d].name %q: duplicate", i, p.Name)
		}
		seen["pkg/"+p.Name] = true
		if err := p.Blob.validate(); err != nil {
			return fmt.Errorf("packages[%d] (%s).blob: %w", i, p.Name, err)
		}
	}
	return nil
}

func (b Blob) validate() error {
	if b.URL == "" {
		return fmt.Errorf("url: empty")
	}
	if !sha256RE.MatchString(b.SHA256) {
		return fmt.Errorf("sha256 %q: not 64 lowercase hex digits", b.SHA256)
	}
	return nil
}

// ValidName reports whether name is usable as a job or package name.
func ValidName(name string) bool { return nameRE.MatchString(name) }

// ValidSHA256 reports whether s is 64 lowercase hex digits.
func ValidSHA256(s string) bool { return sha256RE.MatchString(s) }

// ConfigHash is a digest of everything the jobs will run: each job's and each
// package's content hash. Two specs with equal ConfigHash install the same
// bits; drain scripts see hash_changed when it differs.
func (s *Spec) ConfigHash() string {
	type entry struct{ Kind, Name, SHA string }
	var es []entry
	for _, j := range s.Jobs {
		es = append(es, entry{"job", j.Name, j.Blob.SHA256})
	}
	for _, p := range s.Packages {
		es = append(es, entry{"package", p.Name, p.Blob.SHA256})
	}
	b, _ := json.Marshal(es)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Job returns the job named name and whether it exists.
func (s *Spec) Job(name string) (Job, bool) {
	for _, j := range s.Jobs {
		if j.Name == name {
			return j, true
		}
	}
	return Job{}, false
}

// IP is the address of the instance on its default network (the network
// whose Default lists "gateway", else the only or first-named network).
func (s *Spec) IP() string {
	var first string
	for name, n := range s.Networks {
		for _, d := range n.Default {
			if d == "gateway" {
				return n.IP
			}
		}
		if first == "" || name < first {
			first = name
		}
	}
	if first == "" {
		return ""
	}
	return s.Networks[first].IP
}
