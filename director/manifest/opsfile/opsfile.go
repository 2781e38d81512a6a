// Package opsfile applies BOSH operations files to a YAML node tree.
//
// An ops file is a YAML list of operations:
//
//   - type: replace
//     path: /instance_groups/name=web/instances
//     value: 3
//   - type: remove
//     path: /instance_groups/name=web/jobs/name=debug?
//
// "replace" sets the value at path (adding a map key, appending with "/-",
// inserting with ":before"/":after"); "remove" deletes it. The path syntax is
// described at ParsePointer. Operations apply in order, each to the result of
// the previous one; every error names the ops file, the operation's index and
// its path, and the position of the operation in its file.
package opsfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Operation types.
const (
	Replace = "replace"
	Remove  = "remove"
)

// Op is one operation of an ops file.
type Op struct {
	Type  string
	Path  Pointer
	Value *yaml.Node // nil for remove

	File         string // where the operation was written, for errors
	Index        int    // its position in the file's list, from 0
	Line, Column int
	// Ignored are the keys of the operation besides type, path, value and
	// error, as "file:line:col: operation [i]: field "name" ignored": the
	// BOSH CLI ignores them (public ops files carry name: and release:
	// on their operations), so they are warned about, never fatal.
	Ignored []string
}

// Error is a problem with an ops file or with applying one operation.
type Error struct {
	File         string
	Line, Column int
	Index        int    // the operation's index, -1 when the file itself is wrong
	Path         string // the operation's path as written
	Message      string
}

func (e *Error) Error() string {
	pos := e.File
	if e.Line > 0 {
		pos = fmt.Sprintf("%s:%d:%d", e.File, e.Line, e.Column)
	}
	if e.Index < 0 {
		return fmt.Sprintf("%s: %s", pos, e.Message)
	}
	if e.Path == "" {
		return fmt.Sprintf("%s: operation [%d]: %s", pos, e.Index, e.Message)
	}
	return fmt.Sprintf("%s: operation [%d] %s: %s", pos, e.Index, e.Path, e.Message)
}

