package manifest

import "context"

// Prepare is what `director deploy` sends: the document with the ops files
// applied but every ((name)) left as written, and the values -v and -l
// give for the names it references (by the precedence Load uses). The
// director seals those values as it seals generated ones, so the manifest
// it stores, diffs and backs up never holds them in clear.
func Prepare(ctx context.Context, name string, data []byte, opts LoadOptions) ([]byte, map[string]any, error) {
	src, err := sources(LoadOptions{Vars: opts.Vars, VarsFiles: opts.VarsFiles})
	if err != nil {
		return nil, nil, err
	}
	doc, err := Load(ctx, name, data, LoadOptions{OpsFiles: opts.OpsFiles})
	if err != nil {
		return nil, nil, err
	}
	vars := map[string]any{}
	for _, ref := range doc.Variables() {
		if v, ok, err := src.Get(ctx, ref); err != nil {
			return nil, nil, err
		} else if ok {
			vars[ref] = v
		}
	}
	out, err := doc.YAML()
	return out, vars, err
}
