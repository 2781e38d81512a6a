package cloudcheck

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/director/store"
)

// CPI is the part of the CPI contract cloud-check uses.
type CPI interface {
	HasVM(ctx context.Context, vmCID string) (bool, error)
	HasDisk(ctx context.Context, diskCID string) (bool, error)
	GetDisks(ctx context.Context, vmCID string) ([]string, error)
	RebootVM(ctx context.Context, vmCID string) error
	DeleteVM(ctx context.Context, vmCID string) error
	AttachDisk(ctx context.Context, vmCID, diskCID string) (cpi.DiskHint, error)
}

var _ CPI = cpi.CPI(nil)

// Agents talks to agents.
type Agents interface {
	Ping(ctx context.Context, agentID string) error
	// ListDisk returns the persistent disks the agent has mounted.
	ListDisk(ctx context.Context, agentID string) ([]string, error)
	// MountDisk records the disk's hint in the agent's settings and mounts
	// it.
	MountDisk(ctx context.Context, agentID, diskCID string, hint cpi.DiskHint) error
}

// Lister lists the VMs and persistent disks the clouds hold with this
// director's tag, with their tags and CPI (CPIVMs, through the contract's
// ListVMs and ListDisks).
type Lister interface {
	ListVMs(ctx context.Context) ([]CloudVM, error)
	ListDisks(ctx context.Context) ([]CloudDisk, error)
}

// Recreator recreates an instance's VM the way a deploy does.
type Recreator interface {
	Recreate(ctx context.Context, deployment, instanceID, reason string) (taskID uint64, err error)
}

// Events records audit events.
type Events interface {
	AddEvent(ctx context.Context, e store.AuditEvent) error
}

// Checker scans deployments and resolves problems.
type Checker struct {
	Store *store.Store
	// CPIs returns a CPI by name.
	CPIs   func(ctx context.Context, name string) (CPI, error)
	Agents Agents
	Lister Lister // nil: unknown VMs and disks are not looked for
	// Recreator carries out recreate_vm; nil refuses it.
	Recreator Recreator
	Events    Events // nil: no audit events
	Logger    *slog.Logger
	// Director is the director's id as its VMs are tagged with it
	// (cpi.TagDirector; default "compleat").
	Director string
	// PingTimeout bounds each agent ping (default 5s).
	PingTimeout time.Duration
	// Busy, when set, reports whether another operation holds the
	// deployment's lock; Resolve refuses to act on a busy deployment.
	Busy func(ctx context.Context, deployment string) bool
}

// ErrBusy: another operation holds the deployment.
var ErrBusy = errors.New("deployment is busy")

// User is who cloud-check's events name when no operator is given.
const User = "cloud-check"

func (c *Checker) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

// Scan gathers the observations of a deployment and detects its problems.
func (c *Checker) Scan(ctx context.Context, deployment string) ([]Problem, error) {
	o, err := c.Observe(ctx, deployment)
	if err != nil {
		return nil, err
	}
	return Detect(o), nil
}

