package openstack

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Fault is an answer the cloud gives instead of doing what a request asks:
// throttling (429, 413 overLimit with Retry-After), a server error, or a
// dropped connection (Status DropConnection). Tests inject them.
type Fault struct {
	// Method and Path select requests: Method "" matches every method,
	// Path is a prefix of the URL path ("/compute/v2.1/servers").
	Method string
	Path   string
	// Status is the HTTP status answered; the body is the service's
	// error document for it.
	Status int
	// RetryAfter is the Retry-After header (and overLimit's retryAfter).
	RetryAfter string
	// Times is how many requests get the fault (0: until removed).
	Times int
	// Lost makes the cloud carry the request out and then drop the
	// connection before answering: a client cannot tell what happened
	// (Status is not used).
	Lost bool

	hits int
}

// DropConnection as a Fault's Status closes the connection without an
// answer (a network error to the client).
const DropConnection = -1

// InjectFault makes matching requests fail until Times are used up or
// remove is called.
func (c *Cloud) InjectFault(f Fault) (remove func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := &f
	c.faults = append(c.faults, p)
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, q := range c.faults {
			if q == p {
				c.faults = append(c.faults[:i], c.faults[i+1:]...)
				return
			}
		}
	}
}

// fault returns the fault a request gets, if any.
func (c *Cloud) fault(r *http.Request) *Fault {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, f := range c.faults {
		if (f.Method == "" || f.Method == r.Method) && strings.HasPrefix(r.URL.Path, f.Path) {
			f.hits++
			if f.Times > 0 && f.hits >= f.Times {
				c.faults = append(c.faults[:i], c.faults[i+1:]...)
			}
			cp := *f
			return &cp
		}
	}
	return nil
}

// service is one API of the cloud: its path prefix and how it writes
// errors.
type service int

const (
	keystone service = iota
	nova
	neutron
	cinder
	glance
)

