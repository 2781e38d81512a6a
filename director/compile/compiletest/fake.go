// Package compiletest holds hand-written stateful fakes of the interfaces
// package compile consumes: a Cloud whose VMs compile by sleeping each
// package's known time, and an in-memory Cache.
package compiletest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/compleat/compleat/director/compile"
)

var (
	_ compile.Cloud = (*Cloud)(nil)
	_ compile.Cache = (*Cache)(nil)
)

// Cloud is a fake compile cloud. VMs exist in memory; Compile sleeps the
// package's duration (Durations, else Default) and produces a blob named
// after the package and its dependencies. It is safe for concurrent use.
type Cloud struct {
	Durations map[string]time.Duration // by package name
	Default   time.Duration
	// Fail makes packaging of these packages fail with the given log.
	Fail map[string]string
	// FailCreate makes CreateVM fail.
	FailCreate error
	// Gates, when set for a package, make its compilation wait until the
	// channel is closed instead of sleeping: tests decide when it ends.
	Gates map[string]chan struct{}

	mu         sync.Mutex
	next       int
	vms        map[string]compile.Stemcell // live VMs
	created    int
	busy       int
	maxBusy    int
	compiled   []string // package names, in the order compilations finished
	startOrder []string // package names, in the order compilations started
	deps       map[string][]string
}

// NewCloud returns a fake cloud where each compile takes d unless
// Durations says otherwise.
func NewCloud(d time.Duration) *Cloud {
	return &Cloud{Default: d, Durations: map[string]time.Duration{}, Fail: map[string]string{}}
}

// CreateVM creates a VM in memory.
func (c *Cloud) CreateVM(ctx context.Context, s compile.Stemcell) (compile.VM, error) {
	if err := ctx.Err(); err != nil {
		return compile.VM{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.FailCreate != nil {
		return compile.VM{}, c.FailCreate
	}
	if c.vms == nil {
		c.vms = map[string]compile.Stemcell{}
	}
	c.next++
	c.created++
	vm := compile.VM{CID: fmt.Sprintf("vm-%d", c.next), AgentID: fmt.Sprintf("agent-%d", c.next)}
	c.vms[vm.CID] = s
	return vm, nil
}

// WaitAgent succeeds for a live VM.
func (c *Cloud) WaitAgent(ctx context.Context, vm compile.VM) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.vms[vm.CID]; !ok {
		return fmt.Errorf("vm %s does not exist", vm.CID)
	}
	return nil
}

// Compile sleeps the package's time on a live VM.
func (c *Cloud) Compile(ctx context.Context, vm compile.VM, req compile.Request) (string, string, error) {
	c.mu.Lock()
	s, ok := c.vms[vm.CID]
	if !ok {
		c.mu.Unlock()
		return "", "", fmt.Errorf("vm %s does not exist", vm.CID)
	}
	if s != req.Stemcell {
		c.mu.Unlock()
		return "", "", fmt.Errorf("vm %s runs stemcell %s, not %s", vm.CID, s, req.Stemcell)
	}
	c.busy++
	if c.busy > c.maxBusy {
		c.maxBusy = c.busy
	}
	c.startOrder = append(c.startOrder, req.Package.Name)
	d, ok := c.Durations[req.Package.Name]
	if !ok {
		d = c.Default
	}
	failLog, fails := c.Fail[req.Package.Name]
	gate := c.Gates[req.Package.Name]
	c.mu.Unlock()
	if gate != nil {
		d = 0
		select {
		case <-gate:
		case <-ctx.Done():
			c.mu.Lock()
			c.busy--
			c.mu.Unlock()
			return "", "", ctx.Err()
		}
	}

	defer func() {
		c.mu.Lock()
		c.busy--
		c.mu.Unlock()
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return "", "", ctx.Err()
	}
	if fails {
		return "", "", &compile.PackagingError{Package: req.Package.Name, Log: failLog, Err: errors.New("exit status 1")}
	}
	var names []string
	for _, d := range req.Dependencies {
		names = append(names, d.Name)
	}
	sort.Strings(names)
	c.mu.Lock()
	c.compiled = append(c.compiled, req.Package.Name)
	if c.deps == nil {
		c.deps = map[string][]string{}
	}
	c.deps[req.Package.Name] = names
	c.mu.Unlock()
	sum := sha256.Sum256([]byte(req.Package.Name + req.Package.Fingerprint + req.Stemcell.String()))
	return "blob-" + req.Package.Name, hex.EncodeToString(sum[:]), nil
}

// DeleteVM deletes a VM; a missing VM is not an error.
func (c *Cloud) DeleteVM(ctx context.Context, vm compile.VM) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.vms, vm.CID)
	return nil
}

// LiveVMs is the number of VMs that exist now.
func (c *Cloud) LiveVMs() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.vms)
}

// CreatedVMs is how many VMs were ever created.
func (c *Cloud) CreatedVMs() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.created
}

// MaxConcurrent is the most compilations that ran at once.
func (c *Cloud) MaxConcurrent() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.maxBusy
}

// Compiled lists the packages compiled, in the order they finished.
func (c *Cloud) Compiled() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.compiled...)
}

// Started lists the packages in the order their compilation started.
func (c *Cloud) Started() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.startOrder...)
}

// DependenciesSeen is the (sorted) compiled dependencies a package was
// compiled with.
func (c *Cloud) DependenciesSeen(pkg string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.deps[pkg]...)
}

// Cache is an in-memory compile.Cache.
type Cache struct {
	mu sync.Mutex
	m  map[string]compile.Compiled
}

// NewCache returns an empty cache.
func NewCache() *Cache { return &Cache{m: map[string]compile.Compiled{}} }

// Get returns the cached package.
func (c *Cache) Get(ctx context.Context, key string) (compile.Compiled, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[key]
	return v, ok, nil
}

// Put stores a compiled package.
func (c *Cache) Put(ctx context.Context, v compile.Compiled) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[v.Key] = v
	return nil
}

// Len is the number of cached packages.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
