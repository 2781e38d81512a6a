package cpi

import (
	"errors"
	"fmt"
	"strings"
)

// Code classifies a CPI error. Codes, not messages, cross the plugin boundary.
type Code string

// The error codes of the contract.
const (
	CodeUnknown                Code = "Unknown"
	CodeVMNotFound             Code = "VMNotFound"
	CodeDiskNotFound           Code = "DiskNotFound"
	CodeStemcellNotFound       Code = "StemcellNotFound"
	CodeSnapshotNotFound       Code = "SnapshotNotFound"
	CodeNotImplemented         Code = "NotImplemented"
	CodeInvalidCloudProperties Code = "InvalidCloudProperties"
	CodeVMCreationFailed       Code = "VMCreationFailed"
	CodeOutcomeUnknown         Code = "OutcomeUnknown"
)

// Error is the one error type of the contract. Two Errors match with errors.Is
// when their codes are equal, so the sentinels below work across processes.
type Error struct {
	Code    Code
	Message string
	// Field names the offending cloud property (InvalidCloudProperties), as a
	// dotted path such as "ephemeral_disk.size".
	Field string
	// Retryable is BOSH's ok_to_retry: the same call may succeed if made again
	// (throttling, capacity).
	Retryable bool

	// wrapped is the error this one was made from (Errorf's %w, Retryable's
	// err), for errors.Is and errors.As inside the plugin. It does not cross
	// the process boundary: there the code decides.
	wrapped error
}

// Unwrap returns the error this one wraps (Errorf's %w operand, Retryable's
// err), or nil.
func (e *Error) Unwrap() error { return e.wrapped }

func (e *Error) Error() string {
	msg := e.Message
	if msg == "" {
		msg = string(e.Code)
	}
	// A message that crossed the plugin boundary already holds the field.
	if e.Field != "" && !strings.Contains(msg, e.Field+": ") {
		return fmt.Sprintf("%s: %s", e.Field, msg)
	}
	return msg
}

// Is reports whether target is an *Error with the same code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Sentinels, for errors.Is.
var (
	ErrVMNotFound             = &Error{Code: CodeVMNotFound, Message: "vm not found"}
	ErrDiskNotFound           = &Error{Code: CodeDiskNotFound, Message: "disk not found"}
	ErrStemcellNotFound       = &Error{Code: CodeStemcellNotFound, Message: "stemcell not found"}
	ErrSnapshotNotFound       = &Error{Code: CodeSnapshotNotFound, Message: "snapshot not found"}
	ErrNotImplemented         = &Error{Code: CodeNotImplemented, Message: "not implemented"}
	ErrInvalidCloudProperties = &Error{Code: CodeInvalidCloudProperties, Message: "invalid cloud properties"}
	ErrVMCreationFailed       = &Error{Code: CodeVMCreationFailed, Message: "vm creation failed"}
	// ErrOutcomeUnknown is returned by the host when the plugin died during a
	// call: the call may or may not have taken effect.
	ErrOutcomeUnknown = &Error{Code: CodeOutcomeUnknown, Message: "plugin exited during the call; outcome unknown"}
)

// Errorf returns an *Error with the code and a formatted message. Like
// fmt.Errorf, a %w verb wraps its operand, so that errors.Is and errors.As
// find it inside the plugin (os.ErrNotExist, a cloud SDK's error type);
// across the process boundary only the code, message, field and retryable
// flag travel.
func Errorf(code Code, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: code, Message: err.Error(), wrapped: errors.Unwrap(err)}
}

// InvalidCloudProperty returns ErrInvalidCloudProperties naming the field.
func InvalidCloudProperty(field, format string, args ...any) *Error {
	return &Error{Code: CodeInvalidCloudProperties, Field: field, Message: fmt.Sprintf(format, args...)}
}

// Retryable wraps err as a retryable error of the given code (BOSH's
// ok_to_retry). errors.Is(result, err) holds, as for any wrapping.
func Retryable(code Code, err error) *Error {
	return &Error{Code: code, Message: err.Error(), Retryable: true, wrapped: err}
}

// IsRetryable reports whether err, or an error it wraps, is a retryable *Error.
func IsRetryable(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Retryable
}
