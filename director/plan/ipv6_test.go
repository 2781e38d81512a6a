package plan_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/director/manifest"
	"github.com/compleat/compleat/director/plan"
)

// A manual IPv6 subnet whose reserved and static ranges hold 2^48 addresses
// each: the planner jumps past them instead of walking them address by
// address (which would not end), and hands out the first free addresses.
func TestHugeIPv6RangesArePlannedWithoutWalkingThem(t *testing.T) {
	t.Parallel()
	g := loadCase(t, "testdata/networks.txtar")
	cc := string(g.sections["cloud-config.yml"])
	for old, new := range map[string]string{
		"range: 127.77.1.0/24":                "range: fd00:1::/64",
		"gateway: 127.77.1.1":                 "gateway: fd00:1::1",
		"reserved: [127.77.1.2 - 127.77.1.9]": "reserved: [fd00:1::2 - fd00:1::ffff:ffff:ffff]",
		"static: [127.77.1.10 - 127.77.1.19]": "static: ['fd00:1::1:0:0:0 - fd00:1::1:ffff:ffff:ffff']",
		"range: 127.77.2.0/24":                "range: fd00:2::/64",
		"gateway: 127.77.2.1":                 "gateway: fd00:2::1",
		"reserved: [127.77.2.2 - 127.77.2.9]": "reserved: ['fd00:2::2 - fd00:2::ffff:ffff:ffff']",
		"static: [127.77.2.10 - 127.77.2.19]": "static: ['fd00:2::1:0:0:0 - fd00:2::1:0:0:ff']",
	} {
		if !strings.Contains(cc, old) {
			t.Fatalf("cloud config lacks %q", old)
		}
		cc = strings.Replace(cc, old, new, 1)
	}
	g.sections["cloud-config.yml"] = []byte(cc)
	g.sections["manifest.yml"] = []byte(strings.Replace(string(g.sections["manifest.yml"]), "static_ips: [127.77.1.10]", "static_ips: ['fd00:1::1:0:0:10']", 1))
	d, _ := g.desired(t, "manifest.yml", "director.yml", &plan.SequentialIDs{Prefix: "id-"})

	done := make(chan struct{})
	var p plan.Plan
	var err error
	go func() { defer close(done); p, err = plan.Compute(d, plan.State{}) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second): // a walk of 2^48 addresses never gets here
		t.Fatal("planning did not finish: the planner walks the ranges address by address")
	}
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, gr := range p.Groups {
		for _, in := range gr.Instances {
			for _, n := range in.Networks {
				if n.Name == "default" {
					got = append(got, gr.Name+"="+n.IP.String())
				}
			}
		}
	}
	for _, n := range p.Compilation.Addresses {
		got = append(got, "compile="+n.IP.String())
	}
	want := "web=fd00:1:0:0:2:: web=fd00:2::1:0:0:100 lb=fd00:1::1:0:0:10 compile=fd00:1::2:0:0:1 compile=fd00:1::2:0:0:2"
	if strings.Join(got, " ") != want {
		t.Errorf("addresses:\n got %s\nwant %s", strings.Join(got, " "), want)
	}
}

// A subnet's reserved list is bounded in entries, naming the limit.
func TestSubnetRangeListsAreBounded(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("azs: [{name: z1}]\nnetworks:\n- name: n\n  type: manual\n  subnets:\n  - range: fd00::/64\n    gateway: fd00::1\n    az: z1\n    reserved:\n")
	for i := range manifest.MaxSubnetRanges + 1 {
		fmt.Fprintf(&b, "    - fd00::%x:2\n", i+1)
	}
	_, err := manifest.ParseCloudConfig("cloud.yml", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "networks[0].subnets[0].reserved") || !strings.Contains(err.Error(), "the limit is 1000") {
		t.Errorf("%d reserved entries: %v", manifest.MaxSubnetRanges+1, err)
	}
}
