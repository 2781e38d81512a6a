package plan_test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/txtar"

	"github.com/compleat/compleat/agent/applyspec"
	"github.com/compleat/compleat/director/plan"
	"github.com/compleat/compleat/test/peakrss"
)

func loadCase(t testing.TB, file string) golden {
	ar, err := txtar.ParseFile(file)
	if err != nil {
		t.Fatal(err)
	}
	g := golden{sections: map[string][]byte{}}
	for _, f := range ar.Files {
		g.sections[f.Name] = f.Data
	}
	return g
}

func TestRolloutAndCompileTargets(t *testing.T) {
	t.Parallel()
	g := loadCase(t, "testdata/property_change.txtar")
	ids := &plan.SequentialIDs{Prefix: "id-"}
	prevD, _ := g.desired(t, "deployed.yml", "director.yml", ids)
	prev, err := plan.Compute(prevD, plan.State{})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := g.desired(t, "manifest.yml", "director.yml", ids)
	p, err := plan.Compute(d, deployed(prev))
	if err != nil {
		t.Fatal(err)
	}
	ro := p.Rollout()
	if len(ro.Groups) != 2 || ro.Groups[0].Name != "web" || ro.Groups[0].Size != 2 {
		t.Fatalf("rollout groups %+v", ro.Groups)
	}
	for _, in := range ro.Groups[0].Instances {
		if !in.Changed() || in.New || in.Recreate || !slices.Contains(in.Changes, "properties changed (job web)") {
			t.Errorf("web instance %+v", in)
		}
	}
	if !ro.Groups[1].Instances[0].StaticIP || ro.Groups[0].Instances[0].StaticIP {
		t.Errorf("static IPs: lb %v, web %v", ro.Groups[1].Instances[0].StaticIP, ro.Groups[0].Instances[0].StaticIP)
	}
	if ro.Groups[1].Instances[0].Changed() {
		t.Errorf("lb should be unchanged: %+v", ro.Groups[1].Instances[0])
	}

	targets := p.CompileTargets()
	if len(targets) != 1 || targets[0].Stemcell.OS != "local" || targets[0].Stemcell.CID != "sc-1" {
		t.Fatalf("targets %+v", targets)
	}
	var names []string
	for _, pk := range targets[0].Packages {
		names = append(names, pk.Name)
	}
	if !slices.Equal(names, []string{"golang", "lbpkg", "webapp"}) {
		t.Errorf("packages %v", names)
	}
	// The next state records what a following plan compares against.
	in, ok := p.Instance(ro.Groups[0].Instances[0].ID)
	if !ok {
		t.Fatal("instance not found")
	}
	st := in.State()
	if st.Jobs[0].RenderedHash != in.Jobs[0].Rendered.Hash || st.Packages["golang"] != "aaaa1111" || !st.Networks["default"].IsValid() {
		t.Errorf("state %+v", st)
	}
}

func TestComputeIsDeterministic(t *testing.T) {
	t.Parallel()
	g := loadCase(t, "testdata/first_deploy.txtar")
	var outs []string
	for range 3 {
		d, _ := g.desired(t, "manifest.yml", "director.yml", &plan.SequentialIDs{Prefix: "id-"})
		p, err := plan.Compute(d, plan.State{})
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		p.Format(&b)
		outs = append(outs, b.String())
	}
	if outs[0] != outs[1] || outs[1] != outs[2] {
		t.Errorf("plans differ between identical computations")
	}
}

// bigManifest has n web instances over two AZs behind one lb.
func bigManifest(n int) string {
	return fmt.Sprintf(`name: web
releases:
- {name: web, version: "1"}
stemcells:
- {alias: default, os: local, version: "1"}
update: {canaries: 1, max_in_flight: 10, canary_watch_time: 1000, update_watch_time: 1000}
instance_groups:
- name: web
  azs: [z1, z2]
  instances: %d
  vm_type: default
  stemcell: default
  networks: [{name: default}]
  jobs:
  - name: web
    release: web
    properties: {version: v1}
- name: lb
  azs: [z1]
  instances: 1
  vm_type: default
  stemcell: default
  networks: [{name: default, static_ips: [127.77.1.10]}]
  jobs:
  - name: lb
    release: web
`, n)
}

