package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/compleat/compleat/agent/applyspec"
	"github.com/compleat/compleat/director/blobstore"
	"github.com/compleat/compleat/director/remote"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

// Clean-up's limits, as BOSH's: without --all the two newest unused
// versions of each release and stemcell stay, and orphaned disks stay for
// OrphanedDiskGrace.
const (
	KeepUnused        = 2
	OrphanedDiskGrace = 5 * 24 * time.Hour
	// TaskLogAge: the events of tasks that ended longer ago are deleted
	// (the task records stay).
	TaskLogAge = 30 * 24 * time.Hour
	// BlobGrace: an unreferenced blob younger than this stays (an upload,
	// a render or a compile whose record is not written yet). Log
	// archives (ids "logs-…") stay TaskLogAge.
	BlobGrace = time.Hour
)

// CleanUpResult counts what a clean-up deleted.
type CleanUpResult struct {
	Releases         int `json:"releases"`
	ReleaseBlobs     int `json:"release_blobs"`
	Stemcells        int `json:"stemcells"`
	CompiledPackages int `json:"compiled_packages"`
	OrphanedDisks    int `json:"orphaned_disks"`
	TaskLogs         int `json:"task_logs"`
	// Blobs no record names any more (rendered jobs of instances gone,
	// log archives never downloaded, blobs a failed delete left).
	UnreferencedBlobs int `json:"unreferenced_blobs"`
}

func (c CleanUpResult) String() string {
	return fmt.Sprintf("Cleaned up: %d releases (%d blobs), %d stemcells (%d compiled packages), %d orphaned disks, %d task logs, %d unreferenced blobs.",
		c.Releases, c.ReleaseBlobs, c.Stemcells, c.CompiledPackages, c.OrphanedDisks, c.TaskLogs, c.UnreferencedBlobs)
}

// CleanUp deletes what no deployment uses: releases and stemcells (all
// unused versions with all, else all but the KeepUnused newest unused of
// each name), orphaned disks (all with all, else those orphaned longer than
// OrphanedDiskGrace ago), and the event logs of tasks that ended more than
// TaskLogAge ago. Its result line counts them.
func (f *Fleet) CleanUp(ctx context.Context, r *task.Reporter, all bool) (string, error) {
	var rels, scs []string
	var disks []store.Disk
	var oldTasks []uint64
	now := f.d.Now()
	err := f.d.Store.View(func(tx *store.Tx) error {
		ds, err := tx.Deployments()
		if err != nil {
			return err
		}
		rs, err := tx.Releases() // by name, then upload order
		if err != nil {
			return err
		}
		var names []string
		var unused [][]string
		for _, rel := range rs {
			nv := rel.Name + "/" + rel.Version
			if ReleaseUsage(ds, nv).InUse() {
				continue
			}
			if len(names) == 0 || names[len(names)-1] != rel.Name {
				names, unused = append(names, rel.Name), append(unused, nil)
			}
			unused[len(unused)-1] = append(unused[len(unused)-1], nv)
		}
		rels = oldest(unused, all)
		ss, err := tx.Stemcells()
		if err != nil {
			return err
		}
		byName := map[string][]store.Stemcell{}
		var scNames []string
		for _, sc := range ss {
			if _, ok := byName[sc.Name]; !ok {
				scNames = append(scNames, sc.Name)
			}
			byName[sc.Name] = append(byName[sc.Name], sc)
		}
		var unusedSC [][]string
		for _, n := range scNames {
			group := byName[n]
			sortByUpload(group)
			var nvs []string
			for _, sc := range group {
				if nv := sc.Name + "/" + sc.Version; !StemcellUsage(ds, nv).InUse() {
					nvs = append(nvs, nv)
				}
			}
			unusedSC = append(unusedSC, nvs)
		}
		scs = oldest(unusedSC, all)
		orphans, err := tx.Disks(true)
		if err != nil {
			return err
		}
		for _, d := range orphans {
			if all || !d.OrphanedAt.IsZero() && now.Sub(d.OrphanedAt) > OrphanedDiskGrace {
				disks = append(disks, d)
			}
		}
		ts, err := tx.Tasks(0, func(t store.Task) bool {
			return t.Finished() && !t.FinishedAt.IsZero() && now.Sub(t.FinishedAt) > TaskLogAge
		})
		for _, t := range ts {
			oldTasks = append(oldTasks, t.ID)
		}
		return err
	})
	if err != nil {
		return "", err
	}
	var res CleanUpResult
	if len(rels) > 0 {
		n, err := f.deleteReleases(ctx, r, rels)
		res.ReleaseBlobs = n
		if err != nil {
			return "", err
		}
		res.Releases = len(rels)
	}
	if len(scs) > 0 {
		// A stemcell some VM still runs on is refused: kept, and said.
		for _, nv := range scs {
			n, err := f.deleteStemcells(ctx, r, []string{nv})
			res.CompiledPackages += n
			if err != nil {
				if errors.Is(err, store.ErrConflict) {
					f.d.Logger.Info("clean-up keeps a stemcell in use", "stemcell", nv, "reason", err)
					continue
				}
				return "", err
			}
			res.Stemcells++
		}
	}
	if len(disks) > 0 {
		stage := r.Stage("Deleting orphaned disks", len(disks))
		for _, d := range disks {
			err := stage.Run(d.CID, func() error {
				if err := f.d.DeleteDisk(ctx, d.CPI, d.CID); err != nil {
					return err
				}
				return f.d.Store.Update(func(tx *store.Tx) error { return tx.DeleteDisk(d.CID) })
			})
			if err != nil {
				return "", err
			}
			res.OrphanedDisks++
		}
	}
	if len(oldTasks) > 0 {
		err := r.Stage("Deleting task logs", 1).Run(fmt.Sprintf("%d tasks ended before %s", len(oldTasks), now.Add(-TaskLogAge).UTC().Format(time.DateOnly)), func() error {
			return f.d.Store.Update(func(tx *store.Tx) error {
				for _, id := range oldTasks {
					if err := tx.DeleteEvents(id); err != nil {
						return err
					}
				}
				return nil
			})
		})
		if err != nil {
			return "", err
		}
		res.TaskLogs = len(oldTasks)
	}
	n, err := f.sweepBlobs(ctx, r, now)
	res.UnreferencedBlobs = n
	if err != nil {
		return "", err
	}
	raw, _ := json.Marshal(map[string]any{"text": res.String(), "counts": res})
	r.Event(store.Event{Stage: "Clean-up", State: "info", Data: raw})
	return res.String(), nil
}

