package manifest

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestSourceMapNamesTheOperatorsFiles prepares a manifest written in flow
// style (its lines move when written anew) with an ops file, and maps the
// prepared text's positions back: the manifest's nodes to the manifest, the
// ops file's value to the ops file.
func TestSourceMapNamesTheOperatorsFiles(t *testing.T) {
	t.Parallel()
	manifest := "name: web\nreleases: [{name: web, version: latest}]\ninstance_groups:\n- {name: web, instances: 1}\n"
	ops := "# more\n- type: replace\n  path: /instance_groups/name=web/instances\n  value: three\n"
	p, err := Prepare(context.Background(), "web.yml", []byte(manifest), LoadOptions{OpsFiles: []File{{Name: "more.yml", Data: []byte(ops)}}})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(p.Manifest), "\n")
	find := func(text string) Position {
		for i, l := range lines {
			if c := strings.Index(l, text); c >= 0 {
				return Position{File: "prepared", Line: i + 1, Column: c + 1}
			}
		}
		t.Fatalf("no %q in the prepared text:\n%s", text, p.Manifest)
		return Position{}
	}
	for _, tc := range []struct {
		at   string
		want Position
	}{
		{"three", Position{File: "more.yml", Line: 4, Column: 10}},
		{"version: latest", Position{File: "web.yml", Line: 2, Column: 24}},
		{"instance_groups", Position{File: "web.yml", Line: 3, Column: 1}},
	} {
		if got, ok := p.SourceMap.Position(find(tc.at)); !ok || got != tc.want {
			t.Errorf("%s: %v (found %v), want %v", tc.at, got, ok, tc.want)
		}
	}
	// Remap rewrites the director's errors on the prepared text.
	at := find("three")
	err = Remap(Errors{{Position: Position{File: "web.yml", Line: at.Line, Column: at.Column}, Path: "instance_groups[0].instances", Message: "must be an integer"}}, "web.yml", p.SourceMap)
	if err.Error() != "more.yml:4:10: instance_groups[0].instances: must be an integer" {
		t.Errorf("remapped: %v", err)
	}
	other := errors.New("not a manifest error")
	if Remap(other, "web.yml", p.SourceMap) != other {
		t.Error("Remap changed an error that is not a manifest error")
	}
}
