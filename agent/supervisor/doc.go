// Package supervisor runs the processes that jobs declare and keeps them
// running: it is the agent's replacement for monit and bpm.
//
// A job declares its processes in config/processes.yml (see docs/processes.md
// for the reference); LoadProcessFile and ParseProcessFile read it into a
// ProcessFile, reporting every problem as a *FieldError naming the file, the
// line and the field:
//
//	pf, err := supervisor.LoadProcessFile("/var/vcap/jobs/web/config/processes.yml")
//	if errors.Is(err, fs.ErrNotExist) { /* the job runs no processes */ }
//
// BOSH jobs declare their processes in config/bpm.yml or a monit file
// instead; ParseBPM and ParseMonit read those into Processes, and LoadJob
// picks the declaration a rendered job has (processes.yml, then bpm.yml,
// then monit). A monit process (Process.Monit) is run as monit runs it:
// start program, pidfile watched, stop program.
//
// A Supervisor is built once by the agent and given each job's processes:
//
//	sup, err := supervisor.New(logger, supervisor.Config{
//		LogDir:  "/var/vcap/sys/log",
//		RunDir:  "/var/vcap/sys/run", // pid files: stop what a killed agent left
//		OnEvent: func(e supervisor.Event) { /* turn into an alert */ },
//	})
//	err = sup.Start(ctx, "web", pf.Processes)   // launch; returns at once
//	err = sup.Wait(ctx, "web", supervisor.StateRunning)
//	st, ok := sup.JobStatus("web")            // or sup.Status() for all jobs
//	err = sup.Stop(ctx, "web")                // or StopAll, Remove
//	err = sup.Close(ctx)                      // stop everything, end goroutines
//
// Each process runs in its own process group, with a minimal environment
// (Config.BaseEnv, PATH) under its own env, its open files limit applied,
// its working directory created if missing, and its stdout and stderr
// written to LogDir/<job>/<process>.stdout.log and .stderr.log, rotated by
// size. A process is starting until its readiness check (HTTP, TCP or a
// command) passes, then running; with no check it is running once started.
// A process that exits is restarted after a backoff that doubles from
// Config.MinBackoff to Config.MaxBackoff and is reset once a run lasted
// Config.StableAfter; meanwhile it is failing. Stopping sends the process's
// shutdown signal to its group and SIGKILL after its shutdown timeout.
//
// A job's state aggregates its processes' (Aggregate): any failing →
// failing, else any starting → starting, else all running → running, else
// stopped. Every process state change is reported to Config.OnEvent.
//
// The exported API (ProcessFile, Process and its parts, FieldError,
// LoadProcessFile, ParseProcessFile, ParseSignal, Config, New, Supervisor
// and its methods, State, Event, JobStatus, ProcessStatus, Aggregate,
// ErrUnknownJob, ErrClosed) is stable: it only grows.
package supervisor
