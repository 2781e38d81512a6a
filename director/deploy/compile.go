package deploy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/compleat/compleat/agent/applyspec"
	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/director/blobstore"
	"github.com/compleat/compleat/director/compile"
	"github.com/compleat/compleat/director/plan"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

// compileSession is one deploy's compilation block, carried to the shared
// compile.Cloud in the context of that deploy's compile stage.
type compileSession struct {
	cpiName    string
	deployment string
	block      plan.Compilation

	mu   sync.Mutex
	free []plan.Network // addresses not used by a live compile VM
	used map[string]plan.Network
}

// compileFor compiles the packages the plan needs and returns the compiled
// blobs by stemcell then package name.
func (d *Deployer) compileFor(ctx context.Context, r *task.Reporter, p *plan.Plan, in *inputs) (map[string]map[string]compile.Compiled, error) {
	targets := p.CompileTargets()
	out := map[string]map[string]compile.Compiled{}
	if len(targets) == 0 {
		return out, nil
	}
	err := d.c.Store.View(func(tx *store.Tx) error {
		for ti := range targets {
			for pi := range targets[ti].Packages {
				pk := &targets[ti].Packages[pi]
				b, err := tx.PackageBlob(pk.Fingerprint)
				if err != nil {
					return fmt.Errorf("package %s (%s): blob: %w", pk.Name, pk.Fingerprint, err)
				}
				pk.BlobID = b.BlobID
				if pk.SHA256 == "" {
					pk.SHA256 = b.SHA256
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Compile VMs go to the CPI of the compilation block's AZ, made from
	// that CPI's stemcell; results are keyed as the plan names stemcells.
	cpiName := in.place.cpiFor(p.Compilation.AZ)
	planned := make([]string, len(targets))
	for i := range targets {
		s := &targets[i].Stemcell
		planned[i] = s.CID
		cid, err := in.place.stemcellCID(plan.Stemcell{OS: s.OS, Version: s.Version}, cpiName)
		if err != nil {
			return nil, task.BadInput(fmt.Errorf("compilation: %w", err))
		}
		s.CID = cid
	}
	sess := &compileSession{cpiName: cpiName, deployment: p.Deployment, block: p.Compilation, used: map[string]plan.Network{}}
	workers := p.Compilation.Workers
	if len(p.Compilation.Addresses) > 0 {
		sess.free = append(sess.free, p.Compilation.Addresses...)
		workers = min(workers, len(p.Compilation.Addresses))
	}
	res, err := d.compiler.Compile(ctx, targets, compile.Options{Cloud: &compileCloud{d: d, sess: sess}, Workers: workers, ReuseVMs: p.Compilation.ReuseVMs, Reporter: compileReporter{r}})
	if err != nil {
		return nil, err
	}
	for i, t := range targets {
		out[stemcellKey(t.Stemcell.OS, t.Stemcell.Version, planned[i])] = res.Compiled[i]
	}
	return out, nil
}

func stemcellKey(os, version, cid string) string { return os + "/" + version + "/" + cid }

// compileCloud is compile.Cloud over the CPI and the agents, for one
// compile stage (sess: its compilation block, CPI and addresses) or, with
// no session, for deleting what an interrupted stage left.
type compileCloud struct {
	d    *Deployer
	sess *compileSession
}

var _ compile.Cloud = (*compileCloud)(nil)

func (c *compileCloud) CreateVM(ctx context.Context, s compile.Stemcell) (compile.VM, error) {
	sess := c.sess
	if sess == nil {
		return compile.VM{}, errors.New("compile: no compilation settings for this stage")
	}
	spec := vmSpec{
		cpiName: sess.cpiName, deployment: sess.deployment, instanceID: compileInstance,
		stemcellCID: s.CID, cloudProps: sess.block.CloudProperties, env: sess.block.Env,
		metadata: map[string]string{"compiling": "true", "name": "compilation"},
	}
	var addr plan.Network
	haveAddr := false
	if len(sess.block.Addresses) > 0 {
		sess.mu.Lock()
		if len(sess.free) == 0 {
			sess.mu.Unlock()
			return compile.VM{}, errors.New("compile: no free compilation address")
		}
		addr, sess.free = sess.free[0], sess.free[1:]
		haveAddr = true
		sess.mu.Unlock()
		spec.networks = []plan.Network{addr}
	} else {
		spec.networks = []plan.Network{{Name: sess.block.Network, Type: sess.block.NetworkType, Default: []string{"dns", "gateway"}}}
	}
	vm, err := c.d.createVM(ctx, spec)
	if err != nil {
		if haveAddr {
			sess.mu.Lock()
			sess.free = append(sess.free, addr)
			sess.mu.Unlock()
		}
		return compile.VM{}, err
	}
	if haveAddr {
		sess.mu.Lock()
		sess.used[vm.CID] = addr
		sess.mu.Unlock()
	}
	return compile.VM{CID: vm.CID, AgentID: vm.AgentID}, nil
}

// WaitAgent returns at once: createVM already waited for the agent.
func (c *compileCloud) WaitAgent(ctx context.Context, vm compile.VM) error { return nil }

func (c *compileCloud) Compile(ctx context.Context, vm compile.VM, req compile.Request) (string, string, error) {
	d := c.d
	src, err := d.blobRef(req.Package.BlobID, req.Package.SHA256, 0)
	if err != nil {
		return "", "", err
	}
	creq := protocol.CompilePackageRequest{Name: req.Package.Name, Version: req.Package.Version, Source: src}
	for _, dep := range req.Dependencies {
		b, err := d.blobRef(dep.BlobID, dep.SHA256, 0)
		if err != nil {
			return "", "", err
		}
		creq.Dependencies = append(creq.Dependencies, applyspec.Package{Name: dep.Name, Version: dep.Version, Blob: b})
	}
	blobID := "compiled-" + req.Package.Name + "-" + newID()
	put, err := d.c.Signer.URL(d.c.BlobURL, http.MethodPut, blobID, blobTTL, "")
	if err != nil {
		return "", "", err
	}
	creq.Upload = protocol.Upload{URL: put}
	res, err := d.agent(vm.AgentID).CompilePackage(ctx, creq)
	if err != nil {
		var exc *protocol.Exception
		if errors.As(err, &exc) && exc.Log != "" {
			return "", "", &compile.PackagingError{Package: req.Package.Name, Log: exc.Log, Err: err}
		}
		return "", "", err
	}
	// The agent's word is not the record: the director hashes the blob it
	// stored and records that digest only when both agree.
	if err := d.verifyBlob(ctx, blobID, res.SHA256); err != nil {
		d.c.Blobs.Delete(context.WithoutCancel(ctx), blobID)
		return "", "", fmt.Errorf("compiled package %s: %w", req.Package.Name, err)
	}
	return blobID, res.SHA256, nil
}

// verifyBlob hashes blob id and compares the digest with want.
func (d *Deployer) verifyBlob(ctx context.Context, id, want string) error {
	rc, err := d.c.Blobs.Get(ctx, id)
	if err != nil {
		return fmt.Errorf("read uploaded blob %s: %w", id, err)
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		return fmt.Errorf("read uploaded blob %s: %w", id, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); want == "" || got != want {
		return fmt.Errorf("blob %s has sha256 %s, the agent reported %q: %w", id, got, want, blobstore.ErrDigestMismatch)
	}
	return nil
}

func (c *compileCloud) DeleteVM(ctx context.Context, vm compile.VM) error {
	var cpiName string
	if c.sess != nil {
		cpiName = c.sess.cpiName
	} else {
		c.d.c.Store.View(func(tx *store.Tx) error {
			rec, err := tx.VM(vm.CID)
			cpiName = rec.CPI
			return err
		})
	}
	if err := c.d.deleteVM(ctx, cpiName, createdVM{CID: vm.CID, AgentID: vm.AgentID}); err != nil {
		return err
	}
	if sess := c.sess; sess != nil {
		sess.mu.Lock()
		if a, ok := sess.used[vm.CID]; ok {
			delete(sess.used, vm.CID)
			sess.free = append(sess.free, a)
		}
		sess.mu.Unlock()
	}
	return nil
}

// blobRef is a signed GET reference to a blob.
func (d *Deployer) blobRef(id, sha string, size int64) (applyspec.Blob, error) {
	u, err := d.c.Signer.URL(d.c.BlobURL, http.MethodGet, id, blobTTL, sha)
	if err != nil {
		return applyspec.Blob{}, err
	}
	return applyspec.Blob{URL: u, SHA256: sha, Size: size}, nil
}

// storeCache is compile.Cache over the store's compiled packages.
type storeCache struct{ st *store.Store }

func (s storeCache) Get(ctx context.Context, key string) (compile.Compiled, bool, error) {
	var p store.CompiledPackage
	err := s.st.View(func(tx *store.Tx) error {
		var err error
		p, err = tx.CompiledPackage(key)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return compile.Compiled{}, false, nil
	}
	if err != nil {
		return compile.Compiled{}, false, err
	}
	return compile.Compiled{Name: p.Name, Version: p.Fingerprint, Fingerprint: p.Fingerprint, Key: p.Key, BlobID: p.BlobID, SHA256: p.SHA256, Duration: time.Duration(0)}, true, nil
}

func (s storeCache) Put(ctx context.Context, c compile.Compiled) error {
	return s.st.Update(func(tx *store.Tx) error {
		return tx.PutCompiledPackage(store.CompiledPackage{Key: c.Key, Name: c.Name, Fingerprint: c.Fingerprint, BlobID: c.BlobID, SHA256: c.SHA256})
	})
}
