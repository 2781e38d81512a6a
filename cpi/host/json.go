package host

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/compleat/compleat/cpi"
)

// JSONProcess calls a CPI the BOSH way: a new process per call, running
// `<path> json` with one cpi.JSONRequest on stdin and one cpi.JSONResponse
// on stdout (see cpi.ServeJSON). It implements cpi.CPI. It is slower than a
// long-lived Plugin by the cost of a process start per call; it exists to
// measure that and to drive CPIs that only speak BOSH's protocol.
//
// The process gets the same clean environment as a Plugin: PATH, HOME,
// TMPDIR and its properties in COMPLEAT_CPI_PROPERTIES. The agent settings
// of CreateVM travel in the request's context under "agent_settings", the
// tags of CreateVM and CreateDisk under "tags".
type JSONProcess struct {
	path       string
	properties json.RawMessage
	// Args replace the default single argument "json" (a BOSH CPI may
	// want its config file path instead).
	Args []string

	boshContext  bool
	directorUUID string
	logger       *slog.Logger
	observe      cpi.CallObserver
}

// Observe reports every call to obs, named as the gRPC methods are
// (CreateVM, not create_vm), so the director's CPI metrics read the same
// for both protocols.
func (j *JSONProcess) Observe(obs cpi.CallObserver) *JSONProcess {
	j.observe = obs
	return j
}

// rpcNames maps the JSON protocol's method names to the contract's.
var rpcNames = map[string]string{
	"info": "Info", "create_stemcell": "CreateStemcell", "delete_stemcell": "DeleteStemcell",
	"create_vm": "CreateVM", "delete_vm": "DeleteVM", "has_vm": "HasVM", "reboot_vm": "RebootVM",
	"set_vm_metadata": "SetVMMetadata", "calculate_vm_cloud_properties": "CalculateVMCloudProperties",
	"create_disk": "CreateDisk", "delete_disk": "DeleteDisk", "resize_disk": "ResizeDisk",
	"attach_disk": "AttachDisk", "detach_disk": "DetachDisk", "has_disk": "HasDisk", "get_disks": "GetDisks",
	"set_disk_metadata": "SetDiskMetadata", "snapshot_disk": "SnapshotDisk", "delete_snapshot": "DeleteSnapshot",
	"list_vms": "ListVMs", "list_disks": "ListDisks",
}

// BOSH makes the process call the CPI as BOSH's director calls an external
// CPI: no arguments; every request's context carries director_uuid, a fresh
// request_id and the CPI's properties merged in (BOSH merges a cpi config
// entry's properties into the context; COMPLEAT_CPI_PROPERTIES is not set);
// the response's log field and the process's stderr are re-emitted through
// logger, one record per line, with the method and request id.
func (j *JSONProcess) BOSH(directorUUID string, logger *slog.Logger) *JSONProcess {
	j.Args = nil
	j.boshContext = true
	j.directorUUID = directorUUID
	j.logger = logger
	return j
}

var _ cpi.CPI = (*JSONProcess)(nil)

// NewJSONProcess returns a CPI that runs path once per call.
func NewJSONProcess(path string, properties json.RawMessage) *JSONProcess {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	if len(properties) == 0 {
		properties = json.RawMessage(`{}`)
	}
	return &JSONProcess{path: path, properties: properties, Args: []string{cpi.JSONModeArg}}
}

// call runs one request and decodes its result into out (unless nil).
func (j *JSONProcess) call(ctx context.Context, method string, out any, args ...any) error {
	return j.callContext(ctx, method, nil, out, args...)
}

func (j *JSONProcess) callContext(ctx context.Context, method string, reqCtx map[string]json.RawMessage, out any, args ...any) (err error) {
	if j.observe != nil {
		start := time.Now()
		defer func() {
			name := rpcNames[method]
			if name == "" {
				name = method
			}
			j.observe(name, time.Since(start), err)
		}()
	}
	requestID := ""
	if j.boshContext {
		var err error
		if reqCtx, requestID, err = j.boshRequestContext(reqCtx); err != nil {
			return fmt.Errorf("cpi %s: %w", method, err)
		}
	}
	req := cpi.JSONRequest{Method: method, Context: reqCtx, APIVersion: cpi.APIVersion}
	for _, a := range args {
		b, err := json.Marshal(a)
		if err != nil {
			return fmt.Errorf("cpi %s: encode argument: %w", method, err)
		}
		req.Arguments = append(req.Arguments, b)
	}
	in, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("cpi %s: encode request: %w", method, err)
	}
	cmd := exec.CommandContext(ctx, j.path, j.Args...)
	cmd.Env = j.environ()
	cmd.Dir = "/"
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// The parent-death signal follows the forking thread: keep this
	// goroutine on it until the process is gone.
	setDeathSignal(cmd)
	runtime.LockOSThread()
	runErr := cmd.Run()
	runtime.UnlockOSThread()
	if ctx.Err() != nil {
		return fmt.Errorf("cpi %s: %w", method, ctx.Err())
	}
	var resp cpi.JSONResponse
	parseErr := json.Unmarshal(stdout.Bytes(), &resp)
	if j.logger != nil {
		for _, text := range []string{resp.Log, stderr.String()} {
			for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
				if line != "" {
					j.logger.Info(line, "cpi_method", method, "request_id", requestID)
				}
			}
		}
	}
	if err := parseErr; err != nil {
		if runErr != nil {
			return fmt.Errorf("cpi %s: %s: %w (stderr: %s)", method, j.path, runErr, lastLine(stderr.String()))
		}
		return fmt.Errorf("cpi %s: %s: bad response: %w", method, j.path, err)
	}
	if resp.Error != nil {
		return resp.Error.Err()
	}
	if out != nil && len(resp.Result) > 0 {
		if err := json.Unmarshal(resp.Result, out); err != nil {
			return fmt.Errorf("cpi %s: decode result %s: %w", method, resp.Result, err)
		}
	}
	return nil
}

