// Package yamllimit checks a YAML document against limits on its size, its
// node count, its aliases, the keys of one mapping and its depth before
// anything decodes it into Go values.
//
// Decoding a mapping into a Go value checks for duplicate keys pairwise, so
// its cost grows with the square of the mapping's size: a few MiB of flat
// keys hold a core for minutes. Parsing into a node tree, which Check does,
// is linear, and the keys bound keeps every later decode small. Every
// director input in YAML (configs, release.MF and job.MF, vars files and
// the variables store) goes through Check with its Limits; each error names
// the input and the limit it broke. docs/reliability.md lists the values.
package yamllimit

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"go.yaml.in/yaml/v3"
)

// Limits bound one input. A zero field is no limit.
type Limits struct {
	Bytes   int // size of the input
	Nodes   int // nodes of the tree, aliases not followed
	Aliases int // alias nodes (*name)
	Keys    int // keys of one mapping
	Depth   int // nesting
}

// The limits of the director's inputs.
var (
	// Config: a cloud, runtime or cpi config.
	Config = Limits{Bytes: 8 << 20, Nodes: 1 << 20, Aliases: 1000, Keys: 10000, Depth: 100}
	// ReleaseManifest: release.MF, job.MF (spec), a package spec, blobs.yml.
	ReleaseManifest = Limits{Bytes: 8 << 20, Nodes: 1 << 20, Aliases: 1000, Keys: 10000, Depth: 100}
	// Vars: a vars file (-l, --vars-store) or a manifest's variables.
	Vars = Limits{Bytes: 8 << 20, Nodes: 1 << 20, Aliases: 1000, Keys: 10000, Depth: 100}
)

// ErrLimit is wrapped by every error Check returns for a broken limit.
var ErrLimit = errors.New("over a limit")

// Check parses data (every document in it) and returns an error naming what
// (a file name; "" says YAML) and the line when it breaks one of l. Syntax errors are left to the decoder that
// follows: Check returns nil for data it cannot parse.
func Check(what string, data []byte, l Limits) error {
	if what == "" {
		what = "YAML"
	}
	if l.Bytes > 0 && len(data) > l.Bytes {
		return fmt.Errorf("%s: %w: %d bytes, the limit is %s", what, ErrLimit, len(data), size(l.Bytes))
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	c := counter{l: l, what: what}
	for {
		var doc yaml.Node
		err := parse(dec, &doc)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return nil
		}
		if err := c.walk(&doc, 0); err != nil {
			return err
		}
	}
}

// parse decodes one document into a node tree, turning a panic of the YAML
// library into an error.
func parse(dec *yaml.Decoder, doc *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("invalid YAML: %v", r)
		}
	}()
	return dec.Decode(doc)
}

type counter struct {
	l              Limits
	what           string
	nodes, aliases int
}

func (c *counter) walk(n *yaml.Node, depth int) error {
	c.nodes++
	if c.l.Nodes > 0 && c.nodes > c.l.Nodes {
		return fmt.Errorf("%s:%d: %w: more than %d YAML nodes", c.what, n.Line, ErrLimit, c.l.Nodes)
	}
	if c.l.Depth > 0 && depth > c.l.Depth {
		return fmt.Errorf("%s:%d: %w: nested deeper than %d levels", c.what, n.Line, ErrLimit, c.l.Depth)
	}
	switch n.Kind {
	case yaml.AliasNode:
		c.aliases++
		if c.l.Aliases > 0 && c.aliases > c.l.Aliases {
			return fmt.Errorf("%s:%d: %w: more than %d aliases", c.what, n.Line, ErrLimit, c.l.Aliases)
		}
		return nil // its anchor is counted where it stands
	case yaml.MappingNode:
		if keys := len(n.Content) / 2; c.l.Keys > 0 && keys > c.l.Keys {
			return fmt.Errorf("%s:%d: %w: a map of %d keys, the limit is %d keys per map", c.what, n.Line, ErrLimit, keys, c.l.Keys)
		}
	}
	for _, child := range n.Content {
		if err := c.walk(child, depth+1); err != nil {
			return err
		}
	}
	return nil
}

func size(b int) string {
	switch {
	case b >= 1<<20 && b%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", b>>20)
	case b >= 1<<10 && b%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", b>>10)
	}
	return fmt.Sprintf("%d bytes", b)
}
