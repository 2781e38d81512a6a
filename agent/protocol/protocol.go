// Package protocol is the wire contract between the director and its agents
// on the message bus: subjects, the request and reply envelopes, method names,
// and each method's typed argument and result.
//
// The director sends a request on Subject(agentID) with a NATS reply subject:
//
//	{"method": "apply", "arguments": [{...ApplySpec...}]}
//
// Every method takes zero or one argument (the typed request below). The agent
// replies
//
//	{"value": <result>}                       on success
//	{"exception": {"code": "...", "message": "..."}}   on failure
//
// Long methods (see Long) answer at once with a TaskStatus whose state is
// "running"; the director then polls get_task with the agent_task_id until the
// state is "done" (the value carries the method's result in "result") or the
// reply is an exception (the task failed or was cancelled).
//
// Agents publish heartbeats on HeartbeatSubject(agentID) and alerts on
// AlertSubject(agentID).
package protocol

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/compleat/compleat/agent/applyspec"
	"github.com/compleat/compleat/cpi"
)

// Subject is where the agent agentID receives requests.
func Subject(agentID string) string { return "agent." + agentID }

// HeartbeatSubject is where the agent agentID publishes heartbeats.
func HeartbeatSubject(agentID string) string { return "hm.agent.heartbeat." + agentID }

// AlertSubject is where the agent agentID publishes alerts.
func AlertSubject(agentID string) string { return "hm.agent.alert." + agentID }

// Method names.
const (
	MethodPing           = "ping"
	MethodGetState       = "get_state"
	MethodPrepare        = "prepare"
	MethodApply          = "apply"
	MethodStart          = "start"
	MethodStop           = "stop"
	MethodDrain          = "drain"
	MethodRunScript      = "run_script"
	MethodCompilePackage = "compile_package"
	MethodMountDisk      = "mount_disk"
	MethodUnmountDisk    = "unmount_disk"
	MethodListDisk       = "list_disk"
	MethodMigrateDisk    = "migrate_disk"
	MethodFetchLogs      = "fetch_logs"
	MethodUpdateSettings = "update_settings"
	// MethodRequestIdentity asks the agent for a certificate request of a
	// key it makes and keeps (IdentityRequest); the director signs it and
	// sends the certificate with update_settings (mbus.cert, no key).
	MethodRequestIdentity = "request_identity"
	MethodGetTask         = "get_task"
	MethodCancelTask      = "cancel_task"
)

// Long reports whether method runs as an agent task (answered with a
// TaskStatus, then polled with get_task).
func Long(method string) bool {
	switch method {
	case MethodPrepare, MethodApply, MethodStart, MethodStop, MethodDrain, MethodRunScript,
		MethodCompilePackage, MethodMountDisk, MethodUnmountDisk, MethodMigrateDisk, MethodFetchLogs,
		MethodRunCommand:
		return true
	}
	return false
}

// Request is the envelope of a request.
type Request struct {
	Method    string            `json:"method"`
	Arguments []json.RawMessage `json:"arguments"`
}

// NewRequest builds a request with arg as its only argument (none when arg is
// nil).
func NewRequest(method string, arg any) (Request, error) {
	r := Request{Method: method, Arguments: []json.RawMessage{}}
	if arg != nil {
		b, err := json.Marshal(arg)
		if err != nil {
			return Request{}, fmt.Errorf("encode %s arguments: %w", method, err)
		}
		r.Arguments = append(r.Arguments, b)
	}
	return r, nil
}

// Response is the envelope of a reply: exactly one of Value and Exception.
type Response struct {
	Value     json.RawMessage `json:"value,omitempty"`
	Exception *Exception      `json:"exception,omitempty"`
}

// Exception codes.
const (
	CodeUnknownMethod = "unknown_method"
	CodeBadArguments  = "bad_arguments"
	CodeFailed        = "failed"
	CodeTaskNotFound  = "task_not_found"
	CodeCanceled      = "canceled"
	CodeBlobMismatch  = "blob_mismatch"

	// CodeBusy and CodeNotSupported are reserved; this agent does not
	// answer them yet.
	CodeBusy         = "busy"
	CodeNotSupported = "not_supported"
)

