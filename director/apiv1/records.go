package apiv1

import (
	"encoding/json"
	"strings"
	"time"
)

// Task states.
const (
	TaskQueued     = "queued"
	TaskProcessing = "processing"
	TaskCancelling = "cancelling"
	TaskDone       = "done"
	TaskError      = "error"
	TaskCancelled  = "cancelled"
)

// Task is GET /v1/tasks/{id}, and what every route that starts a task
// answers (202).
type Task struct {
	ID          uint64 `json:"id"`
	Type        string `json:"type"` // e.g. "upload-release", "deploy"
	Description string `json:"description"`
	Deployment  string `json:"deployment,omitempty"`
	User        string `json:"user,omitempty"`
	State       string `json:"state"`
	Result      string `json:"result,omitempty"`
	Error       string `json:"error,omitempty"`
	// BadInput: the task failed on what it was asked to do (an invalid
	// manifest or config), not while doing it; the CLI exits 2.
	BadInput bool `json:"bad_input,omitempty"`
	// Args are the arguments of a task queued as data (secrets sealed at
	// rest; the API shows them to admins only).
	Args json.RawMessage `json:"args,omitempty"`
	// Director is the director process that accepted or runs the task
	// (several directors: docs/ha.md).
	Director   string    `json:"director,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
}

// Finished reports whether the task has reached a final state.
func (t Task) Finished() bool {
	return t.State == TaskDone || t.State == TaskError || t.State == TaskCancelled
}

// Event is one line of GET /v1/tasks/{id}/events.
type Event struct {
	TaskID uint64    `json:"task_id"`
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Stage  string    `json:"stage"`
	Step   string    `json:"step,omitempty"`
	Index  int       `json:"index,omitempty"` // 1-based position within the stage
	Total  int       `json:"total,omitempty"`
	State  string    `json:"state"` // "started", "finished", "failed", "info"
	Tags   []string  `json:"tags,omitempty"`
	Error  string    `json:"error,omitempty"`
	// Data carries structured detail (a note's text, a progress figure).
	Data json.RawMessage `json:"data,omitempty"`
}

// Instance is one instance of GET /v1/deployments/{name}/instances.
type Instance struct {
	Deployment string `json:"deployment"`
	Group      string `json:"group"`
	ID         string `json:"id"`
	Index      int    `json:"index"`
	AZ         string `json:"az,omitempty"`
	Bootstrap  bool   `json:"bootstrap,omitempty"`
	// State is the desired state: "started", "stopped" or "detached".
	State      string          `json:"state"`
	VMCID      string          `json:"vm_cid,omitempty"`
	AgentID    string          `json:"agent_id,omitempty"`
	DiskCIDs   []string        `json:"disk_cids,omitempty"`
	IgnoreFix  bool            `json:"ignore,omitempty"`
	Unfinished bool            `json:"unfinished,omitempty"`
	Spec       json.RawMessage `json:"spec,omitempty"`
	UpdatedAt  time.Time       `json:"updated_at"`
}

// VM is one VM of GET /v1/deployments/{name}/vms.
type VM struct {
	CID           string    `json:"cid"`
	CPI           string    `json:"cpi"`
	AgentID       string    `json:"agent_id"`
	Deployment    string    `json:"deployment,omitempty"`
	InstanceID    string    `json:"instance_id,omitempty"`
	Stemcell      string    `json:"stemcell,omitempty"` // cid
	State         string    `json:"state,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
	CertSerial    string    `json:"cert_serial,omitempty"`
	PendingSerial string    `json:"pending_serial,omitempty"`
}

// Deployment is one deployment of GET /v1/deployments.
type Deployment struct {
	Name             string            `json:"name"`
	ManifestID       uint64            `json:"manifest_id"`
	Releases         []string          `json:"releases,omitempty"`
	Stemcells        []string          `json:"stemcells,omitempty"`
	PendingReleases  []string          `json:"pending_releases,omitempty"`
	PendingStemcells []string          `json:"pending_stemcells,omitempty"`
	CloudConfigID    uint64            `json:"cloud_config_id,omitempty"`
	RuntimeConfigIDs []uint64          `json:"runtime_config_ids,omitempty"`
	Links            json.RawMessage   `json:"links,omitempty"`
	ConsumedLinks    map[string]string `json:"consumed_links,omitempty"`
	StaleLinks       []string          `json:"stale_links,omitempty"`
	CreatedAt        time.Time         `json:"created_at"`
	UpdatedAt        time.Time         `json:"updated_at"`
}

// Config is one version of a config (GET /v1/configs).
type Config struct {
	ID        uint64    `json:"id"`
	Type      string    `json:"type"`
	Name      string    `json:"name"`
	Content   string    `json:"content"`
	CreatedAt time.Time `json:"created_at"`
}

