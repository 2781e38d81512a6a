// Package interpolate replaces ((var)) references in a YAML node tree with
// values from variable sources, with BOSH's semantics:
//
//   - a value that is exactly "((name))" is replaced by the variable's value,
//     whatever its shape (string, number, map, list);
//   - a reference inside a longer string ("https://((host)):((port))") is
//     replaced by the value's text; the value must then be a string, number
//     or boolean;
//   - "((name.key.sub))" reads key, then sub, inside the variable's value
//     (certificates: ((tls.certificate)), ((tls.private_key)), ((tls.ca)));
//   - "((!name))" is the same reference as "((name))": the mark exists in
//     BOSH manifests to keep a value from being read as a YAML tag and is
//     dropped before lookup;
//   - names may hold letters, digits, "_", "-", "." (path separator) and
//     "/" (director-absolute names such as ((/director/dep/password))).
//
// A reference no source knows is left in place unless Options.Strict is set
// (BOSH's --var-errs), in which case each one is reported by name and
// position. Errors never contain a variable's value.
package interpolate

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/compleat/compleat/director/yamllimit"
)

// Source resolves variables by name (the part before the first ".").
// found=false lets the next source try; an error stops interpolation.
type Source interface {
	Get(ctx context.Context, name string) (value any, found bool, err error)
}

// Vars is a fixed set of variables, as given with -v and -l.
type Vars map[string]any

var _ Source = Vars(nil)

// Get returns the variable called name.
func (v Vars) Get(_ context.Context, name string) (any, bool, error) {
	val, ok := v[name]
	return val, ok, nil
}

// Sources tries each source in order; the first that knows a name wins.
type Sources []Source

var _ Source = Sources(nil)

// Get asks each source in turn.
func (s Sources) Get(ctx context.Context, name string) (any, bool, error) {
	for _, src := range s {
		if src == nil {
			continue
		}
		v, ok, err := src.Get(ctx, name)
		if err != nil || ok {
			return v, ok, err
		}
	}
	return nil, false, nil
}

// Options control Interpolate.
type Options struct {
	// Strict reports every reference no source knows (BOSH's --var-errs);
	// otherwise they stay in the document as written.
	Strict bool
}

// Error is a problem with one reference.
type Error struct {
	Line, Column int
	Path         string // field path of the value holding the reference
	Name         string // the variable as written, without (( ))
	Message      string
	// Node is the node holding the reference, so callers can tell which
	// file it came from.
	Node *yaml.Node
}

func (e *Error) Error() string {
	return fmt.Sprintf("%d:%d: %s: %s", e.Line, e.Column, e.Path, e.Message)
}

// Errors is every problem found in one Interpolate call, in document order.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// MissingNames lists the distinct names no source knew, sorted.
func (es Errors) MissingNames() []string {
	seen := map[string]bool{}
	var out []string
	for _, e := range es {
		if e.Message == missingMsg(e.Name) && !seen[e.Name] {
			seen[e.Name] = true
			out = append(out, e.Name)
		}
	}
	sort.Strings(out)
	return out
}

func missingMsg(name string) string { return fmt.Sprintf("variable %q is not set", name) }

// refPattern matches one reference.
var refPattern = regexp.MustCompile(`\(\((!?[-/._\w\pL]+)\)\)`)

// References lists the distinct variable names (before any ".") referenced
// in the tree, in order of first use. The director uses it to know which
// variables to generate.
func References(root *yaml.Node) []string {
	var out []string
	seen := map[string]bool{}
	walk(root, "", func(n *yaml.Node, _ string) {
		for _, m := range refPattern.FindAllStringSubmatch(n.Value, -1) {
			name, _ := split(m[1])
			if !seen[name] {
				seen[name] = true
				out = append(out, name)
			}
		}
	})
	return out
}