// Observe gathers what Detect needs: the state (one short read), then the
// CPI's and the agents' answers, in parallel per instance.
func (c *Checker) Observe(ctx context.Context, deployment string) (Observed, error) {
	o := Observed{Deployment: deployment, Director: c.Director, CPIOf: map[string]string{}, KnownVMs: map[string]bool{},
		HasVM: map[string]bool{}, HasDisk: map[string]bool{}, Attached: map[string][]string{}, KnownDisks: map[string]bool{},
		Responsive: map[string]bool{}, Mounted: map[string][]string{}}
	if o.Director == "" {
		o.Director = "compleat"
	}
	diskCPI := map[string]string{}
	err := c.Store.View(func(tx *store.Tx) error {
		if _, err := tx.Deployment(deployment); err != nil {
			return err
		}
		var err error
		if o.Instances, err = tx.Instances(deployment); err != nil {
			return err
		}
		vms, err := tx.VMs("")
		if err != nil {
			return err
		}
		for _, v := range vms {
			o.KnownVMs[v.CID] = true
			o.CPIOf[v.CID] = v.CPI
		}
		disks, err := tx.Disks(false)
		if err != nil {
			return err
		}
		for _, d := range disks {
			o.KnownDisks[d.CID] = true
			if d.Deployment == deployment {
				o.Disks = append(o.Disks, d)
				diskCPI[d.CID] = d.CPI
			}
		}
		orphans, err := tx.Disks(true)
		for _, d := range orphans {
			o.KnownDisks[d.CID] = true
		}
		return err
	})
	if err != nil {
		return o, fmt.Errorf("read state of %s: %w", deployment, err)
	}
	defaultCPI := ""
	for _, n := range o.CPIOf {
		defaultCPI = n
		break
	}

	var mu sync.Mutex
	var wg sync.WaitGroup
	var errs []error
	fail := func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() }
	for _, in := range o.Instances {
		if in.IgnoreFix || (in.VMCID == "" && len(in.DiskCIDs) == 0) {
			continue
		}
		wg.Add(1)
		go func(in store.Instance) {
			defer wg.Done()
			name := o.CPIOf[in.VMCID]
			if name == "" {
				name = defaultCPI
			}
			for _, d := range in.DiskCIDs {
				if diskCPI[d] != "" {
					name = diskCPI[d]
				}
			}
			cl, err := c.CPIs(ctx, name)
			if err != nil {
				fail(fmt.Errorf("cpi %q of %s/%s: %w", name, in.Group, in.ID, err))
				return
			}
			disks := append([]string(nil), in.DiskCIDs...)
			for _, d := range o.Disks {
				if d.InstanceID == in.ID && !slices.Contains(disks, d.CID) {
					disks = append(disks, d.CID)
				}
			}
			for _, d := range disks {
				has, err := cl.HasDisk(ctx, d)
				if err != nil {
					fail(fmt.Errorf("has disk %s: %w", d, err))
					continue
				}
				mu.Lock()
				o.HasDisk[d] = has
				mu.Unlock()
			}
			if in.VMCID == "" {
				return
			}
			has, err := cl.HasVM(ctx, in.VMCID)
			if err != nil {
				fail(fmt.Errorf("has vm %s: %w", in.VMCID, err))
				return
			}
			mu.Lock()
			o.HasVM[in.VMCID] = has
			mu.Unlock()
			if !has {
				return
			}
			if len(disks) > 0 {
				att, err := cl.GetDisks(ctx, in.VMCID)
				if err != nil && !errors.Is(err, cpi.ErrNotImplemented) {
					fail(fmt.Errorf("get disks of vm %s: %w", in.VMCID, err))
				} else if err == nil {
					mu.Lock()
					o.Attached[in.VMCID] = att
					mu.Unlock()
				}
			}
			if in.AgentID == "" || c.Agents == nil {
				return
			}
			pctx, cancel := context.WithTimeout(ctx, c.pingTimeout())
			err = c.Agents.Ping(pctx, in.AgentID)
			cancel()
			mu.Lock()
			o.Responsive[in.AgentID] = err == nil
			mu.Unlock()
			if err != nil || len(disks) == 0 {
				return
			}
			lctx, cancel := context.WithTimeout(ctx, c.pingTimeout())
			mounted, err := c.Agents.ListDisk(lctx, in.AgentID)
			cancel()
			if err == nil {
				mu.Lock()
				o.Mounted[in.AgentID] = mounted
				mu.Unlock()
			}
		}(in)
	}
	wg.Wait()
	if c.Lister != nil {
		vms, err := c.Lister.ListVMs(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("list cloud vms: %w", err))
		}
		o.CloudVMs = vms
		disks, err := c.Lister.ListDisks(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("list cloud disks: %w", err))
		}
		o.CloudDisks = disks
	}
	if err := ctx.Err(); err != nil {
		return o, err
	}
	return o, errors.Join(errs...)
}

func (c *Checker) pingTimeout() time.Duration {
	if c.PingTimeout > 0 {
		return c.PingTimeout
	}
	return 5 * time.Second
}

