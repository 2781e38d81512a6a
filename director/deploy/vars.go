package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"

	"github.com/compleat/compleat/director/manifest/interpolate"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
	gen "github.com/compleat/compleat/director/variables"
)

// variables resolves a manifest's director variables from the store,
// generating those the manifest (or a runtime config) declares on first
// use, as package variables makes them. Values are sealed in the store and
// never logged or reported; names are kept per deployment
// ("/<deployment>/<name>") unless they start with "/".
//
// A stored value is kept across deploys, except that it is generated anew
// when its declaration's options changed and it (or the manifest's
// features.converge_variables) asks for update_mode: converge, and when it
// is a certificate whose CA is no longer the one that signed it.
type variables struct {
	st         *store.Store
	deployment string
	declared   map[string]declaredVar
	order      []string // declaration order
	converge   bool     // features.converge_variables
	persist    bool     // false for a dry run: generate in memory only
	force      map[string]bool
	// given are the values of the deploy's -v/-l, sealed in the store
	// like generated ones (type "value") so that the stored manifest keeps
	// its ((name)) references and later tasks find them.
	given map[string]any

	mu       sync.Mutex
	resolved map[string]any // values settled during this run
}

type declaredVar struct {
	Name       string         `yaml:"name"`
	Type       string         `yaml:"type"`
	Options    map[string]any `yaml:"options"`
	UpdateMode string         `yaml:"update_mode"`
}

func (dv declaredVar) spec() gen.Spec {
	return gen.Spec{Name: dv.Name, Type: dv.Type, Options: dv.Options}
}

var _ interpolate.Source = (*variables)(nil)

func newVariables(st *store.Store, deployment string, raw []byte, persist bool, extra ...[]byte) (*variables, error) {
	v := &variables{st: st, deployment: deployment, declared: map[string]declaredVar{}, persist: persist, resolved: map[string]any{}, force: map[string]bool{}}
	for i, doc := range append([][]byte{raw}, extra...) {
		var d struct {
			Variables []declaredVar `yaml:"variables"`
			Features  struct {
				ConvergeVariables bool `yaml:"converge_variables"`
			} `yaml:"features"`
		}
		// Errors in the rest of the document are the manifest parser's to
		// report; only the variables block matters here.
		_ = yaml.Unmarshal(doc, &d)
		if i == 0 {
			v.converge = d.Features.ConvergeVariables
		}
		for _, dv := range d.Variables {
			if _, dup := v.declared[dv.Name]; dup || dv.Name == "" {
				continue // the manifest's own declaration wins over a runtime config's
			}
			v.declared[dv.Name] = dv
			v.order = append(v.order, dv.Name)
		}
	}
	return v, nil
}

func (v *variables) key(name string) string {
	if strings.HasPrefix(name, "/") {
		return name
	}
	return "/" + v.deployment + "/" + name
}

// Get returns a stored variable, else generates a declared one.
func (v *variables) Get(ctx context.Context, name string) (any, bool, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.get(name, 0)
}

// GenerateAll settles every declared variable, referenced or not, as BOSH
// does at deploy.
func (v *variables) GenerateAll(ctx context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, name := range v.order {
		if _, _, err := v.get(name, 0); err != nil {
			return err
		}
	}
	return nil
}

// Regenerate makes a new value for a declared variable, and for the
// certificates it signs.
func (v *variables) Regenerate(ctx context.Context, name string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.declared[name]; !ok {
		return fmt.Errorf("variable %s is not declared in the deployment's manifest", name)
	}
	v.force[name] = true
	if _, _, err := v.get(name, 0); err != nil {
		return err
	}
	for _, n := range v.order { // certificates signed by it follow
		if _, _, err := v.get(n, 0); err != nil {
			return err
		}
	}
	return nil
}

// Declared lists the declared names in declaration order.
func (v *variables) Declared() []string { return append([]string(nil), v.order...) }

