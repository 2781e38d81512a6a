package action

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/compleat/compleat/agent/applyspec"
	"github.com/compleat/compleat/agent/lifecycle"
	"github.com/compleat/compleat/agent/protocol"
)

// drain runs every job's bin/drain with BOSH's arguments and waits as the
// scripts ask (static or dynamic; see package lifecycle). For an update the
// first argument is per job: job_changed when the job's content differs in
// the next spec, job_unchanged when it does not, job_shutdown when the job
// leaves the VM; the second is hash_changed when anything the VM runs
// changes. Updated packages follow. BOSH_JOB_STATE and BOSH_JOB_NEXT_STATE
// carry {"persistent_disk": <MB>} of the current and next specs.
func (a *Actions) drain(ctx context.Context, req protocol.DrainRequest) (protocol.DrainResult, error) {
	switch req.Type {
	case protocol.DrainUpdate, protocol.DrainShutdown:
	case protocol.DrainStatus:
		return protocol.DrainResult{}, &protocol.Exception{Code: protocol.CodeBadArguments, Message: "drain status is driven by the agent itself: ask for update or shutdown"}
	default:
		return protocol.DrainResult{}, &protocol.Exception{Code: protocol.CodeBadArguments, Message: fmt.Sprintf("drain type %q: want update or shutdown", req.Type)}
	}
	cur, err := a.d.Installer.Current()
	if err != nil {
		return protocol.DrainResult{}, err
	}
	if cur == nil || len(cur.Jobs) == 0 {
		return protocol.DrainResult{}, nil
	}
	if req.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.Timeout))
		defer cancel()
	}
	groups, base := drainPlan(cur, req)
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		waited time.Duration
		errs   []error
	)
	for kind, jobs := range groups {
		p := base
		p.Kind = kind
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := a.d.Scripts.Drain(ctx, p, jobs)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			for _, r := range res {
				waited = max(waited, r.Waited)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return protocol.DrainResult{Waited: protocol.Duration(waited)}, fmt.Errorf("drain: %w", err)
	}
	return protocol.DrainResult{Waited: protocol.Duration(waited)}, nil
}

// drainPlan groups the current jobs by drain kind and fills the arguments
// common to all.
func drainPlan(cur *applyspec.Spec, req protocol.DrainRequest) (map[lifecycle.DrainKind][]string, lifecycle.DrainParams) {
	groups := map[lifecycle.DrainKind][]string{}
	p := lifecycle.DrainParams{Hash: lifecycle.HashUnchanged, CurrentState: diskState(cur)}
	next := req.NextSpec
	if req.Type == protocol.DrainShutdown || next == nil {
		kind := lifecycle.JobShutdown
		if req.Type == protocol.DrainUpdate {
			kind = lifecycle.JobUnchanged
		}
		for _, j := range cur.Jobs {
			groups[kind] = append(groups[kind], j.Name)
		}
		p.NextState = p.CurrentState
		return groups, p
	}
	p.NextState = diskState(next)
	if next.ConfigHash() != cur.ConfigHash() {
		p.Hash = lifecycle.HashChanged
	}
	for _, j := range cur.Jobs {
		nj, ok := next.Job(j.Name)
		switch {
		case !ok:
			groups[lifecycle.JobShutdown] = append(groups[lifecycle.JobShutdown], j.Name)
		case nj.Blob.SHA256 != j.Blob.SHA256:
			groups[lifecycle.JobChanged] = append(groups[lifecycle.JobChanged], j.Name)
		default:
			groups[lifecycle.JobUnchanged] = append(groups[lifecycle.JobUnchanged], j.Name)
		}
	}
	curVersions := map[string]string{}
	for _, pk := range cur.Packages {
		curVersions[pk.Name] = pk.Version
	}
	for _, pk := range next.Packages {
		if curVersions[pk.Name] != pk.Version {
			p.UpdatedPackages = append(p.UpdatedPackages, pk.Name)
		}
	}
	return groups, p
}

func diskState(s *applyspec.Spec) json.RawMessage {
	var mb int64
	if s != nil && s.PersistentDisk != nil {
		mb = s.PersistentDisk.SizeMB
	}
	b, _ := json.Marshal(map[string]int64{"persistent_disk": mb})
	return b
}
