package deploy

import (
	"bytes"
	"strings"

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
	return lineDiff(redact(prev), redact(next))
}

// redact returns the document as YAML with secret-bearing values replaced.
func redact(doc string) string {
	if doc == "" {
		return ""
	}
	var root yaml.Node
	if err := yaml.Unmarshal([]byte(doc), &root); err != nil {
		return "(manifest not shown: " + err.Error() + ")\n"
	}
	hide(&root, false)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&root); err != nil {
		return "(manifest not shown)\n"
	}
	enc.Close()
	return buf.String()
}

func hide(n *yaml.Node, secret bool) {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			hide(c, secret)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			hide(n.Content[i+1], secret || k == "properties" || k == "env" || k == "options")
		}
	case yaml.ScalarNode:
		if secret {
			n.Value, n.Tag, n.Style = redacted, "!!str", 0
		}
	case yaml.AliasNode:
		if secret {
			n.Kind, n.Value, n.Tag, n.Alias = yaml.ScalarNode, redacted, "!!str", nil
		}
	}
}

// lineDiff is a unified-style diff of two texts, lines prefixed "+ ", "- "
// or "  " (two lines of context around changes); "" when equal.
func lineDiff(a, b string) string {
	if a == b {
		return ""
	}
	x, y := splitLines(a), splitLines(b)
	// Longest common subsequence table.
	n, m := len(x), len(y)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	type line struct {
		op   byte
		text string
	}
	var out []line
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && x[i] == y[j]:
			out = append(out, line{' ', x[i]})
			i, j = i+1, j+1
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			out = append(out, line{'+', y[j]})
			j++
		default:
			out = append(out, line{'-', x[i]})
			i++
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

func splitLines(s string) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}
