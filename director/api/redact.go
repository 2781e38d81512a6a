package api

import (
	"net/http"

	"go.yaml.in/yaml/v3"

	"github.com/compleat/compleat/director/config"
	"github.com/compleat/compleat/director/store"
)

// Redacted stands in for a credential in an answer to a token without the
// admin scope.
const Redacted = "<redacted>"

// isAdmin reports whether the request's token has the admin scope.
func isAdmin(r *http.Request) bool {
	tok, ok := r.Context().Value(ctxKey{}).(Token)
	return ok && tok.has(config.ScopeAdmin)
}

// redactConfig hides the credentials a config may hold from a read-scope
// token. A cpi config's credentials are its plugins' properties: every value
// under cpis[].properties becomes Redacted (keys stay, so the shape can still
// be read). Content that does not parse is withheld whole. Cloud and runtime
// configs hold no credentials (their secrets are ((variables))).
func redactConfig(c store.Config) store.Config {
	if c.Type != store.ConfigCPI {
		return c
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(c.Content), &doc); err != nil || len(doc.Content) == 0 {
		c.Content = Redacted + "\n"
		return c
	}
	cpis := mapValue(doc.Content[0], "cpis")
	if cpis != nil && cpis.Kind == yaml.SequenceNode {
		for _, entry := range cpis.Content {
			if p := mapValue(entry, "properties"); p != nil {
				redactNode(p)
			}
		}
	} else if cpis != nil {
		redactNode(cpis)
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		c.Content = Redacted + "\n"
		return c
	}
	c.Content = string(out)
	return c
}

// mapValue is the value of key in mapping m, or nil.
func mapValue(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for k := 0; k+1 < len(m.Content); k += 2 {
		if m.Content[k].Value == key {
			return m.Content[k+1]
		}
	}
	return nil
}

// redactNode replaces every scalar below n (map keys excepted) with Redacted;
// aliases and anchors are dropped so nothing is reachable twice.
func redactNode(n *yaml.Node) {
	n.Anchor = ""
	switch n.Kind {
	case yaml.MappingNode:
		for k := 0; k+1 < len(n.Content); k += 2 {
			n.Content[k].Anchor = ""
			redactNode(n.Content[k+1])
		}
	case yaml.SequenceNode, yaml.DocumentNode:
		for _, c := range n.Content {
			redactNode(c)
		}
	default:
		*n = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: Redacted, Line: n.Line, Column: n.Column}
	}
}
