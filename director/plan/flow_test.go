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
func deployWith(t *testing.T, g golden, text string, state plan.State, ids plan.IDSource, c *compile.Compiler, x *updatetest.Executor) (plan.Plan, compile.Result, update.Result, plan.State) {
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
