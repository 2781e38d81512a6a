package apiv1

import (
	"encoding/json"
	"errors"
)

// ErrNoRollout is the error of a pause (POST
// /v1/deployments/{name}/pause) when the deployment has no rollout under
// way; the API answers 409 for it.
var ErrNoRollout = errors.New("no rollout under way")

// Info is GET /v1/info.
type Info struct {
	Name    string   `json:"name"`
	Version string   `json:"version"`
	User    string   `json:"user"`
	Scopes  []string `json:"scopes"`
	CPIs    []string `json:"cpis"`
	Deploy  bool     `json:"deploy"` // whether this build has the deploy pipeline
	// Director and Leader, with several directors (HA): the instance that
	// answered and the one leading ("" while unknown).
	Director string `json:"director,omitempty"`
	Leader   string `json:"leader,omitempty"`
}

// RotateRequest is POST /v1/agents/rotate-certs.
type RotateRequest struct {
	Deployment string `json:"deployment,omitempty"`
}

// ErrandRequest is a run of an errand.
type ErrandRequest struct {
	Deployment string `json:"deployment"`
	Name       string `json:"name"`
	// KeepAlive keeps an errand group's VMs after the run.
	KeepAlive bool `json:"keep_alive,omitempty"`
	// WhenChanged skips the run when the deployment's manifest is the one
	// of the errand's last successful run.
	WhenChanged bool `json:"when_changed,omitempty"`
	// Instances select where it runs: GROUP or GROUP/ID (id or index).
	Instances []string `json:"instances,omitempty"`
	// DownloadLogs fetches each instance's logs after the run into the
	// blobstore (events of stage ErrandLogsStage), before any VM goes.
	DownloadLogs bool `json:"download_logs,omitempty"`
}

// ErrandInfo is one errand in GET /v1/deployments/{name}/errands.
type ErrandInfo struct {
	Name string `json:"name"`
	// Group is the lifecycle: errand group; empty for a colocated errand.
	Group     string   `json:"group,omitempty"`
	Colocated bool     `json:"colocated"`
	Runs      []string `json:"runs"` // "group/job" whose bin/run runs
}

// ErrandTaskType is the type of run-errand tasks.
const ErrandTaskType = "run-errand"

// ErrandTaskDescription is the description of a run of errand name.
func ErrandTaskDescription(name string) string { return "run errand " + name }

// RegenerateRequest is POST /v1/variables/regenerate.
type RegenerateRequest struct {
	Deployment string `json:"deployment"`
	Name       string `json:"name"`
}

// DeployRequest is POST /v1/deployments: the manifest after the client's
// ops files (-o), its ((name)) references kept, and the values the
// client's -v/-l give for them in Vars, which the director seals with its
// variables (an older client interpolates -v/-l itself and sends no Vars).
type DeployRequest struct {
	Deployment string         `json:"deployment"`
	Manifest   string         `json:"manifest"`
	Vars       map[string]any `json:"vars,omitempty"`
	DryRun     bool           `json:"dry_run,omitempty"`
	Recreate   bool           `json:"recreate,omitempty"`
	SkipDrain  bool           `json:"skip_drain,omitempty"`
	// Fix recreates the instances whose agent does not answer instead of
	// failing on them (BOSH's deploy --fix).
	Fix bool `json:"fix,omitempty"`
	// PlanHash, when set, is the plan hash of a dry run the operator
	// reviewed: the deploy computes its plan under the deployment's lock
	// and refuses when the hash differs (something changed in between).
	PlanHash string `json:"plan_hash,omitempty"`
	// ManifestFile is the file the operator gave (errors name it instead
	// of "manifest.yml"), and SourceMap (manifest.SourceMap) where each
	// node of Manifest was written: errors name that file and line, an
	// ops file's for a value it set.
	ManifestFile string          `json:"manifest_file,omitempty"`
	SourceMap    json.RawMessage `json:"source_map,omitempty"`
	// FreshDiskOnCPIMove: an instance whose AZ is now served by another
	// CPI gets a new, empty persistent disk there (its old disk orphaned
	// in the old CPI) instead of the deploy being refused.
	FreshDiskOnCPIMove bool `json:"fresh_disk_on_cpi_move,omitempty"`
}

// StateRequest is POST /v1/deployments/{name}/state.
type StateRequest struct {
	Deployment string `json:"deployment"`
	Action     string `json:"action"`           // recreate, restart, stop, start
	Target     string `json:"target,omitempty"` // "", GROUP or GROUP/ID
	Hard       bool   `json:"hard,omitempty"`   // stop --hard
	SkipDrain  bool   `json:"skip_drain,omitempty"`
}

