package cpi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// The BOSH way: one process per call, one JSON request on stdin, one JSON
// response on stdout. Serve switches to it when the binary's only argument is
// "json"; cpi/host's NewJSONProcess is the caller's side. It exists to compare
// with the long-lived gRPC plugin and to drive existing BOSH CPIs.

// JSONRequest is one BOSH CPI request:
//
//	{"method": "has_vm", "arguments": ["vm-1"], "context": {"director_uuid": "..."}, "api_version": 2}
//
// Arguments are positional, as in BOSH CPI API v2. Compleat's extensions:
// create_vm takes the agent settings document from context["agent_settings"]
// (BOSH CPIs build it themselves and ignore unknown context keys);
// create_vm and create_disk take the tags to apply at creation from
// context["tags"]; and two methods BOSH does not have, list_vms and
// list_disks, take one argument, the filter ({"director_id": "..."}), and
// answer a list of {"cid", "agent_id", "tags"} (disks: {"cid", "vm_cid",
// "size", "tags"}).
type JSONRequest struct {
	Method     string                     `json:"method"`
	Arguments  []json.RawMessage          `json:"arguments"`
	Context    map[string]json.RawMessage `json:"context,omitempty"`
	APIVersion int                        `json:"api_version,omitempty"`
}

// JSONResponse is the answer to a JSONRequest: a result or an error, and
// the call's log (always empty here: plugins log to stderr).
type JSONResponse struct {
	Result json.RawMessage `json:"result"`
	Error  *JSONError      `json:"error"`
	Log    string          `json:"log"`
}

// JSONError is a BOSH CPI error. Type is BOSH's error class; Code and Field
// are Compleat extensions that carry the exact code across (BOSH CPIs leave
// them empty and Type decides).
type JSONError struct {
	Type      string `json:"type"`
	Message   string `json:"message"`
	OkToRetry bool   `json:"ok_to_retry"`
	Code      Code   `json:"code,omitempty"`
	Field     string `json:"field,omitempty"`
}

// BOSH error classes for the codes BOSH knows; the others travel as
// CloudError with the code set.
var boshTypes = map[Code]string{
	CodeVMNotFound:       "Bosh::Clouds::VMNotFound",
	CodeDiskNotFound:     "Bosh::Clouds::DiskNotFound",
	CodeNotImplemented:   "Bosh::Clouds::NotImplemented",
	CodeVMCreationFailed: "Bosh::Clouds::VMCreationFailed",
}

const boshCloudError = "Bosh::Clouds::CloudError"

// NewJSONError encodes err as a BOSH CPI error.
func NewJSONError(err error) *JSONError {
	je := &JSONError{Type: boshCloudError, Message: err.Error(), Code: CodeUnknown}
	var e *Error
	if errors.As(err, &e) {
		je.Code, je.Field, je.OkToRetry = e.Code, e.Field, e.Retryable
		if t, ok := boshTypes[e.Code]; ok {
			je.Type = t
		}
	}
	return je
}

// Err decodes a BOSH CPI error into the contract's *Error: by Code when set,
// else by BOSH's error class.
func (je *JSONError) Err() *Error {
	code := je.Code
	if code == "" {
		code = CodeUnknown
		for c, t := range boshTypes {
			if t == je.Type {
				code = c
			}
		}
		// How older BOSH CPIs say they do not know a method (the director
		// reads these as NotImplemented too), e.g. list_vms.
		if (je.Type == "Bosh::Clouds::InvalidCall" && strings.Contains(je.Message, "Method is not known")) ||
			(je.Type == boshCloudError && strings.Contains(je.Message, "Invalid Method")) {
			code = CodeNotImplemented
		}
	}
	return &Error{Code: code, Message: je.Message, Field: je.Field, Retryable: je.OkToRetry}
}

