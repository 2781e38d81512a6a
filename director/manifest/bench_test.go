package manifest

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// bigManifest has groups instance groups of 5 instances, each with two jobs
// and a few properties: 1,000 instances for groups=200.
func bigManifest(groups int) []byte {
	var b strings.Builder
	b.WriteString("name: big\nreleases:\n- {name: web, version: latest}\nstemcells:\n- {alias: default, os: linux, version: latest}\n")
	b.WriteString("update: {canaries: 1, max_in_flight: 10%, canary_watch_time: 1000-30000, update_watch_time: 1000-30000}\ninstance_groups:\n")
	for i := 0; i < groups; i++ {
		fmt.Fprintf(&b, `- name: g%d
  azs: [z1, z2]
  instances: 5
  vm_type: small
  stemcell: default
  networks: [{name: private}]
  jobs:
  - name: web
    release: web
    properties: {port: %d, password: ((pw)), tags: [a, b, c], nested: {x: 1, y: [1, 2]}}
  - name: agent
    release: web
`, i, 8000+i)
	}
	return []byte(b.String())
}

// BenchmarkParseDeployment measures parse + validate of a 1,000-instance
// manifest (ops: none; vars: one).
func BenchmarkParseDeployment(b *testing.B) {
	data := bigManifest(200)
	cc, err := ParseCloudConfig("cloud.yml", mustRead(b, "testdata/cloud.yml"))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		doc, err := Load(context.Background(), "big.yml", data, LoadOptions{Vars: []string{"pw=secret"}, Strict: true})
		if err != nil {
			b.Fatal(err)
		}
		dep, err := doc.Deployment()
		if err != nil {
			b.Fatal(err)
		}
		if err := dep.Validate(cc); err != nil {
			b.Fatal(err)
		}
	}
}
