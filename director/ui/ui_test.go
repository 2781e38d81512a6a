package ui_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/director/api"
	"github.com/compleat/compleat/director/api/apitest"
	"github.com/compleat/compleat/director/config"
	"github.com/compleat/compleat/director/metrics"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/store/storetest"
	"github.com/compleat/compleat/director/task"
	"github.com/compleat/compleat/director/ui"
)

const (
	adminToken = "admin-token-5c1d9e7a3b"
	readToken  = "read-token-8f2a6b4c0d"
	secret     = "s3cr3t-Value-never-in-html"
)

type fixture struct {
	metrics *metrics.Metrics
	srv     *httptest.Server
	store   *store.Store
	tasks   *task.Manager
}

func newFixture(t testing.TB, instances int) *fixture {
	t.Helper()
	s := storetest.New(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	tasks := task.NewManager(s, logger, task.Options{})
	auth := api.NewAuth([]api.Token{
		{Name: "admin", SHA256: sha256.Sum256([]byte(adminToken)), Scopes: []string{config.ScopeAdmin}},
		{Name: "ci", SHA256: sha256.Sum256([]byte(readToken)), Scopes: []string{config.ScopeRead}},
	})
	m := metrics.New(nil, nil)
	deps := apitest.Deps(t, s, tasks, auth, logger)
	deps.Metrics, deps.CPIs = m.Registry, func() []string { return []string{"east"} }
	a := apitest.New(t, deps)
	mux := http.NewServeMux()
	mux.Handle("/ui/", ui.New(a, logger))
	mux.Handle("/", a)
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tasks.Shutdown(ctx)
	})
	err := s.Update(func(tx *store.Tx) error {
		if err := tx.PutDeployment(store.Deployment{Name: "web", Releases: []string{"web/1"}, Stemcells: []string{"ubuntu/1.0"}}); err != nil {
			return err
		}
		if err := tx.PutRelease(store.Release{Name: "web", Version: "1"}); err != nil {
			return err
		}
		if err := tx.PutStemcell(store.Stemcell{Name: "ubuntu", Version: "1.0", OS: "ubuntu-jammy", CIDs: map[string]string{"local": "sc-1"}}); err != nil {
			return err
		}
		raw, _ := json.Marshal(secret)
		if err := tx.PutVariable(store.Variable{Name: "/web/db_password", Type: "password", Value: raw}); err != nil {
			return err
		}
		for i := range instances {
			id := fmt.Sprintf("0000-%04d", i)
			if err := tx.PutInstance(store.Instance{Deployment: "web", Group: "web", ID: id, Index: i, AZ: "z1", State: "started", VMCID: "vm-" + id}); err != nil {
				return err
			}
			ip := fmt.Sprintf("127.0.%d.%d", i/250, i%250+2)
			if err := tx.ReserveIP(store.IPReservation{Network: "default", IP: ip, Deployment: "web", InstanceID: id}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{srv: srv, store: s, tasks: tasks, metrics: m}
}

// browser is a client with a cookie jar that does not follow redirects.
func (f *fixture) browser(t testing.TB) *http.Client {
	jar, _ := cookiejar.New(nil)
	c := f.srv.Client()
	c.Jar = jar
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c
}

func (f *fixture) signIn(t testing.TB, c *http.Client, token string) *http.Response {
	t.Helper()
	resp, err := c.PostForm(f.srv.URL+"/ui/signin", url.Values{"token": {token}, "next": {"/ui/"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func get(t testing.TB, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func TestSignInCookieAndSignOut(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 3)
	c := f.browser(t)
	if code, _ := get(t, c, f.srv.URL+"/ui/"); code != http.StatusSeeOther {
		t.Fatalf("GET /ui/ without a session: %d, want a redirect to sign-in", code)
	}
	if resp := f.signIn(t, c, "wrong-token"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("sign-in with a wrong token: %d", resp.StatusCode)
	}
	resp := f.signIn(t, c, readToken)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("sign-in: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	var ck *http.Cookie
	for _, k := range resp.Cookies() {
		if k.Name == ui.CookieName {
			ck = k
		}
	}
	if ck == nil || !ck.HttpOnly || !ck.Secure || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/ui/" {
		t.Fatalf("session cookie %+v: want HttpOnly, Secure, SameSite=Strict, Path=/ui/", ck)
	}
	if strings.Contains(ck.Value, readToken) {
		t.Fatal("the cookie carries the token")
	}
	code, body := get(t, c, f.srv.URL+"/ui/")
	if code != 200 || !strings.Contains(body, `href="/ui/deployments/web"`) || !strings.Contains(body, "3 started") {
		t.Fatalf("deployments page %d:\n%s", code, body)
	}
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatal("no csrf token in the sign-out form")
	}
	// Sign-out without the CSRF token is refused; with it, the session ends.
	resp, _ = c.PostForm(f.srv.URL+"/ui/signout", url.Values{})
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("sign-out without csrf: %d", resp.StatusCode)
	}
	resp, _ = c.PostForm(f.srv.URL+"/ui/signout", url.Values{"csrf": {m[1]}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-out: %d", resp.StatusCode)
	}
	// The old session id no longer works even if presented again.
	c2 := f.browser(t)
	u, _ := url.Parse(f.srv.URL + "/ui/")
	c2.Jar.SetCookies(u, []*http.Cookie{{Name: ui.CookieName, Value: ck.Value, Path: "/ui/"}})
	if code, _ := get(t, c2, f.srv.URL+"/ui/"); code != http.StatusSeeOther {
		t.Fatalf("a signed-out session still works: %d", code)
	}
}

func TestPagesShowNoSecret(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2)
	c := f.browser(t)
	f.signIn(t, c, adminToken)
	tk, err := f.tasks.Start(context.Background(), task.Spec{Type: "deploy", Description: "deploy web", Deployment: "web"},
		func(ctx context.Context, r *task.Reporter) (string, error) {
			r.Event(store.Event{Stage: "Manifest diff", State: "info", Data: json.RawMessage(`{"text":"  instance_groups:\n  - name: web\n-   instances: 1\n+   instances: 2\n"}`)})
			r.Event(store.Event{Stage: "Updating instance", Step: "web/0000-0000", Tags: []string{"canary"}, State: "started"})
			r.Event(store.Event{Stage: "Updating instance", Step: "web/0000-0000", Tags: []string{"canary"}, State: "finished"})
			return "ok", nil
		})
	if err != nil {
		t.Fatal(err)
	}
	waitTask(t, f, tk.ID)
	pages := map[string]string{
		"/ui/":                                "web/1",
		"/ui/deployments/web":                 "db_password",
		"/ui/tasks":                           "deploy web",
		"/ui/tasks?state=done&deployment=web": "deploy web",
		fmt.Sprintf("/ui/tasks/%d", tk.ID):    `<span class="d&#43;">&#43;   instances: 2</span>`,
		"/ui/releases":                        "ubuntu-jammy on local",
		"/ui/events":                          "Events",
		"/ui/cpis":                            "CPI",
	}
	for p, want := range pages {
		code, body := get(t, c, f.srv.URL+p)
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("%s: %d, want %q in:\n%s", p, code, want, body)
		}
		if strings.Contains(body, secret) || strings.Contains(body, adminToken) {
			t.Errorf("%s shows a secret", p)
		}
	}
	if _, body := get(t, c, f.srv.URL+"/ui/deployments/web"); strings.Contains(body, "/pause") || strings.Contains(body, "/resume") {
		t.Error("pause or resume offered with no rollout running or paused")
	}
	_, body := get(t, c, fmt.Sprintf("%s/ui/tasks/%d", f.srv.URL, tk.ID))
	if !strings.Contains(body, `class="bar b-finished canary"`) || !strings.Contains(body, "batch 1") {
		t.Errorf("task page has no finished canary bar:\n%s", body)
	}
}

func waitTask(t testing.TB, f *fixture, id uint64) store.Task {
	t.Helper()
	for {
		evs, tk, err := f.tasks.Wait(context.Background(), id, 1<<62)
		_ = evs
		if err != nil {
			t.Fatal(err)
		}
		if tk.Finished() {
			return tk
		}
	}
}

// blocked starts a task that waits until release is closed.
func blocked(t *testing.T, f *fixture, release chan struct{}) store.Task {
	t.Helper()
	tk, err := f.tasks.Start(context.Background(), task.Spec{Type: "deploy", Description: "deploy web", Deployment: "web"},
		func(ctx context.Context, r *task.Reporter) (string, error) {
			r.Event(store.Event{Stage: "Preparing", State: "started"})
			select {
			case <-release:
				r.Event(store.Event{Stage: "Updating instance", Step: "web/0000-0001", State: "started"})
				return "done", nil
			case <-ctx.Done():
				return "", ctx.Err()
			}
		})
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func TestReadTokenCannotCancel(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	release := make(chan struct{})
	defer close(release)
	tk := blocked(t, f, release)
	c := f.browser(t)
	f.signIn(t, c, readToken)
	taskURL := fmt.Sprintf("%s/ui/tasks/%d", f.srv.URL, tk.ID)
	_, body := get(t, c, taskURL)
	if strings.Contains(body, "/cancel") {
		t.Fatal("a read token sees a cancel form")
	}
	if _, dep := get(t, c, f.srv.URL+"/ui/deployments/web"); !strings.Contains(dep, "Deploy running") || strings.Contains(dep, "/pause") {
		t.Fatal("a read token is offered pause, or the running deploy is not shown")
	}
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatal("no csrf token on the page")
	}
	// A forged POST with the session's own CSRF token: the API refuses it.
	resp, err := c.PostForm(taskURL+"/cancel", url.Values{"csrf": {m[1]}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cancel by a read token: %d, want 403", resp.StatusCode)
	}
	var cur store.Task
	f.store.View(func(tx *store.Tx) error { cur, _ = tx.Task(tk.ID); return nil })
	if cur.Finished() {
		t.Fatalf("task %d is %s after a refused cancel", tk.ID, cur.State)
	}
}

func TestAdminCancelNeedsCSRF(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	release := make(chan struct{})
	defer close(release)
	tk := blocked(t, f, release)
	c := f.browser(t)
	f.signIn(t, c, adminToken)
	taskURL := fmt.Sprintf("%s/ui/tasks/%d", f.srv.URL, tk.ID)
	_, body := get(t, c, taskURL)
	if !strings.Contains(body, `action="/ui/tasks/`+fmt.Sprint(tk.ID)+`/cancel"`) {
		t.Fatalf("an admin sees no cancel form:\n%s", body)
	}
	if _, dep := get(t, c, f.srv.URL+"/ui/deployments/web"); !strings.Contains(dep, `action="/ui/deployments/web/pause"`) {
		t.Error("an admin is not offered to pause the running deploy")
	}
	m := csrfRE.FindStringSubmatch(body)
	for _, form := range []url.Values{{}, {"csrf": {"forged"}}} {
		resp, _ := c.PostForm(taskURL+"/cancel", form)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("cancel with csrf %q: %d, want 403", form.Get("csrf"), resp.StatusCode)
		}
	}
	// Another origin is refused even with the right token.
	req, _ := http.NewRequest(http.MethodPost, taskURL+"/cancel", strings.NewReader(url.Values{"csrf": {m[1]}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	resp, _ := c.Do(req)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin cancel: %d", resp.StatusCode)
	}
	resp, _ = c.PostForm(taskURL+"/cancel", url.Values{"csrf": {m[1]}})
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("cancel: %d", resp.StatusCode)
	}
	if st := waitTask(t, f, tk.ID).State; st != store.TaskCancelled {
		t.Fatalf("task is %s after cancel", st)
	}
}

func TestStreamSendsEventsLive(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	release := make(chan struct{})
	tk := blocked(t, f, release)
	c := f.browser(t)
	f.signIn(t, c, readToken)
	resp, err := c.Get(fmt.Sprintf("%s/ui/tasks/%d/stream", f.srv.URL, tk.ID))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	next := func(prefix string) string {
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), prefix) {
				return sc.Text()
			}
		}
		t.Fatalf("stream ended before %q: %v", prefix, sc.Err())
		return ""
	}
	if l := next("data: "); !strings.Contains(l, `"Preparing"`) {
		t.Fatalf("first event %s", l)
	}
	close(release) // the next event is made only now: it must arrive live
	if l := next("data: "); !strings.Contains(l, `"Updating instance"`) {
		t.Fatalf("second event %s", l)
	}
	next("event: end")
	if l := next("data: "); !strings.Contains(l, `"done"`) {
		t.Fatalf("end %s", l)
	}
	// Without a session the stream is refused.
	resp2, err := f.browser(t).Get(fmt.Sprintf("%s/ui/tasks/%d/stream", f.srv.URL, tk.ID))
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusUnauthorized {
		t.Fatalf("stream without a session: %d", resp2.StatusCode)
	}
}

func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	resp, err := f.browser(t).Get(f.srv.URL + "/ui/signin")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") || resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Fatalf("headers %v", resp.Header)
	}
	// A redirect target outside the console is ignored.
	c := f.browser(t)
	resp, _ = c.PostForm(f.srv.URL+"/ui/signin", url.Values{"token": {readToken}, "next": {"//evil.example/"}})
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); loc != "/ui/" {
		t.Fatalf("redirect to %q", loc)
	}
}

