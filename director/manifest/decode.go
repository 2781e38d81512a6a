package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/compleat/compleat/director/yamllimit"
)

// maxNodes bounds how many YAML nodes one document may expand to once
// aliases are followed, so a small file cannot make the parser allocate
// without bound ("billion laughs").
const maxNodes = 1 << 18

// maxDepth bounds nesting, for the same reason.
const maxDepth = 200

// decoder turns a YAML node tree into typed values, recording the position of
// every field it visits and collecting every problem instead of stopping at
// the first.
type decoder struct {
	file    string
	origins map[*yaml.Node]string // nodes that came from another file (ops files)
	errs    Errors
	pos     map[string]Position
	budget  int
}

func newDecoder(file string, origins map[*yaml.Node]string) *decoder {
	return &decoder{file: file, origins: origins, pos: map[string]Position{}, budget: maxNodes}
}

func (d *decoder) at(n *yaml.Node) Position {
	file := d.file
	if f, ok := d.origins[n]; ok {
		file = f
	}
	if n == nil {
		return Position{File: file}
	}
	return Position{File: file, Line: n.Line, Column: n.Column}
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, &Error{Position: d.at(n), Path: path, Message: fmt.Sprintf(format, args...)})
}

// mark records where the value at path was written.
func (d *decoder) mark(n *yaml.Node, path string) {
	if _, ok := d.pos[path]; !ok {
		d.pos[path] = d.at(n)
	}
}

var unresolved = regexp.MustCompile(`\(\(!?[-/._\w\pL]+\)\)`)

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseYAML reads exactly one YAML document and returns its root node (never
// a DocumentNode). Syntax errors come back as Errors with the line yaml
// reports.
func parseYAML(file string, data []byte) (root *yaml.Node, err error) {
	defer func() {
		// The YAML library has panicked on some malformed inputs in the
		// past; a manifest must never take the director down.
		if r := recover(); r != nil {
			root, err = nil, Errors{{Position: Position{File: file}, Message: fmt.Sprintf("invalid YAML: %v", r)}}
		}
	}()
	if err := yamllimit.Check(file, data, yamllimit.Config); err != nil {
		return nil, Errors{{Position: Position{File: file}, Message: strings.TrimPrefix(err.Error(), file+": ")}}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, Errors{{Position: Position{File: file}, Message: "file is empty"}}
		}
		return nil, yamlError(file, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, Errors{{Position: Position{File: file, Line: extra.Line, Column: extra.Column}, Message: "file holds more than one YAML document"}}
	} else if !errors.Is(err, io.EOF) {
		return nil, yamlError(file, err)
	}
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil, Errors{{Position: Position{File: file}, Message: "file is empty"}}
		}
		return doc.Content[0], nil
	}
	return &doc, nil
}

func yamlError(file string, err error) error {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return Errors{{Position: Position{File: file, Line: line}, Message: "invalid YAML: " + m[2]}}
	}
	return Errors{{Position: Position{File: file}, Message: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}}
}

func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < maxDepth; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	n = resolve(n)
	return n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

func kindName(n *yaml.Node) string {
	n = resolve(n)
	if n == nil {
		return "nothing"
	}
	switch n.Kind {
	case yaml.MappingNode:
		return "a map"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return "null"
		case "!!int":
			return "an integer"
		case "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		}
		if m := unresolved.FindString(n.Value); m != "" {
			return "the unresolved variable " + m
		}
		return "a string"
	}
	return "an unknown node"
}

// pair is one key and its value in a mapping.
type pair struct {
	key, val *yaml.Node
}

// pairs lists a mapping's entries with YAML merge keys (<<) expanded; keys
// written in the mapping itself win over merged ones. A null node is an empty
// mapping.
func (d *decoder) pairs(n *yaml.Node, path string) ([]pair, bool) {
	n = resolve(n)
	if isNull(n) {
		return nil, true
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "must be a map, not %s", kindName(n))
		return nil, false
	}
	var out []pair
	seen := map[string]*yaml.Node{}
	var merged []pair
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			for _, src := range mergeSources(v) {
				if src.Kind != yaml.MappingNode {
					d.errorf(v, path, "merge key (<<) must name a map")
					continue
				}
				for j := 0; j+1 < len(src.Content); j += 2 {
					merged = append(merged, pair{src.Content[j], src.Content[j+1]})
				}
			}
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, path, "keys must be strings, not %s", kindName(k))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.errorf(k, join(path, k.Value), "key written twice (first at line %d)", first.Line)
			continue
		}
		seen[k.Value] = k
		out = append(out, pair{k, v})
	}
	for _, p := range merged {
		if _, dup := seen[p.key.Value]; p.key.Kind == yaml.ScalarNode && !dup {
			seen[p.key.Value] = p.key
			out = append(out, p)
		}
	}
	return out, true
}

func mergeSources(v *yaml.Node) []*yaml.Node {
	v = resolve(v)
	if v.Kind == yaml.SequenceNode {
		var out []*yaml.Node
		for _, c := range v.Content {
			out = append(out, resolve(c))
		}
		return out
	}
	return []*yaml.Node{v}
}

// fields is the decoding of one map-shaped object: a handler per known key.
type fields map[string]func(v *yaml.Node, path string)

