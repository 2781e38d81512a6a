package importer_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/cpitest"
	"github.com/compleat/compleat/director/blobstore"
	"github.com/compleat/compleat/director/importer"
	"github.com/compleat/compleat/director/release"
	"github.com/compleat/compleat/director/stemcell"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/store/storetest"
	"github.com/compleat/compleat/director/task"
)

// fakeCPIs serves named in-process fakes, the second one taking no local
// stemcells.
type fakeCPIs struct{ fakes map[string]*cpitest.Fake }

func (f fakeCPIs) Names() []string { return []string{"one", "two"} }
func (f fakeCPIs) Get(ctx context.Context, name string) (cpi.CPI, error) {
	return f.fakes[name], nil
}
func (f fakeCPIs) Info(ctx context.Context, name string) (cpi.Info, error) {
	info, err := f.fakes[name].Info(ctx)
	if name == "two" {
		info.StemcellFormats = []string{"aws-light"}
	}
	return info, err
}

type uploadsFixture struct {
	store *store.Store
	blobs *blobstore.FS
	tasks *task.Manager
	up    *importer.Uploads
	cpis  fakeCPIs
}

func newUploads(t *testing.T) *uploadsFixture {
	s := storetest.New(t)
	blobs, err := blobstore.NewFS(filepath.Join(t.TempDir(), "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	cpis := fakeCPIs{fakes: map[string]*cpitest.Fake{"one": cpitest.NewFake(), "two": cpitest.NewFake()}}
	return &uploadsFixture{store: s, blobs: blobs, tasks: task.NewManager(s, logger, task.Options{}), cpis: cpis,
		up: &importer.Uploads{Store: s, Blobs: blobs, CPIs: cpis, TempDir: t.TempDir(), Logger: logger}}
}

// runTask runs fn as a task and returns its final record.
func (f *uploadsFixture) runTask(t *testing.T, fn task.Func) store.Task {
	t.Helper()
	tk, err := f.tasks.Start(context.Background(), task.Spec{Type: "upload"}, fn)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		_, cur, err := f.tasks.Wait(ctx, tk.ID, 1<<62)
		if err != nil {
			t.Fatal(err)
		}
		if cur.Finished() {
			return cur
		}
	}
}

func webSource(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	src := filepath.Join(filepath.Dir(file), "..", "..", "releases", "web")
	dst := filepath.Join(t.TempDir(), "web")
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() && rel == "dev_releases" {
			return filepath.SkipDir
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		info, _ := d.Info()
		return os.WriteFile(filepath.Join(dst, rel), raw, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestReleaseUploadStoresEachFingerprintOnce(t *testing.T) {
	t.Parallel()
	f := newUploads(t)
	src := webSource(t)
	_, v1, err := release.Create(src, release.CreateOptions{Version: "1", Tarball: filepath.Join(t.TempDir(), "v1.tgz")})
	if err != nil {
		t.Fatal(err)
	}
	up := func(tarball string) store.Task {
		return f.runTask(t, func(ctx context.Context, r *task.Reporter) (string, error) {
			return f.up.ImportRelease(ctx, r, tarball)
		})
	}
	if tk := up(v1); tk.State != store.TaskDone || !strings.Contains(tk.Result, "uploaded") {
		t.Fatalf("upload v1: %+v", tk)
	}
	var r1 store.Release
	f.store.View(func(tx *store.Tx) error { r1, err = tx.Release("web", "1"); return err })
	if err != nil || len(r1.Jobs) == 0 || len(r1.Packages) == 0 || len(r1.Jobs[0].Spec) == 0 {
		t.Fatalf("release 1 = %+v, %v", r1, err)
	}

	// The same version again: nothing changes.
	if tk := up(v1); tk.State != store.TaskDone || !strings.Contains(tk.Result, "already uploaded") {
		t.Errorf("re-upload: %+v", tk)
	}

	// Version 2 changes one job's template only: every package blob is the
	// one already stored.
	tmpl := filepath.Join(src, "jobs", "web", "spec")
	raw, err := os.ReadFile(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(tmpl, append(raw, []byte("\n# changed\n")...), 0o644)
	_, v2, err := release.Create(src, release.CreateOptions{Version: "2", Tarball: filepath.Join(t.TempDir(), "v2.tgz")})
	if err != nil {
		t.Fatal(err)
	}
	if tk := up(v2); tk.State != store.TaskDone {
		t.Fatalf("upload v2: %+v", tk)
	}
	var r2 store.Release
	f.store.View(func(tx *store.Tx) error { r2, err = tx.Release("web", "2"); return err })
	for i, p := range r2.Packages {
		if p.BlobID != r1.Packages[i].BlobID {
			t.Errorf("package %s stored again: %s vs %s", p.Name, p.BlobID, r1.Packages[i].BlobID)
		}
	}
	changed := 0
	for i, j := range r2.Jobs {
		if j.Fingerprint != r1.Jobs[i].Fingerprint {
			changed++
			if j.BlobID == r1.Jobs[i].BlobID {
				t.Errorf("changed job %s kept the old blob", j.Name)
			}
		}
	}
	if changed != 1 {
		t.Errorf("changed jobs = %d, want 1", changed)
	}
}

func TestBadReleaseTarballIsBadInput(t *testing.T) {
	t.Parallel()
	f := newUploads(t)
	bad := filepath.Join(t.TempDir(), "bad.tgz")
	os.WriteFile(bad, []byte("not a tarball"), 0o600)
	tk := f.runTask(t, func(ctx context.Context, r *task.Reporter) (string, error) { return f.up.ImportRelease(ctx, r, bad) })
	if tk.State != store.TaskError || tk.Error == "" {
		t.Errorf("bad tarball: %+v", tk)
	}
}

func TestStemcellGoesToEveryCPITakingItsFormat(t *testing.T) {
	t.Parallel()
	f := newUploads(t)
	agent := filepath.Join(t.TempDir(), "agent")
	os.WriteFile(agent, []byte("#!/bin/sh\nexit 0\n"), 0o755)
	tgz := filepath.Join(t.TempDir(), "local.tgz")
	if _, err := stemcell.CreateLocal(agent, tgz, stemcell.LocalOptions{}); err != nil {
		t.Fatal(err)
	}
	up := func() store.Task {
		return f.runTask(t, func(ctx context.Context, r *task.Reporter) (string, error) { return f.up.ImportStemcell(ctx, r, tgz) })
	}
	if tk := up(); tk.State != store.TaskDone || !strings.Contains(tk.Result, "uploaded to 1 cpi") {
		t.Fatalf("upload: %+v", tk)
	}
	if len(f.cpis.fakes["one"].Stemcells()) != 1 || len(f.cpis.fakes["two"].Stemcells()) != 0 {
		t.Errorf("stemcells in cpis: one=%d two=%d", len(f.cpis.fakes["one"].Stemcells()), len(f.cpis.fakes["two"].Stemcells()))
	}
	var scs []store.Stemcell
	f.store.View(func(tx *store.Tx) error { scs, _ = tx.Stemcells(); return nil })
	if len(scs) != 1 || scs[0].CIDs["one"] == "" || scs[0].CIDs["two"] != "" {
		t.Errorf("stemcells = %+v", scs)
	}
	// Again: the CPI that has it is not asked twice.
	if tk := up(); tk.State != store.TaskDone || !strings.Contains(tk.Result, "already") {
		t.Errorf("second upload: %+v", tk)
	}
	if len(f.cpis.fakes["one"].Stemcells()) != 1 {
		t.Errorf("stemcell created twice")
	}
}
