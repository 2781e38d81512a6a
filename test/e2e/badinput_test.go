package e2e

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBadManifestsExit2NamingTheirFile deploys invalid manifests (and ops
// files) to a dev director with a release, a stemcell and a cloud config:
// each is refused with exit status 2, whether the CLI or the director finds
// the problem, and the message names the file the operator wrote (not the
// text the CLI sent), with its line where there is one; a bad value an ops
// file set names the ops file and its line.
func TestBadManifestsExit2NamingTheirFile(t *testing.T) {
	d := newLocalSetup(t).d

	good := `name: bad
releases:
- {name: web, version: latest}
stemcells:
- {alias: default, os: linux, version: latest}
update:
  canaries: 1
  max_in_flight: 1
  canary_watch_time: 1000-5000
  update_watch_time: 1000-5000
instance_groups:
- name: web
  azs: [z1]
  instances: 1
  vm_type: default
  stemcell: default
  networks:
  - name: default
  jobs:
  - name: web
    release: web
`
	for _, tc := range []struct {
		name     string
		manifest string // good with this change
		from, to string
		ops      string // an ops file, if any
		want     []string
	}{
		{name: "yaml syntax", from: "  instances: 1\n", to: "  instances: [1\n", want: []string{"FILE:"}},
		{name: "unknown field", from: "update:\n", to: "bogus: 1\nupdate:\n", want: []string{"FILE:", "bogus"}},
		{name: "wrong type", from: "  instances: 1\n", to: "  instances: one\n", want: []string{"FILE:14:14:", "instances"}},
		{name: "no name", from: "name: bad\n", to: "", want: []string{"FILE", "name"}},
		{name: "negative instances", from: "  instances: 1\n", to: "  instances: -1\n", want: []string{"FILE:14:14:", "instances"}},
		{name: "unknown network", from: "  - name: default\n", to: "  - name: nowhere\n", want: []string{"nowhere"}},
		{name: "unknown vm_type", from: "  vm_type: default\n", to: "  vm_type: huge\n", want: []string{"huge"}},
		{name: "unknown stemcell alias", from: "  stemcell: default\n", to: "  stemcell: other\n", want: []string{"other"}},
		{name: "job of a release not listed", from: "    release: web\n", to: "    release: db\n", want: []string{"db"}},
		{name: "release not uploaded", from: "{name: web, version: latest}", to: "{name: web, version: \"404\"}", want: []string{"404", "upload-release"}},
		{name: "unknown az", from: "  azs: [z1]\n", to: "  azs: [z9]\n", want: []string{"z9"}},
		{name: "bad watch time", from: "  canary_watch_time: 1000-5000\n", to: "  canary_watch_time: soon\n", want: []string{"FILE:9:22:", "canary_watch_time"}},
		{name: "duplicate group", from: "  jobs:\n  - name: web\n    release: web\n", to: "  jobs:\n  - name: web\n    release: web\n- name: web\n  azs: [z1]\n  instances: 1\n  vm_type: default\n  stemcell: default\n  networks: [{name: default}]\n  jobs: [{name: web, release: web}]\n", want: []string{"FILE:", "web"}},
		{name: "ops path", ops: "- type: replace\n  path: /instance_groups/name=nope/instances\n  value: 2\n", want: []string{"OPS:2:", "nope"}},
		{name: "value an ops file set", ops: "# instances, badly\n- type: replace\n  path: /instance_groups/name=web/instances\n  value: three\n", want: []string{"OPS:4:", "instances"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := good
			if tc.from != "" {
				if !strings.Contains(text, tc.from) {
					t.Fatalf("the good manifest has no %q", tc.from)
				}
				text = strings.Replace(text, tc.from, tc.to, 1)
			}
			dir := t.TempDir()
			file := filepath.Join(dir, "my-deployment.yml")
			writeFile(t, file, text)
			args := []string{"-n", "deploy", file}
			ops := filepath.Join(dir, "my-ops.yml")
			if tc.ops != "" {
				writeFile(t, ops, tc.ops)
				args = append(args, "-o", ops)
			}
			out, err := d.command(args...).CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 {
				t.Fatalf("exit %v, want 2:\n%s", err, out)
			}
			for _, w := range tc.want {
				w = strings.NewReplacer("FILE", file, "OPS", ops).Replace(w)
				if !strings.Contains(string(out), w) {
					t.Errorf("the error does not name %q:\n%s", w, out)
				}
			}
			if strings.Contains(string(out), "manifest.yml") {
				t.Errorf("the error names manifest.yml, not the operator's file:\n%s", out)
			}
		})
	}
}