// benchCase is first_deploy's release with a /16 per AZ, big enough for
// 1,000 instances.
func benchCase(b *testing.B, n int) golden {
	g := loadCase(b, "testdata/first_deploy.txtar")
	cc := string(g.sections["cloud-config.yml"])
	cc = strings.NewReplacer(
		"127.77.1.0/24", "127.70.0.0/16", "127.77.1.1\n", "127.70.0.1\n", "127.77.1.2 - 127.77.1.9", "127.70.0.2 - 127.70.0.9", "127.77.1.10 - 127.77.1.19", "127.70.0.10 - 127.70.0.19",
		"127.77.2.0/24", "127.71.0.0/16", "127.77.2.1\n", "127.71.0.1\n", "127.77.2.2 - 127.77.2.9", "127.71.0.2 - 127.71.0.9", "127.77.2.10 - 127.77.2.19", "127.71.0.10 - 127.71.0.19",
	).Replace(cc)
	g.sections["cloud-config.yml"] = []byte(cc)
	g.sections["manifest.yml"] = []byte(strings.Replace(bigManifest(n), "127.77.1.10", "127.70.0.10", 1))
	return g
}

// BenchmarkPlan1000 plans a first deploy of 1,000 instances and a no-op
// redeploy of them (everything rendered and compared).
func BenchmarkPlan1000(b *testing.B) { benchPlan(b, 1000) }

// BenchmarkPlan10000 is BenchmarkPlan1000 with 10,000 instances; each
// sub-benchmark also reports its peak resident set.
func BenchmarkPlan10000(b *testing.B) { benchPlan(b, 10000) }

func benchPlan(b *testing.B, n int) {
	g := benchCase(b, n)
	d, _ := g.desired(b, "manifest.yml", "director.yml", &plan.SequentialIDs{Prefix: "id-"})
	if d.Manifest == nil {
		b.Fatal("manifest does not parse")
	}
	first, err := plan.Compute(d, plan.State{})
	if err != nil {
		b.Fatal(err)
	}
	state := deployed(first)
	b.Run("first-deploy", func(b *testing.B) {
		reset := peakrss.Reset()
		for b.Loop() {
			d.IDs = &plan.SequentialIDs{Prefix: "id-"}
			if _, err := plan.Compute(d, plan.State{}); err != nil {
				b.Fatal(err)
			}
		}
		peakrss.Report(b, reset)
	})
	b.Run("no-op", func(b *testing.B) {
		reset := peakrss.Reset()
		for b.Loop() {
			p, err := plan.Compute(d, state)
			if err != nil {
				b.Fatal(err)
			}
			if p.HasChanges() {
				b.Fatal("no-op plan has changes")
			}
		}
		peakrss.Report(b, reset)
	})
}

func TestApplySpec(t *testing.T) {
	t.Parallel()
	g := loadCase(t, "testdata/first_deploy.txtar")
	d, _ := g.desired(t, "manifest.yml", "director.yml", &plan.SequentialIDs{Prefix: "id-"})
	p, err := plan.Compute(d, plan.State{})
	if err != nil {
		t.Fatal(err)
	}
	in := &p.Groups[0].Instances[0]
	sum := strings.Repeat("ab", 32)
	blob := applyspec.Blob{URL: "https://127.0.0.1/blobs/x", SHA256: sum}
	if _, err := in.ApplySpec("web", nil, nil); err == nil {
		t.Errorf("want an error for missing blobs")
	}
	spec, err := in.ApplySpec("web", map[string]applyspec.Blob{"web": blob}, map[string]applyspec.Blob{"golang": blob, "webapp": blob})
	if err != nil {
		t.Fatal(err)
	}
	if err := spec.Validate(); err != nil {
		t.Errorf("apply spec does not validate: %v", err)
	}
	n := spec.Networks["default"]
	if spec.Name != "web" || spec.ID != in.ID || n.IP != "127.77.1.20" || n.Gateway != "127.77.1.1" || n.Netmask != "255.255.255.0" {
		t.Errorf("spec %+v", spec)
	}
	if len(spec.Jobs) != 1 || len(spec.Packages) != 2 || spec.PersistentDisk == nil || spec.PersistentDisk.SizeMB != 1024 {
		t.Errorf("spec jobs %v packages %v disk %v", spec.Jobs, spec.Packages, spec.PersistentDisk)
	}
}