// walk visits every scalar node (keys included) once, with its path.
func walk(n *yaml.Node, path string, visit func(*yaml.Node, string)) {
	seen := map[*yaml.Node]bool{}
	var rec func(n *yaml.Node, path string, depth int)
	rec = func(n *yaml.Node, path string, depth int) {
		if n == nil || seen[n] || depth > 500 {
			return
		}
		seen[n] = true
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				rec(c, path, depth+1)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				rec(k, path, depth+1)
				rec(v, join(path, k.Value), depth+1)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				rec(c, fmt.Sprintf("%s[%d]", path, i), depth+1)
			}
		case yaml.ScalarNode:
			visit(n, path)
		}
	}
	rec(n, path, 0)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// split turns "!tls.ca" into the name "tls" and the keys ["ca"].
func split(ref string) (string, []string) {
	ref = strings.TrimPrefix(ref, "!")
	parts := strings.Split(ref, ".")
	return parts[0], parts[1:]
}

// Interpolate replaces the references in root, in place. Values from
// sources are turned into YAML nodes placed at the reference's line and
// column, so later errors about them point at the reference.
func Interpolate(ctx context.Context, root *yaml.Node, src Source, opts Options) error {
	var errs Errors
	cache := map[string]lookup{}
	get := func(name string) lookup {
		if l, ok := cache[name]; ok {
			return l
		}
		var l lookup
		if src != nil {
			l.value, l.found, l.err = src.Get(ctx, name)
		}
		cache[name] = l
		return l
	}
	fail := func(n *yaml.Node, path, name, format string, args ...any) {
		errs = append(errs, &Error{Line: n.Line, Column: n.Column, Path: path, Name: name, Node: n, Message: fmt.Sprintf(format, args...)})
	}
	walk(root, "", func(n *yaml.Node, path string) {
		if !strings.Contains(n.Value, "((") {
			return
		}
		matches := refPattern.FindAllStringSubmatchIndex(n.Value, -1)
		if len(matches) == 0 {
			return
		}
		// Whole value: the node takes the variable's shape.
		if len(matches) == 1 && matches[0][0] == 0 && matches[0][1] == len(n.Value) {
			ref := n.Value[matches[0][2]:matches[0][3]]
			v, ok := resolveRef(ref, get, func(format string, args ...any) { fail(n, path, ref, format, args...) }, opts.Strict)
			if !ok {
				return
			}
			var repl yaml.Node
			if err := repl.Encode(v); err != nil {
				fail(n, path, ref, "variable %q cannot be written as YAML", ref)
				return
			}
			place(&repl, n.Line, n.Column)
			if repl.Kind == yaml.DocumentNode && len(repl.Content) == 1 {
				repl = *repl.Content[0]
			}
			repl.Anchor = n.Anchor
			*n = repl
			return
		}
		// Inside a string: every reference becomes text.
		var b strings.Builder
		last := 0
		changed := false
		for _, m := range matches {
			b.WriteString(n.Value[last:m[0]])
			last = m[1]
			ref := n.Value[m[2]:m[3]]
			v, ok := resolveRef(ref, get, func(format string, args ...any) { fail(n, path, ref, format, args...) }, opts.Strict)
			if !ok {
				b.WriteString(n.Value[m[0]:m[1]])
				continue
			}
			s, isText := text(v)
			if !isText {
				fail(n, path, ref, "variable %q is %s: it cannot be used inside a string", ref, shape(v))
				b.WriteString(n.Value[m[0]:m[1]])
				continue
			}
			b.WriteString(s)
			changed = true
		}
		b.WriteString(n.Value[last:])
		if changed {
			n.Value = b.String()
			n.Tag = "!!str"
			n.Style = 0
		}
	})
	if len(errs) > 0 {
		return errs
	}
	return nil
}

type lookup struct {
	value any
	found bool
	err   error
}

