package opsfile

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const doc = `name: shop
instance_groups:
- name: web
  instances: 2
  jobs:
  - name: web
  - name: metrics
- name: db
  instances: 1
  jobs: []
tags: {}
`

func applyString(t *testing.T, base, ops string) (string, error) {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(base), &n); err != nil {
		t.Fatal(err)
	}
	parsed, err := Parse("ops.yml", []byte(ops))
	if err != nil {
		return "", err
	}
	root, err := Apply(&n, parsed, nil)
	if err != nil {
		return "", err
	}
	out, err := yaml.Marshal(root)
	if err != nil {
		t.Fatal(err)
	}
	return string(out), nil
}

// flow renders YAML in one line for compact expectations.
func flow(t *testing.T, s string) string {
	t.Helper()
	var v any
	if err := yaml.Unmarshal([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	var n yaml.Node
	if err := n.Encode(v); err != nil {
		t.Fatal(err)
	}
	setFlow(&n)
	out, err := yaml.Marshal(&n)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

func setFlow(n *yaml.Node) {
	n.Style |= yaml.FlowStyle
	for _, c := range n.Content {
		setFlow(c)
	}
}

func TestApply(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, ops, want string
	}{
		{"replace key", `
- type: replace
  path: /name
  value: store`, `{name: store, instance_groups: [{name: web, instances: 2, jobs: [{name: web}, {name: metrics}]}, {name: db, instances: 1, jobs: []}], tags: {}}`},
		{"replace by match", `
- type: replace
  path: /instance_groups/name=web/instances
  value: 5`, `{name: shop, instance_groups: [{name: web, instances: 5, jobs: [{name: web}, {name: metrics}]}, {name: db, instances: 1, jobs: []}], tags: {}}`},
		{"replace by index", `
- type: replace
  path: /instance_groups/1/instances
  value: 3`, `{name: shop, instance_groups: [{name: web, instances: 2, jobs: [{name: web}, {name: metrics}]}, {name: db, instances: 3, jobs: []}], tags: {}}`},
		{"append", `
- type: replace
  path: /instance_groups/name=db/jobs/-
  value: {name: postgres}`, `{name: shop, instance_groups: [{name: web, instances: 2, jobs: [{name: web}, {name: metrics}]}, {name: db, instances: 1, jobs: [{name: postgres}]}], tags: {}}`},
		{"optional key creates a path", `
- type: replace
  path: /instance_groups/name=web/env?/bosh/password
  value: secret`, `{name: shop, instance_groups: [{name: web, instances: 2, jobs: [{name: web}, {name: metrics}], env: {bosh: {password: secret}}}, {name: db, instances: 1, jobs: []}], tags: {}}`},
		{"optional key into a new list", `
- type: replace
  path: /instance_groups/name=db/vm_extensions?/-
  value: ssd`, `{name: shop, instance_groups: [{name: web, instances: 2, jobs: [{name: web}, {name: metrics}]}, {name: db, instances: 1, jobs: [], vm_extensions: [ssd]}], tags: {}}`},
		{"optional match creates the item", `
- type: replace
  path: /instance_groups/name=db/jobs/name=backup?/release
  value: pg`, `{name: shop, instance_groups: [{name: web, instances: 2, jobs: [{name: web}, {name: metrics}]}, {name: db, instances: 1, jobs: [{name: backup, release: pg}]}], tags: {}}`},
		{"remove by match", `
- type: remove
  path: /instance_groups/name=web/jobs/name=metrics`, `{name: shop, instance_groups: [{name: web, instances: 2, jobs: [{name: web}]}, {name: db, instances: 1, jobs: []}], tags: {}}`},
		{"remove missing optional is a no-op", `
- type: remove
  path: /instance_groups/name=api?/jobs
- type: remove
  path: /tags/owner?`, `{name: shop, instance_groups: [{name: web, instances: 2, jobs: [{name: web}, {name: metrics}]}, {name: db, instances: 1, jobs: []}], tags: {}}`},
		{"insert before and after", `
- type: replace
  path: /instance_groups/name=web/jobs/name=metrics:before
  value: {name: proxy}
- type: replace
  path: /instance_groups/name=web/jobs/0:after
  value: {name: logs}`, `{name: shop, instance_groups: [{name: web, instances: 2, jobs: [{name: web}, {name: logs}, {name: proxy}, {name: metrics}]}, {name: db, instances: 1, jobs: []}], tags: {}}`},
		{"prev and next", `
- type: replace
  path: /instance_groups/name=db:prev/instances
  value: 9
- type: replace
  path: /instance_groups/0:next/instances
  value: 8`, `{name: shop, instance_groups: [{name: web, instances: 9, jobs: [{name: web}, {name: metrics}]}, {name: db, instances: 8, jobs: []}], tags: {}}`},
		{"escaped slash in a key", `
- type: replace
  path: /tags/a~1b?
  value: c`, `{name: shop, instance_groups: [{name: web, instances: 2, jobs: [{name: web}, {name: metrics}]}, {name: db, instances: 1, jobs: []}], tags: {a/b: c}}`},
		{"ops apply in order", `
- type: replace
  path: /tags/env?
  value: dev
- type: replace
  path: /tags/env
  value: prod`, `{name: shop, instance_groups: [{name: web, instances: 2, jobs: [{name: web}, {name: metrics}]}, {name: db, instances: 1, jobs: []}], tags: {env: prod}}`},
		{"replace the whole document", `
- type: replace
  path: /
  value: {name: other}`, `{name: other}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := applyString(t, doc, tc.ops)
			if err != nil {
				t.Fatal(err)
			}
			if g, w := flow(t, got), flow(t, tc.want); g != w {
				t.Errorf("got  %s\nwant %s", g, w)
			}
		})
	}
}

func TestApplyErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, ops, want string
	}{
		{"missing key", `
- type: replace
  path: /instance_groups/name=web/env
  value: {}`, `ops.yml:3:9: operation [0] /instance_groups/name=web/env: no key "env" (keys: "instances", "jobs", "name") (end the path with ? to add it)`},
		{"no match", `
- type: remove
  path: /instance_groups/name=api/jobs`, `ops.yml:3:9: operation [0] /instance_groups/name=api/jobs: no item has name=api (name: "web", "db") (at /instance_groups/name=api)`},
		{"two matches", `
- type: replace
  path: /instance_groups/0/jobs/-
  value: {name: web}
- type: remove
  path: /instance_groups/0/jobs/name=web`, `ops.yml:6:9: operation [1] /instance_groups/0/jobs/name=web: 2 items have name=web, expected one`},
		{"index out of range", `
- type: replace
  path: /instance_groups/7/instances
  value: 1`, `ops.yml:3:9: operation [0] /instance_groups/7/instances: index 7 is out of range: the list has 2 items (at /instance_groups/7)`},
		{"key into a list", `
- type: replace
  path: /instance_groups/name
  value: x`, `ops.yml:3:9: operation [0] /instance_groups/name: expected a map, found a list`},
		{"index into a map", `
- type: replace
  path: /tags/0
  value: x`, `ops.yml:3:9: operation [0] /tags/0: expected a list, found a map`},
		{"remove append", `
- type: remove
  path: /instance_groups/-`, `ops.yml:3:9: operation [0] /instance_groups/-: - (after the last item) cannot be removed`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := applyString(t, doc, tc.ops)
			if err == nil || err.Error() != tc.want {
				t.Errorf("error\ngot  %v\nwant %s", err, tc.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	ops := `
- type: replace
  path: /a
- type: remove
  path: /a
  value: 1
- type: move
  path: /a
- path: /a/-/b
  type: replace
  value: 1
- type: replace
  path: a
  value: 1
- type: replace
  path: /a
  value: 1
  from: /b
- just a string
`
	_, err := Parse("ops.yml", []byte(ops))
	// An unknown key is ignored, as the BOSH CLI ignores it (see
	// TestExtraKeysAreIgnored).
	want := strings.Join([]string{
		`ops.yml:2:3: operation [0] /a: a replace needs a value`,
		`ops.yml:4:3: operation [1] /a: a remove takes no value`,
		`ops.yml:7:9: operation [2] /a: unknown operation type "move": use replace or remove`,
		`ops.yml:9:9: operation [3] /a/-/b: - (append) may only end a path`,
		`ops.yml:13:9: operation [4] a: a path must start with /`,
		`ops.yml:19:3: operation [6]: an operation must be a map with type, path and (for replace) value`,
	}, "\n")
	if err == nil || err.Error() != want {
		t.Errorf("errors\ngot:\n%v\nwant:\n%s", err, want)
	}
	if _, err := Parse("ops.yml", []byte("type: replace\n")); err == nil || !strings.Contains(err.Error(), "must be a list") {
		t.Errorf("a map as ops file: %v", err)
	}
	if ops, err := Parse("ops.yml", nil); err != nil || len(ops) != 0 {
		t.Errorf("empty ops file: %v %v", ops, err)
	}
}

func TestPointerRoundTrip(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"/", "/a", "/a/0/b", "/a/-", "/a/name=web?/b?", "/x/k=v:before", "/x/3:next/y", "/a~1b/c~0d"} {
		ptr, err := ParsePointer(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if ptr.String() != p {
			t.Errorf("ParsePointer(%q).String() = %q", p, ptr.String())
		}
	}
	for _, bad := range []string{"", "a", "/a//b", "/a:before/b", "/3?", "/=x"} {
		if _, err := ParsePointer(bad); err == nil {
			t.Errorf("ParsePointer(%q) accepted", bad)
		}
	}
}

func TestInsertedNodesAreRecorded(t *testing.T) {
	t.Parallel()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(doc), &n); err != nil {
		t.Fatal(err)
	}
	ops, err := Parse("extra.yml", []byte("- type: replace\n  path: /tags/env?\n  value: {stage: dev}\n"))
	if err != nil {
		t.Fatal(err)
	}
	inserted := map[*yaml.Node]string{}
	root, err := Apply(&n, ops, inserted)
	if err != nil {
		t.Fatal(err)
	}
	tags := root.Content[5]
	stage := tags.Content[1].Content[1]
	if inserted[stage] != "extra.yml" || stage.Line != 3 {
		t.Errorf("inserted value: file %q line %d", inserted[stage], stage.Line)
	}
	// The op's own value is not shared with the document.
	if ops[0].Value == tags.Content[1] {
		t.Error("Apply inserted the op's value node itself, not a copy")
	}
}

// TestExtraKeysAreIgnored reads operations as public ops files write them
// (bosh-deployment's cpi and uaa files, cf-deployment's), with the keys the
// BOSH CLI ignores: name, release, and others. They apply; each ignored key
// is reported with its position.
func TestExtraKeysAreIgnored(t *testing.T) {
	t.Parallel()
	ops := `
- name: cpi
  path: /releases/-
  release: example-cpi
  type: replace
  value:
    name: example-cpi
    version: "1"
- type: replace
  path: /instance_groups/name=web/jobs/name=uaa?/properties
  value: {port: 8443}
  from: nowhere
- type: remove
  path: /instance_groups/name=debug?
`
	parsed, err := Parse("cpi.yml", []byte(ops))
	if err != nil {
		t.Fatal(err)
	}
	var ignored []string
	for _, op := range parsed {
		ignored = append(ignored, op.Ignored...)
	}
	want := []string{
		`cpi.yml:2:3: operation [0]: field "name" ignored (an operation has type, path, value and error)`,
		`cpi.yml:4:3: operation [0]: field "release" ignored (an operation has type, path, value and error)`,
		`cpi.yml:12:3: operation [1]: field "from" ignored (an operation has type, path, value and error)`,
	}
	if strings.Join(ignored, "\n") != strings.Join(want, "\n") {
		t.Errorf("ignored:\n%s\nwant:\n%s", strings.Join(ignored, "\n"), strings.Join(want, "\n"))
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte("releases: []\ninstance_groups:\n- name: web\n  jobs: []\n"), &doc); err != nil {
		t.Fatal(err)
	}
	root, err := Apply(&doc, parsed, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := yaml.Marshal(root)
	if !strings.Contains(string(out), "name: example-cpi") {
		t.Errorf("the operation with ignored keys did not apply:\n%s", out)
	}
}