// ServeJSON answers one JSONRequest read from r by calling impl, writes the
// JSONResponse to w and returns the process exit status: 0 when a response
// was written (CPI errors are in the response), 1 when the request could not
// be read or the response not written.
func ServeJSON(ctx context.Context, impl CPI, r io.Reader, w io.Writer) int {
	var req JSONRequest
	status := 0
	var resp JSONResponse
	if err := json.NewDecoder(r).Decode(&req); err != nil {
		resp.Error = &JSONError{Type: "Bosh::Clouds::InvalidCall", Message: fmt.Sprintf("read request: %v", err), Code: CodeUnknown}
		status = 1
	} else {
		result, err := dispatchJSON(ctx, impl, &req)
		if err != nil {
			resp.Error = NewJSONError(err)
		} else if resp.Result, err = json.Marshal(result); err != nil {
			resp.Error = NewJSONError(fmt.Errorf("%s: encode result: %w", req.Method, err))
		}
	}
	if resp.Result == nil {
		resp.Result = json.RawMessage("null")
	}
	if err := json.NewEncoder(w).Encode(resp); err != nil {
		return 1
	}
	return status
}

// jsonArgs decodes positional arguments.
type jsonArgs struct {
	method string
	args   []json.RawMessage
}

func (a jsonArgs) want(n int) error {
	if len(a.args) < n {
		return &Error{Code: CodeUnknown, Message: fmt.Sprintf("%s: want %d arguments, got %d", a.method, n, len(a.args))}
	}
	return nil
}

func (a jsonArgs) get(i int, v any) error {
	if i >= len(a.args) {
		return nil // optional trailing argument
	}
	raw := a.args[i]
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return &Error{Code: CodeUnknown, Message: fmt.Sprintf("%s: argument %d: %v", a.method, i+1, err)}
	}
	return nil
}

func (a jsonArgs) raw(i int) json.RawMessage {
	if i >= len(a.args) || string(a.args[i]) == "null" {
		return nil
	}
	return a.args[i]
}

// getAll decodes the first len(vs) arguments, all required.
func (a jsonArgs) getAll(vs ...any) error {
	if err := a.want(len(vs)); err != nil {
		return err
	}
	for i, v := range vs {
		if err := a.get(i, v); err != nil {
			return err
		}
	}
	return nil
}

