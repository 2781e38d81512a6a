package cli

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/director/apiv1"
)

func TestFormatEventLikeBOSH(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 1, 0, time.UTC)
	started := map[string]time.Time{}
	ev := apiv1.Event{Stage: "Updating instance", Step: "web/2", Index: 1, Total: 3, Tags: []string{"canary"}, Time: t0, State: "started"}
	if s := formatEvent(12, ev, started); s != "" {
		t.Errorf("started step printed %q", s)
	}
	ev.State, ev.Time = "finished", t0.Add(4*time.Second)
	want := "Task 12 | 12:00:01 | Updating instance web/2 (canary) ... done (00:00:04)"
	if s := formatEvent(12, ev, started); s != want {
		t.Errorf("got  %q\nwant %q", s, want)
	}
	ev.State, ev.Error = "failed", "process web is failing"
	if s := formatEvent(12, ev, started); !strings.HasSuffix(s, "... failed (00:00:04): process web is failing") {
		t.Errorf("failed: %q", s)
	}
}

func TestFormatNotes(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 1, 0, time.UTC)
	ev := apiv1.Event{Stage: "Plan", State: "info", Time: t0, Data: []byte(`{"text":"Deployment web\n\n1 to create\n"}`)}
	want := "Task 3 | 12:00:01 | Plan\n  Deployment web\n\n  1 to create"
	if s := formatEvent(3, ev, map[string]time.Time{}); s != want {
		t.Errorf("block note:\n got %q\nwant %q", s, want)
	}
	ev = apiv1.Event{Stage: "Updating instance", Step: "web/0", State: "info", Time: t0, Data: []byte(`{"text":"create-swap-delete is not available here: delete-create"}`)}
	want = "Task 3 | 12:00:01 | Updating instance web/0: create-swap-delete is not available here: delete-create"
	if s := formatEvent(3, ev, map[string]time.Time{}); s != want {
		t.Errorf("one-line note:\n got %q\nwant %q", s, want)
	}
	if s := formatEvent(3, apiv1.Event{Stage: "x", State: "info", Time: t0}, map[string]time.Time{}); s != "" {
		t.Errorf("an info event without text printed %q", s)
	}
}

func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"no-such-command"}, ExitUsage},
		{[]string{"releases", "--no-such-flag"}, ExitUsage},
		{[]string{"task"}, ExitUsage},
		{[]string{"task", "abc"}, ExitUsage},
		{[]string{"releases"}, ExitUsage}, // no target
		{[]string{"serve"}, ExitUsage},
		{[]string{"serve", "--dev", "--config", "x.yml"}, ExitUsage},
		{[]string{"-e", "https://127.0.0.1:1", "--token", "x", "releases"}, ExitFailed}, // nothing listens
		{[]string{"--help"}, ExitOK},
	} {
		var out bytes.Buffer
		err := Run(context.Background(), Deps{Stdout: &out, Stderr: &out, Getenv: func(string) string { return "" }}, tc.args)
		if got := ExitCode(err); got != tc.want {
			t.Errorf("%v: exit %d (%v), want %d", tc.args, got, err, tc.want)
		}
	}
	if ExitCode(Failed(errors.New("x"))) != 1 || ExitCode(nil) != 0 {
		t.Error("ExitCode of Failed/nil")
	}
}

func TestCompletion(t *testing.T) {
	var out bytes.Buffer
	if err := Run(context.Background(), Deps{Stdout: &out, Stderr: &out}, []string{"completion", "bash"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "bash completion") {
		t.Errorf("completion output: %.200s", out.String())
	}
}

func TestProgressPlainLines(t *testing.T) {
	var w bytes.Buffer
	p := newProgress(strings.NewReader(strings.Repeat("x", 1000)), 1000, "r.tgz", &w, false)
	buf := make([]byte, 100)
	for {
		if _, err := p.Read(buf); err != nil {
			break
		}
	}
	p.done()
	lines := strings.Split(strings.TrimSpace(w.String()), "\n")
	if len(lines) != 4 || !strings.Contains(lines[3], "100% (1000 B of 1000 B)") {
		t.Errorf("progress lines:\n%s", w.String())
	}
}