// resolveRef looks the reference up and walks its keys. ok=false means
// leave the reference as written (unknown and not strict) or failed.
func resolveRef(ref string, get func(string) lookup, fail func(string, ...any), strict bool) (any, bool) {
	name, keys := split(ref)
	l := get(name)
	if l.err != nil {
		fail("variable %q: %v", name, l.err)
		return nil, false
	}
	if !l.found {
		if strict {
			fail("%s", missingMsg(name))
		}
		return nil, false
	}
	v := l.value
	for i, k := range keys {
		m, ok := asMap(v)
		if !ok {
			fail("variable %q: %q is %s, it has no key %q", name, strings.Join(append([]string{name}, keys[:i]...), "."), shape(v), k)
			return nil, false
		}
		next, ok := m[k]
		if !ok {
			if i == 0 {
				fail("variable %q has no key %q", name, k)
			} else {
				fail("variable %q: %q has no key %q", name, strings.Join(append([]string{name}, keys[:i]...), "."), k)
			}
			return nil, false
		}
		v = next
	}
	return v, true
}

func asMap(v any) (map[string]any, bool) {
	switch m := v.(type) {
	case map[string]any:
		return m, true
	case map[string]string:
		out := make(map[string]any, len(m))
		for k, s := range m {
			out[k] = s
		}
		return out, true
	case map[any]any:
		out := make(map[string]any, len(m))
		for k, s := range m {
			out[fmt.Sprint(k)] = s
		}
		return out, true
	}
	return nil, false
}

// text is the value as it appears inside a string.
func text(v any) (string, bool) {
	switch t := v.(type) {
	case string:
		return t, true
	case bool:
		return strconv.FormatBool(t), true
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return fmt.Sprint(t), true
	case float32:
		return strconv.FormatFloat(float64(t), 'g', -1, 32), true
	case float64:
		return strconv.FormatFloat(t, 'g', -1, 64), true
	case nil:
		return "", true
	}
	return "", false
}

// shape names the kind of a value without showing it.
func shape(v any) string {
	switch v.(type) {
	case map[string]any, map[any]any, map[string]string:
		return "a map"
	case []any, []string:
		return "a list"
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	}
	return "a value"
}

func place(n *yaml.Node, line, col int) {
	n.Line, n.Column = line, col
	for _, c := range n.Content {
		place(c, line, col)
	}
}

// ParseVar reads one -v argument, "name=value". The value is a string,
// except that true, false and plain integers (0, 42, -7; no leading zeros)
// are read as such so that ((instances)) can fill an integer field.
func ParseVar(arg string) (name string, value any, err error) {
	name, raw, ok := strings.Cut(arg, "=")
	if !ok || name == "" {
		return "", nil, fmt.Errorf("variable %q: want name=value", name)
	}
	if !refPattern.MatchString("(("+name+"))") || strings.Contains(name, ".") {
		return "", nil, fmt.Errorf("variable %q: a name holds only letters, digits, _, - and /", name)
	}
	switch {
	case raw == "true":
		return name, true, nil
	case raw == "false":
		return name, false, nil
	case plainInt.MatchString(raw):
		if n, err := strconv.Atoi(raw); err == nil {
			return name, n, nil
		}
	}
	return name, raw, nil
}

var plainInt = regexp.MustCompile(`^-?(0|[1-9][0-9]{0,17})$`)

// ParseVarsFile reads a -l file: a YAML map of variable names to values.
func ParseVarsFile(filename string, data []byte) (Vars, error) {
	if err := yamllimit.Check(filename, data, yamllimit.Vars); err != nil {
		return nil, err
	}
	var n yaml.Node
	if err := yaml.Unmarshal(data, &n); err != nil {
		return nil, fmt.Errorf("%s: %w", filename, err)
	}
	if n.Kind == 0 || (n.Kind == yaml.DocumentNode && len(n.Content) == 0) {
		return Vars{}, nil
	}
	root := &n
	if root.Kind == yaml.DocumentNode {
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return Vars{}, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d:%d: a vars file must be a map of variable names to values", filename, root.Line, root.Column)
	}
	var out map[string]any
	if err := root.Decode(&out); err != nil {
		// Not echoing the decoder's message: it may quote a value.
		return nil, fmt.Errorf("%s: a vars file must be a map with string keys", filename)
	}
	return Vars(out), nil
}
