// Package cpimanager turns the cpi config into running CPI plugins. It
// launches each plugin lazily, on first use, keeps it running, and restarts it
// when its entry in the config changes. Every call through a managed CPI is
// timed for the metrics.
//
// The cpi config (YAML, `director update-cpi-config`):
//
//	cpis:
//	- name: local            # referenced by cloud config azs[].cpi
//	  type: local            # the plugin binary is cpi-<type>
//	  exec_path: /opt/cpi    # optional, absolute, next to the director or
//	                         # under director.yml's external_cpis; else
//	                         # cpi-<type> next to the director, then PATH
//	  default: true          # optional; the CPI of an AZ that names none
//	  properties: {...}      # handed to the plugin, may hold credentials
//
// Properties reach the plugin as the environment variable
// COMPLEAT_CPI_PROPERTIES and are never logged.
//
// An entry of `type: external` runs a BOSH CPI executable (exec_path,
// required, inside the directories director.yml allows) through BOSH's JSON
// protocol, one process per call; see external.go.
package cpimanager

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"

	"go.yaml.in/yaml/v3"

	"github.com/compleat/compleat/director/yamllimit"
)

// Config is the cpi config.
type Config struct {
	CPIs []Plugin `yaml:"cpis" json:"cpis"`
}

// Plugin is one named CPI.
type Plugin struct {
	Name     string `yaml:"name" json:"name"`
	Type     string `yaml:"type" json:"type"`
	ExecPath string `yaml:"exec_path,omitempty" json:"exec_path,omitempty"`
	Default  bool   `yaml:"default,omitempty" json:"default,omitempty"`
	// Properties is a JSON object; it may hold credentials.
	Properties json.RawMessage `yaml:"-" json:"properties,omitempty"`
}

// String never shows the properties (they may hold credentials).
func (p Plugin) String() string { return fmt.Sprintf("cpi %s (type %s)", p.Name, p.Type) }

// ParseConfig decodes and validates a cpi config; file names it in errors.
func ParseConfig(file string, raw []byte) (Config, error) {
	var doc struct {
		CPIs []struct {
			Name       string    `yaml:"name"`
			Type       string    `yaml:"type"`
			ExecPath   string    `yaml:"exec_path"`
			Default    bool      `yaml:"default"`
			Properties yaml.Node `yaml:"properties"`
		} `yaml:"cpis"`
	}
	if err := yamllimit.Check(file, raw, yamllimit.Config); err != nil {
		return Config{}, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		return Config{}, fmt.Errorf("%s: %w", file, err)
	}
	var cfg Config
	var errs []error
	names := map[string]bool{}
	defaults := 0
	for i, c := range doc.CPIs {
		at := func(line int, field, msg string, args ...any) error {
			return fmt.Errorf("%s:%d: cpis[%d].%s: %s", file, line, i, field, fmt.Sprintf(msg, args...))
		}
		line := c.Properties.Line
		if c.Name == "" {
			errs = append(errs, at(line, "name", "required"))
		} else if names[c.Name] {
			errs = append(errs, at(line, "name", "duplicate cpi %q", c.Name))
		}
		names[c.Name] = true
		if c.Type == "" {
			errs = append(errs, at(line, "type", "required (e.g. local, aws)"))
		} else if !validType(c.Type) {
			errs = append(errs, at(line, "type", "%q is not a plain name (letters, digits, - and _)", c.Type))
		}
		if c.Type == TypeExternal && !filepath.IsAbs(c.ExecPath) {
			errs = append(errs, at(line, "exec_path", "an external cpi needs the absolute path of its executable"))
		} else if c.ExecPath != "" && !filepath.IsAbs(c.ExecPath) {
			errs = append(errs, at(line, "exec_path", "%q is not an absolute path", c.ExecPath))
		}
		if c.Default {
			defaults++
		}
		p := Plugin{Name: c.Name, Type: c.Type, ExecPath: c.ExecPath, Default: c.Default}
		if c.Properties.Kind != 0 {
			if c.Properties.Kind != yaml.MappingNode {
				errs = append(errs, at(c.Properties.Line, "properties", "must be a map"))
				continue
			}
			var v any
			if err := c.Properties.Decode(&v); err != nil {
				errs = append(errs, at(c.Properties.Line, "properties", "%v", err))
				continue
			}
			raw, err := json.Marshal(v)
			if err != nil {
				errs = append(errs, at(c.Properties.Line, "properties", "%v", err))
				continue
			}
			p.Properties = raw
		}
		cfg.CPIs = append(cfg.CPIs, p)
	}
	if defaults > 1 {
		errs = append(errs, fmt.Errorf("%s: cpis: more than one cpi has default: true", file))
	}
	if len(doc.CPIs) == 0 {
		errs = append(errs, fmt.Errorf("%s: cpis: at least one cpi is required", file))
	}
	return cfg, errors.Join(errs...)
}

// validType: a type names the binary cpi-<type>, so it is a plain name
// that cannot reach another directory.
func validType(t string) bool {
	if t == "" || len(t) > 64 {
		return false
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// Marshal renders the config as YAML (as stored and shown by `cpi-config`).
func (c Config) Marshal() ([]byte, error) {
	type entry struct {
		Name       string `yaml:"name"`
		Type       string `yaml:"type"`
		ExecPath   string `yaml:"exec_path,omitempty"`
		Default    bool   `yaml:"default,omitempty"`
		Properties any    `yaml:"properties,omitempty"`
	}
	var out struct {
		CPIs []entry `yaml:"cpis"`
	}
	for _, p := range c.CPIs {
		e := entry{Name: p.Name, Type: p.Type, ExecPath: p.ExecPath, Default: p.Default}
		if len(p.Properties) > 0 {
			if err := json.Unmarshal(p.Properties, &e.Properties); err != nil {
				return nil, fmt.Errorf("cpi %s properties: %w", p.Name, err)
			}
		}
		out.CPIs = append(out.CPIs, e)
	}
	return yaml.Marshal(out)
}
