package plan_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/txtar"

	"github.com/compleat/compleat/director/plan"
)

// randomManifest writes a deployment with random group sizes, AZs, disks,
// vm types and property values, over the release and cloud config of
// testdata/first_deploy.txtar.
func randomManifest(r *rand.Rand) string {
	var b strings.Builder
	b.WriteString(`name: web
releases:
- {name: web, version: "1"}
stemcells:
- {alias: default, os: local, version: "1"}
update: {canaries: 1, max_in_flight: 2, canary_watch_time: 1000, update_watch_time: 1000}
instance_groups:
`)
	strategy := []string{"delete-create", "create-swap-delete"}
	azChoices := [][]string{{"z1"}, {"z2"}, {"z1", "z2"}, {"z2", "z1"}}
	groups := []string{"web", "api", "worker"}
	for _, g := range groups {
		if g != "web" && r.IntN(3) == 0 {
			continue // group absent this time
		}
		azs := azChoices[r.IntN(len(azChoices))]
		fmt.Fprintf(&b, "- name: %s\n  azs: [%s]\n  instances: %d\n", g, strings.Join(azs, ", "), r.IntN(6))
		fmt.Fprintf(&b, "  vm_type: %s\n  stemcell: default\n  networks: [{name: default}]\n", []string{"default", "large"}[r.IntN(2)])
		fmt.Fprintf(&b, "  update: {vm_strategy: %s}\n", strategy[r.IntN(2)])
		switch r.IntN(4) {
		case 0:
		case 1:
			b.WriteString("  persistent_disk: 2048\n")
		default:
			fmt.Fprintf(&b, "  persistent_disk_type: %s\n", []string{"default", "big"}[r.IntN(2)])
		}
		fmt.Fprintf(&b, "  jobs:\n  - name: web\n    release: web\n    properties: {version: v%d}\n", r.IntN(3))
	}
	if r.IntN(2) == 0 {
		b.WriteString(`- name: lb
  azs: [z1]
  instances: 1
  vm_type: default
  stemcell: default
  networks: [{name: default, static_ips: [127.77.1.10]}]
  jobs:
  - name: lb
    release: web
    consumes:
      backend: {from: web-backend}
`)
	}
	out := b.String()
	return strings.Replace(out, "  - name: web\n    release: web\n    properties: {version:", "  - name: web\n    release: web\n    provides: {backend: {as: web-backend}}\n    properties: {version:", 1)
}

// TestPlanSequences deploys random manifests one after another and checks,
// after every step: the invariants (no persistent disk still referenced is
// orphaned, every deployed disk is kept or orphaned, no address or index
// given twice, deleted instances' addresses not reused), that existing
// instances keep their AZ and index, and that planning the same manifest
// again changes nothing.
func TestPlanSequences(t *testing.T) {
	t.Parallel()
	ar, err := txtar.ParseFile("testdata/first_deploy.txtar")
	if err != nil {
		t.Fatal(err)
	}
	base := golden{sections: map[string][]byte{}}
	for _, f := range ar.Files {
		base.sections[f.Name] = f.Data
	}
	runs := 150
	if testing.Short() {
		runs = 20
	}
	for seed := range runs {
		r := rand.New(rand.NewPCG(uint64(seed), 7))
		ids := &plan.SequentialIDs{Prefix: "id-"}
		var state plan.State
		for step := range 5 {
			text := randomManifest(r)
			g := golden{sections: map[string][]byte{}}
			for k, v := range base.sections {
				g.sections[k] = v
			}
			g.sections["manifest.yml"] = []byte(text)
			desired, _ := g.desired(t, "manifest.yml", "director.yml", ids)
			if desired.Manifest == nil {
				t.Fatalf("seed %d step %d: manifest does not parse:\n%s", seed, step, text)
			}
			// Another deployment holds a few addresses none of ours has.
			ours := map[netip.Addr]bool{}
			for _, st := range state.Instances {
				for _, a := range st.Networks {
					ours[a] = true
				}
			}
			state.OtherIPs = map[string][]netip.Addr{}
			for range r.IntN(6) {
				a := netip.AddrFrom4([4]byte{127, 77, byte(1 + r.IntN(2)), byte(20 + r.IntN(12))})
				if !ours[a] {
					state.OtherIPs["default"] = append(state.OtherIPs["default"], a)
				}
			}
			p, err := plan.Compute(desired, state)
			if err != nil {
				t.Fatalf("seed %d step %d: %v\n%s", seed, step, err, text)
			}
			checkInvariants(t, p, state)
			for _, grp := range p.Groups {
				for _, in := range grp.Instances {
					for _, n := range in.Networks {
						if slices.Contains(state.OtherIPs[n.Name], n.IP) {
							t.Errorf("seed %d step %d: %s got %s, which another deployment holds", seed, step, in.Name(), n.IP)
						}
					}
				}
			}
			prev := map[string]plan.InstanceState{}
			for _, st := range state.Instances {
				prev[st.ID] = st
			}
			for _, grp := range p.Groups {
				for _, in := range grp.Instances {
					if old, ok := prev[in.ID]; ok && (old.AZ != in.AZ || old.Index != in.Index) {
						t.Errorf("seed %d step %d: %s moved from %s/%d to %s/%d", seed, step, in.Name(), old.AZ, old.Index, in.AZ, in.Index)
					}
				}
			}
			others := state.OtherIPs
			state = deployed(p)
			state.OtherIPs = others
			again, err := plan.Compute(desired, state)
			if err != nil {
				t.Fatalf("seed %d step %d: replanning: %v", seed, step, err)
			}
			if again.HasChanges() {
				var b strings.Builder
				again.Format(&b)
				t.Fatalf("seed %d step %d: replanning the deployed manifest changes something:\n%s\nmanifest:\n%s", seed, step, b.String(), text)
			}
			if t.Failed() {
				t.Fatalf("seed %d step %d manifest:\n%s", seed, step, text)
			}
		}
	}
}

