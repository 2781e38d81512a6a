package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compleat/compleat/director/blobstore"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/store/storetest"
	"github.com/compleat/compleat/director/task"
)

func TestSetStemcellVersion(t *testing.T) {
	t.Parallel()
	v1 := store.Stemcell{Name: "compleat-local", OS: "linux", Version: "1", UploadedAt: time.Unix(1, 0)}
	v2 := store.Stemcell{Name: "compleat-local", OS: "linux", Version: "2", UploadedAt: time.Unix(2, 0)}
	v3 := store.Stemcell{Name: "compleat-local", OS: "linux", Version: "3", UploadedAt: time.Unix(3, 0)}
	other := store.Stemcell{Name: "windows", OS: "windows2019", Version: "7", UploadedAt: time.Unix(4, 0)}
	for _, tc := range []struct {
		name     string
		manifest string
		target   store.Stemcell
		all      []store.Stemcell
		want     string // a line the result must hold
		matched  int
		same     bool // the text is returned unchanged
	}{
		{"pinned", "name: a\nstemcells:\n- alias: default\n  os: linux # keep me\n  version: \"1\"\n", v2, []store.Stemcell{v1, v2}, `version: "2"`, 1, false},
		{"comment kept", "name: a\nstemcells:\n- alias: default\n  os: linux # keep me\n  version: \"1\"\n", v2, []store.Stemcell{v1, v2}, "# keep me", 1, false},
		{"latest, target newest", "stemcells:\n- {alias: d, os: linux, version: latest}\n", v2, []store.Stemcell{v1, v2}, "version: latest", 1, true},
		{"latest, target older than newest", "stemcells:\n- {alias: d, os: linux, version: latest}\n", v2, []store.Stemcell{v1, v2, v3}, `version: "2"`, 1, false},
		{"by name", "stemcells:\n- {alias: d, name: compleat-local, version: \"1\"}\n", v2, []store.Stemcell{v1, v2}, `version: "2"`, 1, false},
		{"other os untouched", "stemcells:\n- {alias: w, os: windows2019, version: \"7\"}\n- {alias: d, os: linux, version: \"1\"}\n", v2, []store.Stemcell{v1, v2, other}, `version: "7"`, 1, false},
		{"no stemcell of the os", "stemcells:\n- {alias: w, os: windows2019, version: \"7\"}\n", v2, []store.Stemcell{v1, v2, other}, `version: "7"`, 0, true},
		{"up to date", "stemcells:\n- {alias: d, os: linux, version: \"2\"}\n", v2, []store.Stemcell{v1, v2}, `version: "2"`, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, matched, err := setStemcellVersion(tc.manifest, tc.target, tc.all)
			if err != nil {
				t.Fatal(err)
			}
			if matched != tc.matched || !strings.Contains(got, tc.want) || (got == tc.manifest) != tc.same {
				t.Errorf("matched %d (want %d), unchanged %v (want %v):\n%s", matched, tc.matched, got == tc.manifest, tc.same, got)
			}
		})
	}
	if _, _, err := setStemcellVersion("- a list", v2, nil); err == nil {
		t.Error("a manifest that is not a mapping was accepted")
	}
}

func TestOldestKeepsTheNewestUnused(t *testing.T) {
	t.Parallel()
	groups := [][]string{{"web/1", "web/2", "web/3", "web/4"}, {"db/1"}, nil}
	if got := oldest(groups, false); !slices.Equal(got, []string{"web/1", "web/2"}) {
		t.Errorf("without all: %v, want web/1 web/2 (the 2 newest unused of each name stay)", got)
	}
	if got := oldest(groups, true); !slices.Equal(got, []string{"web/1", "web/2", "web/3", "web/4", "db/1"}) {
		t.Errorf("with all: %v", got)
	}
}

func TestUsage(t *testing.T) {
	t.Parallel()
	ds := []store.Deployment{
		{Name: "a", Stemcells: []string{"s/1"}},
		{Name: "b", Stemcells: []string{"s/1"}, PendingStemcells: []string{"s/2"}},
		{Name: "c", Stemcells: []string{"s/2"}},
	}
	if u := StemcellUsage(ds, "s/1"); !slices.Equal(u.Deployments, []string{"a", "b"}) || len(u.Pending) != 0 {
		t.Errorf("s/1: %+v", u)
	}
	u := StemcellUsage(ds, "s/2")
	if !slices.Equal(u.Deployments, []string{"c"}) || !slices.Equal(u.Pending, []string{"b"}) || u.String() != "c (pending: b)" {
		t.Errorf("s/2: %+v %q", u, u)
	}
	if u := StemcellUsage(ds, "s/3"); u.InUse() {
		t.Errorf("s/3 in use: %+v", u)
	}
}

// rolloutFixture is a store with stemcells linux 1 and 2 and deployments
// on 1, and a task manager whose deploy handler records the deploys and
// fails the deployments named in fail.
type rolloutFixture struct {
	f        *Fleet
	tasks    *task.Manager
	mu       sync.Mutex
	deployed []string // deployment names, in the order their deploys ran
	fail     map[string]bool
}

