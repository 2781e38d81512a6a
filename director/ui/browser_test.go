package ui_test

import (
	"context"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestReadTokenInChromium signs in to the console with a read token in
// headless chromium: the running task's page has no cancel button, and a
// cancel POSTed from the page itself, with the session's own CSRF token, is
// refused (403) and leaves the task running.
func TestReadTokenInChromium(t *testing.T) {
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (apt-get install chromium; .ci/run installs it): the console's browser test needs it")
	}
	f := newFixture(t, 2)
	release := make(chan struct{})
	defer close(release)
	tk := blocked(t, f, release)

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.Flag("ignore-certificate-errors", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelCtx := chromedp.NewContext(actx)
	defer cancelCtx()
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	taskURL := fmt.Sprintf("%s/ui/tasks/%d", f.srv.URL, tk.ID)
	err = chromedp.Do(ctx,
		chromedp.Navigate(taskURL),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), readToken),
		chromedp.Submit(chromedp.ID("token")),
		chromedp.WaitVisible(chromedp.ID("events")),
	)
	if err != nil {
		t.Fatalf("sign in: %v", err)
	}
	has, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`!!document.querySelector("#cancel, form[action$='/cancel']")`))
	if err != nil || has {
		t.Fatalf("a read token sees a cancel button (%v)", err)
	}
	// The forged request: from the page, with the session's cookie and
	// its CSRF token (taken from the sign-out form).
	status, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf(`(async () => {
		const csrf = document.querySelector("input[name=csrf]").value;
		const r = await fetch("/ui/tasks/%d/cancel", {method: "POST", body: new URLSearchParams({csrf}), redirect: "manual"});
		return r.status;
	})()`, tk.ID), chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	if status != 403 {
		t.Fatalf("a read token's cancel from the page: %d, want 403", status)
	}
	// Without the CSRF token it is refused before the API is asked.
	status, err = chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf(`(async () => (await fetch("/ui/tasks/%d/cancel", {method: "POST", redirect: "manual"})).status)()`, tk.ID), chromedp.EvalAwaitPromise))
	if err != nil || status != 403 {
		t.Fatalf("cancel without csrf: %d (%v), want 403", status, err)
	}
	live, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("live")))
	if err != nil || live != "(live)" {
		t.Errorf("live marker %q (%v)", live, err)
	}
	if cur := taskState(t, f, tk.ID); cur != "processing" {
		t.Fatalf("task is %s after a refused cancel", cur)
	}
}
