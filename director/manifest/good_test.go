package manifest

import (
	"encoding/json"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func parseGood(t *testing.T) (*Deployment, *CloudConfig) {
	t.Helper()
	cc, err := ParseCloudConfig("cloud.yml", mustRead(t, "testdata/good/cloud.yml"))
	if err != nil {
		t.Fatal(err)
	}
	dep, err := ParseDeployment("full.yml", mustRead(t, "testdata/good/full.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := dep.Validate(cc); err != nil {
		t.Fatal(err)
	}
	return dep, cc
}

func TestFullManifest(t *testing.T) {
	t.Parallel()
	dep, _ := parseGood(t)
	if dep.Name != "shop" || len(dep.Releases) != 2 || dep.Releases[0].Version != "1.2" || dep.Releases[1].Version != "latest" {
		t.Errorf("releases: %+v", dep.Releases)
	}
	if s := dep.Stemcells[1]; s.Name != "bosh-windows-stemcell" || s.OS != "" || s.Alias != "windows" {
		t.Errorf("stemcell by name: %+v", s)
	}
	wantTop := Update{
		Canaries:        Amount{N: 1},
		MaxInFlight:     Amount{N: 25, Percent: true},
		CanaryWatchTime: WatchTime{Min: time.Second, Max: 30 * time.Second},
		UpdateWatchTime: WatchTime{Min: 5 * time.Second, Max: 5 * time.Second},
		Serial:          false,
		VMStrategy:      DeleteCreate,
	}
	if dep.Update != wantTop {
		t.Errorf("update = %+v, want %+v", dep.Update, wantTop)
	}
	db, web, migrate := dep.InstanceGroups[0], dep.InstanceGroups[1], dep.InstanceGroups[2]

	// Overrides merge field by field over the deployment's block.
	wantDB := wantTop
	wantDB.Serial, wantDB.MaxInFlight = true, Amount{N: 1}
	if db.Update != wantDB {
		t.Errorf("db update = %+v, want %+v", db.Update, wantDB)
	}
	wantWeb := wantTop
	wantWeb.VMStrategy, wantWeb.MaxSurge, wantWeb.AutoRollback, wantWeb.Canaries = CreateSwapDelete, Amount{N: 1}, true, Amount{N: 50, Percent: true}
	if web.Update != wantWeb {
		t.Errorf("web update = %+v, want %+v", web.Update, wantWeb)
	}
	if got := web.Update.MaxInFlight.Of(web.Instances); got != 1 {
		t.Errorf("25%% of 4 = %d, want 1", got)
	}
	if got := web.Update.Canaries.Of(web.Instances); got != 2 {
		t.Errorf("50%% of 4 = %d, want 2", got)
	}

	if db.PersistentDiskType != "ssd" || web.PersistentDisk != 2048 {
		t.Errorf("disks: db %q, web %d", db.PersistentDiskType, web.PersistentDisk)
	}
	if want := []netip.Addr{netip.MustParseAddr("10.0.1.10")}; !reflect.DeepEqual(db.Networks[0].StaticIPs, want) {
		t.Errorf("static ips = %v", db.Networks[0].StaticIPs)
	}
	if !reflect.DeepEqual(web.Networks[0].Default, []string{"dns", "gateway"}) {
		t.Errorf("default = %v", web.Networks[0].Default)
	}
	if p := db.Jobs[0].Provides["db"]; p.As != "shop-db" || !p.Shared {
		t.Errorf("provides = %+v", p)
	}
	j := web.Jobs[0]
	if c := j.Consumes["db"]; c.From != "shop-db" || c.Blocked {
		t.Errorf("consumes db = %+v", c)
	}
	if c := j.Consumes["metrics"]; !c.Blocked {
		t.Errorf("consumes metrics = %+v, want blocked", c)
	}
	if c := j.Consumes["cache"]; c.Manual == nil || c.Manual.Instances[0].Address != "10.0.9.1" || c.Manual.Properties["port"] != 6379 {
		t.Errorf("consumes cache = %+v", c)
	}
	if cp := j.CustomProviderDefinitions; len(cp) != 1 || cp[0].Type != "http" {
		t.Errorf("custom providers = %+v", cp)
	}
	// The merge key brings the anchored map in; written keys stay.
	if j.Properties["port"] != 8080 || j.Properties["databases"] == nil || j.Properties["admin_password"] != "((admin_password))" {
		t.Errorf("properties = %+v", j.Properties)
	}
	if env, _ := web.Env["bosh"].(map[string]any); env["keep_root_password"] != false {
		t.Errorf("env = %+v", web.Env)
	}
	if migrate.Lifecycle != Errand || migrate.VMResources == nil || migrate.VMResources.RAM != 1024 || migrate.VMType != "" {
		t.Errorf("errand = %+v", migrate)
	}
	if v := dep.Variables[2]; v.Type != VarCertificate || v.UpdateMode != "converge" || v.Options["ca"] != "shop_ca" {
		t.Errorf("variable = %+v", v)
	}
	if f := dep.Features; f.UseDNSAddresses == nil || !*f.UseDNSAddresses || f.RandomizeAZPlacement == nil || *f.RandomizeAZPlacement || f.ConvergeVariables != nil {
		t.Errorf("features = %+v", f)
	}
	if dep.Tags["team"] != "payments" {
		t.Errorf("tags = %v", dep.Tags)
	}
	// Positions survive parsing for later stages.
	if p := dep.Position("instance_groups[1].jobs[0].release"); p.Line == 0 || p.File != "full.yml" {
		t.Errorf("position = %v", p)
	}
	if e := dep.Errorf("instance_groups[1].networks[0].nothing_here", "no IP left"); e.Line != dep.Position("instance_groups[1].networks[0]").Line {
		t.Errorf("Errorf falls back to the parent: %v", e)
	}
}

func TestFullCloudConfig(t *testing.T) {
	t.Parallel()
	_, cc := parseGood(t)
	priv, ok := cc.Network("private")
	if !ok || priv.Type != Manual || len(priv.Subnets) != 2 {
		t.Fatalf("private = %+v", priv)
	}
	sn := priv.Subnets[0]
	if sn.Range != netip.MustParsePrefix("10.0.1.0/24") || sn.Gateway != netip.MustParseAddr("10.0.1.1") {
		t.Errorf("subnet = %+v", sn)
	}
	for addr, want := range map[string]bool{
		"10.0.1.0": false, "10.0.1.1": false, "10.0.1.5": false, "10.0.1.20": false,
		"10.0.1.31": true, "10.0.1.249": true, "10.0.1.250": false, "10.0.1.255": false, "10.0.2.7": false,
	} {
		if got := sn.Dynamic(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Dynamic(%s) = %v, want %v", addr, got, want)
		}
	}
	for addr, want := range map[string][2]bool{ // static, reserved
		"10.0.1.10":  {true, false},
		"10.0.1.30":  {true, false},
		"10.0.1.31":  {false, false},
		"10.0.1.40":  {true, false},
		"10.0.1.5":   {false, true},
		"10.0.1.251": {false, true},
	} {
		a := netip.MustParseAddr(addr)
		if sn.IsStatic(a) != want[0] || sn.IsReserved(a) != want[1] {
			t.Errorf("%s: static %v reserved %v, want %v", addr, sn.IsStatic(a), sn.IsReserved(a), want)
		}
	}
	if !priv.Subnets[1].HasAZ("z2") || priv.Subnets[1].HasAZ("z1") {
		t.Errorf("azs = %v", priv.Subnets[1].AZs)
	}
	pub, _ := cc.Network("public")
	if pub.Type != Dynamic || pub.DNS[0] != netip.MustParseAddr("8.8.8.8") {
		t.Errorf("public = %+v", pub)
	}
	if az, _ := cc.AZ("z1"); az.CPI != "local" || az.CloudProperties["zone"] != "a" {
		t.Errorf("az = %+v", az)
	}
	if c := cc.Compilation; c.Workers != 3 || !c.ReuseCompilationVMs || c.Network != "private" {
		t.Errorf("compilation = %+v", c)
	}
	if d, _ := cc.DiskType("ssd"); d.DiskSize != 10240 {
		t.Errorf("disk type = %+v", d)
	}
}

func TestRuntimeConfigAddons(t *testing.T) {
	t.Parallel()
	rc, err := ParseRuntimeConfig("runtime.yml", mustRead(t, "testdata/good/runtime.yml"))
	if err != nil {
		t.Fatal(err)
	}
	dep, _ := parseGood(t)
	a := rc.Addons[0]
	db, web, migrate := &dep.InstanceGroups[0], &dep.InstanceGroups[1], &dep.InstanceGroups[2]
	dbWithPostgres := *db
	for _, tc := range []struct {
		name string
		t    Target
		want bool
	}{
		{"web in shop on noble", Target{Deployment: "shop", Group: web, StemcellOS: "ubuntu-noble"}, true},
		{"other deployment", Target{Deployment: "other", Group: web, StemcellOS: "ubuntu-noble"}, false},
		{"other stemcell", Target{Deployment: "shop", Group: web, StemcellOS: "windows2019"}, false},
		{"excluded job", Target{Deployment: "shop", Group: &dbWithPostgres, StemcellOS: "ubuntu-noble"}, true},
		{"errand excluded only with postgres too", Target{Deployment: "shop", Group: migrate, StemcellOS: "ubuntu-noble"}, true},
	} {
		if got := a.AppliesTo(tc.t); got != tc.want {
			t.Errorf("%s: AppliesTo = %v, want %v", tc.name, got, tc.want)
		}
	}
	// Exclude matches when every criterion it lists matches.
	ex := Addon{Exclude: &AddonFilter{Jobs: []AddonJob{{Name: "postgres", Release: "postgres"}}}}
	if ex.AppliesTo(Target{Deployment: "shop", Group: db}) {
		t.Error("exclude by job did not exclude the db group")
	}
	if !ex.AppliesTo(Target{Deployment: "shop", Group: web}) {
		t.Error("exclude by job excluded the web group")
	}
	if rc.Tags["owner"] != "platform" || rc.Releases[0].Version != "22.1.2" {
		t.Errorf("runtime config = %+v", rc)
	}
}

func TestAmountAndWatchTime(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in    string
		total int
		want  int
	}{
		{"3", 10, 3}, {"25%", 10, 2}, {"25%", 2, 1}, {"100%", 7, 7}, {"0%", 5, 0}, {"10%", 0, 0},
	} {
		a, err := parseAmount(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := a.Of(tc.total); got != tc.want {
			t.Errorf("%s of %d = %d, want %d", tc.in, tc.total, got, tc.want)
		}
		if a.String() != tc.in {
			t.Errorf("String() = %q, want %q", a.String(), tc.in)
		}
	}
	w, err := parseWatchTime("1000 - 60000")
	if err != nil || w.Min != time.Second || w.Max != time.Minute || w.String() != "1000-60000" {
		t.Errorf("watch time = %+v, %v", w, err)
	}
	for _, bad := range []string{"", "-5", "5-", "1-2-3", "99999999999999999999", "60000-1000"} {
		if _, err := parseWatchTime(bad); err == nil {
			t.Errorf("parseWatchTime(%q) accepted", bad)
		}
	}
}

func TestAddrRange(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, first, last string }{
		{"10.0.0.5", "10.0.0.5", "10.0.0.5"},
		{"10.0.0.5-10.0.0.9", "10.0.0.5", "10.0.0.9"},
		{"10.0.0.16/28", "10.0.0.16", "10.0.0.31"},
		{"fd00::/127", "fd00::", "fd00::1"},
	} {
		r, err := ParseAddrRange(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		if r.First.String() != tc.first || r.Last.String() != tc.last {
			t.Errorf("%s = %v", tc.in, r)
		}
	}
	for _, bad := range []string{"10.0.0.9 - 10.0.0.5", "10.0.0.1 - fd00::1", "nope", "10.0.0.0/33"} {
		if _, err := ParseAddrRange(bad); err == nil {
			t.Errorf("ParseAddrRange(%q) accepted", bad)
		}
	}
}

func TestLookupsAndJSON(t *testing.T) {
	t.Parallel()
	dep, cc := parseGood(t)
	if ig, ok := dep.InstanceGroup("web"); !ok || ig.Instances != 4 {
		t.Errorf("InstanceGroup(web) = %+v, %v", ig, ok)
	}
	if _, ok := dep.InstanceGroup("nope"); ok {
		t.Error("InstanceGroup(nope) found")
	}
	if r, ok := dep.Release("postgres"); !ok || r.Version != "latest" {
		t.Errorf("Release = %+v", r)
	}
	if s, ok := dep.Stemcell("default"); !ok || s.OS != "ubuntu-noble" {
		t.Errorf("Stemcell = %+v", s)
	}
	for _, v := range []any{dep, cc} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), `"max_in_flight":"25%"`) && !strings.Contains(string(b), `"range":"10.0.1.0/24"`) {
			t.Errorf("json = %s", b)
		}
	}
}
