package deploy

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/sergi/go-diff/diffmatchpatch"
	"go.yaml.in/yaml/v3"

	"github.com/compleat/compleat/director/store"
)

// redacted replaces every scalar under a properties, env or variables
// block: values there may be secrets (given with -v or written in the
// manifest), so diffs show that they changed, never what they are.
const redacted = "<redacted>"

// manifestDiff is the line diff, redacted, between the manifest last
// deployed successfully and the one submitted ("" when they are equal).
func (d *Deployer) manifestDiff(deployment, next string) string {
	var prev string
	d.c.Store.View(func(tx *store.Tx) error {
		dep, err := tx.Deployment(deployment)
		if err != nil || dep.ManifestID == 0 {
			return nil
		}
		m, err := tx.Manifest(deployment, dep.ManifestID)
		if err == nil {
			prev = m.Content
		}
		return nil
	})
	return redactedDiff(prev, next)
}

// redactedDiff diffs two manifests with secret-bearing values replaced:
// a value that changed reads "<redacted, changed>", so the diff shows
// where something changed but never what it is.
func redactedDiff(prev, next string) string {
	old := map[string]string{}
	a := redact(prev, func(path, value string) string {
		old[path] = value
		return redacted
	})
	b := redact(next, func(path, value string) string {
		if was, ok := old[path]; ok && was != value {
			return redactedChanged
		}
		return redacted
	})
	return lineDiff(a, b)
}

const redactedChanged = "<redacted, changed>"

// redact returns the document as YAML with every scalar under a
// properties, env or options block replaced by what hide returns for its
// path and value.
func redact(doc string, hide func(path, value string) string) string {
	if doc == "" {
		return ""
	}
	var root yaml.Node
	if err := yaml.Unmarshal([]byte(doc), &root); err != nil {
		return "(manifest not shown: " + err.Error() + ")\n"
	}
	walkSecrets(&root, "", false, hide)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&root); err != nil {
		return "(manifest not shown)\n"
	}
	enc.Close()
	return buf.String()
}

func walkSecrets(n *yaml.Node, path string, secret bool, hide func(path, value string) string) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			walkSecrets(c, path, secret, hide)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			key := fmt.Sprint(i)
			if c.Kind == yaml.MappingNode {
				for j := 0; j+1 < len(c.Content); j += 2 {
					if c.Content[j].Value == "name" {
						key = "name=" + c.Content[j+1].Value
					}
				}
			}
			walkSecrets(c, path+"/"+key, secret, hide)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			walkSecrets(n.Content[i+1], path+"/"+k, secret || k == "properties" || k == "env" || k == "options", hide)
		}
	case yaml.ScalarNode:
		if secret {
			n.Value, n.Tag, n.Style = hide(path, n.Value), "!!str", 0
		}
	case yaml.AliasNode:
		if secret {
			n.Kind, n.Value, n.Tag, n.Alias = yaml.ScalarNode, hide(path, "*"+n.Value), "!!str", nil
		}
	}
}

// lineDiff is a unified-style diff of two texts, lines prefixed "+ ", "- "
// or "  " (two lines of context around changes); "" when equal. The diff is
// Myers' algorithm in linear space (go-diff, line mode), so a manifest of
// tens of thousands of lines diffs in megabytes, not gigabytes.
func lineDiff(a, b string) string {
	if a == b {
		return ""
	}
	type line struct {
		op   byte
		text string
	}
	dmp := diffmatchpatch.New()
	dmp.DiffTimeout = 0 // minimal diffs; the bisection is linear in space either way
	ra, rb, lines := dmp.DiffLinesToRunes(withNewline(a), withNewline(b))
	var out []line
	for _, d := range dmp.DiffCharsToLines(dmp.DiffMainRunes(ra, rb, false), lines) {
		op := byte(' ')
		switch d.Type {
		case diffmatchpatch.DiffDelete:
			op = '-'
		case diffmatchpatch.DiffInsert:
			op = '+'
		}
		for _, text := range splitLines(d.Text) {
			out = append(out, line{op, text})
		}
	}
	const context = 2
	keep := make([]bool, len(out))
	for k, l := range out {
		if l.op == ' ' {
			continue
		}
		for c := max(0, k-context); c <= min(len(out)-1, k+context); c++ {
			keep[c] = true
		}
	}
	var sb strings.Builder
	gap := false
	for k, l := range out {
		if !keep[k] {
			gap = true
			continue
		}
		if gap && sb.Len() > 0 {
			sb.WriteString("  ...\n")
		}
		gap = false
		sb.WriteByte(l.op)
		sb.WriteByte(' ')
		sb.WriteString(l.text)
		sb.WriteByte('\n')
	}
	return sb.String()
}

// withNewline ends a non-empty text with a newline, so that its last line
// compares equal to the same line followed by others.
func withNewline(s string) string {
	if s != "" && !strings.HasSuffix(s, "\n") {
		return s + "\n"
	}
	return s
}

func splitLines(s string) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}