// SSHRequest is POST /v1/deployments/{name}/ssh: run Command with
// `/bin/sh -c` on the target's VMs (GROUP/ID, or GROUP for all of its
// instances, in parallel).
type SSHRequest struct {
	Target  string `json:"target"`
	Command string `json:"command"`
	// Timeout is a Go duration ("90s"); empty means one minute, at most one
	// hour.
	Timeout string `json:"timeout,omitempty"`
}

// SSHResult answers POST /v1/deployments/{name}/ssh: one result per
// instance, ordered by index.
type SSHResult struct {
	Results []CommandResult `json:"results"`
}

// LogsRequest is POST /v1/deployments/{name}/logs.
type LogsRequest struct {
	// Instance is GROUP/ID (or GROUP when the group has one instance).
	Instance string `json:"instance"`
	// Jobs limits the archive to these jobs' logs.
	Jobs []string `json:"jobs,omitempty"`
}

// LogLine is one line of GET /v1/deployments/{name}/logs/follow: a line of
// File (its path under sys/log, "web/webapp.stdout.log"), without its
// newline; or, with Error set, why the agent could not be read this time
// (following goes on).
type LogLine struct {
	Instance string `json:"instance"`
	File     string `json:"file,omitempty"`
	Line     string `json:"line,omitempty"`
	Error    string `json:"error,omitempty"`
}

// CleanUpRequest is POST /v1/cleanup.
type CleanUpRequest struct {
	All bool `json:"all,omitempty"`
}

// ErrandLogsStage is the stage of the run-errand events whose data.logs is
// a LogsResult: the logs of an errand instance, fetched before its VM was
// deleted (run-errand --download-logs downloads them).
const ErrandLogsStage = "Errand logs"

// LogsResult is the result of a fetch-logs task (its Result, as JSON).
type LogsResult struct {
	BlobID     string `json:"blob_id"`
	SHA256     string `json:"sha256"`
	Size       int64  `json:"size"`
	Deployment string `json:"deployment"`
	Group      string `json:"group"`
	ID         string `json:"id"`
	Index      int    `json:"index"`
}

// CommandResult is how a command went on one instance. Error is set when
// it could not run there (no VM, agent unresponsive); ExitCode is then -1.
// Output is text (bytes that are not UTF-8 become U+FFFD); each stream is
// cut after 1 MiB, *Bytes saying how much it wrote in all.
type CommandResult struct {
	Instance    string `json:"instance"` // GROUP/ID
	Index       int    `json:"index"`
	ExitCode    int    `json:"exit_code"`
	TimedOut    bool   `json:"timed_out,omitempty"`
	Stdout      string `json:"stdout"`
	Stderr      string `json:"stderr"`
	StdoutBytes int64  `json:"stdout_bytes"`
	StderrBytes int64  `json:"stderr_bytes"`
	Error       string `json:"error,omitempty"`
}

// OK reports whether the command ran and exited 0.
func (c CommandResult) OK() bool { return c.Error == "" && c.ExitCode == 0 && !c.TimedOut }

// UpgradeRequest is a stemcell rollout: POST /v1/stemcells/upgrade.
type UpgradeRequest struct {
	// OS is the stemcell's operating system (or its name).
	OS string `json:"os"`
	// Version is the stemcell version to roll out; empty: the newest
	// uploaded of OS.
	Version string `json:"version,omitempty"`
	// Deployments are the ones to roll it through, in this order; All
	// takes every deployment that uses a stemcell of OS, by name.
	Deployments []string `json:"deployments,omitempty"`
	All         bool     `json:"all,omitempty"`
	// MaxParallel deployments are deployed at once (default 1).
	MaxParallel int `json:"max_parallel,omitempty"`
	// DryRun plans each deployment's deploy and changes nothing.
	DryRun bool `json:"dry_run,omitempty"`
	// ContinueOnFailure goes on after a deployment's deploy failed;
	// else the rollout stops there (deploys under way finish).
	ContinueOnFailure bool `json:"continue_on_failure,omitempty"`
}

// UpgradeRow is one deployment's line of a rollout's summary.
type UpgradeRow struct {
	Deployment string `json:"deployment"`
	From       string `json:"from"` // the stemcells of OS it was deployed with
	To         string `json:"to"`
	// Result: upgraded, failed, up to date, skipped, not started,
	// cancelled, planned (dry run).
	Result string `json:"result"`
	TaskID uint64 `json:"task_id,omitempty"`
	Error  string `json:"error,omitempty"`
}
