package manifest

import (
	"strings"
	"testing"
)

// TestVariableOptionsRefused: options the generators would refuse fail the
// parse at the option's line.
func TestVariableOptionsRefused(t *testing.T) {
	t.Parallel()
	head := "name: app\nreleases: []\nstemcells: []\ninstance_groups: []\nupdate: {canaries: 1, max_in_flight: 1, canary_watch_time: 1000, update_watch_time: 1000}\nvariables:\n"
	for _, tc := range []struct{ vars, want string }{
		{"- name: k\n  type: rsa\n  options:\n    key_length: 1024\n", "m.yml:10:17: variables[0].options.key_length: 1024 is not one of 2048, 3072, 4096"},
		{"- name: pw\n  type: password\n  options:\n    exclude_upper: true\n    exclude_lower: true\n    exclude_number: true\n", "m.yml:10:5: variables[0].options: every character class is excluded"},
		{"- name: c\n  type: certificate\n  options:\n    common_name: x\n", "needs a ca to sign it"},
		{"- name: c\n  type: certificate\n", "m.yml:7:3: variables[0]: a certificate needs a ca"},
		{"- name: ca\n  type: certificate\n  options: {is_ca: true}\n- name: c\n  type: certificate\n  options:\n    ca: ca\n    common_name: x\n    key_usage: [signing]\n", "m.yml:15:16: variables[1].options.key_usage: unknown usage \"signing\""},
		{"- name: ca\n  type: certificate\n  options: {is_ca: true}\n- name: c\n  type: certificate\n  options:\n    ca: ca\n    common_name: x\n    duration: 40000\n", "options.duration: 40000 days"},
	} {
		_, err := ParseDeployment("m.yml", []byte(head+tc.vars))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s\ngot  %v\nwant %s", tc.vars, err, tc.want)
		}
	}
}
