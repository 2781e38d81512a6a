package azure

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"

	"github.com/compleat/compleat/cpi"
)

// capacityCodes are Azure's answers when a region or zone has no room for
// the VM size right now: the same create may succeed later.
var capacityCodes = map[string]bool{
	"AllocationFailed":                         true,
	"ZonalAllocationFailed":                    true,
	"OverconstrainedAllocationRequest":         true,
	"OverconstrainedZonalAllocationRequest":    true,
	"SkuNotAvailable":                          true,
	"AllocationFailedVMSizeNotAvailable":       false,
	"OperationNotAllowed":                      false,
	"TooManyRequests":                          true,
	"RetryableError":                           true,
	"InternalExecutionError":                   true,
	"InternalOperationError":                   true,
	"ServerTimeout":                            true,
	"OperationPreempted":                       true,
	"NetworkingInternalOperationError":         true,
	"InternalServerError":                      true,
	"SubscriptionRequestsThrottled":            true,
	"ResourceGroupBeingDeleted":                false,
	"OSProvisioningTimedOut":                   false,
	"VMExtensionProvisioningTimeout":           false,
	"AllocationFailedDueToCapacityConstraints": true,
}

// respError is err's Azure answer, if it is one.
func respError(err error) (*azcore.ResponseError, bool) {
	var re *azcore.ResponseError
	ok := errors.As(err, &re)
	return re, ok
}

// isNotFound reports whether Azure said the resource (or its resource
// group, or its parent) does not exist.
func isNotFound(err error) bool {
	re, ok := respError(err)
	return ok && re.StatusCode == http.StatusNotFound
}

// isRetryable reports whether Azure said throttling, capacity or a
// transient fault, after the SDK's own retries.
func isRetryable(err error) bool {
	re, ok := respError(err)
	if !ok {
		return false
	}
	if capacityCodes[re.ErrorCode] {
		return true
	}
	switch re.StatusCode {
	case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// classify turns an Azure failure of the call described by what into the
// contract's error: a 404 becomes notFound (when given), throttling and
// transient faults are marked retryable, context errors stay as they are.
func classify(what string, err error, notFound *cpi.Error) error {
	if err == nil {
		return nil
	}
	if isNotFound(err) && notFound != nil {
		return fmt.Errorf("%s: %w%w", what, &cpi.Error{Code: notFound.Code, Message: summary(err)}, wrapOnly{err})
	}
	if isRetryable(err) {
		return fmt.Errorf("%s: %w%w", what, &cpi.Error{Code: cpi.CodeUnknown, Message: summary(err), Retryable: true}, wrapOnly{err})
	}
	return fmt.Errorf("%s: %s%w", what, summary(err), wrapOnly{err})
}

// summary is a one-line account of an Azure error: status, code and
// message (azcore's own text spans many lines and repeats the URL).
func summary(err error) string {
	re, ok := respError(err)
	if !ok {
		return err.Error()
	}
	msg := re.ErrorCode
	if m := responseMessage(re); m != "" {
		msg += ": " + m
	}
	return fmt.Sprintf("%d %s", re.StatusCode, msg)
}

// wrapOnly carries an error for errors.Is and errors.As without adding to
// the message.
type wrapOnly struct{ err error }

func (w wrapOnly) Error() string { return "" }
func (w wrapOnly) Unwrap() error { return w.err }

// creationFailed is cpi.ErrVMCreationFailed for cause, retryable when Azure
// said capacity or throttling.
func creationFailed(what string, cause error) error {
	e := &cpi.Error{Code: cpi.CodeVMCreationFailed, Message: fmt.Sprintf("%s: %s", what, summary(cause)), Retryable: isRetryable(cause)}
	return fmt.Errorf("%w%w", e, wrapOnly{cause})
}

// outcomeUnknown is cpi.ErrOutcomeUnknown: a long-running operation whose
// end was not seen. It is not retryable: the same create would find the
// VM's name taken; the director reconciles through ListVMs instead.
func outcomeUnknown(what string, cause error) error {
	e := &cpi.Error{Code: cpi.CodeOutcomeUnknown, Message: fmt.Sprintf("%s: outcome unknown: %v", what, cause)}
	return fmt.Errorf("%w%w", e, wrapOnly{cause})
}

// timedOut reports whether err is a context's end.
func timedOut(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// responseMessage is error.message of an Azure error body ("" if none).
func responseMessage(re *azcore.ResponseError) string {
	if re.RawResponse == nil {
		return ""
	}
	body, err := runtime.Payload(re.RawResponse)
	if err != nil {
		return ""
	}
	var doc struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &doc) != nil {
		return ""
	}
	return doc.Error.Message
}