// Result is the outcome of one resolution.
type Result struct {
	Problem    Problem `json:"problem"`
	Resolution string  `json:"resolution"`
	Error      string  `json:"error,omitempty"`
}

// Resolve scans the deployment again and applies to each problem found the
// resolution named for its ID in resolutions, or its default when auto is
// set; problems with neither are left alone. A resolution a problem does not
// allow is an error before anything is done. Every applied resolution is
// an audit event in user's name.
func (c *Checker) Resolve(ctx context.Context, deployment string, resolutions map[string]string, auto bool, user string) ([]Result, error) {
	if c.Busy != nil && c.Busy(ctx, deployment) {
		return nil, fmt.Errorf("%w: %s: another task holds its lock (see director locks)", ErrBusy, deployment)
	}
	problems, err := c.Scan(ctx, deployment)
	if err != nil {
		return nil, err
	}
	byID := map[string]Problem{}
	for _, p := range problems {
		byID[p.ID] = p
	}
	for id, r := range resolutions {
		p, ok := byID[id]
		if !ok {
			continue // gone since the scan the user saw
		}
		if !p.Allows(r) {
			return nil, fmt.Errorf("%w: problem %s: resolution %q is not one of %v", ErrBadResolution, id, r, p.Resolutions)
		}
	}
	if user == "" {
		user = User
	}
	var out []Result
	for _, p := range problems {
		r, ok := resolutions[p.ID]
		if !ok && auto {
			r, ok = p.Default(), true
		}
		if !ok {
			continue
		}
		err := c.apply(ctx, p, r)
		res := Result{Problem: p, Resolution: r}
		ev := store.AuditEvent{User: user, Deployment: deployment, Instance: p.Instance, Action: "cloud-check-resolve",
			ObjectType: objectType(p), Object: object(p), Result: store.ResultOK,
			Context: map[string]string{"problem": p.Type, "resolution": r}}
		if r == Ignore {
			ev.Result = store.ResultSkipped
		}
		if err != nil {
			res.Error = err.Error()
			ev.Result, ev.Error = store.ResultFailed, err.Error()
			c.logger().Error("cloud-check resolution failed", "problem", p.ID, "resolution", r, "error", err)
		}
		c.event(ctx, ev)
		out = append(out, res)
	}
	return out, nil
}

// ErrBadResolution: a resolution the problem does not allow.
var ErrBadResolution = errors.New("bad resolution")

func objectType(p Problem) string {
	if p.DiskCID != "" {
		return "disk"
	}
	return "vm"
}

func object(p Problem) string {
	if p.DiskCID != "" {
		return p.DiskCID
	}
	return p.VMCID
}

