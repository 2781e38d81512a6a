package release

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/compleat/compleat/director/yamllimit"
)

// JobSpec is a job's spec file (jobs/<job>/spec in a release source
// directory, job.MF inside a job tarball).
type JobSpec struct {
	// Name is the job's name; it equals the job's directory name.
	Name string `yaml:"name" json:"name"`
	// Description is free text for operators.
	Description string `yaml:"description,omitempty" json:"description,omitempty"`
	// Templates maps a template's file name under templates/ to the path the
	// rendered file takes under /var/vcap/jobs/<job>/ (for example
	// "drain.tmpl" → "bin/drain").
	Templates map[string]string `yaml:"templates" json:"templates"`
	// Packages names the release packages the job needs on its VM.
	Packages []string `yaml:"packages" json:"packages"`
	// Properties are the properties the job reads, by dotted name ("a.b").
	Properties map[string]Property `yaml:"properties" json:"properties"`
	// Provides lists the links the job offers to other jobs.
	Provides []Link `yaml:"provides,omitempty" json:"provides,omitempty"`
	// Consumes lists the links the job reads from other jobs.
	Consumes []Link `yaml:"consumes,omitempty" json:"consumes,omitempty"`
}

// Property describes one job property.
type Property struct {
	Description string `yaml:"description,omitempty" json:"description,omitempty"`
	// Default is the value used when the manifest does not set the property;
	// nil means there is no default. YAML scalars, lists and maps decode to
	// string, int, float64, bool, []any and map[string]any.
	Default any `yaml:"default,omitempty" json:"default,omitempty"`
	// Example is documentation only.
	Example any `yaml:"example,omitempty" json:"example,omitempty"`
	// Type is an optional hint ("certificate", "password", ...), unchecked.
	Type string `yaml:"type,omitempty" json:"type,omitempty"`
}

// HasDefault reports whether the property declares a default value.
func (p Property) HasDefault() bool { return p.Default != nil }

// Link is one entry of a job's provides or consumes list.
type Link struct {
	// Name is the link's name within the job.
	Name string `yaml:"name" json:"name"`
	// Type must match between provider and consumer.
	Type string `yaml:"type" json:"type"`
	// Properties (provides only) are the job properties the providing job
	// exposes on the link, by dotted name.
	Properties []string `yaml:"properties,omitempty" json:"properties,omitempty"`
	// Optional (consumes only) lets the consumer deploy without a provider.
	Optional bool `yaml:"optional,omitempty" json:"optional,omitempty"`
}

