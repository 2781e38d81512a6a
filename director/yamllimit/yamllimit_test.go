package yamllimit_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/compleat/compleat/director/yamllimit"
)

func flatMap(keys int) string {
	var b strings.Builder
	for i := 0; i < keys; i++ {
		fmt.Fprintf(&b, "k%d: %d\n", i, i)
	}
	return b.String()
}

func TestCheckNamesTheLimit(t *testing.T) {
	t.Parallel()
	l := yamllimit.Limits{Bytes: 1 << 20, Nodes: 1000, Aliases: 2, Keys: 100, Depth: 5}
	cases := []struct{ doc, want string }{
		{"a: 1\nb: [1, 2]\n", ""},
		{strings.Repeat("x", 1<<20+1), "in.yml: over a limit: 1048577 bytes, the limit is 1 MiB"},
		{flatMap(101), "in.yml:1: over a limit: a map of 101 keys, the limit is 100 keys per map"},
		{"a: " + strings.Repeat("[", 7) + strings.Repeat("]", 7) + "\n", "nested deeper than 5 levels"},
		{"a: &x 1\nb: *x\nc: *x\nd: *x\n", "in.yml:4: over a limit: more than 2 aliases"},
		{"- " + strings.Repeat("1, ", 0) + "\n" + strings.Repeat("- 1\n", 1000), "more than 1000 YAML nodes"},
		{"--- {a: 1}\n---\n" + flatMap(101), "a map of 101 keys"},
		{"a: [unclosed\n", ""}, // syntax is the decoder's business
	}
	for _, c := range cases {
		err := yamllimit.Check("in.yml", []byte(c.doc), l)
		if c.want == "" {
			if err != nil {
				t.Errorf("%.30q: %v", c.doc, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, yamllimit.ErrLimit) {
			t.Errorf("%.30q: %v, want %q", c.doc, err, c.want)
		}
	}
}

// A billion-laughs document: Check counts each alias once and does not
// follow it, so it stays linear in the input.
func TestCheckDoesNotExpandAliases(t *testing.T) {
	t.Parallel()
	doc := "a: &a [x, x, x, x, x, x, x, x, x]\n"
	prev := "a"
	for i := 0; i < 8; i++ {
		name := fmt.Sprintf("l%d", i)
		doc += fmt.Sprintf("%s: &%s [*%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s]\n", name, name, prev, prev, prev, prev, prev, prev, prev, prev, prev)
		prev = name
	}
	if err := yamllimit.Check("bomb.yml", []byte(doc), yamllimit.Config); err != nil {
		t.Errorf("72 aliases under the limit: %v", err)
	}
	if err := yamllimit.Check("bomb.yml", []byte(doc), yamllimit.Limits{Aliases: 50}); err == nil || !strings.Contains(err.Error(), "more than 50 aliases") {
		t.Errorf("alias limit: %v", err)
	}
}