func (v *variables) get(name string, depth int) (any, bool, error) {
	if depth > 8 {
		return nil, false, fmt.Errorf("variable %s: certificate authorities nest too deep", name)
	}
	if val, ok := v.resolved[name]; ok {
		return val, true, nil
	}
	key := v.key(name)
	if val, ok := v.given[name]; ok {
		return v.seal(name, key, val)
	}
	var rec store.Variable
	err := v.st.View(func(tx *store.Tx) error {
		var err error
		rec, err = tx.Variable(key)
		return err
	})
	found := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, false, err
	}
	var stored any
	if found {
		if err := json.Unmarshal(rec.Value, &stored); err != nil {
			return nil, false, fmt.Errorf("variable %s: %w", name, err)
		}
	}
	dv, declared := v.declared[name]
	if !declared {
		if found {
			v.resolved[name] = stored
		}
		return stored, found, nil
	}
	spec := dv.spec()
	if spec.Options, err = v.resolveOptions(name, dv.Options, depth); err != nil {
		return nil, false, err
	}
	digest := spec.Digest()
	stale := !found || v.force[name]
	if found && !stale && rec.Digest != "" && rec.Digest != digest && (dv.UpdateMode == "converge" || v.converge) {
		stale = true // options changed under converge
	}
	caName, _ := dv.Options["ca"].(string)
	var caVal map[string]any
	if dv.Type == gen.Certificate && caName != "" {
		ca, ok, err := v.get(caName, depth+1)
		if err != nil {
			return nil, false, fmt.Errorf("variable %s: %w", name, err)
		}
		if !ok {
			return nil, false, fmt.Errorf("variable %s: options.ca: variable %s is neither stored nor declared", name, caName)
		}
		caVal, _ = ca.(map[string]any)
		if found && gen.SignedBy(stored) != fmt.Sprint(caVal["certificate"]) {
			stale = true // its CA was regenerated
		}
	}
	if !stale {
		if rec.Digest == "" && v.persist { // adopt a value stored before digests were kept
			rec.Digest = digest
			if err := v.st.Update(func(tx *store.Tx) error { return tx.PutVariable(rec) }); err != nil {
				return nil, false, err
			}
		}
		v.resolved[name] = stored
		return stored, true, nil
	}
	val, err := gen.Generate(spec, func(string) (map[string]any, error) { return caVal, nil })
	if err != nil {
		return nil, false, fmt.Errorf("generate variable %s (%s): %w", name, dv.Type, err)
	}
	if v.persist {
		raw, err := json.Marshal(val)
		if err != nil {
			return nil, false, err
		}
		if err := v.st.Update(func(tx *store.Tx) error {
			return tx.PutVariable(store.Variable{Name: key, Type: dv.Type, Value: raw, Digest: digest})
		}); err != nil {
			return nil, false, err
		}
	}
	// Through JSON, so a fresh value reads as a stored one does.
	raw, _ := json.Marshal(val)
	var back any
	_ = json.Unmarshal(raw, &back)
	v.resolved[name] = back
	return back, true, nil
}

// ValueType is the stored type of a -v/-l value.
const ValueType = "value"

// seal stores a value given with -v/-l (unless the store holds it already).
func (v *variables) seal(name, key string, val any) (any, bool, error) {
	raw, err := json.Marshal(val)
	if err != nil {
		return nil, false, fmt.Errorf("variable %s: %w", name, err)
	}
	if v.persist {
		if err := v.st.Update(func(tx *store.Tx) error {
			old, err := tx.Variable(key)
			if err == nil && string(old.Value) == string(raw) {
				return nil
			}
			return tx.PutVariable(store.Variable{Name: key, Type: ValueType, Value: raw})
		}); err != nil {
			return nil, false, err
		}
	}
	var back any
	_ = json.Unmarshal(raw, &back)
	v.resolved[name] = back
	return back, true, nil
}

