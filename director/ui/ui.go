// Package ui is the director's web console, served at /ui/ on the API's
// HTTPS listener. It is a client of the API in the same process: every page
// asks the API (api.Server, an http.Handler) with the signed-in token, so
// the API's scopes and redaction apply to the console exactly as they do to
// the CLI. Pages are rendered on the server (html/template); a little
// embedded JavaScript streams a task's events (Server-Sent Events) and draws
// its rollout. Nothing is loaded from elsewhere (Content-Security-Policy:
// 'self' only).
//
// Sign-in takes a token (read scope is enough to look). The token stays in
// the director's memory; the browser holds only a random session id in an
// HttpOnly, Secure, SameSite=Strict cookie scoped to /ui/. Every POST carries
// the session's CSRF token (compared in constant time) and, when the browser
// sends one, an Origin of this host. The only changes the console makes are
// cancelling a task and pausing or resuming a rollout, which the API allows
// to admin tokens only.
package ui

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

//go:embed assets
var assets embed.FS

// CookieName is the session cookie.
const CookieName = "compleat_session"

// Limits of the console.
const (
	SessionTTL  = 8 * time.Hour
	MaxSessions = 10000
	maxForm     = 8 << 10
)

// Handler serves /ui/.
type Handler struct {
	api    http.Handler
	log    *slog.Logger
	tmpl   map[string]*template.Template
	mux    *http.ServeMux
	now    func() time.Time
	mu     sync.Mutex
	byID   map[string]*session
	static http.Handler
}

type session struct {
	id      string
	token   string // kept in memory only
	user    string
	admin   bool
	csrf    string
	expires time.Time
}

// New returns the console, asking api for everything it shows.
func New(api http.Handler, logger *slog.Logger) *Handler {
	h := &Handler{api: api, log: logger, mux: http.NewServeMux(), now: time.Now, byID: map[string]*session{}}
	h.tmpl = map[string]*template.Template{}
	funcs := template.FuncMap{
		"ago":  func(t time.Time) string { return ago(h.now(), t) },
		"ts":   func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
		"pct":  func(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) + "%" },
		"join": strings.Join,
		"ms":   func(f float64) string { return strconv.FormatFloat(f*1000, 'f', 1, 64) },
	}
	for _, p := range []string{"signin", "deployments", "deployment", "tasks", "task", "releases", "events", "cpis"} {
		h.tmpl[p] = template.Must(template.New("").Funcs(funcs).ParseFS(assets, "assets/layout.html", "assets/"+p+".html"))
	}
	h.static = http.StripPrefix("/ui/", http.FileServerFS(assets))
	m := h.mux
	m.HandleFunc("GET /ui/assets/", h.assets)
	m.HandleFunc("GET /ui/signin", h.signinPage)
	m.HandleFunc("POST /ui/signin", h.signin)
	m.HandleFunc("POST /ui/signout", h.post(h.signout))
	m.HandleFunc("GET /ui/{$}", h.page(h.deployments))
	m.HandleFunc("GET /ui/deployments/{name}", h.page(h.deployment))
	m.HandleFunc("GET /ui/tasks", h.page(h.tasks))
	m.HandleFunc("GET /ui/tasks/{id}", h.page(h.task))
	m.HandleFunc("GET /ui/tasks/{id}/stream", h.auth(h.stream))
	m.HandleFunc("POST /ui/tasks/{id}/cancel", h.post(h.cancel))
	m.HandleFunc("POST /ui/deployments/{name}/pause", h.post(h.rollout("pause")))
	m.HandleFunc("POST /ui/deployments/{name}/resume", h.post(h.rollout("resume")))
	m.HandleFunc("GET /ui/releases", h.page(h.releases))
	m.HandleFunc("GET /ui/events", h.page(h.events))
	m.HandleFunc("GET /ui/cpis", h.page(h.cpis))
	m.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not found", http.StatusNotFound)
	})
	return h
}

