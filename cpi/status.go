package cpi

import (
	"context"
	"errors"
	"fmt"

	cpiv1 "github.com/compleat/compleat/cpi/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// grpcCode is the gRPC status code that carries a CPI code. Callers act on
// the Error detail, not on this; it only makes the status readable to
// generic gRPC tooling.
func grpcCode(c Code) codes.Code {
	switch c {
	case CodeVMNotFound, CodeDiskNotFound, CodeStemcellNotFound, CodeSnapshotNotFound:
		return codes.NotFound
	case CodeNotImplemented:
		return codes.Unimplemented
	case CodeInvalidCloudProperties:
		return codes.InvalidArgument
	case CodeVMCreationFailed:
		return codes.Aborted
	default:
		return codes.Unknown
	}
}

// toStatus turns an error returned by a CPI implementation into the gRPC
// status error that crosses the process boundary. The full message (with
// the implementation's wrapping context) travels; the code, field and
// retryable flag travel in an Error detail.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	detail := &cpiv1.Error{Code: string(CodeUnknown), Message: err.Error()}
	var e *Error
	if errors.As(err, &e) {
		detail.Code = string(e.Code)
		detail.Field = e.Field
		detail.Retryable = e.Retryable
	}
	st, serr := status.New(grpcCode(Code(detail.Code)), err.Error()).WithDetails(detail)
	if serr != nil {
		return status.Error(codes.Unknown, err.Error())
	}
	return st.Err()
}

// fromStatus turns a gRPC error received from a plugin back into the error
// the plugin returned: an *Error when the status carries an Error detail,
// context.Canceled or context.DeadlineExceeded (wrapped) for those codes,
// ErrNotImplemented for a method the plugin's server does not know (an
// older plugin). Any other status is returned as it is: a transport failure
// whose meaning the caller (cpi/host) decides.
func fromStatus(method string, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	for _, d := range st.Details() {
		if e, ok := d.(*cpiv1.Error); ok {
			return &Error{Code: Code(e.GetCode()), Message: e.GetMessage(), Field: e.GetField(), Retryable: e.GetRetryable()}
		}
	}
	switch st.Code() {
	case codes.Canceled:
		return fmt.Errorf("cpi %s: %s: %w", method, st.Message(), context.Canceled)
	case codes.DeadlineExceeded:
		return fmt.Errorf("cpi %s: %s: %w", method, st.Message(), context.DeadlineExceeded)
	case codes.Unimplemented:
		return &Error{Code: CodeNotImplemented, Message: fmt.Sprintf("cpi %s: %s", method, st.Message())}
	}
	return err
}
