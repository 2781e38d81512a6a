package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestCrossDeploymentLinks deploys two deployments of releases/web on the
// local CPI: links-a runs the web servers and shares their link under an
// alias, links-b runs the lb and consumes that link from links-a. The lb
// really balances across links-a's instances; when links-a scales, links-b
// is told its link changed and its redeploy puts the new instance behind
// the lb. A bad reference to another deployment exits 2 naming the line.
func TestCrossDeploymentLinks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the sample's process files name /var/vcap paths, which a local VM has only in its own mount namespace (root)")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("releases/web compiles with the host's Go toolchain; none found")
	}
	setup := newLocalSetup(t)
	d, work, prefix := setup.d, setup.work, setup.prefix
	t.Cleanup(func() {
		for _, name := range []string{"links-b", "links-a"} {
			if out, err := d.command("-n", "-d", name, "delete-deployment", "--force").CombinedOutput(); err != nil {
				t.Logf("cleanup: delete-deployment %s: %v\n%s", name, err, out)
			}
		}
	})

	head := `releases:
- {name: web, version: latest}
stemcells:
- {alias: default, os: linux, version: latest}
update:
  canaries: 1
  max_in_flight: 1
  canary_watch_time: 1000-30000
  update_watch_time: 1000-30000
instance_groups:
`
	write := func(name, text string) string {
		t.Helper()
		path := filepath.Join(work, name)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	provider := write("links-a.yml", "name: links-a\n"+head+`- name: web
  azs: [z1, z2]
  instances: ((web_instances))
  vm_type: default
  stemcell: default
  networks:
  - name: default
  jobs:
  - name: web
    release: web
    properties:
      port: 8080
      version: shared
    provides:
      web: {as: shared-web, shared: true}
`)
	consumer := func(file, consumes string) string {
		return write(file, "name: links-b\n"+head+`- name: lb
  azs: [z1]
  instances: 1
  vm_type: default
  stemcell: default
  networks:
  - name: default
    static_ips: [`+prefix+`1.10]
  jobs:
  - name: lb
    release: web
    properties:
      port: 8080
    consumes:
      web: `+consumes+`
`)
	}
	good := consumer("links-b.yml", "{from: shared-web, deployment: links-a}")
	lbAddr = prefix + "1.10:8080"

	d.deploy(provider, "-v", "web_instances=2")
	_, res := d.deploy(good)
	t.Logf("links-b: %s", res.Result)
	if got := lbAnswers(t, "shared", 2); len(got) != 2 {
		t.Fatalf("lb of links-b answered from %v, want links-a's two web instances", got)
	}

	// links-a scales: links-b is told, and its redeploy picks it up.
	evs, _ := d.deploy(provider, "-v", "web_instances=3")
	told := false
	for _, e := range evs {
		told = told || (e.Stage == "Shared links" && strings.Contains(e.Data.Text, "links-a/shared-web changed") && strings.Contains(e.Data.Text, "links-b"))
	}
	if !told {
		t.Errorf("the scaling deploy of links-a did not name links-b as a consumer to redeploy: %+v", evs)
	}
	var deps []struct {
		Name       string           `json:"name"`
		StaleLinks []string         `json:"stale_links"`
		Links      []map[string]any `json:"links"`
	}
	if err := json.Unmarshal([]byte(d.run("--json", "deployments")), &deps); err != nil {
		t.Fatal(err)
	}
	stale := map[string][]string{}
	for _, dep := range deps {
		stale[dep.Name] = dep.StaleLinks
		if dep.Name != "links-a" {
			continue
		}
		// What links-a provides is listed, without the properties (they
		// may hold secrets).
		if len(dep.Links) != 1 || dep.Links[0]["name"] != "shared-web" || dep.Links[0]["shared"] != true {
			t.Errorf("links of links-a in deployments --json: %v", dep.Links)
		}
		for _, l := range dep.Links {
			if _, ok := l["properties"]; ok {
				t.Errorf("deployments --json shows a link's properties: %v", l)
			}
		}
	}
	if fmt.Sprint(stale["links-b"]) != "[links-a/shared-web]" || len(stale["links-a"]) != 0 {
		t.Errorf("stale links in deployments: %v, want links-b: [links-a/shared-web]", stale)
	}
	if table := d.run("deployments"); !strings.Contains(table, "links-b: links from other deployments changed") {
		t.Errorf("deployments does not tell links-b changed:\n%s", table)
	}
	dry := d.run("-n", "deploy", good, "--dry-run")
	if !strings.Contains(dry, "links-a/shared-web") || !strings.Contains(dry, "changed since the last deploy") || !strings.Contains(dry, "links from other deployments changed (job lb: links-a/shared-web)") {
		t.Errorf("links-b's plan does not say its link changed:\n%s", dry)
	}
	d.deploy(good)
	if got := lbAnswers(t, "shared", 3); len(got) != 3 {
		t.Fatalf("after the redeploy links-b's lb answered from %v, want 3 instances", got)
	}
	deps = nil // Unmarshal would keep fields the answer omits
	if err := json.Unmarshal([]byte(d.run("--json", "deployments")), &deps); err != nil {
		t.Fatal(err)
	}
	for _, dep := range deps {
		if len(dep.StaleLinks) > 0 {
			t.Errorf("%s still has stale links after links-b's redeploy: %v", dep.Name, dep.StaleLinks)
		}
	}

	// Bad references exit 2 naming the file's line and the field.
	for _, tc := range []struct{ consumes, field, says string }{
		{"{from: shared-web, deployment: nowhere}", "consumes.web.deployment", `deployment "nowhere" does not exist`},
		{"{from: nothing, deployment: links-a}", "consumes.web.from", `shares no link called "nothing"`},
	} {
		bad := consumer("bad.yml", tc.consumes)
		out, err := d.command("-n", "deploy", bad).CombinedOutput()
		if code := exitCode(err); code != 2 {
			t.Errorf("deploy with %s: exit %d, want 2\n%s", tc.consumes, code, out)
		}
		if !regexp.MustCompile(`\.yml:\d+:\d+: .*`+regexp.QuoteMeta(tc.field)).Match(out) || !strings.Contains(string(out), tc.says) {
			t.Errorf("deploy with %s does not name the line, %s and %q:\n%s", tc.consumes, tc.field, tc.says, out)
		}
	}

	// The provider goes: its consumer is told, and its next deploy fails
	// on the link, naming it.
	d.run("-n", "-d", "links-a", "delete-deployment")
	deps = nil
	if err := json.Unmarshal([]byte(d.run("--json", "deployments")), &deps); err != nil {
		t.Fatal(err)
	}
	if len(deps) != 1 || deps[0].Name != "links-b" || fmt.Sprint(deps[0].StaleLinks) != "[links-a/shared-web]" {
		t.Errorf("deployments after links-a was deleted: %+v, want links-b with links-a/shared-web stale", deps)
	}
	out, err := d.command("-n", "deploy", good).CombinedOutput()
	if code := exitCode(err); code != 2 || !strings.Contains(string(out), `deployment "links-a" does not exist`) {
		t.Errorf("links-b's deploy after links-a was deleted: exit %d\n%s", code, out)
	}
}