// Errors is every problem found parsing one ops file.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Parse reads an ops file. It checks every operation and reports all
// problems together.
func Parse(filename string, data []byte) (ops []Op, err error) {
	defer func() {
		if r := recover(); r != nil {
			ops, err = nil, Errors{{File: filename, Index: -1, Message: fmt.Sprintf("invalid YAML: %v", r)}}
		}
	}()
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, Errors{{File: filename, Index: -1, Message: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil, nil
	}
	if root.Kind != yaml.SequenceNode {
		return nil, Errors{{File: filename, Line: root.Line, Column: root.Column, Index: -1, Message: "an ops file must be a list of operations"}}
	}
	var errs Errors
	for i, item := range root.Content {
		op, opErrs := parseOp(filename, i, item)
		errs = append(errs, opErrs...)
		if len(opErrs) == 0 {
			ops = append(ops, op)
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return ops, nil
}

func parseOp(file string, i int, n *yaml.Node) (Op, Errors) {
	op := Op{File: file, Index: i, Line: n.Line, Column: n.Column}
	var errs Errors
	fail := func(at *yaml.Node, path, format string, args ...any) {
		errs = append(errs, &Error{File: file, Line: at.Line, Column: at.Column, Index: i, Path: path, Message: fmt.Sprintf(format, args...)})
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n == nil || n.Kind != yaml.MappingNode {
		fail(n, "", "an operation must be a map with type, path and (for replace) value")
		return op, errs
	}
	var typeNode, pathNode *yaml.Node
	hasValue := false
	for j := 0; j+1 < len(n.Content); j += 2 {
		k, v := n.Content[j], n.Content[j+1]
		switch k.Value {
		case "type":
			typeNode = v
		case "path":
			pathNode = v
		case "value":
			hasValue = true
			op.Value = v
		case "error":
			// BOSH's optional message for failed operations; ours are
			// descriptive already.
		default:
			w := &Error{File: file, Line: k.Line, Column: k.Column, Index: i, Message: fmt.Sprintf("field %q ignored (an operation has type, path, value and error)", k.Value)}
			op.Ignored = append(op.Ignored, w.Error())
		}
	}
	rawPath := ""
	if pathNode == nil {
		fail(n, "", "missing path")
	} else if pathNode.Kind != yaml.ScalarNode {
		fail(pathNode, "", "path must be a string")
	} else {
		rawPath = pathNode.Value
		p, err := ParsePointer(rawPath)
		if err != nil {
			fail(pathNode, rawPath, "%v", err)
		}
		op.Path = p
		op.Line, op.Column = pathNode.Line, pathNode.Column
	}
	switch {
	case typeNode == nil:
		fail(n, rawPath, "missing type (replace or remove)")
	case typeNode.Value == Replace:
		op.Type = Replace
		if !hasValue {
			fail(n, rawPath, "a replace needs a value")
		}
	case typeNode.Value == Remove:
		op.Type = Remove
		if hasValue {
			fail(n, rawPath, "a remove takes no value")
		}
		if pathNode != nil && len(op.Path.tokens) == 0 && rawPath == "/" {
			fail(pathNode, rawPath, "cannot remove the whole document")
		}
	default:
		fail(typeNode, rawPath, "unknown operation type %q: use replace or remove", typeNode.Value)
	}
	return op, errs
}

// Apply applies ops in order to the document root and returns the new root
// (a replace of "/" swaps it). Inserted values are deep copies of the ops'
// values; when inserted is not nil each of their nodes is recorded there with
// the ops file it came from, so later errors can name that file.
func Apply(root *yaml.Node, ops []Op, inserted map[*yaml.Node]string) (*yaml.Node, error) {
	if root != nil && root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	for _, op := range ops {
		var err error
		root, err = apply(root, op, inserted)
		if err != nil {
			return nil, err
		}
	}
	return root, nil
}

func apply(root *yaml.Node, op Op, inserted map[*yaml.Node]string) (*yaml.Node, error) {
	fail := func(format string, args ...any) error {
		return &Error{File: op.File, Line: op.Line, Column: op.Column, Index: op.Index, Path: op.Path.String(), Message: fmt.Sprintf(format, args...)}
	}
	// failAt names the part of the path that failed when it is not the
	// whole path.
	failAt := func(at, format string, args ...any) error {
		if at != op.Path.String() {
			format += " (at " + strings.ReplaceAll(at, "%", "%%") + ")"
		}
		return fail(format, args...)
	}
	var val *yaml.Node
	if op.Type == Replace {
		budget := maxNodes
		var err error
		if val, err = clone(op.Value, op.File, inserted, 0, &budget); err != nil {
			return nil, fail("%v", err)
		}
	}
	value := func() *yaml.Node { return val }
	toks := op.Path.tokens
	if len(toks) == 0 {
		if op.Type == Remove {
			return nil, fail("cannot remove the whole document")
		}
		return value(), nil
	}
	if root == nil {
		root = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	}
	cur := root
	for i, t := range toks {
		last := i == len(toks)-1
		if cur.Kind == yaml.AliasNode {
			cur = cur.Alias
		}
		at := Pointer{tokens: toks[:i+1]}.String()
		switch t.kind {
		case keyToken:
			if cur.Kind == yaml.ScalarNode && cur.Tag == "!!null" && t.optional {
				*cur = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: cur.Line, Column: cur.Column}
			}
			if cur.Kind != yaml.MappingNode {
				return nil, failAt(at, "expected a map, found %s", kindName(cur))
			}
			j := keyIndex(cur, t.key)
			if last {
				switch {
				case op.Type == Remove && j < 0 && t.optional:
				case op.Type == Remove && j < 0:
					return nil, failAt(at, "no key %q%s", t.key, keysHint(cur))
				case op.Type == Remove:
					cur.Content = append(cur.Content[:j], cur.Content[j+2:]...)
				case j < 0 && !t.optional:
					return nil, failAt(at, "no key %q%s (end the path with ? to add it)", t.key, keysHint(cur))
				case j < 0:
					k := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: t.key}
					if inserted != nil {
						inserted[k] = op.File
					}
					cur.Content = append(cur.Content, k, value())
				default:
					cur.Content[j+1] = value()
				}
				return root, nil
			}
			if j < 0 {
				if !t.optional {
					return nil, failAt(at, "no key %q%s", t.key, keysHint(cur))
				}
				if op.Type == Remove {
					return root, nil
				}
				k := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: t.key}
				v := container(toks[i+1])
				if inserted != nil {
					inserted[k], inserted[v] = op.File, op.File
				}
				cur.Content = append(cur.Content, k, v)
				cur = v
				continue
			}
			next := cur.Content[j+1]
			if next.Kind == yaml.ScalarNode && next.Tag == "!!null" && t.optional {
				if op.Type == Remove {
					return root, nil
				}
				*next = *container(toks[i+1])
			}
			cur = next
		case indexToken, appendToken, matchToken:
			if cur.Kind == yaml.ScalarNode && cur.Tag == "!!null" && (t.optional || t.kind == appendToken) {
				*cur = yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Line: cur.Line, Column: cur.Column}
			}
			if cur.Kind != yaml.SequenceNode {
				return nil, failAt(at, "expected a list, found %s", kindName(cur))
			}
			if t.kind == appendToken {
				if op.Type == Remove {
					return nil, failAt(at, "- (after the last item) cannot be removed")
				}
				cur.Content = append(cur.Content, value())
				return root, nil
			}
			idx := t.index
			if t.kind == matchToken {
				found := matching(cur, t.key, t.value)
				switch {
				case len(found) > 1:
					return nil, failAt(at, "%d items have %s=%s, expected one", len(found), t.key, t.value)
				case len(found) == 0 && !t.optional:
					return nil, failAt(at, "no item has %s=%s%s", t.key, t.value, matchHint(cur, t.key))
				case len(found) == 0 && op.Type == Remove:
					return root, nil
				case len(found) == 0:
					// Optional: create the item, then go on into it
					// (or make it the value).
					if last {
						cur.Content = append(cur.Content, value())
						return root, nil
					}
					item := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
					k := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: t.key}
					v := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: t.value}
					item.Content = []*yaml.Node{k, v}
					if inserted != nil {
						inserted[item], inserted[k], inserted[v] = op.File, op.File, op.File
					}
					cur.Content = append(cur.Content, item)
					cur = item
					continue
				}
				idx = found[0]
			}
			switch t.modifier {
			case modPrev:
				idx--
			case modNext:
				idx++
			}
			if t.modifier == modBefore || t.modifier == modAfter {
				if op.Type == Remove {
					return nil, failAt(at, ":%s only inserts; it cannot be removed", t.modifier)
				}
				if idx >= len(cur.Content) {
					return nil, failAt(at, "index %d is out of range: the list has %d items", idx, len(cur.Content))
				}
				if t.modifier == modAfter {
					idx++
				}
				cur.Content = append(cur.Content[:idx], append([]*yaml.Node{value()}, cur.Content[idx:]...)...)
				return root, nil
			}
			if idx < 0 || idx >= len(cur.Content) {
				return nil, failAt(at, "index %d is out of range: the list has %d items", idx, len(cur.Content))
			}
			if last {
				if op.Type == Remove {
					cur.Content = append(cur.Content[:idx], cur.Content[idx+1:]...)
				} else {
					cur.Content[idx] = value()
				}
				return root, nil
			}
			cur = cur.Content[idx]
		}
	}
	return root, nil
}

