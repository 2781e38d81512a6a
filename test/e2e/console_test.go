package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium starts Debian's headless chromium for the test (stopped by
// chromedp, which started it, when the test ends) or skips.
func chromium(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (apt-get install chromium; .ci/run installs it): the console's browser test needs it")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // tests run as root
		chromedp.Flag("disable-dev-shm-usage", true),
		// The dev director's certificate is signed by its own CA.
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.WindowSize(1100, 760),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	// Every step after the first is bounded (the first one's context
	// would bound the browser's life).
	ctx, cancelTimeout := context.WithTimeout(ctx, 4*time.Minute)
	t.Cleanup(cancelTimeout)
	return ctx
}

// shoot writes the viewport as docs/ui/NAME.png when UPDATE_SCREENSHOTS=1.
func shoot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if os.Getenv("UPDATE_SCREENSHOTS") != "1" {
		return
	}
	time.Sleep(300 * time.Millisecond)
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(repoRoot(), "docs", "ui", name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestConsoleInChromium signs in to the console of a dev director running
// the web sample, sees every instance running (from heartbeats), watches a
// deploy started from the CLI arrive live on its task page, and finds no
// secret in any page's HTML.
func TestConsoleInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the director, agents and the local CPI, and chromium")
	}
	ctx := chromium(t)
	// The sample with a generated password the pages must never show.
	d, _ := deploySample(t, freeRange(t), func(m string) string {
		return m + secretDecl
	})
	target, token := d.env["DIRECTOR_TARGET"], d.env["DIRECTOR_TOKEN"]
	var secrets []string
	var vars []struct {
		Name  string          `json:"name"`
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal([]byte(d.run("--json", "-d", "web", "variables", "--reveal")), &vars); err != nil {
		t.Fatal(err)
	}
	for _, v := range vars {
		var s string
		if json.Unmarshal(v.Value, &s) == nil && len(s) >= 8 {
			secrets = append(secrets, s)
		}
	}
	if len(secrets) == 0 {
		t.Fatalf("no generated password to look for: %+v", vars)
	}
	secrets = append(secrets, token)
	noSecret := func(page string) {
		t.Helper()
		html := eval[string](t, ctx, `document.documentElement.outerHTML`)
		for _, s := range secrets {
			if strings.Contains(html, s) {
				t.Errorf("%s shows a secret value", page)
			}
		}
	}

	// Sign in.
	do(t, ctx, chromedp.Navigate(target+"/ui/"), chromedp.WaitVisible(chromedp.ID("token")))
	shoot(t, ctx, "signin")
	do(t, ctx,
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Submit(chromedp.ID("token")),
		chromedp.WaitVisible(chromedp.CSS(`a[href="/ui/deployments/web"]`)),
	)
	if who := eval[string](t, ctx, `document.querySelector(".who").textContent`); !strings.Contains(who, "admin") {
		t.Errorf("signed in as %q", who)
	}
	shoot(t, ctx, "deployments")
	noSecret("deployments")

	// The web deployment: every instance running, as their heartbeats say.
	deadline := time.Now().Add(60 * time.Second)
	for {
		do(t, ctx, chromedp.Navigate(target+"/ui/deployments/web"), chromedp.WaitVisible(chromedp.CSS(".instances")))
		states := eval[[]string](t, ctx, `Array.from(document.querySelectorAll(".instances tbody tr td:nth-child(5) .badge")).map(b => b.textContent)`)
		running := len(states) == 3
		for _, s := range states {
			running = running && s == "running"
		}
		if running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("instances on the deployment page: %v, want 3 running", states)
		}
		time.Sleep(time.Second)
	}
	if procs := eval[[]string](t, ctx, `Array.from(document.querySelectorAll(".instances tbody tr td:nth-child(6) .badge")).map(b => b.textContent)`); len(procs) < 3 || strings.Contains(strings.Join(procs, ","), "failing") {
		t.Errorf("process states on the deployment page: %v", procs)
	}
	shoot(t, ctx, "deployment")
	noSecret("deployment")

	// A deploy from the CLI (v2, with watch times long enough to watch),
	// its events arriving live on its task page.
	raw, err := os.ReadFile(filepath.Join(repoRoot(), "manifests", "local", "web.yml"))
	if err != nil {
		t.Fatal(err)
	}
	prefix := strings.TrimSuffix(lbAddr, "1.10:8080")
	text := strings.ReplaceAll(string(raw), "127.77.", prefix)
	text = strings.Replace(text, "version: v1", "version: v2", 1)
	text = strings.ReplaceAll(text, "_watch_time: 1000-30000", "_watch_time: 4000-30000")
	text += secretDecl
	manifest := filepath.Join(t.TempDir(), "web.yml")
	if err := os.WriteFile(manifest, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cli := d.command("-n", "deploy", manifest)
	var cliOut syncBuffer
	cli.Stdout, cli.Stderr = &cliOut, &cliOut
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	cliDone := make(chan struct{})
	var cliErr error
	go func() { cliErr = cli.Wait(); close(cliDone) }()
	t.Cleanup(func() {
		select {
		case <-cliDone:
		default:
			cli.Process.Kill() // the CLI this test started, by its pid
			<-cliDone
		}
	})
	var href string
	deadline = time.Now().Add(60 * time.Second)
	for href == "" {
		do(t, ctx, chromedp.Navigate(target+"/ui/tasks?state=running&deployment=web"), chromedp.WaitVisible(chromedp.CSS("table")))
		href = eval[string](t, ctx, `(document.querySelector("tbody a[href^='/ui/tasks/']") || {}).href || ""`)
		if href == "" {
			if time.Now().After(deadline) {
				t.Fatalf("no running deploy task on the tasks page; CLI:\n%s", cliOut.String())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	do(t, ctx, chromedp.Navigate(href), chromedp.WaitVisible(chromedp.ID("events")))
	initial := eval[int](t, ctx, `Math.max(0, ...Array.from(document.querySelectorAll("#events li")).map(li => +li.dataset.seq))`)
	if !eval[bool](t, ctx, `!!document.querySelector("#cancel button")`) {
		t.Error("an admin sees no cancel button on a running task")
	}
	// While the deploy runs, the page gains events it did not have when
	// it was rendered, and then learns the task finished, without a reload.
	do(t, ctx, chromedp.WaitVisible(chromedp.CSS("#rollout .bar")))
	shoot(t, ctx, "task-running")
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById("live").textContent === "(finished)"`, chromedp.WithPollingTimeout(120*time.Second))); err != nil {
		t.Fatalf("task page never saw the task finish: %v; CLI:\n%s", err, cliOut.String())
	}
	state := eval[string](t, ctx, `document.getElementById("task-state").textContent`)
	newer := eval[int](t, ctx, fmt.Sprintf(`Array.from(document.querySelectorAll("#events li")).filter(li => +li.dataset.seq > %d).length`, initial))
	<-cliDone
	if cliErr != nil {
		t.Fatalf("deploy from the CLI: %v\n%s", cliErr, cliOut.String())
	}
	if state != "done" || newer == 0 {
		t.Errorf("task page: state %q, %d events arrived after it was rendered (from seq %d)", state, newer, initial)
	}
	bars := eval[int](t, ctx, `document.querySelectorAll("#rollout .bar.b-finished").length`)
	canaries := eval[int](t, ctx, `document.querySelectorAll("#rollout .bar.canary").length`)
	if bars < 2 || canaries != 1 {
		t.Errorf("rollout view: %d finished bars, %d canaries; want both web instances, one canary", bars, canaries)
	}
	if diff := eval[string](t, ctx, `document.getElementById("diff").textContent`); !strings.Contains(diff, "version: <redacted, changed>") || strings.Contains(diff, "v2") {
		t.Errorf("manifest diff on the task page:\n%s", diff)
	}
	if eval[bool](t, ctx, `!!document.querySelector("#cancel")`) {
		t.Error("the cancel button stays after the task finished")
	}
	shoot(t, ctx, "task")
	noSecret("task")
	lbAnswers(t, "v2", 2)

	for _, p := range []string{"tasks", "events", "releases", "cpis"} {
		do(t, ctx, chromedp.Navigate(target+"/ui/"+p), chromedp.WaitVisible(chromedp.CSS("main h1")))
		shoot(t, ctx, p)
		noSecret(p)
	}
	if rows := eval[int](t, ctx, `document.querySelectorAll("tbody tr td:nth-child(3)").length`); rows == 0 {
		t.Error("the CPIs page lists no CPI calls after two deploys")
	}

	// A phone-sized screen.
	if os.Getenv("UPDATE_SCREENSHOTS") == "1" {
		do(t, ctx, chromedp.EmulateViewport(390, 780), chromedp.Navigate(target+"/ui/deployments/web"), chromedp.WaitVisible(chromedp.CSS(".instances")))
		shoot(t, ctx, "deployment-phone")
		do(t, ctx, chromedp.EmulateViewport(1100, 760))
	}
	// Sign out: the session is gone.
	do(t, ctx,
		chromedp.Click(chromedp.CSS(".signout button")),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.Navigate(target+"/ui/tasks"),
		chromedp.WaitVisible(chromedp.ID("token")),
	)
	if url := eval[string](t, ctx, `location.pathname`); url != "/ui/signin" {
		t.Errorf("after sign-out /ui/tasks shows %s, want the sign-in page", url)
	}
}

const secretDecl = "\nvariables:\n- name: console_secret\n  type: password\n"

func do(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("browser: %v", err)
	}
}

func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("browser: %s: %v", js, err)
	}
	return v
}
