package app

import (
	"context"
	"fmt"
	"io"
	"os"

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

func (tools) InspectRelease(w io.Writer, file string) error {
	m, err := release.Inspect(file)
	if err != nil {
		return err
	}
	return release.WriteSummary(w, m)
}

func (tools) CreateStemcell(agent, tarball, name, version string) error {
	_, err := stemcell.CreateLocal(agent, tarball, stemcell.LocalOptions{Name: name, Version: version})
	return err
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
	return manifest.Interpolate(ctx, file, raw, manifest.LoadOptions{OpsFiles: ops, VarsFiles: vars, Vars: o.Vars, Strict: o.Strict})
}

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
