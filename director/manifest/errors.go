package manifest

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// Position is a place in a YAML file. Line and Column count from 1; a zero
// Column means the column is unknown, a zero Line that the whole file is meant.
type Position struct {
	File   string `json:"file"`
	Line   int    `json:"line"`
	Column int    `json:"column"`
}

// String formats the position as file:line:column, dropping unknown parts.
func (p Position) String() string {
	switch {
	case p.Line == 0:
		return p.File
	case p.Column == 0:
		return fmt.Sprintf("%s:%d", p.File, p.Line)
	default:
		return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Column)
	}
}

// Error is one problem found in a manifest or config. Path is the field path
// inside the document (instance_groups[1].jobs[0].release); it is empty when
// the problem is with the file as a whole (a YAML syntax error).
type Error struct {
	Position
	Path    string `json:"path,omitempty"`
	Message string `json:"message"`
}

// Error formats the problem as "file:line:col: path: message".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Position.String())
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Message)
	return b.String()
}

// Errors is every problem found in one parse or validation, in file and
// position order. It is what ParseDeployment, Validate and the other entry
// points return, so a caller can print each problem on its own line or
// serialize the list (it marshals to a JSON array of Error).
type Errors []*Error

// Error joins the problems, one per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap exposes each problem to errors.As and errors.Is.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// MarshalJSON encodes the list as a JSON array (never null).
func (es Errors) MarshalJSON() ([]byte, error) {
	if es == nil {
		return []byte("[]"), nil
	}
	return json.Marshal([]*Error(es))
}

// sorted orders problems by file, line and column, keeping the order of
// problems found at the same place.
func (es Errors) sorted() Errors {
	sort.SliceStable(es, func(i, j int) bool {
		a, b := es[i], es[j]
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
	return es
}

// err returns nil for an empty list, so callers can write `return errs.err()`.
func (es Errors) err() error {
	if len(es) == 0 {
		return nil
	}
	return es.sorted()
}