// ServeHTTP sets the console's security headers and dispatches.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
	if !strings.HasPrefix(r.URL.Path, "/ui/assets/") {
		hd.Set("Cache-Control", "no-store")
	}
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) assets(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "max-age=300")
	h.static.ServeHTTP(w, r)
}

func randomID() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// current is the request's live session, if any.
func (h *Handler) current(r *http.Request) *session {
	c, err := r.Cookie(CookieName)
	if err != nil || c.Value == "" {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.byID[c.Value]
	if s == nil {
		return nil
	}
	if h.now().After(s.expires) {
		delete(h.byID, s.id)
		return nil
	}
	return s
}

func (h *Handler) end(s *session) {
	h.mu.Lock()
	delete(h.byID, s.id)
	h.mu.Unlock()
}

type sessionKey struct{}

func sess(r *http.Request) *session { return r.Context().Value(sessionKey{}).(*session) }

// auth requires a session; without one a page redirects to sign-in and
// anything else answers 401.
func (h *Handler) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := h.current(r)
		if s == nil {
			if r.Method == http.MethodGet && !strings.HasSuffix(r.URL.Path, "/stream") {
				http.Redirect(w, r, "/ui/signin?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			http.Error(w, "not signed in", http.StatusUnauthorized)
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, s)))
	}
}

// post guards a state-changing form: a session, its CSRF token and, when
// the browser says where the form came from, this host.
func (h *Handler) post(next http.HandlerFunc) http.HandlerFunc {
	return h.auth(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		s := sess(r)
		got := r.PostFormValue("csrf")
		if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) != 1 {
			h.log.Warn("ui: refused a POST without this session's csrf token", "path", r.URL.Path, "user", s.user)
			http.Error(w, "forbidden: missing or wrong csrf token", http.StatusForbidden)
			return
		}
		if o := r.Header.Get("Origin"); o != "" && o != "null" {
			if u, err := url.Parse(o); err != nil || u.Host != r.Host {
				http.Error(w, "forbidden: cross-origin form", http.StatusForbidden)
				return
			}
		}
		next(w, r)
	})
}

// page renders a read-only page from what fn gathers.
func (h *Handler) page(fn func(r *http.Request) (string, any, error)) http.HandlerFunc {
	return h.auth(func(w http.ResponseWriter, r *http.Request) {
		name, data, err := fn(r)
		if err != nil {
			var ae *apiError
			if errors.As(err, &ae) && ae.status == http.StatusUnauthorized {
				h.end(sess(r))
				http.Redirect(w, r, "/ui/signin", http.StatusSeeOther)
				return
			}
			status := http.StatusBadGateway
			if errors.As(err, &ae) {
				status = ae.status
			}
			w.WriteHeader(status)
			h.render(w, r, "signin", "Error", map[string]any{"Error": err.Error()})
			return
		}
		h.render(w, r, name, "", data)
	})
}

type view struct {
	Title string
	User  string
	Admin bool
	CSRF  string
	Nav   string
	Data  any
}

