package template

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	gotemplate "text/template"

	yaml "go.yaml.in/yaml/v3"
)

// Job is a release job as the renderer needs it: its templates and the
// properties its spec declares.
type Job struct {
	Name string
	// Templates maps each template source (its name in the release, as in the
	// spec's templates block) to the destination path in the rendered job and
	// the template text.
	Templates []Template
	// Properties are the spec's declared properties by dotted name.
	Properties map[string]Property
	// Monit is a BOSH job's monit file, an ERB template rendered to
	// "monit" ("" when the job has none).
	Monit string
}

// Template is one file of a job: the source name in the release, the path it
// renders to (relative to /var/vcap/jobs/<job>/) and its text.
type Template struct {
	Source string
	Dest   string
	Text   string
}

// Property is a declared property. A nil Default means "no default".
type Property struct {
	Default any
}

// Instance is what `spec` returns and what dot is in a template.
type Instance struct {
	Name       string            // instance group name
	ID         string            // the instance's uuid
	Index      int               // the instance's index in its group
	AZ         string            // availability zone, "" when none
	Address    string            // the address others reach it at (the default network's IP)
	IP         string            // the default network's IP
	Deployment string            // deployment name
	Bootstrap  bool              // true on exactly one instance of the group
	NetworkIPs map[string]string // network name → IP
	// PersistentDisk is the persistent disk's size in MB, 0 without one
	// (BOSH's spec.persistent_disk).
	PersistentDisk int
}

// Link is a resolved consumed link as a template sees it.
type Link struct {
	Name      string
	Type      string
	Instances []LinkInstance
	// Properties are the properties the providing job exposes on the link,
	// as a nested map.
	Properties map[string]any
}

// LinkInstance is one instance of the providing group.
type LinkInstance struct {
	Name      string
	ID        string
	Index     int
	AZ        string
	Address   string
	Bootstrap bool
}

// Address is the first instance's address, or "" when there is none.
func (l *Link) Address() string {
	if len(l.Instances) == 0 {
		return ""
	}
	return l.Instances[0].Address
}

// P returns a property the providing job exposes on the link, else the
// optional fallback, else an error naming the property.
func (l *Link) P(name string, fallback ...any) (any, error) {
	if v, ok := lookup(l.Properties, name); ok && v != nil {
		return v, nil
	}
	if len(fallback) > 0 {
		return fallback[0], nil
	}
	return nil, fmt.Errorf("link %q has no property %q", l.Name, name)
}

// Input is everything one instance's job is rendered with.
type Input struct {
	Instance Instance
	// Properties is the nested property map the manifest gives this job
	// (the job's properties block in its instance group).
	Properties map[string]any
	// Links are the job's resolved consumed links by name; an optional link
	// that is not satisfied is absent.
	Links map[string]*Link
	// Release is the job's release (spec.release in ERB templates).
	Release ReleaseRef
}

// ReleaseRef names a release.
type ReleaseRef struct {
	Name    string
	Version string
}

// File is one rendered file.
type File struct {
	Path    string // relative to the job directory, slash-separated
	Mode    fs.FileMode
	Content []byte
}

// Rendered is one job rendered for one instance.
type Rendered struct {
	Job   string
	Files []File // sorted by Path
	// Hash is the sha256 (hex) of the files' paths, modes and contents: two
	// renderings with the same Hash install the same job.
	Hash string
}

// Error is a rendering failure, naming the job, the template and, when the
// text/template engine knows it, the line.
type Error struct {
	Job      string
	Template string
	Line     int
	Err      error
}

