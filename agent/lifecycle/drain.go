package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DrainKind is the first argument of a drain script.
type DrainKind string

// Drain kinds: the job is being updated (changed or not) or shut down.
// JobCheckStatus is used by the agent for the repeated calls of a dynamic
// drain; callers do not pass it.
const (
	JobChanged     DrainKind = "job_changed"
	JobUnchanged   DrainKind = "job_unchanged"
	JobShutdown    DrainKind = "job_shutdown"
	JobCheckStatus DrainKind = "job_check_status"
)

// HashChange is the second argument of a drain script: whether the job's
// rendered spec changed.
type HashChange string

// Hash change values.
const (
	HashChanged   HashChange = "hash_changed"
	HashUnchanged HashChange = "hash_unchanged"
)

// DrainParams are the arguments and environment of a drain.
type DrainParams struct {
	Kind DrainKind
	Hash HashChange
	// UpdatedPackages are appended to the first call's arguments.
	UpdatedPackages []string
	// CurrentState and NextState are JSON documents passed as
	// BOSH_JOB_STATE and BOSH_JOB_NEXT_STATE (default "{}"), such as
	// {"persistent_disk": 10240}.
	CurrentState json.RawMessage
	NextState    json.RawMessage
}

// DrainResult is the outcome of one job's drain.
type DrainResult struct {
	Job     string
	Skipped bool // no bin/drain
	// Calls counts the script's runs (more than one for a dynamic drain).
	Calls int
	// Waited is the time spent waiting as the script asked (static wait and
	// dynamic intervals).
	Waited time.Duration
	// Last is the last integer the script printed.
	Last int
	Err  error
}

// Drain runs bin/drain for each of jobs (nil: every installed job), in
// parallel, honouring each answer: n ≥ 0, wait n seconds, then done; n < 0,
// wait |n| seconds and call again with `job_check_status hash_unchanged`
// until it answers n ≥ 0 (then wait n seconds). A non-zero exit, output
// that is not one integer or a timeout fails that job's drain; the error
// joins every job's *ScriptError. Config.Timeout bounds each call, ctx the
// whole drain.
func (r *Runner) Drain(ctx context.Context, p DrainParams, jobs []string) ([]DrainResult, error) {
	switch p.Kind {
	case JobChanged, JobUnchanged, JobShutdown:
	default:
		return nil, fmt.Errorf("drain: kind %q must be %s, %s or %s", p.Kind, JobChanged, JobUnchanged, JobShutdown)
	}
	switch p.Hash {
	case HashChanged, HashUnchanged:
	default:
		return nil, fmt.Errorf("drain: hash change %q must be %s or %s", p.Hash, HashChanged, HashUnchanged)
	}
	env := map[string]string{"BOSH_JOB_STATE": "{}", "BOSH_JOB_NEXT_STATE": "{}"}
	for name, doc := range map[string]json.RawMessage{"BOSH_JOB_STATE": p.CurrentState, "BOSH_JOB_NEXT_STATE": p.NextState} {
		if len(doc) == 0 {
			continue
		}
		if !json.Valid(doc) {
			return nil, fmt.Errorf("drain: %s is not valid JSON", name)
		}
		env[name] = string(doc)
	}
	jobs, err := r.jobList(jobs)
	if err != nil {
		return nil, fmt.Errorf("drain: %w", err)
	}
	results := make([]DrainResult, len(jobs))
	var wg sync.WaitGroup
	for i, job := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = r.drainOne(ctx, job, p, env)
		}()
	}
	wg.Wait()
	var errs []error
	for _, res := range results {
		if res.Err != nil {
			errs = append(errs, res.Err)
		}
	}
	return results, errors.Join(errs...)
}

func (r *Runner) drainOne(ctx context.Context, job string, p DrainParams, env map[string]string) DrainResult {
	res := DrainResult{Job: job}
	args := append([]string{string(p.Kind), string(p.Hash)}, p.UpdatedPackages...)
	for {
		one := r.runScript(ctx, job, Drain, args, env)
		if one.Skipped {
			res.Skipped = true
			return res
		}
		res.Calls++
		if one.Err != nil {
			res.Err = one.Err
			return res
		}
		n, err := parseDrainAnswer(one.stdout)
		if err != nil {
			res.Err = &ScriptError{Job: job, Script: Drain, ExitCode: 0, Tail: one.Tail, Err: err}
			return res
		}
		res.Last = n
		wait := time.Duration(n) * time.Second
		if n < 0 {
			wait = -wait
		}
		r.logger.Info("drain answered", "job", job, "value", n, "call", res.Calls)
		if err := sleep(ctx, wait); err != nil {
			res.Err = &ScriptError{Job: job, Script: Drain, ExitCode: 0, Err: fmt.Errorf("interrupted while waiting %s: %w", wait, err)}
			return res
		}
		res.Waited += wait
		if n >= 0 {
			return res
		}
		args = []string{string(JobCheckStatus), string(HashUnchanged)}
	}
}

// scriptRun is a Result plus the script's stdout.
type scriptRun struct {
	Result
	stdout []byte
}

func (r *Runner) runScript(ctx context.Context, job string, script Script, args []string, env map[string]string) scriptRun {
	res, stdout := r.runOne(ctx, job, script, args, env)
	return scriptRun{Result: res, stdout: stdout}
}

// parseDrainAnswer reads the integer a drain script prints.
func parseDrainAnswer(stdout []byte) (int, error) {
	s := strings.TrimSpace(string(stdout))
	n, err := strconv.Atoi(s)
	if err != nil {
		if len(s) > 80 {
			s = s[:80] + "..."
		}
		return 0, fmt.Errorf("printed %q, want one integer (seconds to wait, negative to be asked again)", s)
	}
	return n, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