func (h *Handler) render(w http.ResponseWriter, r *http.Request, name, title string, data any) {
	v := view{Title: title, Nav: name, Data: data}
	if s, ok := r.Context().Value(sessionKey{}).(*session); ok {
		v.User, v.Admin, v.CSRF = s.user, s.admin, s.csrf
	}
	if t, ok := data.(interface{ PageTitle() string }); ok && v.Title == "" {
		v.Title = t.PageTitle()
	}
	if v.Title == "" {
		v.Title = titles[name]
	}
	var buf bytes.Buffer
	if err := h.tmpl[name].ExecuteTemplate(&buf, "layout", v); err != nil {
		h.log.Error("ui: render", "page", name, "err", err)
		http.Error(w, "render failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(buf.Bytes())
}

var titles = map[string]string{"deployments": "Deployments", "deployment": "Deployment", "tasks": "Tasks", "task": "Task",
	"releases": "Releases and stemcells", "events": "Events and alerts", "cpis": "CPIs", "signin": "Sign in"}

func (h *Handler) signinPage(w http.ResponseWriter, r *http.Request) {
	h.render(w, r, "signin", "", map[string]any{"Next": safeNext(r.URL.Query().Get("next"))})
}

// safeNext keeps a redirect target inside the console.
func safeNext(n string) string {
	if !strings.HasPrefix(n, "/ui/") || strings.HasPrefix(n, "//") || strings.ContainsAny(n, "\\\r\n") {
		return "/ui/"
	}
	return n
}

func (h *Handler) signin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	tok := strings.TrimSpace(r.PostFormValue("token"))
	next := safeNext(r.PostFormValue("next"))
	var info struct {
		User   string   `json:"user"`
		Scopes []string `json:"scopes"`
	}
	s := &session{token: tok}
	if err := h.call(r.Context(), s, http.MethodGet, "/v1/info", &info); tok == "" || err != nil {
		h.log.Info("ui: sign-in refused", "remote", r.RemoteAddr)
		w.WriteHeader(http.StatusUnauthorized)
		h.render(w, r, "signin", "", map[string]any{"Next": next, "Error": "That token is not accepted by this director."})
		return
	}
	s.id, s.csrf, s.user = randomID(), randomID(), info.User
	s.admin = slices.Contains(info.Scopes, "admin")
	s.expires = h.now().Add(SessionTTL)
	h.mu.Lock()
	now := h.now()
	for id, o := range h.byID {
		if now.After(o.expires) {
			delete(h.byID, id)
		}
	}
	if len(h.byID) >= MaxSessions {
		h.mu.Unlock()
		http.Error(w, "too many sessions", http.StatusServiceUnavailable)
		return
	}
	h.byID[s.id] = s
	h.mu.Unlock()
	h.log.Info("ui: signed in", "user", s.user, "admin", s.admin, "remote", r.RemoteAddr)
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: s.id, Path: "/ui/", MaxAge: int(SessionTTL.Seconds()),
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (h *Handler) signout(w http.ResponseWriter, r *http.Request) {
	h.end(sess(r))
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/ui/", MaxAge: -1,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/ui/signin", http.StatusSeeOther)
}

// apiError is an API answer other than 2xx.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

// buffer is an in-memory http.ResponseWriter.
type buffer struct {
	h      http.Header
	status int
	b      bytes.Buffer
}

func (b *buffer) Header() http.Header { return b.h }
func (b *buffer) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.b.Write(p)
}
func (b *buffer) WriteHeader(c int) {
	if b.status == 0 {
		b.status = c
	}
}

func (s *session) request(ctx context.Context, method, path string) *http.Request {
	req, _ := http.NewRequestWithContext(ctx, method, path, nil)
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.RemoteAddr = "ui"
	return req
}

// call asks the API with the session's token and decodes its JSON answer.
func (h *Handler) call(ctx context.Context, s *session, method, path string, out any) error {
	b := &buffer{h: http.Header{}}
	h.api.ServeHTTP(b, s.request(ctx, method, path))
	if b.status == 0 {
		b.status = http.StatusOK
	}
	if b.status/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		json.Unmarshal(b.b.Bytes(), &e)
		if e.Error == "" {
			e.Error = strings.TrimSpace(b.b.String())
		}
		return &apiError{status: b.status, msg: fmt.Sprintf("%s %s: %s", method, path, e.Error)}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b.b.Bytes(), out); err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	return nil
}

// text asks the API for a text answer (the metrics).
func (h *Handler) text(ctx context.Context, s *session, path string) (string, error) {
	b := &buffer{h: http.Header{}}
	h.api.ServeHTTP(b, s.request(ctx, http.MethodGet, path))
	if b.status != 0 && b.status != http.StatusOK {
		return "", &apiError{status: b.status, msg: fmt.Sprintf("GET %s: %s", path, strings.TrimSpace(b.b.String()))}
	}
	return b.b.String(), nil
}

// pipe is an http.ResponseWriter whose body is read as it is written.
type pipe struct {
	h      http.Header
	status chan int
	once   sync.Once
	w      *io.PipeWriter
}