// object decodes mapping n with the given handlers. Unknown keys and missing
// required keys are reported; a null value counts as absent. It returns the
// set of keys present.
func (d *decoder) object(n *yaml.Node, path string, fs fields, required ...string) map[string]bool {
	present := map[string]bool{}
	n = resolve(n)
	if n == nil {
		return present
	}
	d.mark(n, path)
	ps, ok := d.pairs(n, path)
	if !ok {
		return nil
	}
	for _, p := range ps {
		key := p.key.Value
		fp := join(path, key)
		h, known := fs[key]
		if !known {
			d.errorf(p.key, fp, "unknown field %q%s", key, suggest(key, fs))
			continue
		}
		d.mark(p.val, fp)
		if isNull(p.val) {
			continue
		}
		present[key] = true
		if h != nil {
			h(p.val, fp)
		}
	}
	for _, r := range required {
		if !present[r] {
			d.errorf(n, join(path, r), "missing required field %q", r)
		}
	}
	return present
}

// suggest names a known field close to an unknown one, for typos.
func suggest(key string, fs fields) string {
	best, bestDist := "", 3
	for k := range fs {
		dist := editDistance(key, k)
		if dist < bestDist || (dist == bestDist && best != "" && k < best) {
			best, bestDist = k, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// list returns a sequence's items; null is an empty list.
func (d *decoder) list(n *yaml.Node, path string) []*yaml.Node {
	n = resolve(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, path, "must be a list, not %s", kindName(n))
		return nil
	}
	for i, c := range n.Content {
		d.mark(c, index(path, i))
	}
	return n.Content
}

func (d *decoder) str(n *yaml.Node, path string) string {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		d.errorf(n, path, "must be a string, not %s", kindName(n))
		return ""
	}
	return n.Value
}

// name is a non-empty string.
func (d *decoder) name(n *yaml.Node, path string) string {
	s := d.str(resolve(n), path)
	if s == "" && resolve(n).Kind == yaml.ScalarNode {
		d.errorf(n, path, "must not be empty")
	}
	return s
}

func (d *decoder) integer(n *yaml.Node, path string) int {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
		d.errorf(n, path, "must be an integer, not %s", kindName(n))
		return 0
	}
	var v int
	if err := n.Decode(&v); err != nil {
		d.errorf(n, path, "must be an integer: %q is out of range", n.Value)
		return 0
	}
	return v
}

// natural is an integer >= min.
func (d *decoder) natural(n *yaml.Node, path string, lo int) int {
	before := len(d.errs)
	v := d.integer(n, path)
	if len(d.errs) == before && v < lo {
		d.errorf(n, path, "must be at least %d, not %d", lo, v)
	}
	return v
}

func (d *decoder) boolean(n *yaml.Node, path string) bool {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		d.errorf(n, path, "must be true or false, not %s", kindName(n))
		return false
	}
	var v bool
	_ = n.Decode(&v)
	return v
}

func (d *decoder) strs(n *yaml.Node, path string) []string {
	items := d.list(n, path)
	out := make([]string, 0, len(items))
	for i, c := range items {
		out = append(out, d.name(c, index(path, i)))
	}
	return out
}

// names is a list of unique non-empty strings.
func (d *decoder) names(n *yaml.Node, path string) []string {
	items := d.list(n, path)
	out := make([]string, 0, len(items))
	seen := map[string]bool{}
	for i, c := range items {
		s := d.name(c, index(path, i))
		if s == "" {
			continue
		}
		if seen[s] {
			d.errorf(c, index(path, i), "%q is listed twice", s)
			continue
		}
		seen[s] = true
		out = append(out, s)
	}
	return out
}

// props decodes a free-form map (properties, cloud_properties, env).
func (d *decoder) props(n *yaml.Node, path string) map[string]any {
	n = resolve(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "must be a map, not %s", kindName(n))
		return nil
	}
	v, _ := d.value(n, path, 0).(map[string]any)
	return v
}

// value converts any node to plain Go values: map[string]any, []any, string,
// int, float64, bool or nil.
func (d *decoder) value(n *yaml.Node, path string, depth int) any {
	n = resolve(n)
	if n == nil {
		return nil
	}
	d.budget--
	if d.budget < 0 || depth > maxDepth {
		if d.budget == -1 || depth == maxDepth+1 {
			d.errorf(n, path, "document is too large or too deeply nested once aliases are expanded")
		}
		return nil
	}
	switch n.Kind {
	case yaml.MappingNode:
		ps, _ := d.pairs(n, path)
		m := make(map[string]any, len(ps))
		for _, p := range ps {
			m[p.key.Value] = d.value(p.val, join(path, p.key.Value), depth+1)
		}
		return m
	case yaml.SequenceNode:
		s := make([]any, len(n.Content))
		for i, c := range n.Content {
			s[i] = d.value(c, index(path, i), depth+1)
		}
		return s
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return nil
		case "!!bool", "!!int", "!!float":
			var v any
			if err := n.Decode(&v); err == nil {
				return v
			}
			return n.Value
		case "!!binary":
			var v any
			if err := n.Decode(&v); err == nil {
				return v
			}
		}
		return n.Value
	}
	return nil
}
