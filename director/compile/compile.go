// Package compile schedules the compilation of release packages on throwaway
// VMs.
//
// A deploy needs every package its jobs use, compiled for the stemcell of each
// instance group. [Compiler.Compile] takes those packages per stemcell
// ([Target]) and compiles them in dependency order, at most Workers at a time,
// always starting the ready package with the longest remaining chain of
// dependents (the critical path) first, so that the stage ends as early as the
// DAG allows.
//
// A compiled package is cached under [CacheKey]: the package fingerprint, the
// fingerprints of its transitive dependencies and the stemcell's OS and
// version. A cache hit compiles nothing and creates no VM. One [Compiler]
// serves the whole director: when two deploys need the same key at once, one
// compiles and the other waits for its result.
//
// VMs come from the [Cloud] the director provides (the cloud config's
// compilation block, the CPI and the agent behind it). Without ReuseVMs each
// compilation gets a fresh VM, deleted right after; with ReuseVMs a VM serves
// package after package. Either way every compile VM is deleted when the stage
// ends, also on failure or cancellation.
package compile

import (
	"container/heap"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"
)

// Stemcell identifies what a package is compiled for.
type Stemcell struct {
	OS      string
	Version string
	// CID is the stemcell's id in the cloud, passed through to Cloud.CreateVM.
	CID string
}

func (s Stemcell) String() string { return s.OS + "/" + s.Version }

// Package is a source package of a release.
type Package struct {
	Name        string
	Version     string
	Fingerprint string
	// Dependencies are the names of the packages this one compiles against,
	// all present in the same Target.
	Dependencies []string
	// BlobID and SHA256 locate the source blob.
	BlobID string
	SHA256 string
	// Cost estimates how long compiling takes (for example, the last compile's
	// duration); the scheduler only compares costs. Zero counts as one unit.
	Cost time.Duration
}

// Target is the set of packages needed on one stemcell. Dependencies of every
// listed package must be listed too.
type Target struct {
	Stemcell Stemcell
	Packages []Package
}

// Compiled is a compiled package: the blob holding its install tree.
type Compiled struct {
	Name        string
	Version     string
	Fingerprint string
	Key         string // CacheKey
	BlobID      string
	SHA256      string
	// Duration is how long compiling took: a good Package.Cost for the
	// next time the package (or a new version of it) is scheduled.
	Duration time.Duration
}

// VM is a compile VM.
type VM struct {
	CID     string
	AgentID string
}

// Request is one compilation: a package, the stemcell, and its dependencies
// already compiled (transitively), which the agent installs first.
type Request struct {
	Package      Package
	Stemcell     Stemcell
	Dependencies []Compiled
}

// Cloud makes and uses compile VMs. The director implements it with the
// cloud config's compilation block, the CPI and the agent client.
type Cloud interface {
	// CreateVM creates a compile VM for the stemcell from the compilation block.
	CreateVM(ctx context.Context, s Stemcell) (VM, error)
	// WaitAgent returns once the VM's agent answers.
	WaitAgent(ctx context.Context, vm VM) error
	// Compile runs the package's packaging script on the VM and stores the
	// result. A packaging failure should be returned as a *PackagingError
	// carrying the log.
	Compile(ctx context.Context, vm VM, req Request) (blobID, sha256 string, err error)
	// DeleteVM deletes the VM; deleting a missing VM succeeds.
	DeleteVM(ctx context.Context, vm VM) error
}

// Cache holds compiled packages by CacheKey. The director implements it on
// its store.
type Cache interface {
	Get(ctx context.Context, key string) (Compiled, bool, error)
	Put(ctx context.Context, c Compiled) error
}

// Event is one step of the compile stage, for the task log.
type Event struct {
	Stage string // "Compiling packages"
	Task  string // "<package>/<version> (<os>/<version>)"
	Index int    // 1-based
	Total int
	State string // "started", "finished", "failed"
	// Duration is set on finished and failed.
	Duration time.Duration
	Err      error
}

// Reporter receives events; the director turns them into task events.
type Reporter interface {
	Report(e Event)
}

// PackagingError is a failed packaging script with its log.
type PackagingError struct {
	Package string
	Log     string
	Err     error
}

// LogTailLines is how many lines of a failed packaging log an error keeps.
const LogTailLines = 20