// TestIgnoredInstancesAreLeftAsTheyAre deploys a random manifest, marks
// random instances ignored and plans another random manifest: the plan
// either refuses (naming an ignored instance it would delete) or leaves
// every ignored instance as recorded — no change, its VM, disk and address
// kept, its disk not orphaned.
func TestIgnoredInstancesAreLeftAsTheyAre(t *testing.T) {
	t.Parallel()
	ar, err := txtar.ParseFile("testdata/first_deploy.txtar")
	if err != nil {
		t.Fatal(err)
	}
	base := golden{sections: map[string][]byte{}}
	for _, f := range ar.Files {
		base.sections[f.Name] = f.Data
	}
	runs := 150
	if testing.Short() {
		runs = 20
	}
	refused, kept := 0, 0
	for seed := range runs {
		r := rand.New(rand.NewPCG(uint64(seed), 11))
		ids := &plan.SequentialIDs{Prefix: "id-"}
		plan1 := func(state plan.State) (plan.Plan, string, error) {
			text := randomManifest(r)
			g := golden{sections: map[string][]byte{}}
			for k, v := range base.sections {
				g.sections[k] = v
			}
			g.sections["manifest.yml"] = []byte(text)
			desired, _ := g.desired(t, "manifest.yml", "director.yml", ids)
			p, err := plan.Compute(desired, state)
			return p, text, err
		}
		first, _, err := plan1(plan.State{})
		if err != nil {
			t.Fatalf("seed %d: first plan: %v", seed, err)
		}
		state := deployed(first)
		ignored := map[string]plan.InstanceState{}
		for i := range state.Instances {
			if r.IntN(3) == 0 {
				state.Instances[i].Ignore = true
				ignored[state.Instances[i].ID] = state.Instances[i]
			}
		}
		p, text, err := plan1(state)
		if err != nil {
			if !strings.Contains(err.Error(), "is ignored but this deploy would delete it") {
				t.Fatalf("seed %d: %v\n%s", seed, err, text)
			}
			refused++
			continue
		}
		checkInvariants(t, p, state)
		seen := 0
		for _, g := range p.Groups {
			for _, in := range g.Instances {
				prev, ok := ignored[in.ID]
				if !ok {
					continue
				}
				seen++
				if !in.Ignored || len(in.Changes) > 0 || in.Recreate || in.VMCID != prev.VMCID {
					t.Errorf("seed %d: ignored %s planned %+v", seed, in.Name(), in.Changes)
				}
				if (prev.Disk == nil) != (in.Disk == nil) || prev.Disk != nil && in.Disk.CID != prev.Disk.CID {
					t.Errorf("seed %d: ignored %s disk %+v, was %+v", seed, in.Name(), in.Disk, prev.Disk)
				}
				for _, n := range in.Networks {
					if a, ok := prev.Networks[n.Name]; ok && a.IsValid() && n.IP != a {
						t.Errorf("seed %d: ignored %s moves from %s to %s", seed, in.Name(), a, n.IP)
					}
				}
			}
		}
		if seen != len(ignored) {
			t.Errorf("seed %d: %d ignored instances in the plan, want %d", seed, seen, len(ignored))
		}
		for _, od := range p.OrphanDisks {
			for _, prev := range ignored {
				if prev.Disk != nil && od.CID == prev.Disk.CID {
					t.Errorf("seed %d: the disk %s of ignored %s/%s is orphaned", seed, od.CID, prev.Group, prev.ID)
				}
			}
		}
		if len(ignored) > 0 {
			kept++
		}
	}
	t.Logf("%d plans refused (an ignored instance would be deleted), %d left ignored instances alone", refused, kept)
}
