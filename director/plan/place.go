package plan

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"

	"github.com/compleat/compleat/director/manifest"
)

// placed is what placement decided about an instance beyond its Instance.
type placed struct {
	prev   *InstanceState        // nil for a new instance
	static map[string]netip.Addr // network → static IP
	gi     int                   // manifest index of its group
}

// place decides a group's instances: which existing ones stay (keeping AZ,
// index and id), which are deleted, and which are new.
func (c *computer) place(gi int, ig *manifest.InstanceGroup, existing []InstanceState) (Group, []Deletion) {
	gp := groupPath(gi)
	sc, ok := c.d.Stemcells[ig.Stemcell]
	if !ok {
		c.errorf(gp+".stemcell", "stemcell %q is not resolved to an uploaded stemcell", ig.Stemcell)
	}
	g := Group{Name: ig.Name, Lifecycle: ig.Lifecycle, Update: ig.Update, AZs: ig.AZs, Stemcell: sc}
	azs := ig.AZs
	if len(azs) == 0 {
		azs = []string{""}
	}
	sort.Slice(existing, func(i, j int) bool { return existing[i].Index < existing[j].Index })

	var deleted []Deletion
	var valid []InstanceState
	for _, st := range existing {
		if slices.Contains(azs, st.AZ) {
			valid = append(valid, st)
		} else {
			deleted = append(deleted, Deletion{Instance: st, Reason: ReasonAZRemoved})
		}
	}

	type slot struct {
		az     string
		prev   *InstanceState
		static map[string]netip.Addr
	}
	var slots []slot

	staticNet := -1
	for k, n := range ig.Networks {
		if len(n.StaticIPs) > 0 {
			staticNet = k
			break
		}
	}
	if staticNet >= 0 {
		in := ig.Networks[staticNet]
		if len(in.StaticIPs) != ig.Instances {
			c.errorf(fmt.Sprintf("%s.networks[%d].static_ips", gp, staticNet), "%d static IPs for %d instances: give exactly one per instance", len(in.StaticIPs), ig.Instances)
			return g, deleted
		}
		servedAZs := func(a netip.Addr) []string {
			nw, _ := c.cc.Network(in.Name)
			if nw == nil || nw.Type != manifest.Manual {
				return azs
			}
			for _, sn := range nw.Subnets {
				if sn.Range.Contains(a) {
					var out []string
					for _, az := range azs {
						if az == "" || sn.HasAZ(az) {
							out = append(out, az)
						}
					}
					return out
				}
			}
			return nil
		}
		used := make([]bool, len(valid))
		var pending []netip.Addr
		// Instances keep their static IP when it is still listed.
		for _, a := range in.StaticIPs {
			found := false
			for i := range valid {
				if !used[i] && valid[i].Networks[in.Name] == a && slices.Contains(servedAZs(a), valid[i].AZ) {
					used[i] = true
					slots = append(slots, slot{az: valid[i].AZ, prev: &valid[i], static: map[string]netip.Addr{in.Name: a}})
					found = true
					break
				}
			}
			if !found {
				pending = append(pending, a)
			}
		}
		// New addresses go to remaining instances in a served AZ, else to
		// new instances in the emptiest served AZ.
		for _, a := range pending {
			served := servedAZs(a)
			placedIt := false
			for i := range valid {
				if !used[i] && slices.Contains(served, valid[i].AZ) {
					used[i] = true
					slots = append(slots, slot{az: valid[i].AZ, prev: &valid[i], static: map[string]netip.Addr{in.Name: a}})
					placedIt = true
					break
				}
			}
			if placedIt {
				continue
			}
			if len(served) == 0 {
				c.errorf(fmt.Sprintf("%s.networks[%d].static_ips", gp, staticNet), "static IP %s serves none of the group's azs", a)
				continue
			}
			best := served[0]
			count := func(az string) int {
				n := 0
				for _, s := range slots {
					if s.az == az {
						n++
					}
				}
				return n
			}
			for _, az := range served[1:] {
				if count(az) < count(best) {
					best = az
				}
			}
			slots = append(slots, slot{az: best, static: map[string]netip.Addr{in.Name: a}})
		}
		for i := range valid {
			if !used[i] {
				reason := ReasonScaledDown
				if len(valid) <= ig.Instances {
					reason = ReasonStaticIPChange
				}
				deleted = append(deleted, Deletion{Instance: valid[i], Reason: reason})
			}
		}
	} else {
		// Balanced: per AZ, N/len(azs), the remainder to the AZs that
		// already hold the most instances (fewest moves), then AZ order.
		byAZ := map[string][]int{}
		for i := range valid {
			byAZ[valid[i].AZ] = append(byAZ[valid[i].AZ], i)
		}
		target := map[string]int{}
		for _, az := range azs {
			target[az] = ig.Instances / len(azs)
		}
		order := slices.Clone(azs)
		sort.SliceStable(order, func(i, j int) bool { return len(byAZ[order[i]]) > len(byAZ[order[j]]) })
		for i := 0; i < ig.Instances%len(azs); i++ {
			target[order[i]]++
		}
		for _, az := range azs {
			for k, i := range byAZ[az] {
				if k < target[az] {
					slots = append(slots, slot{az: az, prev: &valid[i]})
				} else {
					reason := ReasonScaledDown
					if len(valid) <= ig.Instances {
						reason = ReasonRebalanced
					}
					deleted = append(deleted, Deletion{Instance: valid[i], Reason: reason})
				}
			}
		}
		// New instances, round robin over the AZs with room.
		have := map[string]int{}
		for _, s := range slots {
			have[s.az]++
		}
		for {
			added := false
			for _, az := range azs {
				if have[az] < target[az] {
					slots = append(slots, slot{az: az})
					have[az]++
					added = true
				}
			}
			if !added {
				break
			}
		}
	}

	// Indexes and ids: kept instances keep theirs; new ones take the lowest
	// free index, in slot order.
	// Instances being deleted keep their index until they go (last), so
	// new instances never share an index with them.
	taken := map[int]bool{}
	for _, s := range slots {
		if s.prev != nil {
			taken[s.prev.Index] = true
		}
	}
	for _, d := range deleted {
		taken[d.Instance.Index] = true
	}
	next := 0
	bootstrapKept := false
	for _, s := range slots {
		in := Instance{Group: ig.Name, AZ: s.az, Stemcell: sc}
		p := &placed{static: s.static, gi: gi}
		if s.prev != nil {
			prev := *s.prev
			p.prev = &prev
			in.ID, in.Index, in.Existing = prev.ID, prev.Index, true
			in.VMCID, in.AgentID = prev.VMCID, prev.AgentID
			if prev.Bootstrap {
				in.Bootstrap = true
				bootstrapKept = true
			}
		} else {
			for taken[next] {
				next++
			}
			in.Index = next
			taken[next] = true
			in.ID = c.d.IDs.NewID()
		}
		if c.placed == nil {
			c.placed = map[string]*placed{}
		}
		c.placed[in.ID] = p
		g.Instances = append(g.Instances, in)
	}
	sort.Slice(g.Instances, func(i, j int) bool { return g.Instances[i].Index < g.Instances[j].Index })
	if !bootstrapKept && len(g.Instances) > 0 {
		g.Instances[0].Bootstrap = true
	}
	return g, deleted
}
