package manifest

import "context"

// Prepared is what `director deploy` sends: the document with the ops
// files applied but every ((name)) left as written, the values -v and -l
// give for the names it references (by the precedence Load uses), and the
// source map of the document's nodes to the files they were written in.
// The director seals the values as it seals generated ones, so the
// manifest it stores, diffs and backs up never holds them in clear.
type Prepared struct {
	Manifest  []byte
	Vars      map[string]any
	SourceMap *SourceMap
}

// Prepare prepares the document name (its content data) for a deploy.
func Prepare(ctx context.Context, name string, data []byte, opts LoadOptions) (*Prepared, error) {
	src, err := sources(LoadOptions{Vars: opts.Vars, VarsFiles: opts.VarsFiles})
	if err != nil {
		return nil, err
	}
	doc, err := Load(ctx, name, data, LoadOptions{OpsFiles: opts.OpsFiles})
	if err != nil {
		return nil, err
	}
	p := &Prepared{Vars: map[string]any{}}
	for _, ref := range doc.Variables() {
		if v, ok, err := src.Get(ctx, ref); err != nil {
			return nil, err
		} else if ok {
			p.Vars[ref] = v
		}
	}
	if p.Manifest, err = doc.YAML(); err != nil {
		return nil, err
	}
	if p.SourceMap, err = doc.SourceMap(p.Manifest); err != nil {
		return nil, err
	}
	return p, nil
}