func (p *pipe) Header() http.Header { return p.h }
func (p *pipe) WriteHeader(c int)   { p.once.Do(func() { p.status <- c }) }
func (p *pipe) Write(b []byte) (int, error) {
	p.WriteHeader(http.StatusOK)
	return p.w.Write(b)
}
func (p *pipe) Flush() {}

// stream relays a task's events as Server-Sent Events (one JSON event per
// message, its id the event's seq, so a reconnect carries on) and ends with
// an "end" message carrying the task when it is finished.
func (h *Handler) stream(w http.ResponseWriter, r *http.Request) {
	s := sess(r)
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		http.Error(w, "bad task id", http.StatusBadRequest)
		return
	}
	after, _ := strconv.ParseUint(r.Header.Get("Last-Event-ID"), 10, 64)
	if a := r.URL.Query().Get("after"); a != "" && after == 0 {
		after, _ = strconv.ParseUint(a, 10, 64)
	}
	pr, pw := io.Pipe()
	p := &pipe{h: http.Header{}, status: make(chan int, 1), w: pw}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		h.api.ServeHTTP(p, s.request(ctx, http.MethodGet, fmt.Sprintf("/v1/tasks/%d/events?follow=true&after=%d", id, after)))
		p.WriteHeader(http.StatusOK)
		pw.Close()
	}()
	if st := <-p.status; st != http.StatusOK {
		io.Copy(io.Discard, pr)
		http.Error(w, "task events: "+http.StatusText(st), st)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	fmt.Fprint(w, "retry: 2000\n\n")
	rc.Flush()
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var e struct {
			Seq uint64 `json:"seq"`
		}
		json.Unmarshal(sc.Bytes(), &e)
		if _, err := fmt.Fprintf(w, "id: %d\ndata: %s\n\n", e.Seq, sc.Bytes()); err != nil {
			cancel()
			io.Copy(io.Discard, pr)
			return
		}
		rc.Flush()
	}
	if r.Context().Err() != nil {
		return
	}
	var t json.RawMessage
	if err := h.call(r.Context(), s, http.MethodGet, fmt.Sprintf("/v1/tasks/%d", id), &t); err == nil {
		var one bytes.Buffer
		json.Compact(&one, t) // an SSE message's data is one line
		fmt.Fprintf(w, "event: end\ndata: %s\n\n", one.Bytes())
		rc.Flush()
	}
}

// cancel cancels a task through the API (admin only, as there).
func (h *Handler) cancel(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		http.Error(w, "bad task id", http.StatusBadRequest)
		return
	}
	h.change(w, r, fmt.Sprintf("/v1/tasks/%d/cancel", id), fmt.Sprintf("/ui/tasks/%d", id))
}

func (h *Handler) rollout(action string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		back := safeNext(r.PostFormValue("next"))
		h.change(w, r, "/v1/deployments/"+url.PathEscape(name)+"/"+action, back)
	}
}

// change makes one state change through the API and goes back to back, or
// shows the API's refusal with its status.
func (h *Handler) change(w http.ResponseWriter, r *http.Request, path, back string) {
	s := sess(r)
	var out json.RawMessage
	if err := h.call(r.Context(), s, http.MethodPost, path, &out); err != nil {
		status := http.StatusBadGateway
		var ae *apiError
		if errors.As(err, &ae) {
			status = ae.status
		}
		h.log.Info("ui: change refused", "path", path, "user", s.user, "status", status)
		w.WriteHeader(status)
		h.render(w, r, "signin", "Refused", map[string]any{"Error": err.Error(), "Back": back})
		return
	}
	h.log.Info("ui: change", "path", path, "user", s.user)
	if strings.Contains(path, "/resume") {
		var t struct {
			ID uint64 `json:"id"`
		}
		if json.Unmarshal(out, &t) == nil && t.ID != 0 {
			back = fmt.Sprintf("/ui/tasks/%d", t.ID)
		}
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}

func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}