// Report records a scan's outcome as one audit event.
func (c *Checker) Report(ctx context.Context, deployment, user string, problems []Problem) {
	if user == "" {
		user = User
	}
	types := map[string]int{}
	for _, p := range problems {
		types[p.Type]++
	}
	keys := make([]string, 0, len(types))
	for k := range types {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	ctxMap := map[string]string{"problems": fmt.Sprint(len(problems))}
	for _, k := range keys {
		ctxMap[k] = fmt.Sprint(types[k])
	}
	c.event(ctx, store.AuditEvent{User: user, Deployment: deployment, Action: "cloud-check", ObjectType: "deployment", Object: deployment,
		Result: store.ResultInfo, Context: ctxMap})
}

func (c *Checker) event(ctx context.Context, e store.AuditEvent) {
	if c.Events == nil {
		return
	}
	if err := c.Events.AddEvent(ctx, e); err != nil {
		c.logger().Error("record audit event", "action", e.Action, "error", err)
	}
}

func (c *Checker) apply(ctx context.Context, p Problem, r string) error {
	switch r {
	case Ignore:
		return nil
	case RecreateVM:
		if c.Recreator == nil {
			return errors.New("recreate is not available in this director build")
		}
		_, err := c.Recreator.Recreate(ctx, p.Deployment, p.InstanceID, "cloud-check: "+p.Type)
		return err
	case RebootVM:
		cl, err := c.CPIs(ctx, p.CPI)
		if err != nil {
			return err
		}
		if err := cl.RebootVM(ctx, p.VMCID); err != nil {
			return fmt.Errorf("reboot vm %s: %w", p.VMCID, err)
		}
		return c.waitAgent(ctx, p.AgentID)
	case DeleteVMReference:
		return c.Store.Update(func(tx *store.Tx) error {
			in, err := c.instance(tx, p)
			if err != nil {
				return err
			}
			if in.VMCID == p.VMCID {
				in.VMCID, in.AgentID = "", ""
				if err := tx.PutInstance(in); err != nil {
					return err
				}
			}
			if err := tx.DeleteVM(p.VMCID); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
			return nil
		})
	case OrphanDisk:
		// Recorded, never deleted: an unknown disk may hold data the
		// operator wants (delete-disk or clean-up removes it later).
		return c.Store.Update(func(tx *store.Tx) error {
			if _, err := tx.Disk(p.DiskCID); err == nil {
				return nil // known meanwhile
			}
			now := time.Now().UTC()
			return tx.PutDisk(store.Disk{CID: p.DiskCID, CPI: p.CPI, Deployment: p.Deployment, InstanceID: p.InstanceID,
				Orphaned: true, OrphanedAt: now, CreatedAt: now})
		})
	case DeleteDiskReference:
		return c.Store.Update(func(tx *store.Tx) error {
			in, err := c.instance(tx, p)
			if err == nil {
				in.DiskCIDs = remove(in.DiskCIDs, p.DiskCID)
				if err := tx.PutInstance(in); err != nil {
					return err
				}
			}
			if err := tx.DeleteDisk(p.DiskCID); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
			return nil
		})
	case ReattachDisk:
		cl, err := c.CPIs(ctx, p.CPI)
		if err != nil {
			return err
		}
		// Attaching a disk attached to the same VM is idempotent and
		// returns its hint again (mount_mismatch).
		hint, err := cl.AttachDisk(ctx, p.VMCID, p.DiskCID)
		if err != nil {
			return fmt.Errorf("attach disk %s to vm %s: %w", p.DiskCID, p.VMCID, err)
		}
		if c.Agents == nil {
			return nil
		}
		if err := c.Agents.MountDisk(ctx, p.AgentID, p.DiskCID, hint); err != nil {
			return fmt.Errorf("mount disk %s on vm %s: %w", p.DiskCID, p.VMCID, err)
		}
		return nil
	case DeleteVM:
		name := p.CPI
		if name == "" {
			name = c.anyCPI()
		}
		cl, err := c.CPIs(ctx, name)
		if err != nil {
			return err
		}
		if err := cl.DeleteVM(ctx, p.VMCID); err != nil && !errors.Is(err, cpi.ErrVMNotFound) {
			return fmt.Errorf("delete vm %s: %w", p.VMCID, err)
		}
		return nil
	}
	return fmt.Errorf("%w: %q", ErrBadResolution, r)
}

func (c *Checker) anyCPI() string {
	name := ""
	c.Store.View(func(tx *store.Tx) error {
		vms, err := tx.VMs("")
		if len(vms) > 0 {
			name = vms[0].CPI
		}
		return err
	})
	return name
}

func (c *Checker) instance(tx *store.Tx, p Problem) (store.Instance, error) {
	is, err := tx.Instances(p.Deployment)
	if err != nil {
		return store.Instance{}, err
	}
	for _, in := range is {
		if in.ID == p.InstanceID {
			return in, nil
		}
	}
	return store.Instance{}, fmt.Errorf("instance %s of %s: %w", p.Instance, p.Deployment, store.ErrNotFound)
}

// waitAgent waits until the agent answers a ping (after a reboot), up to
// two minutes.
func (c *Checker) waitAgent(ctx context.Context, agentID string) error {
	if c.Agents == nil || agentID == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		err := c.Agents.Ping(pctx, agentID)
		pcancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("agent %s did not come back after the reboot: %w", agentID, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func remove(list []string, s string) []string {
	var out []string
	for _, v := range list {
		if v != s {
			out = append(out, v)
		}
	}
	return out
}
