package aws

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/smithy-go"

	"github.com/compleat/compleat/cpi"
)

// EC2 error codes the plugin turns into the contract's codes.
var (
	notFoundCodes = map[string]*cpi.Error{
		"InvalidInstanceID.NotFound":                  cpi.ErrVMNotFound,
		"InvalidInstanceID.Malformed":                 cpi.ErrVMNotFound,
		"InvalidVolume.NotFound":                      cpi.ErrDiskNotFound,
		"InvalidVolumeID.Malformed":                   cpi.ErrDiskNotFound,
		"InvalidSnapshot.NotFound":                    cpi.ErrSnapshotNotFound,
		"InvalidSnapshotID.Malformed":                 cpi.ErrSnapshotNotFound,
		"InvalidAMIID.NotFound":                       cpi.ErrStemcellNotFound,
		"InvalidAMIID.Malformed":                      cpi.ErrStemcellNotFound,
		"InvalidAMIID.Unavailable":                    cpi.ErrStemcellNotFound,
		"InvalidLaunchTemplateId.NotFound":            cpi.ErrStemcellNotFound,
		"InvalidLaunchTemplateId.Malformed":           cpi.ErrStemcellNotFound,
		"InvalidLaunchTemplateName.NotFoundException": cpi.ErrStemcellNotFound,
	}
	// retryableCodes are the answers after which the same call may succeed
	// later: throttling and capacity.
	retryableCodes = map[string]bool{
		"RequestLimitExceeded":                 true,
		"Throttling":                           true,
		"ThrottlingException":                  true,
		"RequestThrottled":                     true,
		"InsufficientInstanceCapacity":         true,
		"Server.InsufficientInstanceCapacity":  true,
		"InsufficientCapacity":                 true,
		"InsufficientHostCapacity":             true,
		"InsufficientReservedInstanceCapacity": true,
		"InsufficientAddressCapacity":          true,
		"InsufficientVolumeCapacity":           true,
		"InsufficientFreeAddressesInSubnet":    true,
		"ServiceUnavailable":                   true,
		"Unavailable":                          true,
		"InternalError":                        true,
	}
)

// apiCode is the EC2 error code of err ("" when err is not an EC2 answer).
func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// isNotFound reports whether err is EC2's "no such object" (or a malformed
// id, which cannot name an object either).
func isNotFound(err error) bool {
	_, ok := notFoundCodes[apiCode(err)]
	return ok
}

// isRetryable reports whether EC2 said throttling or capacity.
func isRetryable(err error) bool {
	return retryableCodes[apiCode(err)]
}

// classify turns an EC2 failure of the call described by what into the
// contract's error: a not-found code becomes the matching sentinel (unless
// notFound overrides it), throttling and capacity are marked retryable, and
// context errors stay as they are so errors.Is(err, context.DeadlineExceeded)
// holds.
func classify(what string, err error, notFound *cpi.Error) error {
	if err == nil {
		return nil
	}
	if s, ok := notFoundCodes[apiCode(err)]; ok {
		if notFound != nil {
			s = notFound
		}
		return fmt.Errorf("%s: %w%w", what, &cpi.Error{Code: s.Code, Message: err.Error()}, wrapOnly{err})
	}
	if isRetryable(err) {
		return fmt.Errorf("%s: %w%w", what, cpi.Retryable(cpi.CodeUnknown, err), wrapOnly{err})
	}
	return fmt.Errorf("%s: %w", what, err)
}

// wrapOnly carries an error for errors.Is and errors.As without adding to
// the message (the *cpi.Error beside it already says it).
type wrapOnly struct{ err error }

func (w wrapOnly) Error() string { return "" }
func (w wrapOnly) Unwrap() error { return w.err }

// decodeObject decodes a JSON object into v, naming the offending field in
// a cpi.ErrInvalidCloudProperties. Unknown keys are refused when strict.
func decodeObject(raw json.RawMessage, v any, strict bool) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return cpi.InvalidCloudProperty("", "must be a JSON object, got %s", jsonKind(raw))
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return cpi.InvalidCloudProperty(te.Field, "must be %s, got %s", kind(te.Type.String()), te.Value)
		}
		if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return cpi.InvalidCloudProperty(strings.Trim(name, `"`), "unknown property")
		}
		return cpi.InvalidCloudProperty("", "%v", err)
	}
	return nil
}

// kind names a Go type the way an operator writing YAML thinks of it.
func kind(goType string) string {
	switch {
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "*int"):
		return "an integer"
	case strings.HasPrefix(goType, "float"), strings.HasPrefix(goType, "*float"):
		return "a number"
	case strings.HasPrefix(goType, "string"), strings.HasPrefix(goType, "*string"):
		return "a string"
	case strings.HasPrefix(goType, "bool"), strings.HasPrefix(goType, "*bool"):
		return "true or false"
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "map"), strings.Contains(goType, "."):
		return "an object"
	}
	return goType
}

// jsonKind names the kind of a JSON document by its first byte, without
// echoing it (properties may hold credentials).
func jsonKind(b []byte) string {
	if len(b) == 0 {
		return "nothing"
	}
	switch b[0] {
	case '[':
		return "a list"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number or invalid JSON"
}

// notFoundError is EC2's answer for a missing object, made up locally when
// an id cannot name one (so no call is made).
func notFoundError(code, what string) error {
	return &smithy.GenericAPIError{Code: code, Message: what + " does not exist", Fault: smithy.FaultClient}
}