// PackageSpec is a package's spec file (packages/<pkg>/spec).
type PackageSpec struct {
	// Name is the package's name; it equals the package's directory name.
	Name string `yaml:"name" json:"name"`
	// Dependencies are packages compiled before this one and present under
	// /var/vcap/packages/<dep> while it compiles and runs.
	Dependencies []string `yaml:"dependencies,omitempty" json:"dependencies,omitempty"`
	// Files are glob patterns, relative to src/ (then blobs/), selecting the
	// package's files. "*" and "?" do not cross "/"; "**" matches any number
	// of directories.
	Files []string `yaml:"files,omitempty" json:"files,omitempty"`
	// ExcludedFiles are glob patterns removed from the selection.
	ExcludedFiles []string `yaml:"excluded_files,omitempty" json:"excluded_files,omitempty"`
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidName reports whether s may name a release, job or package: letters,
// digits, '.', '_' and '-', starting with a letter or digit, at most 128
// characters. Such a name is always a safe single path element.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// ParseJobSpec decodes and checks a job spec. file names the source in
// errors (for example "jobs/web/spec").
func ParseJobSpec(file string, data []byte) (*JobSpec, error) {
	var s JobSpec
	if err := decodeStrict(data, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return &s, nil
}

// Validate checks a job spec's fields.
func (s *JobSpec) Validate() error {
	if !ValidName(s.Name) {
		return fmt.Errorf("field name: invalid job name %q", s.Name)
	}
	dsts := map[string]string{}
	for _, src := range sortedKeys(s.Templates) {
		dst := s.Templates[src]
		if err := checkRelPath(src); err != nil {
			return fmt.Errorf("field templates: source %q: %w", src, err)
		}
		if err := checkRelPath(dst); err != nil {
			return fmt.Errorf("field templates: %q destination %q: %w", src, dst, err)
		}
		if prev, ok := dsts[dst]; ok {
			return fmt.Errorf("field templates: %q and %q both render to %q", prev, src, dst)
		}
		dsts[dst] = src
	}
	if err := uniqueNames("packages", s.Packages); err != nil {
		return err
	}
	for name := range s.Properties {
		if name == "" || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") || strings.Contains(name, "..") {
			return fmt.Errorf("field properties: invalid property name %q", name)
		}
	}
	for _, kind := range []struct {
		field string
		links []Link
	}{{"provides", s.Provides}, {"consumes", s.Consumes}} {
		seen := map[string]bool{}
		for i, l := range kind.links {
			if l.Name == "" {
				return fmt.Errorf("field %s[%d]: name is empty", kind.field, i)
			}
			if l.Type == "" {
				return fmt.Errorf("field %s[%d] (%s): type is empty", kind.field, i, l.Name)
			}
			if seen[l.Name] {
				return fmt.Errorf("field %s: link %q listed twice", kind.field, l.Name)
			}
			seen[l.Name] = true
			for _, p := range l.Properties {
				if _, ok := s.Properties[p]; !ok {
					return fmt.Errorf("field %s[%d] (%s): property %q is not declared under properties", kind.field, i, l.Name, p)
				}
			}
		}
	}
	return nil
}

// ParsePackageSpec decodes and checks a package spec. file names the
// source in errors.
func ParsePackageSpec(file string, data []byte) (*PackageSpec, error) {
	var s PackageSpec
	if err := decodeStrict(data, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if !ValidName(s.Name) {
		return nil, fmt.Errorf("%s: field name: invalid package name %q", file, s.Name)
	}
	if err := uniqueNames("dependencies", s.Dependencies); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	for _, d := range s.Dependencies {
		if d == s.Name {
			return nil, fmt.Errorf("%s: field dependencies: package %q depends on itself", file, d)
		}
	}
	for _, g := range append(append([]string{}, s.Files...), s.ExcludedFiles...) {
		if err := checkGlob(g); err != nil {
			return nil, fmt.Errorf("%s: field files: pattern %q: %w", file, g, err)
		}
	}
	return &s, nil
}

// decodeStrict decodes one YAML document, rejecting unknown fields, and
// turns the decoder's line-numbered messages into one error.
func decodeStrict(data []byte, v any) error {
	if err := yamllimit.Check("", data, yamllimit.ReleaseManifest); err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("empty document")
		}
		return err
	}
	return nil
}

func uniqueNames(field string, names []string) error {
	seen := map[string]bool{}
	for _, n := range names {
		if !ValidName(n) {
			return fmt.Errorf("field %s: invalid name %q", field, n)
		}
		if seen[n] {
			return fmt.Errorf("field %s: %q listed twice", field, n)
		}
		seen[n] = true
	}
	return nil
}

// checkRelPath accepts a clean relative slash path that stays inside its
// root: no empty, ".", ".." or absolute forms, no backslashes or NULs.
func checkRelPath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("empty path")
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("absolute path")
	case strings.ContainsAny(p, "\\\x00"):
		return fmt.Errorf("backslash or NUL in path")
	}
	for _, el := range strings.Split(p, "/") {
		switch el {
		case "":
			return fmt.Errorf("empty path element")
		case ".", "..":
			return fmt.Errorf("path element %q", el)
		}
	}
	return nil
}

func checkGlob(g string) error {
	if g == "" {
		return fmt.Errorf("empty pattern")
	}
	if strings.HasPrefix(g, "/") {
		return fmt.Errorf("absolute pattern")
	}
	for _, el := range strings.Split(g, "/") {
		if el == ".." {
			return fmt.Errorf("pattern leaves the source directory")
		}
	}
	_, err := compileGlob(g)
	return err
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// decodeLoose decodes one YAML document, ignoring unknown fields.
func decodeLoose(data []byte, v any) error {
	if err := yamllimit.Check("", data, yamllimit.ReleaseManifest); err != nil {
		return err
	}
	if err := yaml.Unmarshal(data, v); err != nil {
		return err
	}
	return nil
}