// BenchmarkDeploymentsPage renders the deployments page and one
// deployment's page with 1,000 instances, server-side, through the API.
func BenchmarkDeploymentsPage(b *testing.B) {
	f := newFixture(b, 1000)
	c := f.browser(b)
	f.signIn(b, c, readToken)
	for _, p := range []string{"/ui/", "/ui/deployments/web"} {
		b.Run(strings.Trim(strings.ReplaceAll(p, "/", "_"), "_"), func(b *testing.B) {
			size := 0
			for b.Loop() {
				code, body := get(b, c, f.srv.URL+p)
				if code != 200 {
					b.Fatalf("%s: %d", p, code)
				}
				size = len(body)
			}
			b.ReportMetric(float64(size), "bytes/page")
		})
	}
}

func taskState(t testing.TB, f *fixture, id uint64) string {
	t.Helper()
	var cur store.Task
	if err := f.store.View(func(tx *store.Tx) error { var err error; cur, err = tx.Task(id); return err }); err != nil {
		t.Fatal(err)
	}
	return cur.State
}

func TestCPIsPageFromMetrics(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1)
	for i := range 20 {
		f.metrics.ObserveCPI("east", "CreateVM", time.Duration(i+1)*time.Millisecond, nil)
	}
	f.metrics.ObserveCPI("east", "CreateVM", 3*time.Millisecond, errors.New("quota"))
	c := f.browser(t)
	f.signIn(t, c, readToken)
	code, body := get(t, c, f.srv.URL+"/ui/cpis")
	// 21 calls, 1 failed, mean (210+3)/21 ms; 16 of 21 within the 15 ms
	// bucket (76%), all within 45 ms.
	want := "<td>east</td><td>CreateVM</td><td>21</td><td>1</td><td>10.1</td><td>≤ 45 ms</td>"
	if code != 200 || !strings.Contains(body, want) {
		t.Fatalf("CPIs page %d, want %s in:\n%s", code, want, body)
	}
}
