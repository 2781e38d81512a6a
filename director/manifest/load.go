package manifest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"go.yaml.in/yaml/v3"

	"github.com/compleat/compleat/director/manifest/interpolate"
	"github.com/compleat/compleat/director/manifest/opsfile"
)

// File is a named document, as given on the command line.
type File struct {
	Name string
	Data []byte
}

// LoadOptions are what `director deploy` and `director interpolate` take
// besides the document: ops files (-o), variable files (-l), variables (-v)
// and the director's own variables.
type LoadOptions struct {
	OpsFiles  []File
	VarsFiles []File
	// Vars are "name=value" arguments; see interpolate.ParseVar.
	Vars []string
	// Source is consulted for variables no -v or -l gives (the director's
	// generated and stored variables). It may be nil.
	Source interpolate.Source
	// Strict reports every ((var)) nothing resolves, by name and position
	// (BOSH's --var-errs). Without it such references stay in the output.
	Strict bool
	// Warn, when set, receives each warning (a key an ops file's
	// operation has that is ignored).
	Warn func(string)
}

// Document is a YAML document with ops files applied and variables
// interpolated, ready to decode. It remembers which file each node came
// from, so errors point into ops files too.
type Document struct {
	Name    string
	Root    *yaml.Node
	origins map[*yaml.Node]string
}

// Load reads a document, applies the ops files in order, then interpolates
// variables, as BOSH does. Variable precedence: -v (a later one wins over an
// earlier one), then -l files (a later file wins), then opts.Source.
func Load(ctx context.Context, name string, data []byte, opts LoadOptions) (*Document, error) {
	root, err := parseYAML(name, data)
	if err != nil {
		return nil, err
	}
	budget := maxNodes
	if root, err = expand(root, &budget, 0); err != nil {
		return nil, Errors{{Position: Position{File: name, Line: 1, Column: 1}, Message: err.Error()}}
	}
	doc := &Document{Name: name, Root: root, origins: map[*yaml.Node]string{}}
	for _, f := range opts.OpsFiles {
		ops, err := opsfile.Parse(f.Name, f.Data)
		if err != nil {
			return nil, fromOpsError(err)
		}
		for _, op := range ops {
			for _, w := range op.Ignored {
				if opts.Warn != nil {
					opts.Warn(w)
				}
			}
		}
		if doc.Root, err = opsfile.Apply(doc.Root, ops, doc.origins); err != nil {
			return nil, fromOpsError(err)
		}
	}
	src, err := sources(opts)
	if err != nil {
		return nil, err
	}
	if err := interpolate.Interpolate(ctx, doc.Root, src, interpolate.Options{Strict: opts.Strict}); err != nil {
		return nil, doc.fromInterpolateError(err)
	}
	doc.spreadOrigins(doc.Root, "", 0)
	return doc, nil
}

// Interpolate is `director interpolate FILE -o ... -l ... -v ...`: the
// document with ops files applied and variables filled in, as YAML.
func Interpolate(ctx context.Context, name string, data []byte, opts LoadOptions) ([]byte, error) {
	doc, err := Load(ctx, name, data, opts)
	if err != nil {
		return nil, err
	}
	return doc.YAML()
}

func sources(opts LoadOptions) (interpolate.Source, error) {
	var errs Errors
	kv := interpolate.Vars{}
	for _, arg := range opts.Vars {
		n, v, err := interpolate.ParseVar(arg)
		if err != nil {
			errs = append(errs, &Error{Position: Position{File: "-v"}, Message: err.Error()})
			continue
		}
		kv[n] = v
	}
	srcs := interpolate.Sources{kv}
	files := slices.Clone(opts.VarsFiles)
	slices.Reverse(files)
	for _, f := range files {
		vars, err := interpolate.ParseVarsFile(f.Name, f.Data)
		if err != nil {
			errs = append(errs, &Error{Position: Position{File: f.Name}, Message: err.Error()})
			continue
		}
		srcs = append(srcs, vars)
	}
	if opts.Source != nil {
		srcs = append(srcs, opts.Source)
	}
	return srcs, errs.err()
}

func fromOpsError(err error) error {
	var list opsfile.Errors
	var one *opsfile.Error
	switch {
	case errors.As(err, &list):
	case errors.As(err, &one):
		list = opsfile.Errors{one}
	default:
		return err
	}
	out := make(Errors, len(list))
	for i, e := range list {
		msg := e.Message
		switch {
		case e.Index >= 0 && e.Path != "":
			msg = fmt.Sprintf("operation [%d] %s: %s", e.Index, e.Path, e.Message)
		case e.Index >= 0:
			msg = fmt.Sprintf("operation [%d]: %s", e.Index, e.Message)
		}
		out[i] = &Error{Position: Position{File: e.File, Line: e.Line, Column: e.Column}, Message: msg}
	}
	return out
}

func (doc *Document) fromInterpolateError(err error) error {
	var list interpolate.Errors
	if !errors.As(err, &list) {
		return fmt.Errorf("%s: %w", doc.Name, err)
	}
	out := make(Errors, len(list))
	for i, e := range list {
		file := doc.Name
		if f, ok := doc.origins[e.Node]; ok {
			file = f
		}
		out[i] = &Error{Position: Position{File: file, Line: e.Line, Column: e.Column}, Path: e.Path, Message: e.Message}
	}
	return out.err()
}

// spreadOrigins marks nodes created by interpolation inside nodes that came
// from an ops file with that file.
func (doc *Document) spreadOrigins(n *yaml.Node, file string, depth int) {
	if n == nil || depth > maxDepth {
		return
	}
	if f, ok := doc.origins[n]; ok {
		file = f
	} else if file != "" {
		doc.origins[n] = file
	}
	for _, c := range n.Content {
		doc.spreadOrigins(c, file, depth+1)
	}
}

// YAML writes the document.
func (doc *Document) YAML() ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc.Root); err != nil {
		return nil, fmt.Errorf("write %s: %w", doc.Name, err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("write %s: %w", doc.Name, err)
	}
	return buf.Bytes(), nil
}

// Path returns the part of the document at path (ops file syntax, such as
// /instance_groups/name=web/networks), as YAML: `director interpolate --path`.
func (doc *Document) Path(path string) ([]byte, error) {
	n, err := opsfile.Find(doc.Root, path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", doc.Name, err)
	}
	sub := &Document{Name: doc.Name, Root: n}
	return sub.YAML()
}

// Variables lists the variable names the document still references (those
// no source resolved), in order of first use.
func (doc *Document) Variables() []string { return interpolate.References(doc.Root) }

// Deployment decodes the document as a deployment manifest.
func (doc *Document) Deployment() (*Deployment, error) {
	return decodeDeployment(doc.Name, doc.Root, doc.origins)
}

// CloudConfig decodes the document as a cloud config.
func (doc *Document) CloudConfig() (*CloudConfig, error) {
	return decodeCloudConfig(doc.Name, doc.Root, doc.origins)
}

// RuntimeConfig decodes the document as a runtime config.
func (doc *Document) RuntimeConfig() (*RuntimeConfig, error) {
	return decodeRuntimeConfig(doc.Name, doc.Root, doc.origins)
}