func dispatchJSON(ctx context.Context, impl CPI, req *JSONRequest) (_ any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = panicError(req.Method, r)
		}
	}()
	a := jsonArgs{method: req.Method, args: req.Arguments}
	var s1, s2 string
	var md map[string]string
	var n int64
	var tags map[string]string
	if raw := req.Context["tags"]; len(raw) > 0 {
		if err := json.Unmarshal(raw, &tags); err != nil {
			return nil, &Error{Code: CodeUnknown, Message: fmt.Sprintf("%s: context.tags: %v", req.Method, err)}
		}
	}
	switch strings.ToLower(req.Method) {
	case "info":
		return impl.Info(ctx)
	case "create_stemcell":
		if err := a.getAll(&s1); err != nil {
			return nil, err
		}
		return impl.CreateStemcell(ctx, CreateStemcellRequest{ImagePath: s1, CloudProperties: a.raw(1)})
	case "delete_stemcell":
		if err := a.getAll(&s1); err != nil {
			return nil, err
		}
		return nil, impl.DeleteStemcell(ctx, s1)
	case "create_vm":
		// [agent_id, stemcell_cid, cloud_properties, networks, disk_cids, env]
		var nets map[string]Network
		var disks []string
		if err := a.want(4); err != nil {
			return nil, err
		}
		for i, v := range []any{&s1, &s2, nil, &nets, &disks} {
			if v == nil {
				continue
			}
			if err := a.get(i, v); err != nil {
				return nil, err
			}
		}
		res, err := impl.CreateVM(ctx, CreateVMRequest{
			AgentID: s1, StemcellCID: s2, CloudProperties: a.raw(2), Networks: nets,
			DiskCIDs: disks, Env: a.raw(5), AgentSettings: req.Context["agent_settings"], Tags: tags,
		})
		if err != nil {
			return nil, err
		}
		return []any{res.CID, res.Networks}, nil
	case "delete_vm":
		if err := a.getAll(&s1); err != nil {
			return nil, err
		}
		return nil, impl.DeleteVM(ctx, s1)
	case "has_vm":
		if err := a.getAll(&s1); err != nil {
			return nil, err
		}
		return impl.HasVM(ctx, s1)
	case "reboot_vm":
		if err := a.getAll(&s1); err != nil {
			return nil, err
		}
		return nil, impl.RebootVM(ctx, s1)
	case "set_vm_metadata":
		if err := a.getAll(&s1, &md); err != nil {
			return nil, err
		}
		return nil, impl.SetVMMetadata(ctx, s1, md)
	case "calculate_vm_cloud_properties":
		var res VMResources
		if err := a.getAll(&res); err != nil {
			return nil, err
		}
		return impl.CalculateVMCloudProperties(ctx, res)
	case "create_disk":
		// [size, cloud_properties, vm_locality]
		if err := a.want(1); err != nil {
			return nil, err
		}
		if err := a.get(0, &n); err != nil {
			return nil, err
		}
		if err := a.get(2, &s1); err != nil {
			return nil, err
		}
		return impl.CreateDisk(ctx, CreateDiskRequest{SizeMB: n, CloudProperties: a.raw(1), VMCID: s1, Tags: tags})
	case "delete_disk":
		if err := a.getAll(&s1); err != nil {
			return nil, err
		}
		return nil, impl.DeleteDisk(ctx, s1)
	case "resize_disk":
		if err := a.getAll(&s1, &n); err != nil {
			return nil, err
		}
		return nil, impl.ResizeDisk(ctx, s1, n)
	case "attach_disk":
		if err := a.getAll(&s1, &s2); err != nil {
			return nil, err
		}
		return impl.AttachDisk(ctx, s1, s2)
	case "detach_disk":
		if err := a.getAll(&s1, &s2); err != nil {
			return nil, err
		}
		return nil, impl.DetachDisk(ctx, s1, s2)
	case "has_disk":
		if err := a.getAll(&s1); err != nil {
			return nil, err
		}
		return impl.HasDisk(ctx, s1)
	case "get_disks":
		if err := a.getAll(&s1); err != nil {
			return nil, err
		}
		disks, err := impl.GetDisks(ctx, s1)
		if disks == nil && err == nil {
			disks = []string{}
		}
		return disks, err
	case "set_disk_metadata":
		if err := a.getAll(&s1, &md); err != nil {
			return nil, err
		}
		return nil, impl.SetDiskMetadata(ctx, s1, md)
	case "snapshot_disk":
		if err := a.want(1); err != nil {
			return nil, err
		}
		if err := a.get(0, &s1); err != nil {
			return nil, err
		}
		if err := a.get(1, &md); err != nil {
			return nil, err
		}
		return impl.SnapshotDisk(ctx, s1, md)
	case "delete_snapshot":
		if err := a.getAll(&s1); err != nil {
			return nil, err
		}
		return nil, impl.DeleteSnapshot(ctx, s1)
	case "list_vms":
		var f ListFilter
		if err := a.get(0, &f); err != nil {
			return nil, err
		}
		vms, err := impl.ListVMs(ctx, f)
		if vms == nil && err == nil {
			vms = []VMInfo{}
		}
		return vms, err
	case "list_disks":
		var f ListFilter
		if err := a.get(0, &f); err != nil {
			return nil, err
		}
		disks, err := impl.ListDisks(ctx, f)
		if disks == nil && err == nil {
			disks = []DiskInfo{}
		}
		return disks, err
	default:
		return nil, &Error{Code: CodeNotImplemented, Message: fmt.Sprintf("unknown method %q", req.Method)}
	}
}