func TestCompilationAddressesCollideWithNothing(t *testing.T) {
	t.Parallel()
	g := loadCase(t, "testdata/first_deploy.txtar")
	d, _ := g.desired(t, "manifest.yml", "director.yml", &plan.SequentialIDs{Prefix: "id-"})
	p, err := plan.Compute(d, plan.State{OtherIPs: map[string][]netip.Addr{"default": {netip.MustParseAddr("127.77.1.21")}}})
	if err != nil {
		t.Fatal(err)
	}
	comp := p.Compilation
	if comp.Workers != 2 || comp.AZ != "z1" || comp.Network != "default" || len(comp.Addresses) != 2 {
		t.Fatalf("compilation %+v", comp)
	}
	// web/0 holds .20, another deployment .21: compile VMs get .22 and .23.
	var got []string
	for _, n := range comp.Addresses {
		got = append(got, n.IP.String())
		if n.Gateway.String() != "127.77.1.1" || n.Netmask != "255.255.255.0" {
			t.Errorf("compile address %+v", n)
		}
	}
	if !slices.Equal(got, []string{"127.77.1.22", "127.77.1.23"}) {
		t.Errorf("compile addresses %v", got)
	}
}

func TestTeardown(t *testing.T) {
	t.Parallel()
	g := loadCase(t, "testdata/first_deploy.txtar")
	d, _ := g.desired(t, "manifest.yml", "director.yml", &plan.SequentialIDs{Prefix: "id-"})
	p, err := plan.Compute(d, plan.State{})
	if err != nil {
		t.Fatal(err)
	}
	state := deployed(p)
	state.Instances[1].VMCID = "" // one VM already gone
	td := plan.Teardown(state)
	if len(td.Delete) != 3 || len(td.OrphanDisks) != 2 || len(td.Groups) != 0 || !td.HasChanges() {
		t.Fatalf("teardown %+v", td)
	}
	ro := td.Rollout()
	var noVM []string
	for _, in := range ro.Delete {
		if in.New {
			noVM = append(noVM, in.Name())
		}
	}
	if !slices.Equal(noVM, []string{state.Instances[1].Group + "/" + state.Instances[1].ID}) {
		t.Errorf("instances without a VM: %v", noVM)
	}
	if len(plan.Teardown(plan.State{}).Delete) != 0 {
		t.Errorf("teardown of nothing deletes something")
	}
}

// TestDynamicAddressesTwoPasses plans, "creates the VMs" (records the
// addresses the cloud gave, nothing applied yet) and plans again: the second
// plan renders the real addresses and has nothing pending.
func TestDynamicAddressesTwoPasses(t *testing.T) {
	t.Parallel()
	g := loadCase(t, "testdata/networks.txtar")
	ids := &plan.SequentialIDs{Prefix: "id-"}
	d, _ := g.desired(t, "manifest.yml", "director.yml", ids)
	first, err := plan.Compute(d, plan.State{})
	if err != nil {
		t.Fatal(err)
	}
	if len(first.PendingAddresses) != 2 {
		t.Fatalf("pending %v", first.PendingAddresses)
	}
	state := deployed(first)
	for i := range state.Instances {
		st := &state.Instances[i]
		if _, ok := st.Networks["dyn"]; ok {
			st.Networks["dyn"] = netip.AddrFrom4([4]byte{10, 0, 0, byte(10 + i)})
		}
		st.Jobs, st.Packages = nil, nil // created, not applied
	}
	second, err := plan.Compute(d, state)
	if err != nil {
		t.Fatal(err)
	}
	if len(second.PendingAddresses) != 0 {
		t.Errorf("still pending: %v", second.PendingAddresses)
	}
	web := second.Groups[0].Instances[0]
	if web.Address() != "10.0.0.10" {
		t.Errorf("web address %q", web.Address())
	}
	for _, f := range web.Jobs[0].Rendered.Files {
		if f.Path == "config/processes.yml" && !strings.Contains(string(f.Content), "10.0.0.10:8080") {
			t.Errorf("processes.yml does not listen on the dynamic address:\n%s", f.Content)
		}
	}
	for _, c := range web.Changes {
		if c.Reason == plan.ReasonNetwork || web.Recreate {
			t.Errorf("the recorded dynamic address counts as a change: %v", web.Changes)
		}
	}
}
