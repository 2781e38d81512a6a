package app_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/compleat/compleat/director/app"
	"github.com/compleat/compleat/director/store/etcdtest"
	"github.com/compleat/compleat/test/testbin"
)

// haGroup is directors run as processes on one etcd state and one S3
// bucket (director.yml ha:).
type haGroup struct {
	tb    testing.TB
	bin   string
	dir   string
	ttl   string
	etcd  []string
	s3URL string
	procs map[string]*haProc
	buses map[string]string
}

type haProc struct {
	*testbin.Process
	env map[string]string
}

const haToken = "admin-secret-0123456789"

func newHAGroup(tb testing.TB, ttl string) *haGroup {
	tb.Helper()
	bin, err := testbin.Build(testbin.Director)
	if err != nil {
		tb.Fatal(err)
	}
	etcd := etcdtest.StartCluster(tb, 3)
	backend := s3mem.New()
	if err := backend.CreateBucket("blobs"); err != nil {
		tb.Fatal(err)
	}
	s3 := httptest.NewServer(gofakes3.New(backend).Server())
	tb.Cleanup(s3.Close)
	g := &haGroup{tb: tb, bin: bin, dir: tb.TempDir(), ttl: ttl, etcd: etcd.Endpoints(), s3URL: s3.URL, procs: map[string]*haProc{}, buses: busCluster(tb, "d0", "d1")}
	os.WriteFile(filepath.Join(g.dir, "admin.token"), []byte(haToken+"\n"), 0o600)
	tb.Cleanup(func() {
		for _, p := range g.procs {
			p.Stop(syscall.SIGTERM)
		}
	})
	return g
}

// start starts director name (its data directory seeded from the first
// one's CA, uuid and variables key, as docs/ha.md says) and waits until it
// serves.
func (g *haGroup) start(name string) *haProc {
	g.tb.Helper()
	data := filepath.Join(g.dir, name)
	os.MkdirAll(data, 0o700)
	for other := range g.procs {
		for _, f := range []string{"ca.pem", "ca.key", "director-uuid", "state.db.key"} {
			if raw, err := os.ReadFile(filepath.Join(g.dir, other, f)); err == nil {
				os.WriteFile(filepath.Join(data, f), raw, 0o600)
			}
		}
		break
	}
	endpoints, _ := json.Marshal(g.etcd)
	file := filepath.Join(g.dir, name+".yml")
	os.WriteFile(file, []byte(`listen: 127.0.0.1:0
data_dir: `+name+`
tokens:
- {name: admin, token_file: admin.token, scopes: [admin]}
`+g.buses[name]+`store: {backend: etcd, endpoints: `+string(endpoints)+`, prefix: /ha-bench/}
blobstore: {type: s3, s3: {bucket: blobs, region: us-east-1, endpoint: "`+g.s3URL+`", path_style: true, access_key_id: k, secret_access_key: s}}
ha: {name: `+name+`, lease_ttl: `+g.ttl+`}
`), 0o600)
	re := regexp.MustCompile(`Director ready at (https://\S+)`)
	p := &haProc{Process: testbin.Start(g.tb, filepath.Join(g.bin, "director"), []string{"serve", "--config", file},
		func(logs string) bool { return re.MatchString(logs) })}
	p.env = map[string]string{"DIRECTOR_TARGET": re.FindStringSubmatch(p.Logs.String())[1], "DIRECTOR_TOKEN": haToken,
		"DIRECTOR_CA_CERT": filepath.Join(data, "ca.pem")}
	g.procs[name] = p
	return p
}

// cli runs the CLI in-process against p; ok is false when it fails.
func (p *haProc) cli(args ...string) (string, bool) {
	var out, errb strings.Builder
	full := append([]string{"-e", p.env["DIRECTOR_TARGET"], "--token", haToken, "--ca-cert", p.env["DIRECTOR_CA_CERT"]}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := app.Run(ctx, full, &out, &errb)
	return out.String() + errb.String(), err == nil
}

// leader is the name of the director p says leads ("" while none).
func (p *haProc) leader() string {
	out, ok := p.cli("--json", "info")
	if !ok {
		return ""
	}
	var i clusterInfo
	json.Unmarshal([]byte(out), &i)
	name, _, _ := strings.Cut(i.Leader, "@")
	return name
}

// BenchmarkHAFailover kills the leading director (SIGKILL) and times how
// long until another one has taken over and run a task submitted at the
// moment of the kill: the failover an operator sees. Two directors on a
// three-member etcd; five kills per op, the killed one started again as a
// follower each time.
func BenchmarkHAFailover(b *testing.B) {
	for _, ttl := range []string{"2s", "5s"} {
		b.Run("lease_ttl="+ttl, func(b *testing.B) {
			g := newHAGroup(b, ttl)
			g.start("d0")
			g.start("d1")
			var took []time.Duration
			for i := 0; i < 5*b.N; i++ {
				var lead string
				for deadline := time.Now().Add(30 * time.Second); lead == ""; time.Sleep(50 * time.Millisecond) {
					if lead = g.procs["d1"].leader(); time.Now().After(deadline) {
						b.Fatal("no leader")
					}
				}
				survivor := "d0"
				if lead == "d0" {
					survivor = "d1"
				}
				s := g.procs[survivor]
				began := time.Now()
				g.procs[lead].Stop(syscall.SIGKILL)
				if out, ok := s.cli("-n", "clean-up"); !ok {
					b.Fatalf("clean-up through %s after the kill: %s", survivor, out)
				}
				took = append(took, time.Since(began))
				delete(g.procs, lead)
				g.start(lead)
			}
			slices.Sort(took)
			b.ReportMetric(took[len(took)/2].Seconds(), "s-failover-median")
			b.ReportMetric(took[len(took)-1].Seconds(), "s-failover-max")
			b.Logf("lease_ttl %s: failovers %v", ttl, took)
		})
	}
}
