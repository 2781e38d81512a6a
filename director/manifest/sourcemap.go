package manifest

import (
	"errors"
	"fmt"

	"go.yaml.in/yaml/v3"
)

// SourceMap says where each node of a prepared manifest (the text a client
// sends: ops files applied, written anew) was written: in the operator's
// file, or in an ops file. The director, which sees only the prepared
// text, uses it to name the operator's files and lines in its errors.
type SourceMap struct {
	Files []string `json:"files"`
	// Nodes are [line, column, file index, file line, file column]: the
	// node at line:column of the prepared text was written at file
	// line:column.
	Nodes [][5]int `json:"nodes"`
}

// maxSourceMapNodes bounds a source map: the decoder's node budget.
const maxSourceMapNodes = maxNodes

// SourceMap maps the nodes of out, the document as written by YAML, to
// where they were written.
func (doc *Document) SourceMap(out []byte) (*SourceMap, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(out, &root); err != nil {
		return nil, fmt.Errorf("source map of %s: %w", doc.Name, err)
	}
	m := &SourceMap{}
	files := map[string]int{}
	var walk func(orig, got *yaml.Node, depth int) error
	walk = func(orig, got *yaml.Node, depth int) error {
		if orig == nil || got == nil || depth > maxDepth {
			return nil
		}
		if got.Kind == yaml.DocumentNode && len(got.Content) == 1 {
			got = got.Content[0]
		}
		if orig.Kind == yaml.DocumentNode && len(orig.Content) == 1 {
			orig = orig.Content[0]
		}
		if orig.Kind != got.Kind || len(orig.Content) != len(got.Content) {
			return fmt.Errorf("source map of %s: the written document differs from the parsed one at line %d", doc.Name, got.Line)
		}
		if len(m.Nodes) >= maxSourceMapNodes {
			return errors.New("source map: too many nodes")
		}
		file := doc.Name
		if f, ok := doc.origins[orig]; ok {
			file = f
		}
		i, ok := files[file]
		if !ok {
			i = len(m.Files)
			files[file] = i
			m.Files = append(m.Files, file)
		}
		if orig.Line > 0 {
			m.Nodes = append(m.Nodes, [5]int{got.Line, got.Column, i, orig.Line, orig.Column})
		}
		for j := range orig.Content {
			if err := walk(orig.Content[j], got.Content[j], depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(doc.Root, &root, 0); err != nil {
		return nil, err
	}
	return m, nil
}

// Position is where the node at p (a position in the prepared text) was
// written; ok is false when the map has no such node.
func (m *SourceMap) Position(p Position) (Position, bool) {
	if m == nil {
		return p, false
	}
	best := -1
	for i, n := range m.Nodes {
		if n[0] != p.Line || n[2] < 0 || n[2] >= len(m.Files) {
			continue
		}
		// The node starting at the column, else the last one before it
		// on the line.
		if n[1] == p.Column {
			best = i
			break
		}
		if n[1] < p.Column && (best < 0 || m.Nodes[best][1] < n[1]) {
			best = i
		}
	}
	if best < 0 {
		return p, false
	}
	n := m.Nodes[best]
	col := n[4]
	if p.Column > n[1] {
		col += p.Column - n[1]
	}
	return Position{File: m.Files[n[2]], Line: n[3], Column: col}, true
}

// Remap rewrites the positions in err that point into file (the prepared
// text's name) to where m says they were written. Errors of another file,
// and errors that are not manifest errors, are returned as they are.
func Remap(err error, file string, m *SourceMap) error {
	var es Errors
	if m == nil || !errors.As(err, &es) {
		return err
	}
	out := make(Errors, len(es))
	for i, e := range es {
		c := *e
		if c.File == file && c.Line > 0 {
			if p, ok := m.Position(c.Position); ok {
				c.Position = p
			}
		}
		out[i] = &c
	}
	return out
}