// Exception is a failure reported by the agent. errors.Is(err, ErrX) holds
// when err is an *Exception with ErrX's code.
type Exception struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Log is the end of the output of what failed, when that is a script
	// or a compilation (compile_package: the packaging log's tail).
	Log string `json:"log,omitempty"`
}

func (e *Exception) Error() string {
	if e.Message == "" {
		return e.Code
	}
	return e.Message
}

// Is matches exceptions by code.
func (e *Exception) Is(target error) bool {
	t, ok := target.(*Exception)
	return ok && t.Code == e.Code
}

// Sentinels for errors.Is.
var (
	ErrUnknownMethod = &Exception{Code: CodeUnknownMethod}
	ErrBadArguments  = &Exception{Code: CodeBadArguments}
	ErrFailed        = &Exception{Code: CodeFailed}
	ErrTaskNotFound  = &Exception{Code: CodeTaskNotFound}
	ErrCanceled      = &Exception{Code: CodeCanceled}
	ErrBusy          = &Exception{Code: CodeBusy}
	ErrBlobMismatch  = &Exception{Code: CodeBlobMismatch}
	ErrNotSupported  = &Exception{Code: CodeNotSupported}
)

// Task states.
const (
	TaskRunning  = "running"
	TaskDone     = "done"
	TaskFailed   = "failed"
	TaskCanceled = "canceled"
)

// TaskStatus is the answer of a long method and of get_task.
type TaskStatus struct {
	AgentTaskID string          `json:"agent_task_id"`
	State       string          `json:"state"`
	Result      json.RawMessage `json:"result,omitempty"`
}

// TaskRequest is the argument of get_task and cancel_task.
type TaskRequest struct {
	AgentTaskID string `json:"agent_task_id"`
}

// Process and job states.
const (
	StateRunning  = "running"
	StateStarting = "starting"
	StateFailing  = "failing"
	StateStopped  = "stopped"
)

// State is the answer of get_state and the body of a heartbeat (without Spec).
type State struct {
	AgentID    string     `json:"agent_id"`
	VMCID      string     `json:"vm_cid,omitempty"`
	Deployment string     `json:"deployment,omitempty"`
	Name       string     `json:"name,omitempty"`
	ID         string     `json:"id,omitempty"`
	Index      int        `json:"index"`
	JobState   string     `json:"job_state"`
	Jobs       []JobState `json:"jobs"`
	ConfigHash string     `json:"config_hash,omitempty"`
	Vitals     Vitals     `json:"vitals"`
	// Disks are the persistent disk cids mounted now.
	Disks []string `json:"disks,omitempty"`
	// Spec is the applied spec; get_state only.
	Spec *applyspec.Spec `json:"spec,omitempty"`
}

// NotRunning describes each process (or process-less job) of s that is
// not running, with the reason when known: "web/web is failing (exited
// with status 1)". Empty when everything runs.
func (s State) NotRunning() []string {
	var out []string
	for _, j := range s.Jobs {
		for _, p := range j.Processes {
			if p.State == StateRunning {
				continue
			}
			d := fmt.Sprintf("%s/%s is %s", j.Name, p.Name, p.State)
			if p.Error != "" {
				d += " (" + p.Error + ")"
			}
			out = append(out, d)
		}
		if len(j.Processes) == 0 && j.State != StateRunning {
			out = append(out, fmt.Sprintf("job %s is %s", j.Name, j.State))
		}
	}
	return out
}

// JobState is one job's aggregate state and its processes.
type JobState struct {
	Name      string         `json:"name"`
	State     string         `json:"state"`
	Processes []ProcessState `json:"processes"`
}

