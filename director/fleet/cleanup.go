package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

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
)

// CleanUpResult counts what a clean-up deleted.
type CleanUpResult struct {
	Releases         int `json:"releases"`
	ReleaseBlobs     int `json:"release_blobs"`
	Stemcells        int `json:"stemcells"`
	CompiledPackages int `json:"compiled_packages"`
	OrphanedDisks    int `json:"orphaned_disks"`
	TaskLogs         int `json:"task_logs"`
}

func (c CleanUpResult) String() string {
	return fmt.Sprintf("Cleaned up: %d releases (%d blobs), %d stemcells (%d compiled packages), %d orphaned disks, %d task logs.",
		c.Releases, c.ReleaseBlobs, c.Stemcells, c.CompiledPackages, c.OrphanedDisks, c.TaskLogs)
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
