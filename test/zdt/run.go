package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// options are the harness's flags.
type options struct {
	bin          string
	stemcell     string
	release      string
	cloudConfig  string
	rate, conns  int
	maxRequests  int
	baseline     time.Duration
	settle       time.Duration
	deployLimit  time.Duration
	keep         bool
	skipDrain    bool
	autoRollback bool
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("zdt", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	bin := os.Getenv("COMPLEAT_BIN")
	if bin == "" {
		bin = "bin"
	}
	fs.StringVar(&o.bin, "bin", bin, "directory of the built binaries (director, agent, cpi-local)")
	fs.StringVar(&o.stemcell, "stemcell", "build/stemcells/local.tgz", "the local stemcell (version 1)")
	fs.StringVar(&o.release, "release", "releases/web", "the web release's source directory")
	fs.StringVar(&o.cloudConfig, "cloud-config", "manifests/local/cloud-config.yml", "the local cloud config (moved to a free 127.n.0.0/16)")
	fs.IntVar(&o.rate, "rate", 200, "requests per second through the load balancers")
	fs.IntVar(&o.conns, "conns", 8, "concurrent connections")
	fs.IntVar(&o.maxRequests, "max-requests", 400_000, "stop the load after this many requests")
	fs.DurationVar(&o.baseline, "baseline", 5*time.Second, "steady load before the first phase (the 'before' latency)")
	fs.DurationVar(&o.settle, "settle", 3*time.Second, "load after each deploy, during which only the new version may answer")
	fs.DurationVar(&o.deployLimit, "deploy-timeout", 10*time.Minute, "longest wait for one deploy")
	fs.BoolVar(&o.keep, "keep", false, "keep the data directory (it is kept anyway when the run fails)")
	fs.BoolVar(&o.skipDrain, "skip-drain-phase", true, "run the --skip-drain comparison phase")
	fs.BoolVar(&o.autoRollback, "auto-rollback", true, "deploy the failing canary with update.auto_rollback: true")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.rate < 1 || o.conns < 1 {
		return o, errors.New("--rate and --conns must be positive")
	}
	return o, nil
}

// phase is one rollout under load.
type phase struct {
	name  string
	m     manifestOpts
	flags []string
	// wantFail: the deploy must fail (a canary that never becomes
	// healthy).
	wantFail bool
	// during and after are the versions allowed to answer while the deploy
	// runs and once it has returned.
	during, after []string
	// comparison phases are reported apart and not counted in the summary.
	comparison bool
}

// result is what one phase measured.
type result struct {
	phase           phase
	st              stats
	wall            time.Duration
	bound           bound
	task            int
	drained, abrupt int
	retries         int // requests the load balancers retried on another backend
	exitReasons     []string
	notes           []string
	deployErr       string
}

func (r result) ratio() float64 {
	if r.bound.total <= 0 {
		return 0
	}
	return r.wall.Seconds() / r.bound.total.Seconds()
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return err
	}
	for _, f := range []string{filepath.Join(bin, "director"), filepath.Join(bin, "agent"), filepath.Join(bin, "cpi-local"), o.stemcell} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%w (run `make build stemcell` first)", err)
		}
	}
	work, err := os.MkdirTemp("", "zdt-")
	if err != nil {
		return err
	}
	defer func() {
		if err == nil && !o.keep {
			os.RemoveAll(work)
			return
		}
		fmt.Fprintf(stderr, "zdt: data kept in %s (director log: %s)\n", work, filepath.Join(work, "director.log"))
	}()
	logf := func(format string, a ...any) {
		fmt.Fprintf(stdout, "zdt: "+format+"\n", a...)
	}

	d, err := startDirector(ctx, filepath.Join(bin, "director"), filepath.Join(work, "data"), filepath.Join(work, "director.log"))
	if err != nil {
		return err
	}
	deployed := false
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
		defer cancel()
		if deployed {
			if _, derr := d.run(cctx, "-d", "zdt", "delete-deployment", "--force"); derr != nil {
				fmt.Fprintf(stderr, "zdt: delete-deployment: %v\n", derr)
			}
		}
		d.stop()
	}()
	logf("director up, data in %s", work)

	prefix, err := pickNet()
	if err != nil {
		return err
	}
	cc, err := cloudConfig(o.cloudConfig, prefix)
	if err != nil {
		return err
	}
	ccPath := filepath.Join(work, "cloud-config.yml")
	if err := os.WriteFile(ccPath, cc, 0o644); err != nil {
		return err
	}
	if _, err := d.run(ctx, "update-cloud-config", ccPath); err != nil {
		return err
	}

	// Releases: v1 as is; v2 changes the webapp package (a response
	// header) and the version property; v3's webapp never passes its
	// health check.
	tarballs, err := buildReleases(ctx, d, o.release, work, []releaseEdit{
		{version: "1"},
		{version: "2", old: `w.Header().Set("Content-Type", "text/plain; charset=utf-8")`,
			new: `w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Webapp-Build", "2")`},
		{version: "3", old: `func (s *server) health(w http.ResponseWriter, r *http.Request) {`,
			new: `func (s *server) health(w http.ResponseWriter, r *http.Request) {
	if s.instance != "" { // this build never becomes healthy
		http.Error(w, "broken build", http.StatusServiceUnavailable)
		return
	}`},
	})
	if err != nil {
		return err
	}
	for _, v := range []string{"1", "2", "3"} {
		if _, err := d.run(ctx, "upload-release", tarballs[v]); err != nil {
			return err
		}
	}
	stemcell2 := filepath.Join(work, "stemcell-2.tgz")
	if _, err := d.run(ctx, "create-stemcell", "--agent", filepath.Join(bin, "agent"), "--version", "2", "--tarball", stemcell2); err != nil {
		return err
	}
	for _, s := range []string{o.stemcell, stemcell2} {
		if _, err := d.run(ctx, "upload-stemcell", s); err != nil {
			return err
		}
	}

	base := manifestOpts{prefix: prefix, release: "1", version: "v1", stemcell: "1", webInstances: 4}
	write := func(name string, m manifestOpts) (string, error) {
		p := filepath.Join(work, name+".yml")
		return p, os.WriteFile(p, []byte(manifest(m)), 0o644)
	}
	first, err := write("v1", base)
	if err != nil {
		return err
	}
	began := time.Now()
	deployed = true
	if _, err := d.run(ctx, "-d", "zdt", "deploy", first); err != nil {
		return err
	}
	logf("deployed v1 (4 web, 2 lb) in %s", round(time.Since(began)))

	// Load, and the load balancers' view of their backends.
	lctx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	ld := newLoader(lbAddrs(prefix, 10), o.rate, o.conns, o.maxRequests)
	rot := newRotation(lbAddrs(prefix, 10))
	loadDone := make(chan struct{})
	go func() { ld.run(lctx); close(loadDone) }()
	go rot.run(lctx, 100*time.Millisecond)
	if err := waitServing(ctx, ld, "v1"); err != nil {
		return err
	}
	t0 := time.Now()
	if err := sleep(ctx, o.baseline); err != nil {
		return err
	}
	before := summarise(ld.window(t0, time.Now()), set("v1"))
	fmt.Fprintf(stdout, "zdt: %-12s requests=%d failures=%d p50=%s p99=%s\n", "baseline", before.requests, before.failures, ms(before.p50), ms(before.p99))

	v2 := base
	v2.release, v2.version = "2", "v2"
	cs := v2
	cs.stemcell, cs.vmStrategy = "2", "create-swap-delete"
	up := cs
	up.webInstances = 6
	v3 := cs
	v3.release, v3.version, v3.autoRollback = "3", "v3", o.autoRollback
	sd := cs
	sd.version = "v2-skipdrain"
	phases := []phase{
		{name: "v2", m: v2, during: []string{"v1", "v2"}, after: []string{"v2"}},
		{name: "stemcell", m: cs, during: []string{"v2"}, after: []string{"v2"}},
		{name: "scale-up", m: up, during: []string{"v2"}, after: []string{"v2"}},
		{name: "scale-down", m: cs, during: []string{"v2"}, after: []string{"v2"}},
		{name: "canary", m: v3, wantFail: true, during: []string{"v2"}, after: []string{"v2"}},
	}
	if o.skipDrain {
		phases = append(phases, phase{name: "skip-drain", m: sd, flags: []string{"--skip-drain"}, during: []string{"v2", "v2-skipdrain"}, after: []string{"v2-skipdrain"}, comparison: true})
	}

	var results []result
	for _, ph := range phases {
		path, err := write(ph.name, ph.m)
		if err != nil {
			return err
		}
		r, err := runPhase(ctx, d, ld, rot, ph, path, o)
		if err != nil {
			printResults(stdout, before, results)
			return fmt.Errorf("phase %s: %w", ph.name, err)
		}
		results = append(results, r)
		printResult(stdout, r)
	}
	stopLoad()
	<-loadDone
	return printResults(stdout, before, results)
}

