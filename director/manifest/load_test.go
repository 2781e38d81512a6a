package manifest

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/compleat/compleat/director/manifest/interpolate"
)

const small = `name: ((name))
releases:
- name: web
  version: latest
stemcells:
- alias: default
  os: ubuntu-noble
  version: latest
update:
  canaries: 1
  max_in_flight: 1
  canary_watch_time: 1000
  update_watch_time: 1000
instance_groups:
- name: web
  azs: [z1]
  instances: ((instances))
  vm_type: small
  stemcell: default
  networks: [{name: private}]
  jobs:
  - name: web
    release: web
    properties:
      password: ((password))
`

func TestLoadOpsThenVars(t *testing.T) {
	t.Parallel()
	opts := LoadOptions{
		OpsFiles: []File{{Name: "scale.yml", Data: []byte(`
- type: replace
  path: /instance_groups/name=web/instances
  value: ((web_instances))
- type: replace
  path: /instance_groups/name=web/jobs/name=web/properties/port?
  value: 8080
`)}},
		VarsFiles: []File{
			{Name: "a.yml", Data: []byte("name: from-a\nweb_instances: 2\n")},
			{Name: "b.yml", Data: []byte("name: from-b\n")},
		},
		Vars:   []string{"instances=9"},
		Source: interpolate.Vars{"password": "generated", "name": "from-director"},
		Strict: true,
	}
	doc, err := Load(context.Background(), "small.yml", []byte(small), opts)
	if err != nil {
		t.Fatal(err)
	}
	dep, err := doc.Deployment()
	if err != nil {
		t.Fatal(err)
	}
	// The later -l file wins over the earlier one and over the director.
	if dep.Name != "from-b" {
		t.Errorf("name = %q", dep.Name)
	}
	// Ops apply before interpolation: the ops value's ((var)) resolves.
	ig := dep.InstanceGroups[0]
	if ig.Instances != 2 || ig.Jobs[0].Properties["port"] != 8080 || ig.Jobs[0].Properties["password"] != "generated" {
		t.Errorf("instance group = %+v", ig)
	}
}

func TestVarFlagsWinOverFiles(t *testing.T) {
	t.Parallel()
	out, err := Interpolate(context.Background(), "small.yml", []byte("a: ((x))\nb: ((y))\n"), LoadOptions{
		Vars:      []string{"x=flag", "x=later-flag"},
		VarsFiles: []File{{Name: "v.yml", Data: []byte("x: file\ny: file\n")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "a: later-flag\nb: file\n" {
		t.Errorf("got %q", out)
	}
}

func TestInterpolateLeavesUnknownWithoutStrict(t *testing.T) {
	t.Parallel()
	out, err := Interpolate(context.Background(), "m.yml", []byte("a: ((x))\nb: keep # comment\n"), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "a: ((x))\nb: keep # comment\n" {
		t.Errorf("got %q", out)
	}
}

func TestLoadErrorsNameTheirFile(t *testing.T) {
	t.Parallel()
	_, err := Load(context.Background(), "m.yml", []byte("a: 1\n"), LoadOptions{
		OpsFiles: []File{{Name: "bad-ops.yml", Data: []byte("- type: replace\n  path: /b/c\n  value: 1\n")}},
	})
	if err == nil || err.Error() != `bad-ops.yml:2:9: operation [0] /b/c: no key "b" (keys: "a") (at /b)` {
		t.Errorf("ops error: %v", err)
	}
	var list Errors
	if !errors.As(err, &list) {
		t.Errorf("ops error is %T, not Errors", err)
	}

	// A reference written in an ops file is reported in the ops file.
	_, err = Load(context.Background(), "m.yml", []byte("a: 1\n"), LoadOptions{
		OpsFiles: []File{{Name: "ops.yml", Data: []byte("- type: replace\n  path: /b?\n  value: {c: ((missing))}\n")}},
		Strict:   true,
	})
	if err == nil || err.Error() != `ops.yml:3:14: b.c: variable "missing" is not set` {
		t.Errorf("interpolation error: %v", err)
	}

	_, err = Load(context.Background(), "m.yml", []byte("a: 1\n"), LoadOptions{Vars: []string{"oops"}, VarsFiles: []File{{Name: "v.yml", Data: []byte("[1]")}}})
	if err == nil || !strings.Contains(err.Error(), "want name=value") || !strings.Contains(err.Error(), "v.yml") {
		t.Errorf("bad -v / -l: %v", err)
	}
}

func TestLoadedDocumentVariables(t *testing.T) {
	t.Parallel()
	doc, err := Load(context.Background(), "small.yml", []byte(small), LoadOptions{Vars: []string{"instances=1"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(doc.Variables(), ","); got != "name,password" {
		t.Errorf("Variables = %s", got)
	}
}

func TestErrorsJSON(t *testing.T) {
	t.Parallel()
	_, err := ParseDeployment("m.yml", []byte("name: [x]\n"))
	var list Errors
	if !errors.As(err, &list) {
		t.Fatalf("%T", err)
	}
	b, jerr := list.MarshalJSON()
	if jerr != nil {
		t.Fatal(jerr)
	}
	if !strings.Contains(string(b), `{"file":"m.yml","line":1,"column":7,"path":"name","message":"must be a string, not a list"}`) {
		t.Errorf("json = %s", b)
	}
}

func TestDocumentPath(t *testing.T) {
	t.Parallel()
	doc, err := Load(context.Background(), "small.yml", []byte(small), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out, err := doc.Path("/instance_groups/name=web/jobs/0/name")
	if err != nil || string(out) != "web\n" {
		t.Errorf("Path = %q, %v", out, err)
	}
	if _, err := doc.Path("/instance_groups/name=db"); err == nil || !strings.Contains(err.Error(), "0 items have name=db") {
		t.Errorf("missing path: %v", err)
	}
}

func TestLoadExpandsAliasesAndMerges(t *testing.T) {
	t.Parallel()
	in := `base: &base {a: 1, b: 2}
one: *base
two:
  <<: *base
  b: 3
`
	ops := "- type: replace\n  path: /one/a\n  value: 10\n"
	out, err := Interpolate(context.Background(), "m.yml", []byte(in), LoadOptions{OpsFiles: []File{{Name: "o.yml", Data: []byte(ops)}}})
	if err != nil {
		t.Fatal(err)
	}
	// Changing one use of an anchor leaves the others alone, and the
	// output holds no dangling alias.
	want := "base: {a: 1, b: 2}\none: {a: 10, b: 2}\ntwo:\n  b: 3\n  a: 1\n"
	if string(out) != want {
		t.Errorf("got:\n%s\nwant:\n%s", out, want)
	}
}

func TestParseNamesUnresolvedVariables(t *testing.T) {
	t.Parallel()
	_, err := ParseDeployment("small.yml", []byte(small))
	want := `small.yml:17:14: instance_groups[0].instances: must be an integer, not the unresolved variable ((instances))`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got:\n%v\nwant a line:\n%s", err, want)
	}
}
