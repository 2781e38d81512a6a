package openstack

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/compleat/compleat/cpi"
)

var durationType = reflect.TypeOf(time.Duration(0))

// statusOf is the HTTP status of an OpenStack answer (0 when err is not
// one).
func statusOf(err error) int {
	var re gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &re) {
		return re.Actual
	}
	return 0
}

func isNotFound(err error) bool { return gophercloud.ResponseCodeIs(err, http.StatusNotFound) }

// apiMessage is the message of an OpenStack error answer: Nova's and
// Cinder's {"itemNotFound": {"message": ...}}, Neutron's
// {"NeutronError": {"type", "message"}}, Keystone's {"error": {...}}, or
// Glance's text; "" when err is not an answer.
func apiMessage(err error) string {
	var re gophercloud.ErrUnexpectedResponseCode
	if !errors.As(err, &re) {
		return ""
	}
	var doc map[string]json.RawMessage
	if json.Unmarshal(re.Body, &doc) == nil {
		for k, raw := range doc {
			var e struct {
				Message string `json:"message"`
				Type    string `json:"type"`
			}
			if json.Unmarshal(raw, &e) == nil && e.Message != "" {
				if k == "NeutronError" && e.Type != "" {
					return e.Type + ": " + e.Message
				}
				return e.Message
			}
		}
	}
	// Glance answers a small HTML page: keep its text.
	text := string(re.Body)
	for strings.Contains(text, "<") {
		i := strings.Index(text, "<")
		j := strings.Index(text[i:], ">")
		if j < 0 {
			break
		}
		text = text[:i] + " " + text[i+j+1:]
	}
	return strings.Join(strings.Fields(text), " ")
}

// neutronType is the type of a Neutron error answer
// (IpAddressAlreadyAllocated, ...).
func neutronType(err error) string {
	var re gophercloud.ErrUnexpectedResponseCode
	if !errors.As(err, &re) {
		return ""
	}
	var doc struct {
		NeutronError struct {
			Type string `json:"type"`
		} `json:"NeutronError"`
	}
	_ = json.Unmarshal(re.Body, &doc)
	return doc.NeutronError.Type
}

// shortError is err as one line: an answer's status and message instead
// of gophercloud's "Expected HTTP response code [...] when accessing
// [...]" with the whole body.
func shortError(err error) string {
	var re gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &re) {
		msg := apiMessage(err)
		if msg == "" {
			msg = http.StatusText(re.Actual)
		}
		return fmt.Sprintf("%s %s: %d %s", re.Method, redactURL(re.URL), re.Actual, msg)
	}
	return err.Error()
}

// answerError is an OpenStack answer said briefly, with the original
// error kept for errors.Is and errors.As.
type answerError struct{ err error }

func (a answerError) Error() string { return shortError(a.err) }
func (a answerError) Unwrap() error { return a.err }

// classify turns a failed call described by what into the contract's
// error: a 404 becomes the notFound sentinel (when given), throttling and
// unavailability are marked retryable, and context errors stay as they
// are so that errors.Is(err, context.DeadlineExceeded) holds.
func classify(what string, err error, notFound *cpi.Error) error {
	if err == nil {
		return nil
	}
	if notFound != nil && isNotFound(err) {
		return fmt.Errorf("%s: %w%w", what, &cpi.Error{Code: notFound.Code, Message: shortError(err)}, wrapOnly{err})
	}
	switch statusOf(err) {
	case http.StatusTooManyRequests, http.StatusRequestEntityTooLarge, http.StatusServiceUnavailable:
		return fmt.Errorf("%s: %w%w", what, cpi.Retryable(cpi.CodeUnknown, answerError{err}), wrapOnly{err})
	}
	return fmt.Errorf("%s: %w", what, answerError{err})
}

// wrapOnly carries an error for errors.Is and errors.As without adding to
// the message (the *cpi.Error beside it already says it).
type wrapOnly struct{ err error }

func (w wrapOnly) Error() string { return "" }
func (w wrapOnly) Unwrap() error { return w.err }

// creationFailed is cpi.ErrVMCreationFailed for cause; errors.Is also
// finds cause (a context error, say) in it.
func creationFailed(what string, cause error, retryable bool) error {
	e := &cpi.Error{Code: cpi.CodeVMCreationFailed, Message: fmt.Sprintf("%s: %v", what, cause), Retryable: retryable}
	return fmt.Errorf("%w%w", e, wrapOnly{cause})
}

// decodeObject decodes a JSON object into v, naming the offending field
// in a cpi.ErrInvalidCloudProperties. Unknown keys are refused when
// strict.
func decodeObject(raw json.RawMessage, v any, strict bool) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return cpi.InvalidCloudProperty("", "must be a JSON object, got %s", kindOfJSON(raw))
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return cpi.InvalidCloudProperty(te.Field, "must be %s, got %s", kind(te.Type), te.Value)
		}
		if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return cpi.InvalidCloudProperty(strings.Trim(name, `"`), "unknown property")
		}
		return cpi.InvalidCloudProperty("", "%v", err)
	}
	return nil
}

// kind names a Go type the way an operator writing YAML thinks of it.
func kind(t reflect.Type) string {
	if t == nil {
		return "a value"
	}
	if t == durationType || t == reflect.TypeOf(Seconds(0)) {
		return "a number of seconds or a duration such as \"5m\""
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice:
		return "a list"
	}
	return "an object"
}

// kindOfJSON names the kind of a JSON document by its first byte, without
// echoing it (properties may hold credentials).
func kindOfJSON(b []byte) string {
	if len(b) == 0 {
		return "nothing"
	}
	switch b[0] {
	case '{':
		return "an object"
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

// orEmpty reads a missing or null document as {}.
func orEmpty(raw json.RawMessage) json.RawMessage {
	if t := bytes.TrimSpace(raw); len(t) == 0 || string(t) == "null" {
		return json.RawMessage(`{}`)
	}
	return raw
}

// errorsIsNotFound reports whether err carries the sentinel.
func errorsIsNotFound(err error, sentinel *cpi.Error) bool { return errors.Is(err, sentinel) }

// newUUID returns a random UUID (version 4).
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	s := hex.EncodeToString(b[:])
	return s[:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:]
}
