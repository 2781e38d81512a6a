package yamllimit_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/compleat/compleat/director/cpimanager"
	"github.com/compleat/compleat/director/manifest"
	"github.com/compleat/compleat/director/manifest/interpolate"
	"github.com/compleat/compleat/director/release"
	"github.com/compleat/compleat/director/yamllimit"
)

// Every YAML input of the director refuses a map too large to decode in
// linear time (the duplicate-key check of a decode is quadratic) and names
// the limit, instead of holding a core.
func TestEveryYAMLInputIsBounded(t *testing.T) {
	t.Parallel()
	big := flatMap(20001) // twice the per-map limit
	indent := func(s, pre string) string {
		return pre + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n"+pre) + "\n"
	}
	inputs := []struct {
		name  string
		parse func() error
	}{
		{"cpi config", func() error {
			_, err := cpimanager.ParseConfig("cpi.yml", []byte("cpis:\n- name: x\n  type: local\n  properties:\n"+indent(big, "    ")))
			return err
		}},
		{"cloud config", func() error {
			_, err := manifest.ParseCloudConfig("cloud.yml", []byte("azs: [{name: z1, cloud_properties: {}}]\nvm_types:\n- name: small\n  cloud_properties:\n"+indent(big, "    ")))
			return err
		}},
		{"runtime config", func() error {
			_, err := manifest.ParseRuntimeConfig("runtime.yml", []byte("addons: []\ntags:\n"+indent(big, "  ")))
			return err
		}},
		{"vars file", func() error {
			_, err := interpolate.ParseVarsFile("vars.yml", []byte(big))
			return err
		}},
		{"job spec", func() error {
			_, err := release.ParseJobSpec("jobs/web/spec", []byte("name: web\nproperties:\n"+indent(big, "  ")))
			return err
		}},
		{"release.MF", func() error {
			_, err := release.ParseManifest([]byte("name: r\nversion: '1'\n" + big))
			return err
		}},
		{"oversized vars file", func() error {
			_, err := interpolate.ParseVarsFile("vars.yml", []byte("a: '"+strings.Repeat("x", yamllimit.Vars.Bytes)+"'\n"))
			return err
		}},
	}
	for _, in := range inputs {
		err := in.parse()
		if err == nil || !strings.Contains(err.Error(), "the limit is") {
			t.Errorf("%s: %v, want an error naming the limit", in.name, err)
		}
		if err != nil && strings.Contains(in.name, "config") && !strings.Contains(err.Error(), ".yml") {
			t.Errorf("%s: %v does not name the file", in.name, err)
		}
	}
	if err := yamllimit.Check("x", []byte(big), yamllimit.Config); !errors.Is(err, yamllimit.ErrLimit) {
		t.Errorf("ErrLimit: %v", err)
	}
}