// Variable is one variable of GET /v1/variables (its value only where the
// route shows values).
type Variable struct {
	Name      string          `json:"name"`
	Type      string          `json:"type"`
	Value     json.RawMessage `json:"value,omitempty"`
	CreatedAt time.Time       `json:"created_at"`
}

// AuditEvent is one line of GET /v1/events.
type AuditEvent struct {
	ID         uint64            `json:"id"`
	Time       time.Time         `json:"time"`
	User       string            `json:"user"`
	TaskID     uint64            `json:"task_id,omitempty"`
	Deployment string            `json:"deployment,omitempty"`
	Instance   string            `json:"instance,omitempty"` // group/id
	Action     string            `json:"action"`
	ObjectType string            `json:"object_type,omitempty"`
	Object     string            `json:"object,omitempty"`
	Result     string            `json:"result,omitempty"`
	Error      string            `json:"error,omitempty"`
	Context    map[string]string `json:"context,omitempty"`
}

// ResurrectionSwitch is one switch of GET /v1/resurrection.
type ResurrectionSwitch struct {
	Deployment string    `json:"deployment"`
	Group      string    `json:"group,omitempty"`
	Enabled    bool      `json:"enabled"`
	User       string    `json:"user,omitempty"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// Disk is one disk of GET /v1/disks.
type Disk struct {
	CID             string          `json:"cid"`
	CPI             string          `json:"cpi"`
	Deployment      string          `json:"deployment,omitempty"`
	InstanceID      string          `json:"instance_id,omitempty"`
	SizeMB          int64           `json:"size_mb"`
	DiskType        string          `json:"disk_type,omitempty"`
	CloudProperties json.RawMessage `json:"cloud_properties,omitempty"`
	State           string          `json:"state,omitempty"`
	Orphaned        bool            `json:"orphaned,omitempty"`
	OrphanedAt      time.Time       `json:"orphaned_at,omitzero"`
	CreatedAt       time.Time       `json:"created_at"`
}

// Lock is one lease of GET /v1/locks.
type Lock struct {
	Name       string    `json:"name"`
	Owner      string    `json:"owner"` // e.g. "task 12"
	TaskID     uint64    `json:"task_id,omitempty"`
	AcquiredAt time.Time `json:"acquired_at"`
	Expires    time.Time `json:"expires"`
}

// Release is one release version.
type Release struct {
	Name       string           `json:"name"`
	Version    string           `json:"version"`
	CommitHash string           `json:"commit_hash,omitempty"`
	Jobs       []ReleaseJob     `json:"jobs"`
	Packages   []ReleasePackage `json:"packages"`
	UploadedAt time.Time        `json:"uploaded_at"`
}

// ReleaseJob is a job of a release.
type ReleaseJob struct {
	Name        string          `json:"name"`
	Fingerprint string          `json:"fingerprint"`
	SHA256      string          `json:"sha256"`
	BlobID      string          `json:"blob_id"`
	Packages    []string        `json:"packages,omitempty"`
	Spec        json.RawMessage `json:"spec,omitempty"`
}

// ReleasePackage is a package of a release.
type ReleasePackage struct {
	Name         string   `json:"name"`
	Fingerprint  string   `json:"fingerprint"`
	SHA256       string   `json:"sha256"`
	BlobID       string   `json:"blob_id"`
	Dependencies []string `json:"dependencies,omitempty"`
}

// Stemcell is one stemcell version.
type Stemcell struct {
	Name            string            `json:"name"`
	Version         string            `json:"version"`
	OS              string            `json:"operating_system"`
	APIVersion      int               `json:"api_version,omitempty"`
	Formats         []string          `json:"stemcell_formats,omitempty"`
	CloudProperties json.RawMessage   `json:"cloud_properties,omitempty"`
	SHA256          string            `json:"sha256,omitempty"`
	CIDs            map[string]string `json:"cids"` // CPI name -> stemcell cid
	UploadedAt      time.Time         `json:"uploaded_at"`
	Deleting        bool              `json:"deleting,omitempty"`
}

// Usage tells which deployments use a release or stemcell version.
type Usage struct {
	// Deployments were deployed successfully with it.
	Deployments []string `json:"deployments"`
	// Pending deployments have a deploy with it under way, or failed since
	// their last successful one.
	Pending []string `json:"pending,omitempty"`
}

// InUse reports whether any deployment uses it.
func (u Usage) InUse() bool { return len(u.Deployments)+len(u.Pending) > 0 }

// String is "a, b (pending: c)".
func (u Usage) String() string {
	s := strings.Join(u.Deployments, ", ")
	if len(u.Pending) > 0 {
		if s != "" {
			s += " "
		}
		s += "(pending: " + strings.Join(u.Pending, ", ") + ")"
	}
	return s
}

// ReleaseView is one line of GET /v1/releases: a version and who uses it.
type ReleaseView struct {
	Release
	Usage
}

// StemcellView is one line of GET /v1/stemcells: a version and who uses it.
type StemcellView struct {
	Stemcell
	Usage
}
