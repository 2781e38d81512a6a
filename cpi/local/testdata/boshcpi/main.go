// Command boshcpi is the local CPI behind BOSH's external CPI protocol,
// called the way BOSH's director calls a CPI executable: no arguments, one
// JSON request on stdin, one JSON response on stdout, and its configuration
// in the request's context (the cpi config entry's properties merged in,
// beside director_uuid and request_id) — it reads no environment variable
// and speaks no gRPC. It is the test CPI of the director's `type: external`
// cpi config entries (docs/bosh-compat.md).
//
// Like a BOSH CPI it refuses a request without api_version 2, director_uuid
// or request_id; it answers errors with BOSH's error classes only
// (Bosh::Clouds::VMNotFound, …), keeping Compleat's code extension just for
// the errors BOSH has no class for (invalid cloud properties); and it
// returns its log in the response's log field.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/local"
)

// boshClasses are the error classes BOSH's director knows.
var boshClasses = map[string]bool{
	"Bosh::Clouds::VMNotFound":       true,
	"Bosh::Clouds::DiskNotFound":     true,
	"Bosh::Clouds::NotImplemented":   true,
	"Bosh::Clouds::VMCreationFailed": true,
}

func main() {
	os.Exit(run(os.Stdin, os.Stdout))
}

func run(stdin io.Reader, stdout io.Writer) int {
	var logBuf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	fail := func(format string, args ...any) int {
		resp := cpi.JSONResponse{Result: json.RawMessage("null"), Error: &cpi.JSONError{Type: "Bosh::Clouds::CloudError", Message: fmt.Sprintf(format, args...)}, Log: logBuf.String()}
		json.NewEncoder(stdout).Encode(resp) //nolint:errcheck // nothing else to tell
		return 0
	}
	raw, err := io.ReadAll(io.LimitReader(stdin, 64<<20))
	if err != nil {
		return fail("read request: %v", err)
	}
	var req cpi.JSONRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return fail("request is not JSON: %v", err)
	}
	if req.APIVersion != 2 {
		return fail("api_version %d: this CPI speaks version 2", req.APIVersion)
	}
	var uuid, requestID string
	json.Unmarshal(req.Context["director_uuid"], &uuid)   //nolint:errcheck // checked below
	json.Unmarshal(req.Context["request_id"], &requestID) //nolint:errcheck // checked below
	if uuid == "" || requestID == "" {
		return fail("context needs director_uuid and request_id")
	}
	logger = logger.With("request_id", requestID)
	logger.Info("request", "method", req.Method, "director_uuid", uuid)
	props := map[string]json.RawMessage{}
	for k, v := range req.Context {
		switch k {
		case "director_uuid", "request_id", "agent_settings", "tags":
		default:
			props[k] = v
		}
	}
	propsJSON, _ := json.Marshal(props)
	impl, err := local.New(propsJSON, local.WithLogger(logger))
	if err != nil {
		return fail("configuration in context: %v", err)
	}
	var out bytes.Buffer
	if status := cpi.ServeJSON(context.Background(), impl, bytes.NewReader(raw), &out); status != 0 {
		return fail("could not answer %s", req.Method)
	}
	var resp cpi.JSONResponse
	if err := json.Unmarshal(out.Bytes(), &resp); err != nil {
		return fail("encode response: %v", err)
	}
	if resp.Error != nil && boshClasses[resp.Error.Type] {
		resp.Error.Code, resp.Error.Field = "", ""
	}
	if resp.Error != nil {
		logger.Info("error", "method", req.Method, "type", resp.Error.Type, "message", resp.Error.Message)
	}
	resp.Log = logBuf.String()
	if err := json.NewEncoder(stdout).Encode(resp); err != nil {
		return 1
	}
	return 0
}
