package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// taskRecord is a task as `director --json tasks` lists it.
type taskRecord struct {
	ID         uint64    `json:"id"`
	Type       string    `json:"type"`
	Deployment string    `json:"deployment"`
	State      string    `json:"state"`
	Error      string    `json:"error"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
}

// TestTaskQueueAndIgnore: deploys of one deployment submitted at once queue
// and run one after the other in submission order; a queued task cancelled
// never runs; an ignored instance is left as it is by a deploy that changes
// its group and by the resurrector, until it is unignored.
func TestTaskQueueAndIgnore(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the sample's process files name /var/vcap paths, which a local VM has only in its own mount namespace (root)")
	}
	d, data := deploySample(t, freeRange(t), nil)
	work := t.TempDir()
	raw, err := os.ReadFile(filepath.Join(d.data, "..", "web.yml"))
	if err != nil {
		t.Fatal(err)
	}
	sample := string(raw)
	// manifest writes the sample with web at version and the group's extra
	// lines (after "instances: 2").
	manifest := func(version, extra string) string {
		t.Helper()
		text := strings.Replace(sample, "version: v1", "version: "+version, 1)
		text = strings.Replace(text, "  instances: 2\n", "  instances: 2\n"+extra, 1)
		file := filepath.Join(work, version+".yml")
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return file
	}
	tasks := func() []taskRecord {
		t.Helper()
		var ts []taskRecord
		if err := json.Unmarshal([]byte(d.run("--json", "tasks", "--recent=50")), &ts); err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(ts, func(a, b taskRecord) int { return int(a.ID) - int(b.ID) })
		return ts
	}
	deploysAfter := func(id uint64) []taskRecord {
		var out []taskRecord
		for _, tk := range tasks() {
			if tk.Type == "deploy" && tk.ID > id {
				out = append(out, tk)
			}
		}
		return out
	}
	lastID := func() uint64 { ts := tasks(); return ts[len(ts)-1].ID }

	t.Run("three deploys started at once run in order", func(t *testing.T) {
		before := lastID()
		versions := []string{"v2", "v3", "v4"}
		type run struct{ version, out string }
		outs := make(chan run, len(versions))
		for _, v := range versions {
			file := manifest(v, "")
			go func() {
				out, err := d.command("-n", "--json", "deploy", file).CombinedOutput()
				outs <- run{v, fmt.Sprintf("%s\nexit: %v", out, err)}
			}()
		}
		// While they run: one at a time holds the deployment, the others
		// wait as queued.
		sawQueued := false
		deadline := time.Now().Add(5 * time.Minute)
		for {
			ts := deploysAfter(before)
			processing, queued, done := 0, 0, 0
			for _, tk := range ts {
				switch tk.State {
				case "processing":
					processing++
				case "queued":
					queued++
				case "done":
					done++
				}
			}
			if processing > 1 {
				t.Fatalf("%d deploys of one deployment run at once: %+v", processing, ts)
			}
			sawQueued = sawQueued || queued > 0
			if len(ts) == len(versions) && done == len(versions) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("deploys not done after 5 minutes: %+v\ndirector log tail:\n%s", ts, tail(d.logs.String(), 40))
			}
			time.Sleep(200 * time.Millisecond)
		}
		if !sawQueued {
			t.Error("no deploy was ever seen queued while another ran")
		}
		// The task ids are the order the director received them in.
		versionOf := map[uint64]string{}
		for range versions {
			r := <-outs
			if !strings.HasSuffix(r.out, "exit: <nil>") {
				t.Errorf("deploy %s failed:\n%s", r.version, tail(r.out, 20))
				continue
			}
			_, res := parseEvents(r.out)
			versionOf[res.ID] = r.version
		}
		ts := deploysAfter(before)
		var order []string
		for i, tk := range ts {
			order = append(order, fmt.Sprintf("task %d (%s)", tk.ID, versionOf[tk.ID]))
			if i > 0 && tk.StartedAt.Before(ts[i-1].FinishedAt) {
				t.Errorf("task %d started at %s, before task %d ended at %s", tk.ID, tk.StartedAt, ts[i-1].ID, ts[i-1].FinishedAt)
			}
		}
		t.Logf("ran in order: %s", strings.Join(order, ", "))
		// The last received is the last applied: its version serves.
		lbAnswers(t, versionOf[ts[len(ts)-1].ID], 2)
	})

	t.Run("a queued deploy cancelled never runs", func(t *testing.T) {
		before := lastID()
		long := d.command("-n", "--json", "deploy", manifest("v5", ""))
		longOut := &syncBuffer{}
		long.Stdout, long.Stderr = longOut, longOut
		if err := long.Start(); err != nil {
			t.Fatal(err)
		}
		// v5 holds the deployment; v6 queues behind it.
		waitTasks := func(n int, what string) []taskRecord {
			t.Helper()
			deadline := time.Now().Add(60 * time.Second)
			for {
				ts := deploysAfter(before)
				if len(ts) >= n {
					return ts
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: tasks %+v", what, ts)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		first := waitTasks(1, "the v5 deploy never showed")[0]
		doomed := d.command("-n", "--json", "deploy", manifest("v6", ""))
		doomedOut := &syncBuffer{}
		doomed.Stdout, doomed.Stderr = doomedOut, doomedOut
		if err := doomed.Start(); err != nil {
			t.Fatal(err)
		}
		second := waitTasks(2, "the v6 deploy never showed")[1]
		if second.State != "queued" {
			t.Fatalf("the second deploy is %s while %d (%s) holds the deployment, want queued", second.State, first.ID, first.State)
		}
		if out := d.run("tasks"); !strings.Contains(out, "queued") {
			t.Errorf("tasks does not show the queued deploy:\n%s", out)
		}
		if out := d.run("cancel-task", fmt.Sprint(second.ID)); !strings.Contains(out, "cancelled before it started") {
			t.Errorf("cancel-task of a queued task:\n%s", out)
		}
		if err := doomed.Wait(); exitCode(err) != 1 {
			t.Errorf("the CLI following the cancelled task: exit %d\n%s", exitCode(err), doomedOut)
		}
		if err := long.Wait(); err != nil {
			t.Fatalf("the v5 deploy: %v\n%s", err, longOut)
		}
		ts := deploysAfter(before)
		if len(ts) != 2 || ts[0].State != "done" || ts[1].State != "cancelled" || !ts[1].StartedAt.IsZero() {
			t.Errorf("tasks after the cancel: %+v", ts)
		}
		out, err := d.command("--json", "task", fmt.Sprint(second.ID)).Output()
		if exitCode(err) != 1 {
			t.Errorf("task %d (cancelled): exit %d, want 1", second.ID, exitCode(err))
		}
		evs, res := parseEvents(string(out))
		if res.State != "cancelled" || len(evs) != 1 {
			t.Errorf("task %d: %+v, events %+v", second.ID, res, evs)
		}
		for _, e := range evs {
			if e.Stage != "Cancelled before it started" {
				t.Errorf("the cancelled task has event %+v", e)
			}
		}
		lbAnswers(t, "v5", 2)
	})

	t.Run("an ignored instance is left alone by deploy and resurrector", func(t *testing.T) {
		find := func(group string, index int) instanceRow {
			t.Helper()
			return d.findInstance(t, "web", group, index)
		}
		w0, w1 := find("web", 0), find("web", 1)
		if out := d.run("-d", "web", "ignore", "web/0"); !strings.Contains(out, "is ignored") {
			t.Errorf("ignore:\n%s", out)
		}
		if out := d.run("-d", "web", "instances"); !strings.Contains(out, "(ignored)") {
			t.Errorf("instances does not show the ignored instance:\n%s", out)
		}
		if got := find("web", 0); !got.Ignore {
			t.Errorf("web/0 after ignore: %+v", got)
		}
		// A deploy that changes the group (version and env: every VM of the
		// group recreated) leaves web/0 as it is.
		evs, res := d.deploy(manifest("v7", "  env: {queue_test: changed}\n"))
		plan := ""
		for _, e := range evs {
			if e.Stage == "Plan" {
				plan = e.Data.Text
			}
		}
		if !strings.Contains(plan, "ignored: left as it is") {
			t.Errorf("the plan does not show web/0 ignored:\n%s", plan)
		}
		t.Logf("deploy with web/0 ignored: %s", res.Result)
		if now := find("web", 0); now.VMCID != w0.VMCID {
			t.Errorf("ignored web/0 moved from VM %s to %s", w0.VMCID, now.VMCID)
		}
		if now := find("web", 1); now.VMCID == w1.VMCID {
			t.Errorf("web/1 kept VM %s through a deploy that recreates the group", w1.VMCID)
		}
		if got := get("http://" + w0.IPs[0] + ":8080/"); !strings.HasSuffix(strings.TrimSpace(got), "v5 web/0") {
			t.Errorf("ignored web/0 answers %q, want the version before the deploy (v5)", got)
		}
		if got := get("http://" + find("web", 1).IPs[0] + ":8080/"); !strings.HasSuffix(strings.TrimSpace(got), "v7 web/1") {
			t.Errorf("web/1 answers %q, want v7", got)
		}

		// The resurrector leaves the ignored instance's dead VM alone.
		resurrections := func() int {
			var out []json.RawMessage
			raw, err := d.command("--json", "-d", "web", "events", "--action", "resurrect").Output()
			if err == nil {
				json.Unmarshal(raw, &out)
			}
			return len(out)
		}
		unresponsive := func() bool {
			raw, _ := d.command("--json", "-d", "web", "events", "--action", "unresponsive").Output()
			return strings.Contains(string(raw), "web/"+w0.ID)
		}
		already := resurrections()
		killVM(t, data, w0.VMCID)
		deadline := time.Now().Add(60 * time.Second)
		for !unresponsive() {
			if time.Now().After(deadline) {
				t.Fatalf("web/0's dead VM never reported unresponsive\ndirector log tail:\n%s", tail(d.logs.String(), 40))
			}
			time.Sleep(200 * time.Millisecond)
		}
		// The resurrector of an instance not ignored acts within seconds
		// of this event (TestResurrectWeb); give it ample time.
		time.Sleep(20 * time.Second)
		if n := resurrections(); n != already {
			t.Errorf("%d resurrections of an ignored instance", n-already)
		}
		if now := find("web", 0); now.VMCID != w0.VMCID {
			t.Errorf("ignored web/0 got VM %s", now.VMCID)
		}

		// Unignored, it is resurrected and the next deploy updates it.
		if out := d.run("-d", "web", "unignore", "web/0"); !strings.Contains(out, "no longer ignored") {
			t.Errorf("unignore:\n%s", out)
		}
		unignored := time.Now()
		deadline = time.Now().Add(120 * time.Second)
		for resurrections() == already {
			if time.Now().After(deadline) {
				t.Fatalf("web/0 not resurrected within 120s of unignore\ndirector log tail:\n%s", tail(d.logs.String(), 40))
			}
			time.Sleep(500 * time.Millisecond)
		}
		t.Logf("web/0 resurrected %s after unignore", time.Since(unignored).Round(100*time.Millisecond))
		d.deploy(manifest("v7", "  env: {queue_test: changed}\n"))
		lbAnswers(t, "v7", 2)
		if now := find("web", 0); now.VMCID == w0.VMCID {
			t.Errorf("web/0 still on its dead VM %s after unignore", w0.VMCID)
		}
	})

	t.Run("a director restart runs the queued deploy", func(t *testing.T) {
		before := lastID()
		background := func(version string) (*syncBuffer, chan error) {
			cmd := d.command("-n", "--json", "deploy", manifest(version, ""))
			out := &syncBuffer{}
			cmd.Stdout, cmd.Stderr = out, out
			done := make(chan error, 1)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go func() { done <- cmd.Wait() }()
			return out, done
		}
		waitFor := func(what string, ok func([]taskRecord) bool) []taskRecord {
			t.Helper()
			deadline := time.Now().Add(3 * time.Minute)
			for {
				ts := deploysAfter(before)
				if ok(ts) {
					return ts
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: tasks %+v\ndirector log tail:\n%s", what, ts, tail(d.logs.String(), 40))
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		_, firstDone := background("v8")
		waitFor("the v8 deploy never ran", func(ts []taskRecord) bool { return len(ts) == 1 && ts[0].State == "processing" })
		_, secondDone := background("v9")
		ts := waitFor("the v9 deploy never queued", func(ts []taskRecord) bool { return len(ts) == 2 })
		if ts[1].State != "queued" {
			t.Fatalf("v9 deploy is %s while v8 runs, want queued", ts[1].State)
		}
		d.stop(syscall.SIGKILL)
		<-firstDone
		<-secondDone
		*d = *startDirector(t, binaries(t), data)
		ts = waitFor("the queued v9 deploy did not run after the restart", func(ts []taskRecord) bool {
			return len(ts) == 2 && ts[1].State == "done"
		})
		if ts[0].State != "error" || ts[0].Error != "director restarted while the task was running" {
			t.Errorf("the deploy running at the kill: %+v", ts[0])
		}
		if ts[1].StartedAt.Before(ts[0].FinishedAt) {
			t.Errorf("the queued deploy started at %s, before the interrupted one was failed at %s", ts[1].StartedAt, ts[0].FinishedAt)
		}
		lbAnswers(t, "v9", 2)
		// The restarted director's own clean-up stops it before the
		// sample's would delete the deployment: delete it here.
		d.run("-n", "-d", "web", "delete-deployment", "--force")
	})
}

// parseEvents is parseTask without requiring the task to be done.
func parseEvents(out string) ([]event, taskResult) {
	var evs []event
	var res taskResult
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var probe map[string]any
		if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &probe) != nil {
			continue
		}
		if _, isEvent := probe["seq"]; isEvent {
			var e event
			json.Unmarshal([]byte(line), &e)
			evs = append(evs, e)
			continue
		}
		json.Unmarshal([]byte(line), &res)
	}
	return evs, res
}
