package manifest

import (
	"errors"

	"go.yaml.in/yaml/v3"
)

var errExpand = errors.New("document is too large or too deeply nested once aliases are expanded")

// expand returns a deep copy of n with every alias replaced by a copy of
// what it names and every merge key (<<) folded into its map, keys written
// in the map winning. Ops files and interpolation then work on plain data,
// as in BOSH, where changing one use of an anchored value leaves the others
// alone. Copies keep the line and column they were written at.
func expand(n *yaml.Node, budget *int, depth int) (*yaml.Node, error) {
	*budget--
	if *budget < 0 || depth > maxDepth {
		return nil, errExpand
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null", Line: n.Line, Column: n.Column}, nil
		}
		return expand(n.Alias, budget, depth+1)
	}
	c := *n
	c.Anchor, c.Alias, c.Content = "", nil, nil
	if n.Kind != yaml.MappingNode {
		for _, ch := range n.Content {
			e, err := expand(ch, budget, depth+1)
			if err != nil {
				return nil, err
			}
			c.Content = append(c.Content, e)
		}
		return &c, nil
	}
	written := map[string]bool{}
	var merged [][2]*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			ev, err := expand(v, budget, depth+1)
			if err != nil {
				return nil, err
			}
			srcs := []*yaml.Node{ev}
			if ev.Kind == yaml.SequenceNode {
				srcs = ev.Content
			}
			for _, src := range srcs {
				if src.Kind != yaml.MappingNode {
					// Left for the decoder to report.
					c.Content = append(c.Content, k, ev)
					break
				}
				for j := 0; j+1 < len(src.Content); j += 2 {
					merged = append(merged, [2]*yaml.Node{src.Content[j], src.Content[j+1]})
				}
			}
			continue
		}
		ek, err := expand(k, budget, depth+1)
		if err != nil {
			return nil, err
		}
		ev, err := expand(v, budget, depth+1)
		if err != nil {
			return nil, err
		}
		if ek.Kind == yaml.ScalarNode {
			written[ek.Value] = true
		}
		c.Content = append(c.Content, ek, ev)
	}
	for _, kv := range merged {
		if kv[0].Kind == yaml.ScalarNode && written[kv[0].Value] {
			continue
		}
		if kv[0].Kind == yaml.ScalarNode {
			written[kv[0].Value] = true
		}
		c.Content = append(c.Content, kv[0], kv[1])
	}
	return &c, nil
}
