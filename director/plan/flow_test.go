package plan_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/director/compile"
	"github.com/compleat/compleat/director/compile/compiletest"
	"github.com/compleat/compleat/director/plan"
	"github.com/compleat/compleat/director/update"
	"github.com/compleat/compleat/director/update/updatetest"
)

// deployWith plans text against state, compiles what the plan needs and
// rolls it out through the fakes, returning the new state.
func deployWith(t *testing.T, g golden, text string, state plan.State, ids plan.IDSource, c *compile.Compiler, x update.Executor) (plan.Plan, compile.Result, update.Result, plan.State) {
	t.Helper()
	g.sections["manifest.yml"] = []byte(text)
	d, _ := g.desired(t, "manifest.yml", "director.yml", ids)
	p, err := plan.Compute(d, state)
	if err != nil {
		t.Fatal(err)
	}
	cres, err := c.Compile(context.Background(), p.CompileTargets(), compile.Options{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	ro := p.Rollout()
	for i := range ro.Groups {
		ro.Groups[i].Update.CanaryWatchTime.Min, ro.Groups[i].Update.CanaryWatchTime.Max = 0, 0
		ro.Groups[i].Update.UpdateWatchTime.Min, ro.Groups[i].Update.UpdateWatchTime.Max = 0, 0
	}
	ures, err := update.New(x, nil).Run(context.Background(), ro, update.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p, cres, ures, deployed(p)
}

// TestDeployFlow drives plan, compile and update together the way the
// director does: a first deploy creates everything; a property change
// updates only the web instances, canary first; a redeploy of the same
// manifest compiles nothing and touches no instance.
func TestDeployFlow(t *testing.T) {
	t.Parallel()
	g := loadCase(t, "testdata/first_deploy.txtar")
	v1 := string(g.sections["manifest.yml"])
	v2 := strings.Replace(v1, "version: v1", "version: v2", 1)
	ids := &plan.SequentialIDs{Prefix: "id-"}
	cloud := compiletest.NewCloud(time.Millisecond)
	c := compile.New(cloud, compiletest.NewCache(), nil)
	x := updatetest.New()

	_, cres, ures, state := deployWith(t, g, v1, plan.State{}, ids, c, x)
	if cres.Built != 3 || len(ures.Updated) != 3 {
		t.Fatalf("first deploy: built %d packages, updated %d instances", cres.Built, len(ures.Updated))
	}
	if steps := x.StepsOf("web/id-1"); steps[0] != "create-vm" || !slices.Contains(steps, "update-disk") {
		t.Errorf("first deploy steps of web/id-1: %v", steps)
	}

	before := len(x.Timeline())
	_, cres, ures, state = deployWith(t, g, v2, state, ids, c, x)
	if cres.Built != 0 || cres.Hits != 3 {
		t.Errorf("property change compiled %d packages (hits %d)", cres.Built, cres.Hits)
	}
	var touched []string
	for _, in := range ures.Touched {
		touched = append(touched, in.Name())
	}
	if !slices.Equal(touched, []string{"web/id-1", "web/id-2"}) {
		t.Errorf("property change touched %v, want the two web instances, canary first", touched)
	}
	for _, s := range x.Timeline()[before:] {
		if s.Instance == "lb/id-3" && s.Step != "post-deploy" {
			t.Errorf("lb was touched by a web property change: %s", s.Step)
		}
	}

	before = len(x.Timeline())
	p, cres, ures, _ := deployWith(t, g, v2, state, ids, c, x)
	if p.HasChanges() || cres.Built != 0 || len(ures.Touched) != 0 {
		t.Errorf("no-op deploy: changes %v, built %d, touched %d", p.HasChanges(), cres.Built, len(ures.Touched))
	}
	if n := len(x.Timeline()) - before; n != 0 {
		t.Errorf("no-op deploy made %d executor calls", n)
	}
	if cloud.LiveVMs() != 0 {
		t.Errorf("%d compile VMs left", cloud.LiveVMs())
	}
}

// TestSurgeFlow: with max_surge, an in-place change (a property) of the
// web group replaces every web VM create-swap-delete at a new address, one
// at a time; the static-IP lb is updated in place; edge, which consumes
// web's link and may surge, surges in turn. Deploying the same manifest
// again changes nothing: the new addresses are kept.
func TestSurgeFlow(t *testing.T) {
	t.Parallel()
	g := loadCase(t, "testdata/max_surge.txtar")
	v2 := string(g.sections["manifest.yml"])
	v1 := strings.Replace(v2, "version: v2", "version: v1", 1)
	ids := &plan.SequentialIDs{Prefix: "id-"}
	c := compile.New(compiletest.NewCloud(time.Millisecond), compiletest.NewCache(), nil)
	x := updatetest.NewSwap()
	x.Delay["start"] = 10 * time.Millisecond

	_, _, _, state := deployWith(t, g, v1, plan.State{}, ids, c, x)
	before := len(x.Timeline())
	p, _, ures, state := deployWith(t, g, v2, state, ids, c, x)
	if len(ures.Updated) != 4 {
		t.Fatalf("updated %d instances, want 4", len(ures.Updated))
	}
	ro := p.Rollout()
	for _, ug := range ro.Groups {
		for _, in := range ug.Instances {
			steps := x.StepsOf(in.Name())
			swapped := slices.Contains(steps, "create-replacement-vm")
			if want := in.Group != "lb"; in.Surge != want || swapped != want || in.PersistentDisk {
				t.Errorf("%s: surge %v, swapped %v, disk %v; want surge and swap %v", in.Name(), in.Surge, swapped, in.PersistentDisk, want)
			}
			if in.Group == "lb" && !in.StaticIP {
				t.Errorf("%s: no static IP in the rollout", in.Name())
			}
		}
	}
	// One web replacement at a time.
	var webs []updatetest.Step
	for _, s := range x.Timeline()[before:] {
		if strings.HasPrefix(s.Instance, "web/") && (s.Step == "create-replacement-vm" || s.Step == "post-start") {
			webs = append(webs, s)
		}
	}
	if len(webs) != 4 {
		t.Fatalf("web replacement steps %v, want 2 web instances replaced", webs)
	}
	for i := 0; i+1 < len(webs); i += 2 {
		if webs[i].Step != "create-replacement-vm" || webs[i+1].Step != "post-start" || webs[i].Instance != webs[i+1].Instance {
			t.Fatalf("web replacements overlap: %v", webs)
		}
	}

	p, _, ures, _ = deployWith(t, g, v2, state, ids, c, x)
	if p.HasChanges() || len(ures.Touched) != 0 {
		t.Errorf("deploying the same manifest after a surge: changes %v, touched %d", p.HasChanges(), len(ures.Touched))
	}
}
