package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"sort"
	"sync"
	"syscall"
	"time"
)

// State is the state of a process or, aggregated, of a job.
type State string

// The states a process or job reports.
const (
	// StateStarting: started, readiness check not passed yet.
	StateStarting State = "starting"
	// StateRunning: started and ready (or started, when there is no check).
	StateRunning State = "running"
	// StateFailing: crashed and waiting to be restarted, could not be
	// started, not ready within the start grace, or its readiness check
	// failed repeatedly after it was ready.
	StateFailing State = "failing"
	// StateStopped: not running because it was stopped (or never started).
	StateStopped State = "stopped"
)

// Errors returned by Supervisor methods; match them with errors.Is.
var (
	// ErrUnknownJob: the job was never given to the supervisor, or removed.
	ErrUnknownJob = errors.New("unknown job")
	// ErrClosed: the supervisor was closed.
	ErrClosed = errors.New("supervisor closed")
)

// Defaults for Config fields left zero.
const (
	DefaultMinBackoff        = time.Second
	DefaultMaxBackoff        = 30 * time.Second
	DefaultStableAfter       = time.Minute
	DefaultStartGrace        = time.Minute
	DefaultReadinessFailures = 3
	DefaultLogMaxBytes       = 10 << 20
	DefaultLogKeep           = 5
	DefaultPath              = "/var/vcap/bosh/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// Config configures a Supervisor. Only LogDir is required.
type Config struct {
	// LogDir is the log root, <base>/sys/log: a process's output goes to
	// LogDir/<job>/<process>.stdout.log and .stderr.log.
	LogDir string
	// RunDir, when set, holds pid files (RunDir/<job>/<process>.pid) so
	// that processes left running by a previous supervisor (the agent was
	// killed) are stopped before they are started again. Usually
	// <base>/sys/run.
	RunDir string
	// BaseEnv is the environment every process starts from (the agent's own
	// environment is never inherited). PATH defaults to DefaultPath.
	// A process's env is merged over it.
	BaseEnv map[string]string
	// MinBackoff and MaxBackoff bound the delay before a crashed process is
	// restarted: MinBackoff after the first crash, doubling up to MaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// StableAfter: a process that ran this long before exiting restarts
	// after MinBackoff again (the backoff is reset).
	StableAfter time.Duration
	// StartGrace: a process whose readiness check has not passed this long
	// after it started is reported failing (it keeps running and being
	// checked; a later pass makes it running).
	StartGrace time.Duration
	// ReadinessFailures: consecutive failed checks that turn a running
	// process failing.
	ReadinessFailures int
	// LogMaxBytes is the size at which a log file is rotated; LogKeep is how
	// many rotated files (.1 newest … .N oldest) are kept.
	LogMaxBytes int64
	LogKeep     int
	// RunAs, when set, is the user processes run as: an agent running as
	// root gives its jobs' processes BOSH's unprivileged vcap user. The
	// job's own directories (DataDir/<job>, LogDir/<job>, RunDir/<job>,
	// StoreDir/<job>) and the process's dirs are made and given to it
	// first. Lifecycle scripts, readiness checks and monit-style start
	// commands stay the agent's, as in BOSH.
	RunAs *syscall.Credential
	// DataDir and StoreDir are <base>/data and <base>/store (for RunAs).
	DataDir, StoreDir string
	// OnEvent, when set, is called on every process state change, in order
	// for each process, from the goroutine supervising it, never with a lock
	// held. It must return promptly; it may call Status and JobStatus.
	OnEvent func(Event)
}

// Event reports a process state change.
type Event struct {
	Time     time.Time
	Job      string
	Process  string
	From, To State
	// JobState is the job's aggregated state after the change.
	JobState State
	// Reason says why, for failing and stopped states ("exited with status
	// 1", "readiness: dial tcp ...: connection refused").
	Reason   string
	PID      int
	Restarts int
}

// ProcessStatus is a snapshot of one process.
type ProcessStatus struct {
	Name     string
	State    State
	PID      int // 0 when not running
	Restarts int // restarts since the job was started
	// StartedAt and Uptime are zero when the process is not running.
	StartedAt time.Time
	Uptime    time.Duration
	// CPU (user+system time consumed) and MemoryBytes (resident set) are
	// summed from /proc over the process's group (it and the children it
	// forked); zero when unavailable.
	CPU         time.Duration
	MemoryBytes uint64
	// LastError is the latest reason the process failed, if any.
	LastError string
}

// JobStatus is a snapshot of one job and its processes (in file order).
type JobStatus struct {
	Name      string
	State     State
	Processes []ProcessStatus
}

// Supervisor starts, watches, restarts and stops the processes of jobs.
// All methods are safe for concurrent use.
type Supervisor struct {
	logger *slog.Logger
	cfg    Config

	ops chan struct{} // serialises Start, Stop, Remove and Close

	mu      sync.Mutex
	jobs    map[string]*job
	closed  bool
	changed chan struct{} // closed and replaced on every state change
	wg      sync.WaitGroup
}

type job struct {
	name    string
	defs    []Process
	procs   []*proc
	started bool // for jobs without processes
}

// New returns a supervisor with no jobs.
func New(logger *slog.Logger, cfg Config) (*Supervisor, error) {
	if cfg.LogDir == "" {
		return nil, errors.New("supervisor config: log dir is required")
	}
	if !filepath.IsAbs(cfg.LogDir) {
		return nil, fmt.Errorf("supervisor config: log dir %q must be absolute", cfg.LogDir)
	}
	if cfg.RunDir != "" && !filepath.IsAbs(cfg.RunDir) {
		return nil, fmt.Errorf("supervisor config: run dir %q must be absolute", cfg.RunDir)
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = cfg.MinBackoff
	}
	if cfg.StableAfter <= 0 {
		cfg.StableAfter = DefaultStableAfter
	}
	if cfg.StartGrace <= 0 {
		cfg.StartGrace = DefaultStartGrace
	}
	if cfg.ReadinessFailures <= 0 {
		cfg.ReadinessFailures = DefaultReadinessFailures
	}
	if cfg.LogMaxBytes <= 0 {
		cfg.LogMaxBytes = DefaultLogMaxBytes
	}
	if cfg.LogKeep <= 0 {
		cfg.LogKeep = DefaultLogKeep
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Supervisor{
		logger:  logger,
		cfg:     cfg,
		ops:     make(chan struct{}, 1),
		jobs:    map[string]*job{},
		changed: make(chan struct{}),
	}, nil
}

func (s *Supervisor) lockOps(ctx context.Context) error {
	select {
	case s.ops <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Supervisor) unlockOps() { <-s.ops }

// Start supervises the job's processes and starts them; it returns once they
// are launched, without waiting for readiness (see Wait). If the job is
// already supervised with the same processes, processes that are not
// stopped are left alone and stopped ones are started; with different
// processes the old ones are stopped first (gracefully) and replaced.
func (s *Supervisor) Start(ctx context.Context, jobName string, procs []Process) error {
	if !nameRE.MatchString(jobName) {
		return fmt.Errorf("start job %q: invalid job name", jobName)
	}
	defs := make([]Process, len(procs))
	seen := map[string]bool{}
	for i, p := range procs {
		if err := p.validate(); err != nil {
			return fmt.Errorf("start job %s: %w", jobName, err)
		}
		if seen[p.Name] {
			return fmt.Errorf("start job %s: process name %q used twice", jobName, p.Name)
		}
		seen[p.Name] = true
		defs[i] = p.withDefaults()
	}
	if err := s.lockOps(ctx); err != nil {
		return fmt.Errorf("start job %s: %w", jobName, err)
	}
	defer s.unlockOps()

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("start job %s: %w", jobName, ErrClosed)
	}
	old := s.jobs[jobName]
	s.mu.Unlock()

	if old != nil && reflect.DeepEqual(old.defs, defs) {
		s.mu.Lock()
		old.started = true
		var restart []int
		for i, p := range old.procs {
			if p.stopRequested() {
				restart = append(restart, i)
			}
		}
		s.mu.Unlock()
		for _, i := range restart {
			p := old.procs[i]
			select {
			case <-p.done:
			case <-ctx.Done():
				return fmt.Errorf("start job %s: wait for process %s to stop: %w", jobName, p.def.Name, ctx.Err())
			}
			np := s.newProc(jobName, p.def)
			s.mu.Lock()
			old.procs[i] = np
			s.mu.Unlock()
		}
		for _, i := range restart {
			s.launch(old.procs[i])
		}
		s.notify()
		return nil
	}
	if old != nil {
		if err := s.stopJob(ctx, old); err != nil {
			return fmt.Errorf("start job %s: stop previous processes: %w", jobName, err)
		}
	}
	j := &job{name: jobName, defs: defs, started: true}
	for _, d := range defs {
		j.procs = append(j.procs, s.newProc(jobName, d))
	}
	s.mu.Lock()
	s.jobs[jobName] = j
	s.mu.Unlock()
	for _, p := range j.procs {
		s.launch(p)
	}
	s.notify()
	s.logger.Info("job started", "job", jobName, "processes", len(defs))
	return nil
}

// Stop stops the job's processes gracefully (each its shutdown signal, then
// SIGKILL after its shutdown timeout), all in parallel, and waits for them.
// The job stays known, in state stopped. If ctx ends first, Stop returns
// its error while the processes go on being stopped.
func (s *Supervisor) Stop(ctx context.Context, jobName string) error {
	if err := s.lockOps(ctx); err != nil {
		return fmt.Errorf("stop job %s: %w", jobName, err)
	}
	defer s.unlockOps()
	s.mu.Lock()
	j := s.jobs[jobName]
	s.mu.Unlock()
	if j == nil {
		return fmt.Errorf("stop job %s: %w", jobName, ErrUnknownJob)
	}
	if err := s.stopJob(ctx, j); err != nil {
		return fmt.Errorf("stop job %s: %w", jobName, err)
	}
	return nil
}

// StopAll stops every job, in parallel, like Stop.
func (s *Supervisor) StopAll(ctx context.Context) error {
	if err := s.lockOps(ctx); err != nil {
		return fmt.Errorf("stop all jobs: %w", err)
	}
	defer s.unlockOps()
	if err := s.stopAll(ctx); err != nil {
		return fmt.Errorf("stop all jobs: %w", err)
	}
	return nil
}

// Remove stops the job like Stop and forgets it.
func (s *Supervisor) Remove(ctx context.Context, jobName string) error {
	if err := s.lockOps(ctx); err != nil {
		return fmt.Errorf("remove job %s: %w", jobName, err)
	}
	defer s.unlockOps()
	s.mu.Lock()
	j := s.jobs[jobName]
	s.mu.Unlock()
	if j == nil {
		return fmt.Errorf("remove job %s: %w", jobName, ErrUnknownJob)
	}
	if err := s.stopJob(ctx, j); err != nil {
		return fmt.Errorf("remove job %s: %w", jobName, err)
	}
	s.mu.Lock()
	if s.jobs[jobName] == j {
		delete(s.jobs, jobName)
	}
	s.mu.Unlock()
	s.notify()
	return nil
}

// Close stops every job and waits until every goroutine the supervisor
// started has returned. Later calls to Start fail with ErrClosed. If ctx
// ends first, Close returns its error; processes are still being stopped.
func (s *Supervisor) Close(ctx context.Context) error {
	if err := s.lockOps(ctx); err != nil {
		return fmt.Errorf("close supervisor: %w", err)
	}
	defer s.unlockOps()
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	if err := s.stopAll(ctx); err != nil {
		return fmt.Errorf("close supervisor: %w", err)
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("close supervisor: %w", ctx.Err())
	}
}

func (s *Supervisor) stopAll(ctx context.Context) error {
	s.mu.Lock()
	jobs := make([]*job, 0, len(s.jobs))
	for _, j := range s.jobs {
		jobs = append(jobs, j)
	}
	// Every process is asked first, so that one whose dependents (monit's
	// depends on) are stopping too sees it and waits for them.
	for _, j := range jobs {
		for _, p := range j.procs {
			p.requestStop()
		}
	}
	s.mu.Unlock()
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.stopJob(ctx, j); err != nil {
				errs[i] = fmt.Errorf("job %s: %w", j.name, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// stopJob asks every process of j to stop and waits for them.
func (s *Supervisor) stopJob(ctx context.Context, j *job) error {
	s.mu.Lock()
	j.started = false
	procs := append([]*proc(nil), j.procs...)
	s.mu.Unlock()
	for _, p := range procs {
		p.requestStop()
	}
	s.notify()
	for _, p := range procs {
		select {
		case <-p.done:
		case <-ctx.Done():
			return fmt.Errorf("wait for process %s to stop: %w", p.def.Name, ctx.Err())
		}
	}
	return nil
}

// Status returns every job's status, sorted by job name.
func (s *Supervisor) Status() []JobStatus {
	s.mu.Lock()
	names := make([]string, 0, len(s.jobs))
	for n := range s.jobs {
		names = append(names, n)
	}
	s.mu.Unlock()
	sort.Strings(names)
	out := make([]JobStatus, 0, len(names))
	for _, n := range names {
		if st, ok := s.JobStatus(n); ok {
			out = append(out, st)
		}
	}
	return out
}

// JobStatus returns one job's status; false if the job is unknown.
func (s *Supervisor) JobStatus(jobName string) (JobStatus, bool) {
	s.mu.Lock()
	j := s.jobs[jobName]
	if j == nil {
		s.mu.Unlock()
		return JobStatus{}, false
	}
	st := JobStatus{Name: j.name, State: s.jobStateLocked(j)}
	now := time.Now()
	for _, p := range j.procs {
		ps := ProcessStatus{
			Name:      p.def.Name,
			State:     p.state,
			PID:       p.pid,
			Restarts:  p.restarts,
			LastError: p.lastErr,
		}
		if p.pid != 0 {
			ps.StartedAt = p.startedAt
			ps.Uptime = now.Sub(p.startedAt)
		}
		st.Processes = append(st.Processes, ps)
	}
	s.mu.Unlock()
	var pgids []int
	for _, p := range st.Processes {
		if p.PID != 0 {
			pgids = append(pgids, p.PID) // each process leads its own group
		}
	}
	use := groupUsage(pgids)
	for i, p := range st.Processes {
		if u, ok := use[p.PID]; ok && p.PID != 0 {
			st.Processes[i].CPU, st.Processes[i].MemoryBytes = u.cpu, u.rss
		}
	}
	return st, true
}

// Wait blocks until the job's aggregated state is want, and returns nil;
// or until ctx ends, and returns an error naming the state the job is in.
func (s *Supervisor) Wait(ctx context.Context, jobName string, want State) error {
	for {
		s.mu.Lock()
		j := s.jobs[jobName]
		var st State
		if j != nil {
			st = s.jobStateLocked(j)
		}
		ch := s.changed
		s.mu.Unlock()
		if j == nil {
			return fmt.Errorf("wait for job %s to be %s: %w", jobName, want, ErrUnknownJob)
		}
		if st == want {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wait for job %s to be %s (it is %s): %w", jobName, want, st, ctx.Err())
		}
	}
}

// Aggregate returns a job's state from its processes' states: any failing →
// failing; else any starting → starting; else all running → running; else
// stopped (all stopped, or some already stopped while a stop is in
// progress). An empty list aggregates to running.
func Aggregate(states []State) State {
	running := 0
	for _, st := range states {
		switch st {
		case StateFailing:
			return StateFailing
		case StateRunning:
			running++
		}
	}
	for _, st := range states {
		if st == StateStarting {
			return StateStarting
		}
	}
	if running == len(states) {
		return StateRunning
	}
	return StateStopped
}

func (s *Supervisor) jobStateLocked(j *job) State {
	if len(j.procs) == 0 {
		if j.started {
			return StateRunning
		}
		return StateStopped
	}
	states := make([]State, len(j.procs))
	for i, p := range j.procs {
		states[i] = p.state
	}
	return Aggregate(states)
}

// notify wakes Wait callers.
func (s *Supervisor) notify() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// setState records a process state change and reports it.
func (s *Supervisor) setState(p *proc, to State, reason string) {
	s.mu.Lock()
	from := p.state
	if from == to && (reason == "" || reason == p.lastErr) {
		s.mu.Unlock()
		return
	}
	p.state = to
	if to == StateFailing && reason != "" {
		p.lastErr = reason
	}
	ev := Event{
		Time:     time.Now(),
		Job:      p.job,
		Process:  p.def.Name,
		From:     from,
		To:       to,
		Reason:   reason,
		PID:      p.pid,
		Restarts: p.restarts,
	}
	if j := s.jobs[p.job]; j != nil && j.hasProc(p) {
		ev.JobState = s.jobStateLocked(j)
	}
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()

	s.logger.Info("process state", "job", ev.Job, "process", ev.Process, "from", from, "to", to, "reason", reason, "pid", ev.PID)
	if s.cfg.OnEvent != nil && from != to {
		s.cfg.OnEvent(ev)
	}
}

func (j *job) hasProc(p *proc) bool {
	for _, q := range j.procs {
		if q == p {
			return true
		}
	}
	return false
}
