package e2e

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/compleat/compleat/director/store/etcdtest"
)

// haCluster is three directors on one three-member etcd state, one S3
// bucket and one bus cluster, deploying on the local CPI (one data
// directory shared by the three, as a cloud is).
type haCluster struct {
	t       *testing.T
	bin     string
	work    string
	cpiData string
	prefix  string
	etcd    *etcdtest.Cluster
	s3      string
	ports   []haPorts
	d       []*director
}

type haPorts struct{ api, bus, route int }

const haAdminToken = "ha-admin-token-0123456789abcdef"

func newHACluster(t *testing.T) *haCluster {
	t.Helper()
	c := &haCluster{t: t, bin: binaries(t), work: t.TempDir()}
	c.cpiData = filepath.Join(c.work, "cpi")
	c.prefix = freeRange(t)
	t.Cleanup(func() { killAgents(c.cpiData) })
	c.etcd = etcdtest.StartCluster(t, 3)
	backend := s3mem.New()
	if err := backend.CreateBucket("blobs"); err != nil {
		t.Fatal(err)
	}
	s3 := httptest.NewServer(gofakes3.New(backend).Server())
	t.Cleanup(s3.Close)
	c.s3 = s3.URL
	writeFile(t, filepath.Join(c.work, "admin.token"), haAdminToken+"\n")
	for range 3 {
		c.ports = append(c.ports, haPorts{api: freePort(t), bus: freePort(t), route: freePort(t)})
	}
	c.d = make([]*director, 3)
	return c
}

// config is director i's director.yml.
func (c *haCluster) config(i int) string {
	endpoints, _ := json.Marshal(c.etcd.Endpoints())
	var routes []string
	for j, p := range c.ports {
		if j != i {
			routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p.route))
		}
	}
	routesJSON, _ := json.Marshal(routes)
	var buses []string
	for _, p := range c.ports {
		buses = append(buses, fmt.Sprintf("nats://127.0.0.1:%d", p.bus))
	}
	busesJSON, _ := json.Marshal(buses)
	name := fmt.Sprintf("d%d", i)
	return fmt.Sprintf(`listen: 127.0.0.1:%d
data_dir: %s
tokens:
- {name: admin, token_file: admin.token, scopes: [admin]}
nats:
  listen: 127.0.0.1:%d
  cluster: {listen: "127.0.0.1:%d", routes: %s, agent_urls: %s}
store: {backend: etcd, endpoints: %s, prefix: /ha-e2e/}
blobstore: {type: s3, s3: {bucket: blobs, region: us-east-1, endpoint: %q, path_style: true, access_key_id: k, secret_access_key: s}}
ha: {name: %s, lease_ttl: 3s}
cpis:
- name: local
  type: local
  properties: {data_dir: %s, dynamic_range: %q}
`, c.ports[i].api, name, c.ports[i].bus, c.ports[i].route, routesJSON, busesJSON, endpoints, c.s3, name, c.cpiData, c.prefix+"0.0/16")
}

// start starts director i; every director after the first gets the first
// one's CA, uuid and variables key (docs/ha.md, "Adding a director").
func (c *haCluster) start(i int) *director {
	c.t.Helper()
	data := filepath.Join(c.work, fmt.Sprintf("d%d", i))
	os.MkdirAll(data, 0o700)
	if i != 0 {
		for _, f := range []string{"ca.pem", "ca.key", "director-uuid", "state.db.key"} {
			raw, err := os.ReadFile(filepath.Join(c.work, "d0", f))
			if err != nil {
				c.t.Fatal(err)
			}
			writeFile(c.t, filepath.Join(data, f), string(raw))
		}
	}
	file := filepath.Join(c.work, fmt.Sprintf("d%d.yml", i))
	writeFile(c.t, file, c.config(i))
	d := startProduction(c.t, c.bin, file, fmt.Sprintf("https://127.0.0.1:%d", c.ports[i].api), haAdminToken, filepath.Join(data, "ca.pem"))
	d.data = data
	c.d[i] = d
	return d
}

// leader is the index of the director d says leads, -1 while none.
func (c *haCluster) leader(d *director) int {
	out, err := d.command("--json", "info").Output()
	if err != nil {
		return -1
	}
	var info struct{ Leader string }
	json.Unmarshal(out, &info)
	var i int
	if _, err := fmt.Sscanf(info.Leader, "d%d@", &i); err != nil {
		return -1
	}
	return i
}

func (c *haCluster) waitLeader(d *director, not int) int {
	c.t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if l := c.leader(d); l >= 0 && l != not {
			return l
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("no leader (other than d%d) after a minute:\n%s", not, tail(d.logs.String(), 40))
		}
	}
}