// ProcessState is one supervised process.
type ProcessState struct {
	Name     string `json:"name"`
	State    string `json:"state"`
	PID      int    `json:"pid,omitempty"`
	Restarts int    `json:"restarts,omitempty"`
	// Error is the last failure (exit status, failed readiness check).
	Error string `json:"error,omitempty"`
}

// Vitals are the VM's resource figures.
type Vitals struct {
	CPU    CPU             `json:"cpu"`
	Mem    Usage           `json:"mem"`
	Swap   Usage           `json:"swap"`
	Load   [3]float64      `json:"load"`
	Disk   map[string]Disk `json:"disk"` // "system", "ephemeral", "persistent"
	Uptime int64           `json:"uptime_s"`
}

// CPU is the share of CPU time since the previous sample, in percent.
type CPU struct {
	User   float64 `json:"user"`
	System float64 `json:"sys"`
	Wait   float64 `json:"wait"`
}

// Usage is a memory figure.
type Usage struct {
	KB      uint64  `json:"kb"`
	Percent float64 `json:"percent"`
}

// Disk is a file system's use in percent.
type Disk struct {
	Percent       float64 `json:"percent"`
	InodePercent  float64 `json:"inode_percent"`
	MountedOnPath string  `json:"path,omitempty"`
}

// Heartbeat is published on HeartbeatSubject every heartbeat interval.
type Heartbeat struct {
	State
	Time time.Time `json:"time"`
}

// Alert is published on AlertSubject when a process changes state.
type Alert struct {
	ID       string    `json:"id"`
	Severity int       `json:"severity"` // 1 alert, 2 critical, 3 error, 4 warning, 5 notice...
	Title    string    `json:"title"`
	Summary  string    `json:"summary"`
	Job      string    `json:"job,omitempty"`
	Process  string    `json:"process,omitempty"`
	State    string    `json:"state,omitempty"`
	Time     time.Time `json:"time"`
}

// Drain types.
const (
	DrainUpdate   = "update"
	DrainShutdown = "shutdown"
	DrainStatus   = "status"
)

// DrainRequest is the argument of drain and part of stop's.
type DrainRequest struct {
	// Type is DrainUpdate (the job keeps running with NextSpec) or
	// DrainShutdown (the job stops for good).
	Type string `json:"type"`
	// NextSpec is what will be applied next; drain scripts see
	// job_changed/hash_changed against it and BOSH_JOB_NEXT_STATE.
	NextSpec *applyspec.Spec `json:"next_spec,omitempty"`
	// Timeout caps each job's whole drain, including dynamic rounds; 0 means
	// the agent's default.
	Timeout Duration `json:"timeout,omitempty"`
}

// DrainResult reports how drain went.
type DrainResult struct {
	// Waited is the time spent draining.
	Waited Duration `json:"waited"`
}

// StopRequest is the argument of stop. Stop runs, in order: pre-stop and
// drain (only when Drain is set), stopping every process, post-stop.
type StopRequest struct {
	// Drain, when set, runs pre-stop and the drain scripts before stopping.
	Drain *DrainRequest `json:"drain,omitempty"`
	// Next tells pre-stop what happens after the stop.
	Next NextState `json:"next,omitempty"`
}

// NextState says what becomes of the VM, the instance and the deployment
// after a stop: "keep" (the default) or "delete". pre-stop sees them as
// BOSH_VM_NEXT_STATE, BOSH_INSTANCE_NEXT_STATE and
// BOSH_DEPLOYMENT_NEXT_STATE.
type NextState struct {
	VM         string `json:"vm,omitempty"`
	Instance   string `json:"instance,omitempty"`
	Deployment string `json:"deployment,omitempty"`
}

// StartResult is the result of start.
type StartResult struct {
	JobState string `json:"job_state"`
}

// RunScriptRequest is the argument of run_script.
type RunScriptRequest struct {
	// Name is the script: pre-start, post-start, pre-stop, post-stop,
	// post-deploy (or any bin/<name> the jobs ship).
	Name string `json:"name"`
	// Timeout bounds the run (0: the agent's script timeout); scripts still
	// running are killed.
	Timeout Duration `json:"timeout,omitempty"`
	// Next is passed to pre-stop as BOSH_*_NEXT_STATE (default keep).
	Next NextState `json:"next,omitempty"`
}