// container is an empty map or list, whichever the next token needs.
func container(next token) *yaml.Node {
	if next.kind == keyToken {
		return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	}
	return &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
}

func keyIndex(m *yaml.Node, key string) int {
	for j := 0; j+1 < len(m.Content); j += 2 {
		if m.Content[j].Kind == yaml.ScalarNode && m.Content[j].Value == key {
			return j
		}
	}
	return -1
}

func matching(seq *yaml.Node, key, value string) []int {
	var out []int
	for i, item := range seq.Content {
		if item.Kind == yaml.AliasNode {
			item = item.Alias
		}
		if item == nil || item.Kind != yaml.MappingNode {
			continue
		}
		if j := keyIndex(item, key); j >= 0 {
			v := item.Content[j+1]
			if v.Kind == yaml.ScalarNode && v.Value == value {
				out = append(out, i)
			}
		}
	}
	return out
}

func keysHint(m *yaml.Node) string {
	var keys []string
	for j := 0; j+1 < len(m.Content); j += 2 {
		keys = append(keys, strconv.Quote(m.Content[j].Value))
	}
	if len(keys) == 0 {
		return " (the map is empty)"
	}
	sort.Strings(keys)
	if len(keys) > 12 {
		keys = append(keys[:12], "...")
	}
	return " (keys: " + strings.Join(keys, ", ") + ")"
}

