package deploy

import (
	"bytes"
	"context"
	"fmt"
	"sync"

	"github.com/compleat/compleat/director/blobstore"
	"github.com/compleat/compleat/director/plan"
	"github.com/compleat/compleat/director/update"
)

// renderedJobs are the rendered jobs of the instances a run applies, in
// the blobstore (content-addressed: identical renderings share one blob).
// Each Put writes a file, so a hundred instances' jobs take tens of
// milliseconds; rather than hold the whole rollout up, the jobs of its
// first batch (the canaries) are stored before it starts, and the rest
// while the canaries are watched: from their first start, or as soon as an
// instance asks for jobs not stored yet. An instance waits for its own
// before it is taken down, so a Put that fails fails that instance's
// update with nothing of it touched.
type renderedJobs struct {
	d      *Deployer
	ctx    context.Context
	cancel context.CancelFunc
	ready  map[string]chan struct{} // closed once the instance's jobs are stored or failed
	rest   []*plan.Instance         // stored behind the rollout, from release
	once   sync.Once
	wg     sync.WaitGroup

	mu    sync.Mutex
	blobs map[string]map[string]blobstore.Blob // instance id -> job -> blob
	errs  map[string]error
}

// storeParallel bounds the rendered jobs stored at once before the
// rollout, storeBehind those stored while it runs (beside its own writes).
const (
	storeParallel = 8
	storeBehind   = 2
)

// storeRendered stores the rendered jobs of the first batch of ro among
// the planned instances that need them (need reports which; nil: all), and
// readies the rest to be stored behind the rollout. Call stop when the run
// is over.
func (d *Deployer) storeRendered(ctx context.Context, p *plan.Plan, ro update.Rollout, need func(id string) bool) (*renderedJobs, error) {
	ctx, cancel := context.WithCancel(ctx)
	rj := &renderedJobs{d: d, ctx: ctx, cancel: cancel, ready: map[string]chan struct{}{}, blobs: map[string]map[string]blobstore.Blob{}, errs: map[string]error{}}
	var todo []*plan.Instance
	first := -1 // how many of todo the rollout's first batch takes
	add := func(id string) {
		if _, queued := rj.ready[id]; queued || (need != nil && !need(id)) {
			return
		}
		if in, ok := p.Instance(id); ok {
			rj.ready[id] = make(chan struct{})
			todo = append(todo, in)
		}
	}
	for _, g := range ro.Groups {
		for _, b := range update.Batches(g) {
			for _, in := range b.Instances {
				add(in.ID)
			}
			if first < 0 {
				first = len(todo)
			}
		}
	}
	for gi := range p.Groups {
		for ii := range p.Groups[gi].Instances {
			add(p.Groups[gi].Instances[ii].ID)
		}
	}
	first = max(first, 0)
	rj.store(todo[:first], storeParallel)
	for _, in := range todo[:first] {
		if err := rj.errs[in.ID]; err != nil {
			cancel()
			return nil, err
		}
	}
	rj.rest = todo[first:]
	return rj, nil
}

// store stores the jobs of insts, n at once.
func (rj *renderedJobs) store(insts []*plan.Instance, n int) {
	queue := make(chan *plan.Instance, len(insts))
	for _, in := range insts {
		queue <- in
	}
	close(queue)
	var wg sync.WaitGroup
	for range min(n, len(insts)) {
		wg.Go(func() {
			for in := range queue {
				blobs, err := rj.d.storeJobs(rj.ctx, in)
				rj.mu.Lock()
				rj.blobs[in.ID], rj.errs[in.ID] = blobs, err
				rj.mu.Unlock()
				close(rj.ready[in.ID])
			}
		})
	}
	wg.Wait()
}

// storeJobs stores one instance's rendered jobs.
func (d *Deployer) storeJobs(ctx context.Context, in *plan.Instance) (map[string]blobstore.Blob, error) {
	m := map[string]blobstore.Blob{}
	for _, j := range in.Jobs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		raw, err := j.Rendered.Archive()
		if err != nil {
			return nil, fmt.Errorf("archive job %s of %s: %w", j.Name, in.Name(), err)
		}
		b, err := d.c.Blobs.Put(ctx, bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("store rendered job %s of %s: %w", j.Name, in.Name(), err)
		}
		m[j.Name] = b
	}
	return m, nil
}

// release starts storing the rest (once).
func (rj *renderedJobs) release() {
	if rj == nil {
		return
	}
	rj.once.Do(func() { rj.wg.Go(func() { rj.store(rj.rest, storeBehind) }) })
}

// of waits for an instance's stored jobs, starting the rest when they are
// not under way yet; an instance that needs none (or a run without
// renderedJobs) has none.
func (rj *renderedJobs) of(ctx context.Context, id string) (map[string]blobstore.Blob, error) {
	if rj == nil {
		return nil, nil
	}
	ch, ok := rj.ready[id]
	if !ok {
		return nil, nil
	}
	select {
	case <-ch:
	default:
		rj.release()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	rj.mu.Lock()
	defer rj.mu.Unlock()
	return rj.blobs[id], rj.errs[id]
}

// stop ends the storing (what is not stored yet is not needed any more)
// and waits for it, so that nothing is written after the run.
func (rj *renderedJobs) stop() {
	if rj == nil {
		return
	}
	rj.cancel()
	rj.wg.Wait()
}