// RunScriptResult is each job's outcome; jobs without the script are absent.
type RunScriptResult struct {
	Jobs map[string]ScriptResult `json:"jobs"`
}

// ScriptResult is one job's script outcome.
type ScriptResult struct {
	ExitCode int    `json:"exit_code"`
	Error    string `json:"error,omitempty"`
}

// CompilePackageRequest is the argument of compile_package.
type CompilePackageRequest struct {
	Name    string         `json:"name"`
	Version string         `json:"version"`
	Source  applyspec.Blob `json:"source"`
	// Dependencies are compiled packages installed under
	// <base>/packages/<name> before packaging runs.
	Dependencies []applyspec.Package `json:"dependencies,omitempty"`
	// Upload is where the compiled tar.gz goes (HTTP PUT).
	Upload Upload `json:"upload"`
}

// Upload is a signed URL to PUT a blob to.
type Upload struct {
	URL string `json:"url"`
	// Headers are sent with the PUT (e.g. a content type the signature
	// covers).
	Headers map[string]string `json:"headers,omitempty"`
}

// CompilePackageResult is the compiled blob as uploaded, and the tail of the
// packaging log.
type CompilePackageResult struct {
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size"`
	LogTail string `json:"log_tail,omitempty"`
}

// MountDiskRequest is the argument of mount_disk.
type MountDiskRequest struct {
	DiskCID string       `json:"disk_cid"`
	Hint    cpi.DiskHint `json:"hint"`
}

// UnmountDiskRequest is the argument of unmount_disk.
type UnmountDiskRequest struct {
	DiskCID string `json:"disk_cid"`
}

// ListDiskResult is the answer of list_disk.
type ListDiskResult struct {
	Disks []string `json:"disks"`
}

// FetchLogsRequest is the argument of fetch_logs.
type FetchLogsRequest struct {
	// Jobs limits the archive to these jobs' log directories; empty means
	// all of sys/log.
	Jobs   []string `json:"jobs,omitempty"`
	Upload Upload   `json:"upload"`
}

// FetchLogsResult is the uploaded archive.
type FetchLogsResult struct {
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// UpdateSettingsRequest changes parts of the agent's settings; absent fields
// keep their value. The agent persists the result and uses it from then on
// (and after a restart).
type UpdateSettingsRequest struct {
	// Disks replaces the persistent disk hints (disk cid → hint).
	Disks map[string]cpi.DiskHint `json:"disks,omitempty"`
	// BlobstoreCACert replaces the CA used to fetch blobs.
	BlobstoreCACert string `json:"blobstore_ca_cert,omitempty"`
	// Env replaces the env block.
	Env json.RawMessage `json:"env,omitempty"`
	// HeartbeatInterval replaces the heartbeat interval.
	HeartbeatInterval Duration `json:"heartbeat_interval,omitempty"`
	// Mbus replaces the agent's bus certificate and key (PEM), e.g. a
	// long-lived certificate after the short-lived bootstrap one. The
	// certificate's common name must be the agent id. The agent reconnects
	// with it shortly after answering.
	Mbus *MbusCredentials `json:"mbus,omitempty"`
}

// MbusCredentials are an agent's bus certificate and key (PEM). An empty
// Key means the key of the agent's last request_identity.
type MbusCredentials struct {
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string ("5s", "1m30s") and also reads a number of seconds.
type Duration time.Duration

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var n float64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("duration %s: want a string like \"5s\" or a number of seconds", b)
	}
	*d = Duration(n * float64(time.Second))
	return nil
}

// IdentityRequest is request_identity's answer: a PEM certificate request
// whose common name is the agent id, for a key the agent made and keeps
// until update_settings brings the certificate (mbus.cert without
// mbus.key).
type IdentityRequest struct {
	CSR string `json:"csr"`
}
