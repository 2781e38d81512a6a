package manifest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"go.yaml.in/yaml/v3"

	"github.com/compleat/compleat/director/yamllimit"

	"github.com/compleat/compleat/director/manifest/interpolate"
	"github.com/compleat/compleat/director/variables"
)

// VarsStore is `interpolate --vars-store FILE`, as the BOSH CLI has it: a
// YAML file of values that resolves references and receives a generated
// value for every variable the document declares and the file lacks
// (certificates signed by their CA from the same file). Save writes it
// back, readable by its owner only.
type VarsStore struct {
	path     string
	values   map[string]any
	declared map[string]variables.Spec
	order    []string
	dirty    bool
}

var _ interpolate.Source = (*VarsStore)(nil)

// OpenVarsStore reads the store at path (a missing file is an empty
// store) for the document doc (after its ops files), whose variables:
// block declares what may be generated.
func OpenVarsStore(path string, doc []byte) (*VarsStore, error) {
	s := &VarsStore{path: path, values: map[string]any{}, declared: map[string]variables.Spec{}}
	raw, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		vars, err := interpolate.ParseVarsFile(path, raw)
		if err != nil {
			return nil, err
		}
		for k, v := range vars {
			s.values[k] = v
		}
	}
	var d struct {
		Variables []struct {
			Name    string         `yaml:"name"`
			Type    string         `yaml:"type"`
			Options map[string]any `yaml:"options"`
		} `yaml:"variables"`
	}
	if err := yamllimit.Check("manifest", doc, yamllimit.Vars); err != nil {
		return nil, err
	}
	if err := yaml.Unmarshal(doc, &d); err != nil {
		return nil, err
	}
	for _, v := range d.Variables {
		if v.Name == "" {
			continue
		}
		s.declared[v.Name] = variables.Spec{Name: v.Name, Type: v.Type, Options: v.Options}
		s.order = append(s.order, v.Name)
	}
	return s, nil
}

// Get returns the stored value, else generates a declared variable.
func (s *VarsStore) Get(_ context.Context, name string) (any, bool, error) {
	return s.get(name, 0)
}

func (s *VarsStore) get(name string, depth int) (any, bool, error) {
	if v, ok := s.values[name]; ok {
		return v, true, nil
	}
	spec, ok := s.declared[name]
	if !ok {
		return nil, false, nil
	}
	if depth > 8 {
		return nil, false, fmt.Errorf("variable %s: certificate authorities nest too deep", name)
	}
	v, err := variables.Generate(spec, func(ca string) (map[string]any, error) {
		val, ok, err := s.get(ca, depth+1)
		if err != nil {
			return nil, err
		}
		m, isMap := val.(map[string]any)
		if !ok || !isMap {
			return nil, fmt.Errorf("variable %s is not a certificate in %s nor declared", ca, s.path)
		}
		return m, nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("generate variable %s: %w", name, err)
	}
	s.values[name] = v
	s.dirty = true
	return v, true, nil
}

// GenerateAll generates every declared variable the store lacks.
func (s *VarsStore) GenerateAll() error {
	for _, n := range s.order {
		if _, _, err := s.get(n, 0); err != nil {
			return err
		}
	}
	return nil
}

// Save writes the store back (mode 0600) when something was generated.
func (s *VarsStore) Save() error {
	if !s.dirty {
		return nil
	}
	out, err := yaml.Marshal(s.values)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.path), ".vars-store-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(out); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), s.path); err != nil {
		return fmt.Errorf("write vars store %s: %w", s.path, err)
	}
	s.dirty = false
	return nil
}