// Secrets are the text values this run resolved (generated, stored or
// given), longest first, for Scrub.
func (v *variables) secrets() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []string
	var walk func(x any)
	walk = func(x any) {
		switch t := x.(type) {
		case string:
			if len(t) >= 4 {
				out = append(out, t)
			}
		case map[string]any:
			for _, y := range t {
				walk(y)
			}
		case []any:
			for _, y := range t {
				walk(y)
			}
		case float64, bool, nil:
		default:
			walk(fmt.Sprint(t))
		}
	}
	for _, x := range v.resolved {
		walk(x)
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// Scrub replaces every resolved value in err's message with
// "<redacted>", keeping errors.Is and errors.As working through it: a
// misused variable (vm_type: ((pw))) must not print its value in a task
// error or a log line.
func (v *variables) Scrub(err error) error {
	if err == nil || v == nil {
		return err
	}
	msg := err.Error()
	clean := msg
	for _, s := range v.secrets() {
		clean = strings.ReplaceAll(clean, s, redacted)
	}
	if clean == msg {
		return err
	}
	return scrubbed{msg: clean, err: err}
}

type scrubbed struct {
	msg string
	err error
}

func (s scrubbed) Error() string { return s.msg }
func (s scrubbed) Unwrap() error { return s.err }

// RegenerateVariable makes a new value for a variable the deployment's
// last deployed manifest (or a runtime config) declares, and for the
// certificates it signs. Instances keep the old value until the next
// deploy renders the new one.
func (d *Deployer) RegenerateVariable(ctx context.Context, r *task.Reporter, deployment, name string) (string, error) {
	var content string
	var runtimes []store.Config
	err := d.c.Store.View(func(tx *store.Tx) error {
		dep, err := tx.Deployment(deployment)
		if err != nil {
			return err
		}
		if dep.ManifestID == 0 {
			return task.BadInput(fmt.Errorf("deployment %s was never deployed", deployment))
		}
		m, err := tx.Manifest(deployment, dep.ManifestID)
		if err != nil {
			return err
		}
		content = m.Content
		runtimes, err = tx.Configs(store.ConfigRuntime, true)
		return err
	})
	if err != nil {
		return "", err
	}
	var rcDocs [][]byte
	for _, rc := range runtimes {
		rcDocs = append(rcDocs, []byte(rc.Content))
	}
	v, err := newVariables(d.c.Store, deployment, []byte(content), true, rcDocs...)
	if err != nil {
		return "", err
	}
	if err := v.Regenerate(ctx, name); err != nil {
		return "", task.BadInput(v.Scrub(err))
	}
	return fmt.Sprintf("regenerated %s: deploy %s to roll it out", v.key(name), deployment), nil
}

// resolveOptions fills ((references)) in a declaration's options (a
// common_name given with -v, say) from the other variables.
func (v *variables) resolveOptions(name string, opts map[string]any, depth int) (map[string]any, error) {
	if len(opts) == 0 {
		return opts, nil
	}
	raw, err := yaml.Marshal(opts)
	if err != nil || !strings.Contains(string(raw), "((") {
		return opts, err
	}
	var node yaml.Node
	if err := yaml.Unmarshal(raw, &node); err != nil {
		return nil, err
	}
	src := innerSource{v: v, depth: depth + 1}
	if err := interpolate.Interpolate(context.Background(), &node, src, interpolate.Options{Strict: true}); err != nil {
		return nil, fmt.Errorf("variable %s: options: %w", name, err)
	}
	var out map[string]any
	if err := node.Decode(&out); err != nil {
		return nil, fmt.Errorf("variable %s: options: %w", name, err)
	}
	return out, nil
}

// innerSource resolves from v while v.mu is held.
type innerSource struct {
	v     *variables
	depth int
}

func (s innerSource) Get(_ context.Context, name string) (any, bool, error) {
	return s.v.get(name, s.depth)
}
