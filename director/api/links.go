package api

import (
	"encoding/json"

	"github.com/compleat/compleat/director/store"
)

// withoutLinkProperties is a deployment as the API answers it: the
// properties its provided links expose are left out (they may hold
// generated secrets, which only `variables --reveal` shows); names, types,
// groups and instances stay.
func withoutLinkProperties(d store.Deployment) store.Deployment {
	if len(d.Links) == 0 {
		return d
	}
	var links []map[string]any
	if err := json.Unmarshal(d.Links, &links); err != nil {
		d.Links = nil
		return d
	}
	for _, l := range links {
		delete(l, "properties")
	}
	raw, err := json.Marshal(links)
	if err != nil {
		raw = nil
	}
	d.Links = raw
	return d
}