// Handler is the cloud's HTTP API: Keystone under /identity, Nova under
// /compute, Neutron under /network, Cinder under /volume and Glance under
// /image, as the service catalog says.
func (c *Cloud) Handler() http.Handler {
	mux := http.NewServeMux()
	c.routeKeystone(mux)
	c.routeNova(mux)
	c.routeNeutron(mux)
	c.routeCinder(mux)
	c.routeGlance(mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, pattern := mux.Handler(r)
		c.mu.Lock()
		if !strings.HasPrefix(pattern, r.Method+" ") {
			pattern = r.Method + " " + pattern
		}
		c.requests[pattern]++
		c.mu.Unlock()
		w.Header().Set("X-Openstack-Request-Id", "req-"+newID())
		if f := c.fault(r); f != nil {
			if f.Lost {
				mux.ServeHTTP(discard{header: http.Header{}}, r)
				f.Status = DropConnection
			}
			c.answerFault(w, r, f)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func (c *Cloud) answerFault(w http.ResponseWriter, r *http.Request, f *Fault) {
	if f.Status == DropConnection {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	msg := http.StatusText(f.Status)
	switch f.Status {
	case http.StatusTooManyRequests, http.StatusRequestEntityTooLarge:
		msg = "This request was rate-limited."
	case http.StatusServiceUnavailable:
		msg = "The server is currently unavailable. Please try again at a later time."
	}
	writeError(w, serviceOf(r.URL.Path), f.Status, msg, f.RetryAfter)
}

func serviceOf(path string) service {
	switch {
	case strings.HasPrefix(path, "/compute"):
		return nova
	case strings.HasPrefix(path, "/network"):
		return neutron
	case strings.HasPrefix(path, "/volume"):
		return cinder
	case strings.HasPrefix(path, "/image"):
		return glance
	}
	return keystone
}

// apiError is an error answer: the status, the service's name for it and
// a message.
type apiError struct {
	status  int
	kind    string // Neutron's error type (NetworkNotFound, ...); others derive it
	message string
}

func (e *apiError) Error() string { return e.message }

func errorf(status int, format string, args ...any) *apiError {
	return &apiError{status: status, message: fmt.Sprintf(format, args...)}
}

func neutronErr(status int, kind, format string, args ...any) *apiError {
	return &apiError{status: status, kind: kind, message: fmt.Sprintf(format, args...)}
}

// writeError writes the error document each service answers with.
func writeError(w http.ResponseWriter, svc service, status int, message, retryAfter string) {
	writeAPIError(w, svc, &apiError{status: status, message: message}, retryAfter)
}

func writeAPIError(w http.ResponseWriter, svc service, e *apiError, retryAfter string) {
	switch svc {
	case keystone:
		writeJSON(w, e.status, map[string]any{"error": map[string]any{
			"code": e.status, "message": e.message, "title": http.StatusText(e.status)}})
	case neutron:
		kind := e.kind
		if kind == "" {
			kind = strings.ReplaceAll(http.StatusText(e.status), " ", "")
		}
		writeJSON(w, e.status, map[string]any{"NeutronError": map[string]any{
			"type": kind, "message": e.message, "detail": ""}})
	case glance:
		// Glance answers errors as a small HTML page.
		w.Header().Set("Content-Type", "text/html; charset=UTF-8")
		w.WriteHeader(e.status)
		title := fmt.Sprintf("%d %s", e.status, http.StatusText(e.status))
		fmt.Fprintf(w, "<html>\n <head>\n  <title>%s</title>\n </head>\n <body>\n  <h1>%s</h1>\n  %s<br /><br />\n\n\n\n </body>\n</html>", title, title, htmlEscape(e.message))
	default: // Nova and Cinder
		body := map[string]any{"code": e.status, "message": e.message}
		if retryAfter != "" {
			body["retryAfter"] = retryAfter
		}
		writeJSON(w, e.status, map[string]any{novaErrorName(e.status): body})
	}
}

// novaErrorName is the key Nova and Cinder wrap an error document in.
func novaErrorName(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "badRequest"
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusNotFound:
		return "itemNotFound"
	case http.StatusMethodNotAllowed:
		return "HTTPMethodNotAllowed"
	case http.StatusConflict:
		return "conflictingRequest"
	case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		return "overLimit"
	case http.StatusNotImplemented:
		return "notImplemented"
	case http.StatusServiceUnavailable:
		return "serviceUnavailable"
	}
	return "computeFault"
}

func htmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// maxBody bounds a JSON request body.
const maxBody = 1 << 20

// decodeBody reads a JSON request body into v; a bad one is a 400.
func decodeBody(r *http.Request, v any) *apiError {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return errorf(http.StatusBadRequest, "could not read the request body: %v", err)
	}
	if len(b) > maxBody {
		return errorf(http.StatusRequestEntityTooLarge, "request body larger than %d bytes", maxBody)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return errorf(http.StatusBadRequest, "Malformed request body: %v", err)
	}
	return nil
}

// handler is an API handler that returns an error to answer with.
type handler func(w http.ResponseWriter, r *http.Request) *apiError

// authed wraps h for svc: the request needs a valid token, errors are
// written in svc's shape, and the project in the path (Cinder) must be
// the cloud's.
func (c *Cloud) authed(svc service, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !c.validToken(r.Header.Get("X-Auth-Token")) {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf("Keystone uri=%q", c.AuthURL()))
			writeAPIError(w, svc, errorf(http.StatusUnauthorized, "The request you have made requires authentication."), "")
			return
		}
		if p := r.PathValue("project"); p != "" && p != c.projectID {
			writeAPIError(w, svc, errorf(http.StatusForbidden, "Policy doesn't allow access to project %s.", p), "")
			return
		}
		if err := h(w, r); err != nil {
			writeAPIError(w, svc, err, "")
		}
	}
}

// page is one page of a listing: items after marker, at most limit (the
// service's maximum when limit is 0), and whether more follow.
func page[T any](items []T, id func(T) string, q url.Values, maxLimit int) ([]T, bool, *apiError) {
	limit := maxLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return nil, false, errorf(http.StatusBadRequest, "limit must be a non-negative integer, got %q", s)
		}
		limit = min(n, maxLimit)
	}
	start := 0
	if m := q.Get("marker"); m != "" {
		start = -1
		for i, it := range items {
			if id(it) == m {
				start = i + 1
				break
			}
		}
		if start < 0 {
			return nil, false, errorf(http.StatusBadRequest, "marker [%s] not found", m)
		}
	}
	items = items[start:]
	if len(items) > limit {
		return items[:limit], true, nil
	}
	return items, false, nil
}

// nextLink is the absolute URL of the page after marker.
func (c *Cloud) nextLink(r *http.Request, marker string) string {
	q := r.URL.Query()
	q.Set("marker", marker)
	if q.Get("limit") == "" {
		q.Del("limit")
	}
	return c.baseURL + r.URL.Path + "?" + q.Encode()
}

// Serve answers the cloud's API on lis until the listener closes.
func (c *Cloud) Serve(lis net.Listener) error {
	srv := &http.Server{Handler: c.Handler(), ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(lis)
}

// discard is a ResponseWriter that forgets the answer (Fault.Lost).
type discard struct{ header http.Header }

func (d discard) Header() http.Header         { return d.header }
func (d discard) Write(b []byte) (int, error) { return len(b), nil }
func (d discard) WriteHeader(int)             {}
