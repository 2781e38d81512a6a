package azure

import (
	"net/http"
	"strconv"
	"time"
)

// operation is a long-running operation.
type operation struct {
	id     string
	start  time.Time
	status string // InProgress, Succeeded, Failed
	err    *armError
	// result is what a Location poll answers once the operation succeeded
	// (nil: 204 No Content).
	result func() map[string]any
}

// Operation statuses, as ARM spells them.
const (
	statusInProgress = "InProgress"
	statusSucceeded  = "Succeeded"
	statusFailed     = "Failed"
)

// begin starts an operation; finish runs (under s.mu) when it ends well
// and returns what to tell the hooks afterwards. A request with an Async
// fault ends Failed after running abort (under s.mu) instead; with a Hang
// fault it never ends. The caller holds s.mu.
func (s *Server) begin(q *request, finish func() func(), abort func(*armError)) *operation {
	op := &operation{id: newID(), start: time.Now(), status: statusInProgress}
	s.pruneOps()
	s.ops[op.id] = op
	if q.fault != nil && q.fault.Hang {
		return op
	}
	time.AfterFunc(s.cfg.OperationDelay, func() {
		var after func()
		s.mu.Lock()
		if q.fault != nil && q.fault.Async {
			op.status = statusFailed
			op.err = errf(http.StatusOK, q.fault.Code, "%s", q.fault.Message)
			if abort != nil {
				abort(op.err)
			}
		} else {
			op.status = statusSucceeded
			if finish != nil {
				after = finish()
			}
		}
		s.mu.Unlock()
		if after != nil {
			after()
		}
	})
	return op
}

// asyncHeaders points the client at the operation: Azure-AsyncOperation
// (and Location when location is true), with a Retry-After.
func (s *Server) asyncHeaders(w http.ResponseWriter, op *operation, provider string, location bool) {
	base := s.url + "/subscriptions/" + s.cfg.SubscriptionID + "/providers/" + provider + "/locations/" + s.cfg.Location
	if provider != "" {
		w.Header().Set("Azure-AsyncOperation", base+"/operations/"+op.id+"?api-version=2024-07-01")
	}
	if location {
		w.Header().Set("Location", base+"/operationresults/"+op.id+"?api-version=2024-07-01")
	}
	s.retryAfter(w)
}

// locationHeaders points the client at the operation through Location
// only (as the disk resource provider answers).
func (s *Server) locationHeaders(w http.ResponseWriter, op *operation, provider string) {
	w.Header().Set("Location", s.url+"/subscriptions/"+s.cfg.SubscriptionID+"/providers/"+provider+"/locations/"+s.cfg.Location+"/operationresults/"+op.id+"?api-version=2024-03-02")
	s.retryAfter(w)
}

func (s *Server) retryAfter(w http.ResponseWriter) {
	d := s.cfg.PollAfter
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int(d/time.Second))))
	if d < time.Second {
		w.Header().Set("x-ms-retry-after-ms", strconv.Itoa(int(d/time.Millisecond)))
	}
}

// operationStatus answers a poll: the Azure-AsyncOperation status document,
// or for a Location poll 202 while running and the result after.
func (s *Server) operationStatus(q *request, location bool, id string) {
	s.mu.Lock()
	op, ok := s.ops[id]
	var status string
	var opErr *armError
	var result map[string]any
	if ok {
		status, opErr = op.status, op.err
		if status == statusSucceeded && op.result != nil {
			result = op.result()
		}
	}
	s.mu.Unlock()
	if !ok {
		writeError(q.w, errf(http.StatusNotFound, "NotFound", "The operation '%s' was not found.", id))
		return
	}
	if location {
		switch status {
		case statusInProgress:
			q.w.Header().Set("Location", s.url+q.r.URL.RequestURI())
			s.retryAfter(q.w)
			q.w.WriteHeader(http.StatusAccepted)
		case statusFailed:
			writeError(q.w, &armError{status: http.StatusBadRequest, code: opErr.code, message: opErr.message})
		default:
			if result == nil {
				q.w.WriteHeader(http.StatusNoContent)
				return
			}
			writeJSON(q.w, http.StatusOK, result)
		}
		return
	}
	doc := map[string]any{"name": id, "status": status, "startTime": op.start.UTC().Format(time.RFC3339Nano)}
	if status == statusInProgress {
		s.retryAfter(q.w)
	} else {
		doc["endTime"] = time.Now().UTC().Format(time.RFC3339Nano)
	}
	if opErr != nil {
		doc["error"] = map[string]any{"code": opErr.code, "message": opErr.message}
	}
	writeJSON(q.w, http.StatusOK, doc)
}

// opRetention is how long an ended operation can still be polled.
const opRetention = 15 * time.Minute

// pruneOps forgets operations that ended long ago, so that a simulator
// running for days does not grow. The caller holds s.mu.
func (s *Server) pruneOps() {
	if len(s.ops) < 1024 {
		return
	}
	for id, op := range s.ops {
		if op.status != statusInProgress && time.Since(op.start) > opRetention {
			delete(s.ops, id)
		}
	}
}