func newRolloutFixture(t *testing.T, deployments ...string) *rolloutFixture {
	t.Helper()
	st := storetest.New(t)
	logger := slog.New(slog.DiscardHandler)
	fx := &rolloutFixture{fail: map[string]bool{}}
	fx.tasks = task.NewManager(st, logger, task.Options{QueuePoll: 10 * time.Millisecond})
	fx.tasks.Register("deploy", func(ctx context.Context, r *task.Reporter, raw json.RawMessage) (string, error) {
		var req struct {
			Deployment string `json:"deployment"`
			Manifest   string `json:"manifest"`
		}
		json.Unmarshal(raw, &req)
		fx.mu.Lock()
		fx.deployed = append(fx.deployed, req.Deployment)
		fail := fx.fail[req.Deployment]
		fx.mu.Unlock()
		if !strings.Contains(req.Manifest, `version: "2"`) {
			return "", errors.New("the manifest was not rewritten to stemcell 2:\n" + req.Manifest)
		}
		if fail {
			return "", errors.New("canary failed")
		}
		return "deployed", nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	go fx.tasks.RunQueue(ctx)
	t.Cleanup(func() {
		cancel()
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		fx.tasks.Shutdown(sctx)
	})
	err := st.Update(func(tx *store.Tx) error {
		for i, v := range []string{"1", "2"} {
			if err := tx.PutStemcell(store.Stemcell{Name: "compleat-local", OS: "linux", Version: v, UploadedAt: time.Unix(int64(i+1), 0)}); err != nil {
				return err
			}
		}
		for _, name := range deployments {
			m, err := tx.AddManifest(name, "name: "+name+"\nstemcells:\n- {alias: d, os: linux, version: \"1\"}\n", 0)
			if err != nil {
				return err
			}
			if err := tx.PutDeployment(store.Deployment{Name: name, ManifestID: m.ID, Stemcells: []string{"compleat-local/1"}}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	fx.f = New(Deps{Store: st, Tasks: fx.tasks, Logger: logger,
		SubmitDeploy: func(deployment, manifest, description string, dryRun bool) (store.Task, error) {
			return fx.tasks.Submit(task.Spec{Type: "deploy", Description: description, Deployment: deployment},
				map[string]any{"deployment": deployment, "manifest": manifest, "dry_run": dryRun})
		}})
	return fx
}

// run runs an upgrade-stemcell task to its end and returns its record and
// its summary rows.
func (fx *rolloutFixture) run(t *testing.T, req UpgradeRequest) (store.Task, []UpgradeRow) {
	t.Helper()
	tk, err := fx.tasks.Start(context.Background(), task.Spec{Type: "upgrade-stemcell"}, func(ctx context.Context, r *task.Reporter) (string, error) {
		return fx.f.UpgradeStemcell(ctx, r, req)
	})
	if err != nil {
		t.Fatal(err)
	}
	var rows []UpgradeRow
	var after uint64
	for {
		evs, cur, err := fx.tasks.Wait(context.Background(), tk.ID, after)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			after = e.Seq
			if e.Stage == "Summary" {
				var d struct{ Rows []UpgradeRow }
				json.Unmarshal(e.Data, &d)
				rows = d.Rows
			}
		}
		if cur.Finished() && len(evs) == 0 {
			return cur, rows
		}
	}
}

func results(rows []UpgradeRow) []string {
	var out []string
	for _, r := range rows {
		out = append(out, r.Deployment+":"+r.Result)
	}
	return out
}

func TestRolloutStopsAtTheFirstFailure(t *testing.T) {
	t.Parallel()
	fx := newRolloutFixture(t, "a", "b", "c")
	fx.fail["b"] = true
	tk, rows := fx.run(t, UpgradeRequest{OS: "linux", Deployments: []string{"a", "b", "c"}})
	if tk.State != store.TaskError || !strings.Contains(tk.Error, "1 of 3 deployments not upgraded: b (failed") {
		t.Errorf("task %s: %s", tk.State, tk.Error)
	}
	if got := results(rows); !slices.Equal(got, []string{"a:upgraded", "b:failed", "c:not started"}) {
		t.Errorf("rows %v", got)
	}
	if !slices.Equal(fx.deployed, []string{"a", "b"}) {
		t.Errorf("deployed %v, want a then b, and c never", fx.deployed)
	}
}

func TestRolloutContinuesOnFailureWhenAsked(t *testing.T) {
	t.Parallel()
	fx := newRolloutFixture(t, "a", "b", "c")
	fx.fail["a"] = true
	tk, rows := fx.run(t, UpgradeRequest{OS: "linux", All: true, ContinueOnFailure: true, MaxParallel: 3})
	if tk.State != store.TaskError {
		t.Errorf("task %s, want error (a failed)", tk.State)
	}
	if got := results(rows); !slices.Equal(got, []string{"a:failed", "b:upgraded", "c:upgraded"}) {
		t.Errorf("rows %v", got)
	}
}

func TestRolloutSkipsWhatItCannotRoll(t *testing.T) {
	t.Parallel()
	fx := newRolloutFixture(t, "a")
	fx.f.d.Store.Update(func(tx *store.Tx) error {
		tx.PutDeployment(store.Deployment{Name: "new"}) // never deployed
		m, _ := tx.AddManifest("up", "stemcells:\n- {alias: d, os: linux, version: \"2\"}\n", 0)
		return tx.PutDeployment(store.Deployment{Name: "up", ManifestID: m.ID, Stemcells: []string{"compleat-local/2"}})
	})
	tk, rows := fx.run(t, UpgradeRequest{OS: "linux", Deployments: []string{"new", "up", "a"}})
	if tk.State != store.TaskDone {
		t.Errorf("task %s: %s", tk.State, tk.Error)
	}
	if got := results(rows); !slices.Equal(got, []string{"new:skipped", "up:up to date", "a:upgraded"}) {
		t.Errorf("rows %v", got)
	}
	for _, bad := range []UpgradeRequest{
		{OS: "linux"}, // neither deployments nor all
		{OS: "linux", All: true, Deployments: []string{"a"}},
		{OS: "solaris", All: true},
		{OS: "linux", Version: "9", All: true},
		{OS: "linux", Deployments: []string{"nope"}},
	} {
		if tk, _ := fx.run(t, bad); tk.State != store.TaskError || !tk.BadInput {
			t.Errorf("%+v: task %s (bad input %v): %s, want a bad-input error", bad, tk.State, tk.BadInput, tk.Error)
		}
	}
}

func TestCleanUpSweepsUnreferencedBlobs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := storetest.New(t)
	dir := t.TempDir()
	blobs, err := blobstore.NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	put := func(id, content string, age time.Duration) string {
		t.Helper()
		var b blobstore.Blob
		var err error
		if id == "" {
			b, err = blobs.Put(ctx, strings.NewReader(content))
		} else {
			b, err = blobs.PutID(ctx, id, strings.NewReader(content), "")
		}
		if err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-age)
		if err := os.Chtimes(filepath.Join(dir, b.ID[:2], b.ID), old, old); err != nil {
			t.Fatal(err)
		}
		return b.ID
	}
	day := 24 * time.Hour
	release := put("", "a job", 2*day)
	rendered := put("", "a rendered job", 2*day)
	compiled := put("compiled-1", "a compiled package", 2*day)
	stale := put("", "the rendered job of an instance gone", 2*day)
	fresh := put("", "a render not yet recorded", time.Minute)
	recentLogs := put("logs-1", "logs", 2*day)
	oldLogs := put("logs-2", "old logs", 31*day)
	spec, _ := json.Marshal(map[string]any{"jobs": []map[string]any{{"name": "web", "blob": map[string]string{"url": "https://d/blobs/" + rendered + "?sig=x", "sha256": rendered}}},
		"packages": []map[string]any{{"name": "p", "version": "1", "blob": map[string]string{"url": "https://d/blobs/" + compiled + "?sig=y", "sha256": "ff"}}}})
	err = st.Update(func(tx *store.Tx) error {
		if err := tx.PutRelease(store.Release{Name: "web", Version: "1", Jobs: []store.ReleaseJob{{Name: "web", Fingerprint: "fp", BlobID: release}}}); err != nil {
			return err
		}
		if err := tx.PutDeployment(store.Deployment{Name: "web", Releases: []string{"web/1"}}); err != nil {
			return err
		}
		return tx.PutInstance(store.Instance{Deployment: "web", Group: "web", ID: "i1", State: "started", Spec: spec})
	})
	if err != nil {
		t.Fatal(err)
	}
	tasks := task.NewManager(st, slog.New(slog.DiscardHandler), task.Options{})
	f := New(Deps{Store: st, Tasks: tasks, Blobs: blobs})
	clean := func() (store.Task, string) {
		tk, err := tasks.Start(ctx, task.Spec{Type: "clean-up"}, func(ctx context.Context, r *task.Reporter) (string, error) { return f.CleanUp(ctx, r, true) })
		if err != nil {
			t.Fatal(err)
		}
		for !tk.Finished() {
			_, tk, _ = tasks.Wait(ctx, tk.ID, 1<<62)
		}
		return tk, tk.Result
	}
	// A deploy under way: no sweep.
	st.Update(func(tx *store.Tx) error { _, err := tx.AcquireLock("web", "deploy", 1, time.Minute); return err })
	if tk, res := clean(); tk.State != store.TaskDone || !strings.Contains(res, "0 unreferenced blobs") {
		t.Errorf("clean-up with a deploy under way: %s %s %s", tk.State, res, tk.Error)
	}
	st.Update(func(tx *store.Tx) error { return tx.ReleaseLock("web", "deploy") })
	tk, res := clean()
	if tk.State != store.TaskDone || !strings.Contains(res, "2 unreferenced blobs") {
		t.Errorf("clean-up: %s %s %s", tk.State, res, tk.Error)
	}
	for id, want := range map[string]bool{release: true, rendered: true, compiled: true, stale: false, fresh: true, recentLogs: true, oldLogs: false} {
		if ok, _ := blobs.Exists(ctx, id); ok != want {
			t.Errorf("blob %s exists %v, want %v", id, ok, want)
		}
	}
}