func (e *Error) Error() string {
	where := fmt.Sprintf("job %s: template %s", e.Job, e.Template)
	if e.Line > 0 {
		where += fmt.Sprintf(" line %d", e.Line)
	}
	return where + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Render renders every template of job for one instance.
func Render(job Job, in Input) (Rendered, error) {
	props, err := effectiveProperties(job, normalizeMap(in.Properties))
	if err != nil {
		return Rendered{}, &Error{Job: job.Name, Template: "(properties)", Err: err}
	}
	inst := in.Instance
	funcs := gotemplate.FuncMap{
		"p": func(name string, fallback ...any) (any, error) {
			if len(fallback) > 1 {
				return nil, fmt.Errorf("p %q: at most one fallback, got %d", name, len(fallback))
			}
			if v, ok := lookup(props, name); ok && v != nil {
				return v, nil
			}
			if len(fallback) == 1 {
				return fallback[0], nil
			}
			if !declared(job, name) {
				return nil, fmt.Errorf("property %q is not declared in the spec of job %s", name, job.Name)
			}
			return nil, fmt.Errorf("property %q of job %s is not set and has no default", name, job.Name)
		},
		"if_p": func(names ...string) (bool, error) {
			if len(names) == 0 {
				return false, errors.New("if_p needs at least one property name")
			}
			for _, n := range names {
				if v, ok := lookup(props, n); !ok || v == nil {
					return false, nil
				}
			}
			return true, nil
		},
		"link": func(name string) (*Link, error) {
			l, ok := in.Links[name]
			if !ok || l == nil {
				return nil, fmt.Errorf("link %q of job %s is not available (use if_link for an optional link)", name, job.Name)
			}
			return l, nil
		},
		"if_link": func(name string) bool {
			l, ok := in.Links[name]
			return ok && l != nil
		},
		"spec":   func() Instance { return inst },
		"toJSON": toJSON,
		"toYAML": toYAML,
		"quote":  quote,
		"join":   join,
		"indent": indent,
	}

	var files []File
	seen := map[string]string{}
	for _, t := range job.Templates {
		dest := path.Clean(strings.TrimPrefix(t.Dest, "/"))
		if dest == "." || dest == ".." || strings.HasPrefix(dest, "../") {
			return Rendered{}, &Error{Job: job.Name, Template: t.Source, Err: fmt.Errorf("destination %q escapes the job directory", t.Dest)}
		}
		if other, dup := seen[dest]; dup {
			return Rendered{}, &Error{Job: job.Name, Template: t.Source, Err: fmt.Errorf("destination %q is also rendered by %s", dest, other)}
		}
		seen[dest] = t.Source
		tpl, err := gotemplate.New(t.Source).Option("missingkey=error").Funcs(funcs).Parse(rewriteConditionals(t.Text))
		if err != nil {
			return Rendered{}, templateError(job.Name, t.Source, err)
		}
		var buf bytes.Buffer
		if err := tpl.Execute(&buf, inst); err != nil {
			return Rendered{}, templateError(job.Name, t.Source, err)
		}
		mode := fs.FileMode(0o644)
		if strings.HasPrefix(dest, "bin/") {
			mode = 0o755
		}
		files = append(files, File{Path: dest, Mode: mode, Content: buf.Bytes()})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	return Rendered{Job: job.Name, Files: files, Hash: hashFiles(files)}, nil
}

// conditional matches an action whose first word is if_p or if_link (or
// that is `else if_p ...`), so that `{{ if_p "a" }}` reads as
// `{{ if if_p "a" }}` and `{{ else if_p "b" }}` as `{{ else if if_p "b" }}`. The rewrite keeps every line
// where it is, so error line numbers stay true.
var conditional = regexp.MustCompile(`\{\{(-?\s*)(else\s+)?(if_p|if_link)\b`)

func rewriteConditionals(text string) string {
	return conditional.ReplaceAllString(text, "{{${1}${2}if $3")
}

func templateError(job, source string, err error) error {
	e := &Error{Job: job, Template: source, Err: err}
	// text/template reports "template: <name>:<line>[:<col>]: <cause>"; keep
	// the line and the cause, drop the repetition of the name.
	rest, ok := strings.CutPrefix(err.Error(), "template: "+source+":")
	if !ok {
		return e
	}
	lineStr, cause, _ := strings.Cut(rest, ":")
	n, convErr := strconv.Atoi(lineStr)
	if convErr != nil {
		return e
	}
	e.Line = n
	if col, after, found := strings.Cut(cause, ":"); found {
		if _, colErr := strconv.Atoi(col); colErr == nil {
			cause = after
		}
	}
	e.Err = &causeError{msg: simplifyCause(strings.TrimSpace(cause)), err: err}
	return e
}

// simplifyCause strips text/template's "executing ... at <...>: error calling
// p: " noise, keeping the function's own message.
func simplifyCause(s string) string {
	if _, rest, ok := strings.Cut(s, "error calling "); ok {
		if _, msg, ok := strings.Cut(rest, ": "); ok {
			return msg
		}
	}
	return s
}

type causeError struct {
	msg string
	err error
}

func (c *causeError) Error() string { return c.msg }
func (c *causeError) Unwrap() error { return c.err }

// effectiveProperties builds the nested map a job's templates see: each
// declared property takes the manifest value at its path, else its default.
func effectiveProperties(job Job, manifest map[string]any) (map[string]any, error) {
	names := make([]string, 0, len(job.Properties))
	for n := range job.Properties {
		names = append(names, n)
	}
	sort.Strings(names)
	out := map[string]any{}
	for _, n := range names {
		if n == "" || strings.HasPrefix(n, ".") || strings.HasSuffix(n, ".") || strings.Contains(n, "..") {
			return nil, fmt.Errorf("spec declares an invalid property name %q", n)
		}
		v, ok := lookup(manifest, n)
		if !ok || v == nil {
			v = normalize(job.Properties[n].Default)
		}
		if v == nil {
			continue
		}
		if err := set(out, strings.Split(n, "."), v); err != nil {
			return nil, fmt.Errorf("property %q: %w", n, err)
		}
	}
	return out, nil
}

func declared(job Job, name string) bool {
	if _, ok := job.Properties[name]; ok {
		return true
	}
	for n := range job.Properties {
		if strings.HasPrefix(n, name+".") || strings.HasPrefix(name, n+".") {
			return true
		}
	}
	return false
}

// lookup walks a dotted path through nested maps.
func lookup(m map[string]any, name string) (any, bool) {
	if m == nil {
		return nil, false
	}
	var cur any = m
	for _, k := range strings.Split(name, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		cur, ok = mm[k]
		if !ok {
			return nil, false
		}
	}
	return cur, true
}

func set(m map[string]any, keys []string, v any) error {
	for i, k := range keys[:len(keys)-1] {
		next, ok := m[k]
		if !ok {
			nm := map[string]any{}
			m[k] = nm
			m = nm
			continue
		}
		nm, ok := next.(map[string]any)
		if !ok {
			return fmt.Errorf("%s is not a map", strings.Join(keys[:i+1], "."))
		}
		m = nm
	}
	last := keys[len(keys)-1]
	if existing, ok := m[last].(map[string]any); ok {
		if vm, ok := v.(map[string]any); ok {
			for k, x := range vm {
				if _, has := existing[k]; !has {
					existing[k] = x
				}
			}
			return nil
		}
	}
	m[last] = v
	return nil
}

// normalize turns YAML-decoded values (which may hold map[any]any) into
// map[string]any and []any throughout, copying as it goes.
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		return normalizeMap(x)
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[fmt.Sprint(k)] = normalize(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalize(e)
		}
		return out
	default:
		return v
	}
}

func normalizeMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, e := range m {
		out[k] = normalize(e)
	}
	return out
}

func toJSON(v any) (string, error) {
	b, err := json.Marshal(normalize(v))
	if err != nil {
		return "", fmt.Errorf("toJSON: %w", err)
	}
	return string(b), nil
}

func toYAML(v any) (string, error) {
	b, err := yaml.Marshal(normalize(v))
	if err != nil {
		return "", fmt.Errorf("toYAML: %w", err)
	}
	return strings.TrimSuffix(string(b), "\n"), nil
}

// quote renders a value as a double-quoted string literal (JSON and YAML
// compatible).
func quote(v any) (string, error) {
	s := fmt.Sprint(v)
	if str, ok := v.(string); ok {
		s = str
	}
	b, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("quote: %w", err)
	}
	return string(b), nil
}

// join joins a list with sep: {{ join "," (p "hosts") }} or {{ p "hosts" | join "," }}.
func join(sep string, list any) (string, error) {
	switch x := list.(type) {
	case []string:
		return strings.Join(x, sep), nil
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = fmt.Sprint(e)
		}
		return strings.Join(parts, sep), nil
	case nil:
		return "", nil
	default:
		return "", fmt.Errorf("join: %T is not a list", list)
	}
}

// indent prefixes every non-empty line of text with n spaces.
func indent(n int, text string) string {
	pad := strings.Repeat(" ", n)
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = pad + l
		}
	}
	return strings.Join(lines, "\n")
}

func hashFiles(files []File) string {
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00%o\x00%d\x00", f.Path, f.Mode.Perm(), len(f.Content))
		h.Write(f.Content)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// gzipWriters keeps compressors for Archive: a deflate compressor at best
// compression costs about a megabyte to make, far more than compressing a
// job's few small files, and a deploy archives every changed instance's jobs.
var gzipWriters = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(io.Discard, gzip.BestCompression) // the level is valid
	return zw
}}

// Archive returns the rendered job as a deterministic tar.gz: entries sorted,
// directories included, owner root, modification time zero. The same
// rendering always yields the same bytes.
func (r Rendered) Archive() ([]byte, error) {
	var buf bytes.Buffer
	zw := gzipWriters.Get().(*gzip.Writer)
	defer gzipWriters.Put(zw)
	zw.Reset(&buf)
	tw := tar.NewWriter(zw)
	dirs := map[string]bool{}
	for _, f := range r.Files {
		for d := path.Dir(f.Path); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	type entry struct {
		name string
		file *File
	}
	var entries []entry
	for d := range dirs {
		entries = append(entries, entry{name: d + "/"})
	}
	for i := range r.Files {
		entries = append(entries, entry{name: r.Files[i].Path, file: &r.Files[i]})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Uname: "root", Gname: "root"}
		if e.file == nil {
			hdr.Typeflag = tar.TypeDir
			hdr.Mode = 0o755
		} else {
			hdr.Typeflag = tar.TypeReg
			hdr.Mode = int64(e.file.Mode.Perm())
			hdr.Size = int64(len(e.file.Content))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("archive job %s: %w", r.Job, err)
		}
		if e.file != nil {
			if _, err := tw.Write(e.file.Content); err != nil {
				return nil, fmt.Errorf("archive job %s: %w", r.Job, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("archive job %s: %w", r.Job, err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("archive job %s: %w", r.Job, err)
	}
	return buf.Bytes(), nil
}