// oldest picks, from each group of unused versions in upload order, those
// to delete: all, or all but the KeepUnused newest.
func oldest(groups [][]string, all bool) []string {
	var out []string
	for _, g := range groups {
		if !all {
			g = g[:max(0, len(g)-KeepUnused)]
		}
		out = append(out, g...)
	}
	return out
}

// sweepBlobs deletes the blobs no record names: not a release's job or
// package, not a compiled package, not in an instance's applied spec (its
// rendered jobs are stored under their sha256, its packages under ids in
// their URLs), older than BlobGrace (TaskLogAge for log archives).
func (f *Fleet) sweepBlobs(ctx context.Context, r *task.Reporter, now time.Time) (int, error) {
	used := map[string]bool{}
	busy := ""
	err := f.d.Store.View(func(tx *store.Tx) error {
		// A deploy under way holds blobs it made and has not recorded yet
		// (rendered jobs of instances not yet updated): no sweep then.
		locks, err := tx.Locks()
		if err != nil {
			return err
		}
		if len(locks) > 0 {
			busy = locks[0].Name
			return nil
		}
		for _, list := range []func() ([]store.PackageBlob, error){tx.PackageBlobs, tx.JobBlobs} {
			bs, err := list()
			if err != nil {
				return err
			}
			for _, b := range bs {
				used[b.BlobID] = true
			}
		}
		rs, err := tx.Releases()
		if err != nil {
			return err
		}
		for _, rel := range rs {
			for _, p := range rel.Packages {
				used[p.BlobID] = true
			}
			for _, j := range rel.Jobs {
				used[j.BlobID] = true
			}
		}
		cps, err := tx.CompiledPackages()
		if err != nil {
			return err
		}
		for _, cp := range cps {
			used[cp.BlobID] = true
		}
		ds, err := tx.Deployments()
		if err != nil {
			return err
		}
		for _, d := range ds {
			is, err := tx.Instances(d.Name)
			if err != nil {
				return err
			}
			for _, in := range is {
				specBlobs(in.Spec, used)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if busy != "" {
		f.note(r, "Unreferenced blobs", "left for the next clean-up: deployment "+busy+" has a task under way")
		return 0, nil
	}
	var gone []string
	err = f.d.Blobs.List(ctx, func(b blobstore.Info) error {
		grace := BlobGrace
		if strings.HasPrefix(b.ID, remote.LogsBlobPrefix) {
			grace = TaskLogAge
		}
		if !used[b.ID] && now.Sub(b.ModTime) > grace {
			gone = append(gone, b.ID)
		}
		return nil
	})
	if err != nil || len(gone) == 0 {
		return 0, err
	}
	err = r.Stage("Deleting unreferenced blobs", 1).Run(fmt.Sprintf("%d blobs", len(gone)), func() error {
		return f.deleteBlobs(ctx, gone)
	})
	return len(gone), err
}

// specBlobs adds to used the blobs an applied spec names.
func specBlobs(raw json.RawMessage, used map[string]bool) {
	if len(raw) == 0 {
		return
	}
	var spec applyspec.Spec
	if json.Unmarshal(raw, &spec) != nil {
		return
	}
	add := func(b applyspec.Blob) {
		used[b.SHA256] = true // content-addressed blobs
		if u, err := url.Parse(b.URL); err == nil {
			used[path.Base(u.Path)] = true
		}
	}
	for _, j := range spec.Jobs {
		add(j.Blob)
	}
	for _, p := range spec.Packages {
		add(p.Blob)
	}
}

// note records a one-line note of stage.
func (f *Fleet) note(r *task.Reporter, stage, text string) {
	raw, _ := json.Marshal(map[string]string{"text": text})
	r.Event(store.Event{Stage: stage, State: "info", Data: raw})
}