// runPhase deploys one manifest under load and measures it.
func runPhase(ctx context.Context, d *director, ld *loader, rot *rotation, ph phase, path string, o options) (result, error) {
	r := result{phase: ph}
	args := append([]string{"-d", "zdt", "deploy", path}, ph.flags...)
	dctx, cancel := context.WithTimeout(ctx, o.deployLimit)
	t0 := time.Now()
	out, derr := d.run(dctx, args...)
	t1 := time.Now()
	cancel()
	r.wall = t1.Sub(t0)
	switch {
	case derr != nil && !ph.wantFail:
		return r, derr
	case derr == nil && ph.wantFail:
		return r, errors.New("the deploy succeeded, but its canary should never have become healthy")
	case derr != nil:
		r.deployErr = lastErrorLine(out)
	}
	id, err := taskID(out)
	if err != nil {
		return r, err
	}
	r.task = id
	raw, err := d.output(ctx, "--json", "task", fmt.Sprint(id))
	if err != nil && !ph.wantFail {
		return r, err
	}
	evs, err := parseEvents([]byte(raw))
	if err != nil {
		return r, fmt.Errorf("task %d events: %w", id, err)
	}
	r.bound = lowerBound(evs)
	r.notes = infoNotes(evs)
	if err := sleep(ctx, o.settle); err != nil {
		return r, err
	}
	t2 := time.Now()
	r.st = summarise(ld.window(t0, t1), set(ph.during...))
	r.st.add(summarise(ld.window(t1, t2), set(ph.after...)))
	all := summarise(ld.window(t0, t2), nil)
	r.st.p50, r.st.p99 = all.p50, all.p99
	r.drained, r.abrupt, r.exitReasons = rot.between(t0, t2)
	r.retries = lbRetries(d.data, t0, t2)
	return r, nil
}