func matchHint(seq *yaml.Node, key string) string {
	var vals []string
	for _, item := range seq.Content {
		if item.Kind != yaml.MappingNode {
			continue
		}
		if j := keyIndex(item, key); j >= 0 && item.Content[j+1].Kind == yaml.ScalarNode {
			vals = append(vals, strconv.Quote(item.Content[j+1].Value))
		}
	}
	if len(vals) == 0 {
		return ""
	}
	if len(vals) > 12 {
		vals = append(vals[:12], "...")
	}
	return fmt.Sprintf(" (%s: %s)", key, strings.Join(vals, ", "))
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a map"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		return "a scalar"
	}
	return "nothing"
}

// maxNodes bounds the size of one inserted value once aliases are expanded,
// so a small ops file cannot make Apply allocate without bound.
const maxNodes = 1 << 16

var errTooLarge = errors.New("the value is too large once its aliases are expanded")

// clone deep-copies n, following aliases (the copy holds no anchors). It
// fails when the copy would exceed *budget nodes.
func clone(n *yaml.Node, file string, inserted map[*yaml.Node]string, depth int, budget *int) (*yaml.Node, error) {
	*budget--
	if *budget < 0 || depth > 200 {
		return nil, errTooLarge
	}
	if n == nil {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null", Line: n.Line, Column: n.Column}, nil
		}
		return clone(n.Alias, file, inserted, depth+1, budget)
	}
	c := *n
	c.Anchor = ""
	c.Alias = nil
	if len(n.Content) > 0 {
		c.Content = make([]*yaml.Node, len(n.Content))
		for i, ch := range n.Content {
			cc, err := clone(ch, file, inserted, depth+1, budget)
			if err != nil {
				return nil, err
			}
			c.Content[i] = cc
		}
	}
	if inserted != nil {
		inserted[&c] = file
	}
	return &c, nil
}

// Find returns the node at path in root without changing anything, for
// `director interpolate --path`. Optional markers are ignored; a path that
// does not exist is an error naming the missing part.
func Find(root *yaml.Node, path string) (*yaml.Node, error) {
	p, err := ParsePointer(path)
	if err != nil {
		return nil, err
	}
	if root != nil && root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	cur := root
	for i, t := range p.tokens {
		at := Pointer{tokens: p.tokens[:i+1]}.String()
		if cur == nil {
			return nil, fmt.Errorf("%s: not found", at)
		}
		if cur.Kind == yaml.AliasNode {
			cur = cur.Alias
		}
		switch t.kind {
		case keyToken:
			if cur.Kind != yaml.MappingNode {
				return nil, fmt.Errorf("%s: expected a map, found %s", at, kindName(cur))
			}
			j := keyIndex(cur, t.key)
			if j < 0 {
				return nil, fmt.Errorf("%s: no key %q%s", at, t.key, keysHint(cur))
			}
			cur = cur.Content[j+1]
		case indexToken, matchToken:
			if cur.Kind != yaml.SequenceNode {
				return nil, fmt.Errorf("%s: expected a list, found %s", at, kindName(cur))
			}
			idx := t.index
			if t.kind == matchToken {
				found := matching(cur, t.key, t.value)
				if len(found) != 1 {
					return nil, fmt.Errorf("%s: %d items have %s=%s, expected one", at, len(found), t.key, t.value)
				}
				idx = found[0]
			}
			switch t.modifier {
			case modPrev:
				idx--
			case modNext:
				idx++
			case modBefore, modAfter:
				return nil, fmt.Errorf("%s: :%s does not name a value", at, t.modifier)
			}
			if idx < 0 || idx >= len(cur.Content) {
				return nil, fmt.Errorf("%s: index %d is out of range: the list has %d items", at, idx, len(cur.Content))
			}
			cur = cur.Content[idx]
		case appendToken:
			return nil, fmt.Errorf("%s: - does not name a value", at)
		}
	}
	return cur, nil
}