func (j *JSONProcess) environ() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	if j.boshContext {
		return env
	}
	return append(env, cpi.PropertiesEnv+"="+string(j.properties))
}

// boshRequestContext is BOSH's request context: the properties, then
// director_uuid and request_id, then the call's own keys (agent_settings,
// tags).
func (j *JSONProcess) boshRequestContext(call map[string]json.RawMessage) (map[string]json.RawMessage, string, error) {
	out := map[string]json.RawMessage{}
	if err := json.Unmarshal(j.properties, &out); err != nil {
		return nil, "", fmt.Errorf("properties must be a JSON object: %w", err)
	}
	id := make([]byte, 8)
	if _, err := rand.Read(id); err != nil {
		return nil, "", err
	}
	requestID := "cpi-" + hex.EncodeToString(id)
	uuid, _ := json.Marshal(j.directorUUID)
	rid, _ := json.Marshal(requestID)
	out["director_uuid"], out["request_id"] = uuid, rid
	for k, v := range call {
		out[k] = v
	}
	return out, requestID, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// Info implements cpi.CPI.
func (j *JSONProcess) Info(ctx context.Context) (out cpi.Info, err error) {
	err = j.call(ctx, "info", &out)
	return out, err
}

// CreateStemcell implements cpi.CPI.
func (j *JSONProcess) CreateStemcell(ctx context.Context, req cpi.CreateStemcellRequest) (out string, err error) {
	err = j.call(ctx, "create_stemcell", &out, req.ImagePath, object(req.CloudProperties))
	return out, err
}

// DeleteStemcell implements cpi.CPI.
func (j *JSONProcess) DeleteStemcell(ctx context.Context, cid string) error {
	return j.call(ctx, "delete_stemcell", nil, cid)
}

// CreateVM implements cpi.CPI.
func (j *JSONProcess) CreateVM(ctx context.Context, req cpi.CreateVMRequest) (cpi.CreateVMResult, error) {
	reqCtx, err := tagsContext(req.Tags)
	if err != nil {
		return cpi.CreateVMResult{}, err
	}
	if len(req.AgentSettings) > 0 {
		if reqCtx == nil {
			reqCtx = map[string]json.RawMessage{}
		}
		reqCtx["agent_settings"] = req.AgentSettings
	}
	var raw []json.RawMessage
	err = j.callContext(ctx, "create_vm", reqCtx, &raw,
		req.AgentID, req.StemcellCID, object(req.CloudProperties), req.Networks, req.DiskCIDs, object(req.Env))
	if err != nil {
		return cpi.CreateVMResult{}, err
	}
	// API v2 answers [cid, networks]; v1 answered the cid alone.
	var res cpi.CreateVMResult
	if len(raw) == 0 {
		return res, errors.New("cpi create_vm: empty result")
	}
	if err := json.Unmarshal(raw[0], &res.CID); err != nil {
		return res, fmt.Errorf("cpi create_vm: vm cid: %w", err)
	}
	if len(raw) > 1 {
		if err := json.Unmarshal(raw[1], &res.Networks); err != nil {
			return res, fmt.Errorf("cpi create_vm: networks: %w", err)
		}
	}
	return res, nil
}

// DeleteVM implements cpi.CPI.
func (j *JSONProcess) DeleteVM(ctx context.Context, cid string) error {
	return j.call(ctx, "delete_vm", nil, cid)
}

// HasVM implements cpi.CPI.
func (j *JSONProcess) HasVM(ctx context.Context, cid string) (out bool, err error) {
	err = j.call(ctx, "has_vm", &out, cid)
	return out, err
}

// RebootVM implements cpi.CPI.
func (j *JSONProcess) RebootVM(ctx context.Context, cid string) error {
	return j.call(ctx, "reboot_vm", nil, cid)
}

// SetVMMetadata implements cpi.CPI.
func (j *JSONProcess) SetVMMetadata(ctx context.Context, cid string, md map[string]string) error {
	return j.call(ctx, "set_vm_metadata", nil, cid, md)
}

// CalculateVMCloudProperties implements cpi.CPI.
func (j *JSONProcess) CalculateVMCloudProperties(ctx context.Context, req cpi.VMResources) (out json.RawMessage, err error) {
	err = j.call(ctx, "calculate_vm_cloud_properties", &out, req)
	return out, err
}

// CreateDisk implements cpi.CPI.
func (j *JSONProcess) CreateDisk(ctx context.Context, req cpi.CreateDiskRequest) (out string, err error) {
	var locality any
	if req.VMCID != "" {
		locality = req.VMCID
	}
	reqCtx, err := tagsContext(req.Tags)
	if err != nil {
		return "", err
	}
	err = j.callContext(ctx, "create_disk", reqCtx, &out, req.SizeMB, object(req.CloudProperties), locality)
	return out, err
}

// DeleteDisk implements cpi.CPI.
func (j *JSONProcess) DeleteDisk(ctx context.Context, cid string) error {
	return j.call(ctx, "delete_disk", nil, cid)
}

// ResizeDisk implements cpi.CPI.
func (j *JSONProcess) ResizeDisk(ctx context.Context, cid string, sizeMB int64) error {
	return j.call(ctx, "resize_disk", nil, cid, sizeMB)
}

// AttachDisk implements cpi.CPI. BOSH CPIs answer a hint that is either a
// device path or an object.
func (j *JSONProcess) AttachDisk(ctx context.Context, vmCID, diskCID string) (cpi.DiskHint, error) {
	var raw json.RawMessage
	if err := j.call(ctx, "attach_disk", &raw, vmCID, diskCID); err != nil {
		return cpi.DiskHint{}, err
	}
	var hint cpi.DiskHint
	var path string
	if err := json.Unmarshal(raw, &path); err == nil {
		hint.Path = path
		return hint, nil
	}
	if len(raw) > 0 && string(raw) != "null" {
		if err := json.Unmarshal(raw, &hint); err != nil {
			return hint, fmt.Errorf("cpi attach_disk: disk hint %s: %w", raw, err)
		}
	}
	return hint, nil
}

// DetachDisk implements cpi.CPI.
func (j *JSONProcess) DetachDisk(ctx context.Context, vmCID, diskCID string) error {
	return j.call(ctx, "detach_disk", nil, vmCID, diskCID)
}

// HasDisk implements cpi.CPI.
func (j *JSONProcess) HasDisk(ctx context.Context, cid string) (out bool, err error) {
	err = j.call(ctx, "has_disk", &out, cid)
	return out, err
}

// GetDisks implements cpi.CPI.
func (j *JSONProcess) GetDisks(ctx context.Context, vmCID string) (out []string, err error) {
	err = j.call(ctx, "get_disks", &out, vmCID)
	return out, err
}

// SetDiskMetadata implements cpi.CPI.
func (j *JSONProcess) SetDiskMetadata(ctx context.Context, cid string, md map[string]string) error {
	return j.call(ctx, "set_disk_metadata", nil, cid, md)
}

// SnapshotDisk implements cpi.CPI.
func (j *JSONProcess) SnapshotDisk(ctx context.Context, cid string, md map[string]string) (out string, err error) {
	err = j.call(ctx, "snapshot_disk", &out, cid, md)
	return out, err
}

// DeleteSnapshot implements cpi.CPI.
func (j *JSONProcess) DeleteSnapshot(ctx context.Context, cid string) error {
	return j.call(ctx, "delete_snapshot", nil, cid)
}

// ListVMs implements cpi.CPI.
func (j *JSONProcess) ListVMs(ctx context.Context, f cpi.ListFilter) (out []cpi.VMInfo, err error) {
	err = j.call(ctx, "list_vms", &out, f)
	if out == nil && err == nil {
		out = []cpi.VMInfo{}
	}
	return out, err
}

// ListDisks implements cpi.CPI.
func (j *JSONProcess) ListDisks(ctx context.Context, f cpi.ListFilter) (out []cpi.DiskInfo, err error) {
	err = j.call(ctx, "list_disks", &out, f)
	if out == nil && err == nil {
		out = []cpi.DiskInfo{}
	}
	return out, err
}

// tagsContext is the request context carrying tags, nil without tags.
func tagsContext(tags map[string]string) (map[string]json.RawMessage, error) {
	if len(tags) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(tags)
	if err != nil {
		return nil, fmt.Errorf("cpi: encode tags: %w", err)
	}
	return map[string]json.RawMessage{"tags": b}, nil
}

// object sends an absent document as {} (BOSH CPIs expect a hash).
func object(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return json.RawMessage(`{}`)
	}
	return raw
}