// TestHADirectorsFailOverMidDeploy: three directors; a deploy accepted by
// a follower runs on the leader; the leader is SIGKILLed mid-deploy; a
// follower leads within the lease TTL and fails the dead leader's task;
// the deploy run again converges with no orphaned VM; the agents, whose
// bus server died with the leader, are reached through the others; and a
// dead instance is resurrected once, by the leader alone.
func TestHADirectorsFailOverMidDeploy(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three directors, etcd, agents and the local CPI")
	}
	if os.Geteuid() != 0 {
		t.Skip("the sample's process files name /var/vcap paths, which a local VM has only in its own mount namespace (root)")
	}
	c := newHACluster(t)
	work := c.work
	stemcell := filepath.Join(work, "local.tgz")
	if out, err := c.command("create-stemcell", "--agent", filepath.Join(c.bin, "agent"), "--tarball", stemcell).CombinedOutput(); err != nil {
		t.Fatalf("create-stemcell: %v\n%s", err, out)
	}
	c.start(0)
	if l := c.waitLeader(c.d[0], -1); l != 0 {
		t.Fatalf("the first director does not lead: d%d", l)
	}
	c.start(1)
	c.start(2)
	f := c.d[1] // the director the operator talks to
	t.Cleanup(func() {
		for _, d := range c.d {
			select {
			case <-d.done:
				continue
			default:
			}
			if out, err := d.command("-n", "-d", "web", "delete-deployment", "--force").CombinedOutput(); err != nil {
				t.Logf("cleanup: delete-deployment: %v\n%s", err, out)
			}
			return
		}
	})
	f.run("-n", "upload-release", "releases/web")
	f.run("-n", "upload-stemcell", stemcell)
	cc, err := os.ReadFile(filepath.Join(repoRoot(), "manifests", "local", "cloud-config.yml"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(work, "cloud-config.yml"), strings.ReplaceAll(string(cc), "127.77.", c.prefix))
	f.run("-n", "update-cloud-config", filepath.Join(work, "cloud-config.yml"))
	raw, err := os.ReadFile(filepath.Join(repoRoot(), "manifests", "local", "web.yml"))
	if err != nil {
		t.Fatal(err)
	}
	manifest := filepath.Join(work, "web.yml")
	writeFile(t, manifest, strings.ReplaceAll(string(raw), "127.77.", c.prefix))
	lbAddr = c.prefix + "1.10:8080"

	// The deploy, accepted by a follower, runs on the leader; the leader
	// dies once VMs are being made.
	var killedAt time.Time
	killed := killDuring(t, f.command("-n", "--json", "deploy", manifest), "Updating instance", func() {
		c.d[0].stop(syscall.SIGKILL)
		killedAt = time.Now()
	})
	if !killed {
		t.Fatal("the deploy never reached the update of an instance")
	}
	l := c.waitLeader(f, 0)
	t.Logf("d%d leads %s after the leader was killed", l, time.Since(killedAt).Round(100*time.Millisecond))
	var tasks []struct {
		ID       uint64
		Type     string
		State    string
		Error    string
		Director string
	}
	if err := json.Unmarshal([]byte(f.run("--json", "tasks", "--recent=10")), &tasks); err != nil {
		t.Fatal(err)
	}
	var failed bool
	for _, tk := range tasks {
		if tk.Type == "deploy" {
			if tk.State != "error" || !strings.Contains(tk.Error, "another director took over") || !strings.HasPrefix(tk.Director, "d0@") {
				t.Errorf("the killed leader's deploy = %+v", tk)
			}
			failed = true
			break
		}
	}
	if !failed {
		t.Errorf("no deploy task in %+v", tasks)
	}

	// Run again, through the other follower: it converges.
	other := c.d[3-l] // the follower that is not the operator's
	evs, res := other.deploy(manifest)
	t.Logf("converging deploy: %s (%d events)", res.Result, len(evs))
	lbAnswers(t, "v1", 2)
	vms := other.run("--json", "-d", "web", "vms")
	var recorded []struct{ CID string }
	if err := json.Unmarshal([]byte(vms), &recorded); err != nil {
		t.Fatal(err)
	}
	onDisk := vmDirs(t, c.cpiData)
	if len(recorded) != 3 || len(onDisk) != 3 {
		t.Errorf("%d VMs recorded, %d in the CPI, want 3 and 3 (0 orphaned): %s / %v", len(recorded), len(onDisk), vms, onDisk)
	}

	// Heartbeats reach the directors through the surviving bus servers.
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(time.Second) {
		h := other.run("-d", "web", "health")
		if strings.Count(h, " running ") == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("instances not running per their heartbeats:\n%s", h)
		}
	}

	// A dead VM is resurrected once, by the leader alone: one resurrect
	// event, one new VM.
	var hs []struct {
		Group string `json:"group"`
		Index int    `json:"index"`
		VMCID string `json:"vm_cid"`
	}
	if err := json.Unmarshal([]byte(other.run("--json", "-d", "web", "health")), &hs); err != nil {
		t.Fatal(err)
	}
	var victim string
	for _, h := range hs {
		if h.Group == "web" && h.Index == 0 {
			victim = h.VMCID
		}
	}
	killVM(t, c.cpiData, victim)
	var resurrections []struct {
		Result   string `json:"result"`
		Instance string `json:"instance"`
		User     string `json:"user"`
	}
	for deadline := time.Now().Add(120 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		out, err := other.command("--json", "-d", "web", "events", "--action", "resurrect").Output()
		if err == nil {
			json.Unmarshal(out, &resurrections)
		}
		if len(resurrections) > 0 && resurrections[0].Result != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no resurrection of %s within 120s", victim)
		}
	}
	lbAnswers(t, "v1", 2)
	time.Sleep(5 * time.Second) // time for a second resurrector, were there one, to act
	final, _ := other.command("--json", "-d", "web", "events", "--action", "resurrect").Output()
	json.Unmarshal(final, &resurrections)
	if len(resurrections) != 1 || resurrections[0].Result != "ok" {
		t.Errorf("resurrections = %+v, want exactly one, ok", resurrections)
	}
	if n := len(vmDirs(t, c.cpiData)); n != 3 {
		t.Errorf("%d VMs in the CPI after the resurrection, want 3", n)
	}
}

// command is the CLI with no director (local commands).
func (c *haCluster) command(args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(c.bin, "director"), args...)
	cmd.Dir = repoRoot()
	return cmd
}
