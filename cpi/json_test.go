package cpi_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/cpitest"
)

// serveJSON sends one request to ServeJSON and decodes the response.
func serveJSON(t *testing.T, impl cpi.CPI, req string) (cpi.JSONResponse, int) {
	t.Helper()
	var out bytes.Buffer
	status := cpi.ServeJSON(t.Context(), impl, strings.NewReader(req), &out)
	var resp cpi.JSONResponse
	if err := json.Unmarshal(out.Bytes(), &resp); err != nil {
		t.Fatalf("response %q: %v", out.String(), err)
	}
	return resp, status
}

func TestServeJSONLifecycle(t *testing.T) {
	f := cpitest.NewFake()
	resp, status := serveJSON(t, f, `{"method":"info","arguments":[],"context":{"director_uuid":"d"}}`)
	if status != 0 || resp.Error != nil || !strings.Contains(string(resp.Result), `"api_version":2`) {
		t.Fatalf("info = %s %+v %d", resp.Result, resp.Error, status)
	}

	resp, _ = serveJSON(t, f, `{"method":"create_stemcell","arguments":["/img",{}]}`)
	var sc string
	if err := json.Unmarshal(resp.Result, &sc); err != nil || sc == "" {
		t.Fatalf("create_stemcell = %s %+v", resp.Result, resp.Error)
	}

	resp, _ = serveJSON(t, f, `{"method":"create_vm","arguments":["agent-1","`+sc+`",{"instance_type":"small"},
		{"default":{"type":"dynamic","default":["dns","gateway"]}},[],{"bosh":{}}],
		"context":{"agent_settings":{"agent_id":"agent-1"}}}`)
	var result []json.RawMessage
	if err := json.Unmarshal(resp.Result, &result); err != nil || len(result) != 2 {
		t.Fatalf("create_vm = %s %+v", resp.Result, resp.Error)
	}
	var cid string
	json.Unmarshal(result[0], &cid)
	vm, ok := f.VM(cid)
	if !ok || vm.AgentID != "agent-1" || !strings.Contains(string(vm.AgentSettings), `"agent_id":"agent-1"`) {
		t.Fatalf("vm %s = %+v", cid, vm)
	}
	var nets map[string]cpi.Network
	json.Unmarshal(result[1], &nets)
	if nets["default"].IP == "" {
		t.Errorf("create_vm networks %s lack the dynamic ip", result[1])
	}

	resp, _ = serveJSON(t, f, `{"method":"has_vm","arguments":["`+cid+`"]}`)
	if string(resp.Result) != "true" {
		t.Errorf("has_vm = %s %+v", resp.Result, resp.Error)
	}
	resp, _ = serveJSON(t, f, `{"method":"create_disk","arguments":[100,{},"`+cid+`"]}`)
	var disk string
	json.Unmarshal(resp.Result, &disk)
	resp, _ = serveJSON(t, f, `{"method":"attach_disk","arguments":["`+cid+`","`+disk+`"]}`)
	if !strings.Contains(string(resp.Result), `"path"`) {
		t.Errorf("attach_disk = %s %+v", resp.Result, resp.Error)
	}
	resp, _ = serveJSON(t, f, `{"method":"get_disks","arguments":["`+cid+`"]}`)
	if string(resp.Result) != `["`+disk+`"]` {
		t.Errorf("get_disks = %s", resp.Result)
	}
	resp, _ = serveJSON(t, f, `{"method":"delete_vm","arguments":["`+cid+`"]}`)
	if resp.Error != nil || string(resp.Result) != "null" {
		t.Errorf("delete_vm = %s %+v", resp.Result, resp.Error)
	}
}

func TestServeJSONErrors(t *testing.T) {
	f := cpitest.NewFake()
	for _, tc := range []struct {
		req, typ string
		code     cpi.Code
		field    string
		status   int
	}{
		{`{"method":"reboot_vm","arguments":["missing"]}`, "Bosh::Clouds::VMNotFound", cpi.CodeVMNotFound, "", 0},
		{`{"method":"attach_disk","arguments":["missing","d"]}`, "Bosh::Clouds::VMNotFound", cpi.CodeVMNotFound, "", 0},
		{`{"method":"resize_disk","arguments":["missing", 10]}`, "Bosh::Clouds::DiskNotFound", cpi.CodeDiskNotFound, "", 0},
		{`{"method":"create_vm","arguments":["a","s",{"instance_type":1},{},[],{}]}`, "Bosh::Clouds::CloudError", cpi.CodeInvalidCloudProperties, "instance_type", 0},
		{`{"method":"create_vm","arguments":["a","missing",{},{},[],{}]}`, "Bosh::Clouds::CloudError", cpi.CodeStemcellNotFound, "", 0},
		{`{"method":"no_such_method","arguments":[]}`, "Bosh::Clouds::NotImplemented", cpi.CodeNotImplemented, "", 0},
		{`{"method":"has_vm","arguments":[]}`, "Bosh::Clouds::CloudError", cpi.CodeUnknown, "", 0},
		{`{"method":"has_vm","arguments":[42]}`, "Bosh::Clouds::CloudError", cpi.CodeUnknown, "", 0},
		{`not json`, "Bosh::Clouds::InvalidCall", cpi.CodeUnknown, "", 1},
	} {
		resp, status := serveJSON(t, f, tc.req)
		if resp.Error == nil {
			t.Errorf("%s: no error, result %s", tc.req, resp.Result)
			continue
		}
		if resp.Error.Type != tc.typ || resp.Error.Code != tc.code || resp.Error.Field != tc.field || status != tc.status {
			t.Errorf("%s: error %+v status %d, want type %s code %s field %q status %d", tc.req, resp.Error, status, tc.typ, tc.code, tc.field, tc.status)
		}
		if string(resp.Result) != "null" {
			t.Errorf("%s: result %s alongside an error", tc.req, resp.Result)
		}
	}
}

func TestJSONErrorFromBOSHType(t *testing.T) {
	// A BOSH CPI sets only type, message and ok_to_retry.
	je := cpi.JSONError{Type: "Bosh::Clouds::VMCreationFailed", Message: "no capacity", OkToRetry: true}
	err := je.Err()
	if err.Code != cpi.CodeVMCreationFailed || !err.Retryable {
		t.Errorf("Err() = %#v", err)
	}
	if (&cpi.JSONError{Type: "Bosh::Clouds::CloudError"}).Err().Code != cpi.CodeUnknown {
		t.Error("CloudError should decode as Unknown")
	}
}

// TestJSONLegacyNotImplemented: the ways older BOSH CPIs refuse a method
// they do not know read as NotImplemented, as BOSH's director reads them.
func TestJSONLegacyNotImplemented(t *testing.T) {
	for _, je := range []cpi.JSONError{
		{Type: "Bosh::Clouds::NotImplemented", Message: "list_vms"},
		{Type: "Bosh::Clouds::InvalidCall", Message: "Method is not known, got 'list_vms'"},
		{Type: "Bosh::Clouds::CloudError", Message: "Invalid Method: list_vms"},
	} {
		if err := je.Err(); !errors.Is(err, cpi.ErrNotImplemented) {
			t.Errorf("%+v reads as %v, want NotImplemented", je, err.Code)
		}
	}
	if err := (&cpi.JSONError{Type: "Bosh::Clouds::CloudError", Message: "quota exceeded"}).Err(); errors.Is(err, cpi.ErrNotImplemented) {
		t.Errorf("a plain CloudError reads as NotImplemented")
	}
}
