package manifest

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// TestAliasBombs: a few lines of anchors that expand to a billion nodes are
// refused with an error instead of exhausting memory.
func TestAliasBombs(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 9; i++ {
		refs := strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d, ", i-1), 10), ", ")
		fmt.Fprintf(&b, "a%d: &a%d [%s]\n", i, i, refs)
	}
	bomb := b.String()
	indent := func(s, pad string) string {
		return pad + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n"+pad) + "\n"
	}

	_, err := ParseDeployment("m.yml", []byte("properties:\n"+indent(bomb, "  ")))
	if err == nil || !strings.Contains(err.Error(), "too large") {
		t.Errorf("properties bomb: %v", err)
	}
	_, err = Interpolate(context.Background(), "m.yml", []byte("a: 1\n"), LoadOptions{OpsFiles: []File{{
		Name: "o.yml", Data: []byte("- type: replace\n  path: /x?\n  value:\n" + indent(bomb, "    ")),
	}}})
	if err == nil || !strings.Contains(err.Error(), "o.yml:2:9: operation [0] /x?: the value is too large") {
		t.Errorf("ops bomb: %v", err)
	}
	// Load expands aliases (as BOSH does) within the same bound.
	if _, err := Interpolate(context.Background(), "m.yml", []byte(bomb), LoadOptions{}); err == nil || !strings.Contains(err.Error(), "m.yml:1:1: document is too large") {
		t.Errorf("interpolate: %v", err)
	}
}