func (e *PackagingError) Error() string {
	msg := fmt.Sprintf("packaging %s failed", e.Package)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if tail := logTail(e.Log, LogTailLines); tail != "" {
		msg += "\n--- last lines of the packaging log ---\n" + tail
	}
	return msg
}

func (e *PackagingError) Unwrap() error { return e.Err }

func logTail(log string, n int) string {
	lines := strings.Split(strings.TrimRight(log, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

// Options are one compile stage's settings (the cloud config's compilation
// block).
type Options struct {
	// Cloud makes this stage's VMs; nil: the Compiler's own (New's cloud).
	Cloud    Cloud
	Workers  int // at least 1
	ReuseVMs bool
	Reporter Reporter // may be nil

	// naive disables critical-path ordering (ready packages start in name
	// order); only tests and benchmarks set it, to measure the difference.
	naive bool
}

// CacheKey is the cache key of a package: its fingerprint, its transitive
// dependencies' names and fingerprints, and the stemcell's OS and version.
func CacheKey(pkg Package, transitiveDeps []Package, s Stemcell) string {
	deps := make([]string, 0, len(transitiveDeps))
	for _, d := range transitiveDeps {
		deps = append(deps, d.Name+"\x00"+d.Fingerprint)
	}
	sort.Strings(deps)
	h := sha256.New()
	fmt.Fprintf(h, "compleat compiled package v1\x00%s\x00%s\x00%s\x00%s\x00", pkg.Name, pkg.Fingerprint, s.OS, s.Version)
	for _, d := range deps {
		fmt.Fprintf(h, "%s\x00", d)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Compiler compiles packages for the whole director. It is safe for
// concurrent use; concurrent stages share in-flight compilations.
type Compiler struct {
	cloud  Cloud
	cache  Cache
	logger *slog.Logger

	mu       sync.Mutex
	inflight map[string]*call
}

type call struct {
	done chan struct{}
	res  Compiled
	err  error
}

// New returns a Compiler using cloud for VMs (unless a stage's Options name
// another) and cache for results.
func New(cloud Cloud, cache Cache, logger *slog.Logger) *Compiler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Compiler{cloud: cloud, cache: cache, logger: logger, inflight: map[string]*call{}}
}

// Result maps each target's packages to their compiled blobs.
type Result struct {
	// Compiled holds one map per Target, in the order given, by package name.
	Compiled []map[string]Compiled
	// Hits counts packages found in the cache (or compiled by a concurrent
	// stage); Built counts packages this stage compiled.
	Hits, Built int
}

// node is one (stemcell, package) to compile.
type node struct {
	key      string
	target   int
	pkg      Package
	stemcell Stemcell
	deps     []*node // direct
	closure  []*node // transitive dependencies
	users    []*node // direct dependents
	prio     int64   // cost of the longest chain from here to the end
	pending  int     // dependencies not yet done
	index    int     // 1-based, for events
}

// Compile compiles every package of every target that is not cached, and
// returns all of them compiled. On the first failure it starts nothing new,
// lets running compilations finish (their results are cached), deletes the
// compile VMs and returns the failure, naming the package and stemcell.
func (c *Compiler) Compile(ctx context.Context, targets []Target, opts Options) (Result, error) {
	if opts.Workers < 1 {
		opts.Workers = 1
	}
	nodes, err := buildGraph(targets)
	if err != nil {
		return Result{}, err
	}
	cloud := opts.Cloud
	if cloud == nil {
		cloud = c.cloud
	}
	if cloud == nil {
		return Result{}, errors.New("compile: no cloud to make compile VMs in")
	}
	st := &stage{
		c:     c,
		cloud: cloud,
		opts:  opts,
		idle:  map[string][]VM{},
		total: len(nodes),
	}
	defer st.deleteAll(ctx)

	res := Result{Compiled: make([]map[string]Compiled, len(targets))}
	for i := range res.Compiled {
		res.Compiled[i] = map[string]Compiled{}
	}

	stageCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	type outcome struct {
		n   *node
		c   Compiled
		hit bool
		err error
	}
	outcomes := make(chan outcome)
	ready := &readyHeap{naive: opts.naive}
	var firstErr error
	fail := func(err error) {
		if firstErr == nil {
			firstErr = err
		}
	}
	// finish records a done node and makes its dependents ready; a ready
	// node found in the cache is done at once, without a VM.
	var finish func(n *node, comp Compiled, hit bool)
	finish = func(n *node, comp Compiled, hit bool) {
		res.Compiled[n.target][n.pkg.Name] = comp
		if hit {
			res.Hits++
		} else {
			res.Built++
		}
		for _, u := range n.users {
			u.pending--
			if u.pending == 0 {
				st.makeReady(ctx, u, ready, finish, fail)
			}
		}
	}
	var roots []*node
	for _, n := range nodes {
		if n.pending == 0 {
			roots = append(roots, n)
		}
	}
	for _, n := range roots {
		st.makeReady(ctx, n, ready, finish, fail)
	}
	running := 0
	for {
		for firstErr == nil && ctx.Err() == nil && running < opts.Workers && ready.Len() > 0 {
			n := heap.Pop(ready).(*node)
			running++
			go func() {
				comp, hit, err := st.one(stageCtx, n)
				outcomes <- outcome{n, comp, hit, err}
			}()
		}
		if running == 0 {
			break
		}
		o := <-outcomes
		running--
		if o.err != nil {
			fail(o.err)
			continue
		}
		finish(o.n, o.c, o.hit)
	}
	if firstErr == nil && ctx.Err() != nil {
		firstErr = fmt.Errorf("compile packages: %w", ctx.Err())
	}
	if err := st.deleteAll(ctx); err != nil && firstErr == nil {
		firstErr = err
	}
	if firstErr != nil {
		return res, firstErr
	}
	return res, nil
}

// makeReady finishes n from the cache or queues it for a worker.
func (st *stage) makeReady(ctx context.Context, n *node, ready *readyHeap, finish func(*node, Compiled, bool), fail func(error)) {
	got, ok, err := st.c.cache.Get(ctx, n.key)
	if err != nil {
		fail(fmt.Errorf("compile package %s: read cache: %w", n.pkg.Name, err))
		return
	}
	if ok {
		finish(n, got, true)
		return
	}
	heap.Push(ready, n)
}

// readyHeap orders ready packages: longest remaining chain first (ties and
// naive mode: name order).
type readyHeap struct {
	nodes []*node
	naive bool
}

func (h *readyHeap) Len() int { return len(h.nodes) }
func (h *readyHeap) Less(i, j int) bool {
	a, b := h.nodes[i], h.nodes[j]
	if !h.naive && a.prio != b.prio {
		return a.prio > b.prio
	}
	if a.pkg.Name != b.pkg.Name {
		return a.pkg.Name < b.pkg.Name
	}
	return a.index < b.index
}
func (h *readyHeap) Swap(i, j int) { h.nodes[i], h.nodes[j] = h.nodes[j], h.nodes[i] }
func (h *readyHeap) Push(x any)    { h.nodes = append(h.nodes, x.(*node)) }
func (h *readyHeap) Pop() any {
	n := h.nodes[len(h.nodes)-1]
	h.nodes = h.nodes[:len(h.nodes)-1]
	return n
}

// buildGraph turns targets into nodes, checking names and cycles, and
// computes each node's critical-path priority.
func buildGraph(targets []Target) ([]*node, error) {
	var all []*node
	for ti, t := range targets {
		byName := map[string]*node{}
		for _, p := range t.Packages {
			if _, dup := byName[p.Name]; dup {
				return nil, fmt.Errorf("compile: package %s listed twice for stemcell %s", p.Name, t.Stemcell)
			}
			byName[p.Name] = &node{target: ti, pkg: p, stemcell: t.Stemcell}
		}
		names := make([]string, 0, len(byName))
		for n := range byName {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			n := byName[name]
			for _, d := range n.pkg.Dependencies {
				dn, ok := byName[d]
				if !ok {
					return nil, fmt.Errorf("compile: package %s depends on %s, which is not in the set for stemcell %s", name, d, t.Stemcell)
				}
				n.deps = append(n.deps, dn)
				dn.users = append(dn.users, n)
			}
			n.pending = len(n.deps)
		}
		// Transitive closures and cycle check.
		state := map[*node]int{} // 1 visiting, 2 done
		var visit func(n *node, path []string) error
		visit = func(n *node, path []string) error {
			switch state[n] {
			case 1:
				return fmt.Errorf("compile: dependency cycle: %s", strings.Join(append(path, n.pkg.Name), " -> "))
			case 2:
				return nil
			}
			state[n] = 1
			seen := map[*node]bool{}
			for _, d := range n.deps {
				if err := visit(d, append(path, n.pkg.Name)); err != nil {
					return err
				}
				for _, x := range append([]*node{d}, d.closure...) {
					if !seen[x] {
						seen[x] = true
						n.closure = append(n.closure, x)
					}
				}
			}
			sort.Slice(n.closure, func(i, j int) bool { return n.closure[i].pkg.Name < n.closure[j].pkg.Name })
			state[n] = 2
			return nil
		}
		for _, name := range names {
			if err := visit(byName[name], nil); err != nil {
				return nil, err
			}
			n := byName[name]
			deps := make([]Package, len(n.closure))
			for i, d := range n.closure {
				deps[i] = d.pkg
			}
			n.key = CacheKey(n.pkg, deps, t.Stemcell)
			all = append(all, n)
		}
	}
	// Priorities: own cost plus the costliest chain of dependents.
	memo := map[*node]bool{}
	var prio func(n *node) int64
	prio = func(n *node) int64 {
		if memo[n] {
			return n.prio
		}
		var best int64
		for _, u := range n.users {
			if p := prio(u); p > best {
				best = p
			}
		}
		cost := int64(n.pkg.Cost)
		if cost <= 0 {
			cost = 1
		}
		n.prio = cost + best
		memo[n] = true
		return n.prio
	}
	for i, n := range all {
		prio(n)
		n.index = i + 1
	}
	return all, nil
}

// stage is one Compile call: its worker slots and compile VMs.
type stage struct {
	c     *Compiler
	cloud Cloud
	opts  Options
	total int

	mu   sync.Mutex
	idle map[string][]VM // by stemcell CID+OS+version, with ReuseVMs
	live int             // VMs created and not deleted
	errs []error         // VM deletion failures
}

func stemcellKey(s Stemcell) string { return s.CID + "\x00" + s.OS + "\x00" + s.Version }

func (st *stage) report(n *node, state string, d time.Duration, err error) {
	if st.opts.Reporter == nil {
		return
	}
	st.opts.Reporter.Report(Event{
		Stage:    "Compiling packages",
		Task:     fmt.Sprintf("%s/%s (%s)", n.pkg.Name, n.pkg.Version, n.stemcell),
		Index:    n.index,
		Total:    st.total,
		State:    state,
		Duration: d,
		Err:      err,
	})
}

// one produces a node's compiled package: from the cache, from a concurrent
// stage compiling the same key, or by compiling it.
func (st *stage) one(ctx context.Context, n *node) (Compiled, bool, error) {
	c := st.c
	for {
		if got, ok, err := c.cache.Get(ctx, n.key); err != nil {
			return Compiled{}, false, fmt.Errorf("compile package %s: read cache: %w", n.pkg.Name, err)
		} else if ok {
			return got, true, nil
		}
		c.mu.Lock()
		if cl, ok := c.inflight[n.key]; ok {
			c.mu.Unlock()
			select {
			case <-cl.done:
			case <-ctx.Done():
				return Compiled{}, false, fmt.Errorf("compile package %s: %w", n.pkg.Name, ctx.Err())
			}
			if cl.err == nil {
				return cl.res, true, nil
			}
			if errors.Is(cl.err, context.Canceled) || errors.Is(cl.err, context.DeadlineExceeded) {
				// The other stage was cancelled; try again ourselves.
				continue
			}
			return Compiled{}, false, cl.err
		}
		cl := &call{done: make(chan struct{})}
		c.inflight[n.key] = cl
		c.mu.Unlock()

		cl.res, cl.err = st.build(ctx, n)
		if cl.err == nil {
			if err := c.cache.Put(ctx, cl.res); err != nil {
				cl.err = fmt.Errorf("compile package %s: write cache: %w", n.pkg.Name, err)
			}
		}
		c.mu.Lock()
		delete(c.inflight, n.key)
		c.mu.Unlock()
		close(cl.done)
		return cl.res, false, cl.err
	}
}

// build compiles n on a VM (the caller holds a worker slot).
func (st *stage) build(ctx context.Context, n *node) (Compiled, error) {
	began := time.Now()
	st.report(n, "started", 0, nil)
	fail := func(err error) (Compiled, error) {
		err = fmt.Errorf("compile package %s/%s on stemcell %s: %w", n.pkg.Name, n.pkg.Version, n.stemcell, err)
		st.report(n, "failed", time.Since(began), err)
		return Compiled{}, err
	}
	vm, err := st.vm(ctx, n.stemcell)
	if err != nil {
		return fail(err)
	}
	deps := make([]Compiled, 0, len(n.closure))
	for _, d := range n.closure {
		got, ok, err := st.c.cache.Get(ctx, d.key)
		if err != nil || !ok {
			st.putBack(ctx, n.stemcell, vm)
			return fail(fmt.Errorf("dependency %s is not compiled", d.pkg.Name))
		}
		deps = append(deps, got)
	}
	blobID, sum, err := st.cloud.Compile(ctx, vm, Request{Package: n.pkg, Stemcell: n.stemcell, Dependencies: deps})
	if err != nil {
		// A failed packaging may leave the VM dirty: never reuse it.
		st.deleteVM(ctx, vm)
		return fail(err)
	}
	st.putBack(ctx, n.stemcell, vm)
	took := time.Since(began)
	st.report(n, "finished", took, nil)
	return Compiled{
		Name: n.pkg.Name, Version: n.pkg.Version, Fingerprint: n.pkg.Fingerprint,
		Key: n.key, BlobID: blobID, SHA256: sum, Duration: took,
	}, nil
}

// vm returns an idle reused VM for the stemcell or a new one.
func (st *stage) vm(ctx context.Context, s Stemcell) (VM, error) {
	k := stemcellKey(s)
	st.mu.Lock()
	if vms := st.idle[k]; len(vms) > 0 {
		vm := vms[len(vms)-1]
		st.idle[k] = vms[:len(vms)-1]
		st.mu.Unlock()
		return vm, nil
	}
	// With reuse, VMs of another stemcell may sit idle: keep the total at
	// most Workers by deleting one.
	var evict *VM
	if st.opts.ReuseVMs && st.live >= st.opts.Workers {
		for ok, vms := range st.idle {
			if len(vms) > 0 {
				v := vms[len(vms)-1]
				st.idle[ok] = vms[:len(vms)-1]
				evict = &v
				break
			}
		}
	}
	st.live++
	st.mu.Unlock()
	if evict != nil {
		st.deleteVM(ctx, *evict)
	}
	vm, err := st.cloud.CreateVM(ctx, s)
	if err != nil {
		st.mu.Lock()
		st.live--
		st.mu.Unlock()
		return VM{}, fmt.Errorf("create compile vm: %w", err)
	}
	st.c.logger.Info("compile vm created", "vm", vm.CID, "stemcell", s.String())
	if err := st.cloud.WaitAgent(ctx, vm); err != nil {
		st.deleteVM(ctx, vm)
		return VM{}, fmt.Errorf("wait for agent on compile vm %s: %w", vm.CID, err)
	}
	return vm, nil
}

// putBack keeps vm for the next package with ReuseVMs, else deletes it.
func (st *stage) putBack(ctx context.Context, s Stemcell, vm VM) {
	if st.opts.ReuseVMs && ctx.Err() == nil {
		st.mu.Lock()
		st.idle[stemcellKey(s)] = append(st.idle[stemcellKey(s)], vm)
		st.mu.Unlock()
		return
	}
	st.deleteVM(ctx, vm)
}

// deleteVM deletes a compile VM even when ctx is cancelled.
func (st *stage) deleteVM(ctx context.Context, vm VM) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	err := st.cloud.DeleteVM(dctx, vm)
	st.mu.Lock()
	st.live--
	if err != nil {
		st.errs = append(st.errs, fmt.Errorf("delete compile vm %s: %w", vm.CID, err))
	}
	st.mu.Unlock()
	if err != nil {
		st.c.logger.Error("delete compile vm", "vm", vm.CID, "error", err)
	} else {
		st.c.logger.Info("compile vm deleted", "vm", vm.CID)
	}
}

// deleteAll deletes every idle VM and reports deletion failures once.
func (st *stage) deleteAll(ctx context.Context) error {
	st.mu.Lock()
	var vms []VM
	for k, list := range st.idle {
		vms = append(vms, list...)
		delete(st.idle, k)
	}
	st.mu.Unlock()
	for _, vm := range vms {
		st.deleteVM(ctx, vm)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	err := errors.Join(st.errs...)
	st.errs = nil
	return err
}
