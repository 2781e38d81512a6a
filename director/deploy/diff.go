package deploy

import (
	"bytes"
	"fmt"
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
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			out = append(out, line{'-', x[i]})
			i++
		default:
			out = append(out, line{'+', y[j]})
			j++
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
