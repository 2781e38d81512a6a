package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/compleat/compleat/director/cli"
	"github.com/compleat/compleat/director/manifest"
	"github.com/compleat/compleat/director/release"
	"github.com/compleat/compleat/director/stemcell"
)

// tools are the CLI's local operations, from the release, stemcell and
// manifest packages.
type tools struct{}

var _ cli.Tools = tools{}

func (tools) CreateRelease(dir string, o cli.CreateReleaseOptions) (string, string, string, error) {
	m, path, err := release.Create(dir, release.CreateOptions{Name: o.Name, Version: o.Version, Tarball: o.Tarball})
	if err != nil {
		return "", "", "", err
	}
	return m.Name, m.Version, path, nil
}

func (tools) InspectRelease(w io.Writer, file string, asJSON bool) error {
	m, err := release.Inspect(file)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(m)
	}
	return release.WriteSummary(w, m)
}

func (tools) CreateStemcell(o cli.CreateStemcellOptions) error {
	props := map[string]any{}
	for _, kv := range o.CloudProperties {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fmt.Errorf("--cloud-property %q: want KEY=VALUE", kv)
		}
		m := props
		parts := strings.Split(k, ".")
		for _, p := range parts[:len(parts)-1] {
			sub, ok := m[p].(map[string]any)
			if !ok {
				sub = map[string]any{}
				m[p] = sub
			}
			m = sub
		}
		m[parts[len(parts)-1]] = v
	}
	if !o.Light {
		_, err := stemcell.CreateLocal(o.Agent, o.Tarball, stemcell.LocalOptions{
			Name: o.Name, Version: o.Version, OperatingSystem: o.OS, Formats: o.Formats, CloudProperties: props,
		})
		return err
	}
	m := stemcell.Manifest{
		Name: o.Name, Version: o.Version, OperatingSystem: o.OS, APIVersion: 2,
		StemcellFormats: o.Formats, CloudProperties: props,
	}
	if m.Name == "" {
		m.Name = stemcell.DefaultLocalName
	}
	if m.Version == "" {
		m.Version = stemcell.DefaultLocalVersion
	}
	if m.OperatingSystem == "" {
		m.OperatingSystem = stemcell.DefaultLocalOS
	}
	return stemcell.CreateLight(o.Tarball, m)
}

func readFiles(names []string) ([]manifest.File, error) {
	var out []manifest.File
	for _, n := range names {
		raw, err := os.ReadFile(n)
		if err != nil {
			return nil, err
		}
		out = append(out, manifest.File{Name: n, Data: raw})
	}
	return out, nil
}

func (tools) Interpolate(ctx context.Context, file string, o cli.InterpolateOptions) ([]byte, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	ops, err := readFiles(o.OpsFiles)
	if err != nil {
		return nil, err
	}
	vars, err := readFiles(o.VarsFiles)
	if err != nil {
		return nil, err
	}
	opts := manifest.LoadOptions{OpsFiles: ops, VarsFiles: vars, Vars: o.Vars, Strict: o.Strict, Warn: o.Warn}
	if o.VarsStore == "" {
		return manifest.Interpolate(ctx, file, raw, opts)
	}
	// The store is consulted after -v and -l, and receives every declared
	// variable it lacks, as the BOSH CLI's --vars-store.
	withOps, err := manifest.Prepare(ctx, file, raw, manifest.LoadOptions{OpsFiles: ops})
	if err != nil {
		return nil, err
	}
	store, err := manifest.OpenVarsStore(o.VarsStore, withOps.Manifest)
	if err != nil {
		return nil, err
	}
	if err := store.GenerateAll(); err != nil {
		return nil, err
	}
	if err := store.Save(); err != nil {
		return nil, err
	}
	opts.Source = store
	return manifest.Interpolate(ctx, file, raw, opts)
}

func (tools) Prepare(ctx context.Context, file string, o cli.InterpolateOptions) ([]byte, map[string]any, json.RawMessage, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, nil, nil, err
	}
	ops, err := readFiles(o.OpsFiles)
	if err != nil {
		return nil, nil, nil, err
	}
	vars, err := readFiles(o.VarsFiles)
	if err != nil {
		return nil, nil, nil, err
	}
	p, err := manifest.Prepare(ctx, file, raw, manifest.LoadOptions{OpsFiles: ops, VarsFiles: vars, Vars: o.Vars})
	if err != nil {
		return nil, nil, nil, err
	}
	sm, err := json.Marshal(p.SourceMap)
	return p.Manifest, p.Vars, sm, err
}

var _ cli.Preparer = tools{}

func (tools) DeploymentName(file string, m []byte) (string, error) {
	var doc struct {
		Name string `yaml:"name"`
	}
	if err := yaml.Unmarshal(m, &doc); err != nil {
		return "", fmt.Errorf("%s: %w", file, err)
	}
	if doc.Name == "" {
		return "", fmt.Errorf("%s: name: the deployment has no name", file)
	}
	return doc.Name, nil
}

// yamlNodeDoc renders a YAML node as the document {key: node}.
func yamlNodeDoc(key string, n *yaml.Node) ([]byte, error) {
	return yaml.Marshal(map[string]*yaml.Node{key: n})
}
