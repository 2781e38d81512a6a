package deploy

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/compleat/compleat/director/plan"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

// recordLinks records, once a deploy of deployment succeeded, the links it
// provides (for other deployments to consume) and those it consumed, and
// marks every other deployment that consumed one of its shared links which
// has changed since (StaleLinks): `deployments` shows them, and their next
// deploy picks the change up. The changes are told as a task event.
func (d *Deployer) recordLinks(r *task.Reporter, deployment string, p *plan.Plan) error {
	var consumers map[string][]string // changed link key → consumer deployments
	err := d.c.Store.Update(func(tx *store.Tx) error {
		dep, err := tx.Deployment(deployment)
		if err != nil {
			return err
		}
		now := map[string]string{} // shared link key → hash
		for _, l := range p.Links {
			if l.Shared {
				now[plan.LinkKey(deployment, l.Name)] = l.Hash()
			}
		}
		raw, err := json.Marshal(p.Links)
		if err != nil {
			return err
		}
		if len(p.Links) == 0 {
			raw = nil
		}
		dep.Links = raw
		dep.ConsumedLinks = p.Consumed
		dep.StaleLinks = nil
		if err := tx.PutDeployment(dep); err != nil {
			return err
		}
		consumers, err = markConsumers(tx, deployment, now)
		return err
	})
	if err != nil {
		return fmt.Errorf("record links of deployment %s: %w", deployment, err)
	}
	d.noteConsumers(r, consumers)
	return nil
}

// markConsumers marks, in every other deployment, the links of deployment
// it consumed whose hash differs from now (shared link key → hash; a link
// missing from now is no longer shared, or its deployment is gone) as
// stale, and returns the consumers of each changed link.
func markConsumers(tx *store.Tx, deployment string, now map[string]string) (map[string][]string, error) {
	consumers := map[string][]string{}
	deps, err := tx.Deployments()
	if err != nil {
		return nil, err
	}
	prefix := plan.LinkKey(deployment, "")
	for _, o := range deps {
		if o.Name == deployment {
			continue
		}
		changed := false
		for key, hash := range o.ConsumedLinks {
			if !strings.HasPrefix(key, prefix) || now[key] == hash {
				continue
			}
			consumers[key] = append(consumers[key], o.Name)
			if !slices.Contains(o.StaleLinks, key) {
				o.StaleLinks = append(o.StaleLinks, key)
				sort.Strings(o.StaleLinks)
				changed = true
			}
		}
		if changed {
			if err := tx.PutDeployment(o); err != nil {
				return nil, err
			}
		}
	}
	return consumers, nil
}

// noteConsumers tells, as a task event, which deployments consume each
// changed shared link.
func (d *Deployer) noteConsumers(r *task.Reporter, consumers map[string][]string) {
	keys := make([]string, 0, len(consumers))
	for k := range consumers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "Shared link %s changed or is gone: deployments consuming it pick that up on their next deploy: %s\n", k, strings.Join(consumers[k], ", "))
	}
	d.note(r, "Shared links", b.String())
}