func printResult(w io.Writer, r result) {
	kind := "phase"
	if r.phase.comparison {
		kind = "comparison"
	}
	fmt.Fprintf(w, "zdt: %-12s %s requests=%d failures=%d p50=%s p99=%s wall=%s lower_bound=%s ratio=%.2f batches=%d task=%d lb_exits=drained:%d,abrupt:%d lb_retries=%d\n",
		r.phase.name, kind, r.st.requests, r.st.failures, ms(r.st.p50), ms(r.st.p99), round(r.wall), round(r.bound.total), r.ratio(), r.bound.batches, r.task, r.drained, r.abrupt, r.retries)
	groups := make([]string, 0, len(r.bound.perGroup))
	for g, d := range r.bound.perGroup {
		groups = append(groups, fmt.Sprintf("%s=%s", g, round(d)))
	}
	sort.Strings(groups)
	fmt.Fprintf(w, "zdt:   bound: fastest instance update per group %s; parallel stages %s; compile %s\n", strings.Join(groups, " "), round(r.bound.parallel), round(r.bound.compile))
	if r.deployErr != "" {
		fmt.Fprintf(w, "zdt:   deploy failed as expected: %s\n", r.deployErr)
	}
	for _, n := range r.notes {
		fmt.Fprintf(w, "zdt:   note: %s\n", strings.ReplaceAll(n, "\n", "\nzdt:         "))
	}
	if len(r.exitReasons) > 0 {
		fmt.Fprintf(w, "zdt:   backends leaving rotation without drain: %s\n", strings.Join(r.exitReasons, "; "))
	}
	if len(r.st.reasons) > 0 {
		var rs []string
		for k, v := range r.st.reasons {
			rs = append(rs, fmt.Sprintf("%s ×%d", k, v))
		}
		sort.Strings(rs)
		fmt.Fprintf(w, "zdt:   failures: %s\n", strings.Join(rs, "; "))
	}
}

// printResults prints the summary line and returns an error when a
// counted phase failed a request.
func printResults(w io.Writer, before stats, rs []result) error {
	var n, reqs, fails int
	worst := 0.0
	for _, r := range rs {
		if r.phase.comparison {
			fmt.Fprintf(w, "zdt: comparison %s (not counted below): requests=%d failures=%d p99=%s lb_exits_without_drain=%d lb_retries=%d\n", r.phase.name, r.st.requests, r.st.failures, ms(r.st.p99), r.abrupt, r.retries)
			continue
		}
		n++
		reqs += r.st.requests
		fails += r.st.failures
		worst = max(worst, r.ratio())
	}
	fmt.Fprintf(w, "zdt: phases=%d requests=%d failures=%d worst_ratio=%.2f\n", n, reqs, fails, worst)
	if fails > 0 {
		return fmt.Errorf("%d failed requests", fails)
	}
	return nil
}

// waitServing waits until the load balancers answer with the version.
func waitServing(ctx context.Context, ld *loader, version string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		from := time.Now()
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
		ss := ld.window(from, time.Now().Add(-100*time.Millisecond))
		if st := summarise(ss, set(version)); st.requests > 0 && st.failures == 0 {
			return nil
		}
	}
	return errors.New("the load balancers did not answer v1 within 30 s of the deploy")
}

func lastErrorLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "Error:") {
			return strings.TrimSpace(strings.TrimPrefix(lines[i], "Error:"))
		}
	}
	return tail(out, 1)
}

func set(vs ...string) map[string]bool {
	m := map[string]bool{}
	for _, v := range vs {
		m[v] = true
	}
	return m
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func round(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }
