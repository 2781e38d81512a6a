package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"

	"go.yaml.in/yaml/v3"

	"github.com/compleat/compleat/director/apiv1"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

// UpgradeRequest is apiv1.UpgradeRequest.
type UpgradeRequest = apiv1.UpgradeRequest

// UpgradeRow is apiv1.UpgradeRow.
type UpgradeRow = apiv1.UpgradeRow

// Results of a rollout's rows.
const (
	ResultUpgraded   = "upgraded"
	ResultFailed     = "failed"
	ResultUpToDate   = "up to date"
	ResultSkipped    = "skipped"
	ResultNotStarted = "not started"
	ResultCancelled  = "cancelled"
	ResultPlanned    = "planned"
)

// SubmitDeploy submits a deploy task of manifest for deployment (a dry run
// when dryRun) and returns its record.
type SubmitDeploy func(deployment, manifest, description string, dryRun bool) (store.Task, error)

// UpgradeStemcell rolls a stemcell through deployments: each one's
// manifest of its last successful deploy, its stemcells of OS set to the
// new version, deployed by a deploy task of its own (canaries and watch
// times as the manifest says), MaxParallel at a time, in the order given,
// stopping at the first failure unless ContinueOnFailure. The summary is
// the result, and a note of stage "Summary" whose data also holds the rows.
func (f *Fleet) UpgradeStemcell(ctx context.Context, r *task.Reporter, req UpgradeRequest) (string, error) {
	if f.d.SubmitDeploy == nil {
		return "", errors.New("upgrade-stemcell: no deploy submitter")
	}
	target, rows, manifests, err := f.planUpgrade(req)
	if err != nil {
		return "", err
	}
	nv := target.Name + "/" + target.Version
	par := max(1, req.MaxParallel)
	stage := r.Stage("Upgrading stemcell to "+nv, len(manifests))
	var mu sync.Mutex
	stop := false
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i := range rows {
		row := &rows[i]
		if row.Result != ResultNotStarted {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		mu.Lock()
		halted := stop || ctx.Err() != nil
		mu.Unlock()
		if halted {
			if ctx.Err() != nil {
				row.Result = ResultCancelled
			}
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			step := stage.Step(row.Deployment)
			err := f.rollOne(ctx, r, row, manifests[row.Deployment], nv, req.DryRun)
			step.Done(err)
			if err != nil && !req.ContinueOnFailure {
				mu.Lock()
				stop = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	summary := formatRows(rows)
	raw, _ := json.Marshal(map[string]any{"text": summary, "rows": rows})
	r.Event(store.Event{Stage: "Summary", State: "info", Data: raw})
	var failed []string
	for _, row := range rows {
		if row.Result == ResultFailed || row.Result == ResultCancelled {
			failed = append(failed, fmt.Sprintf("%s (%s, task %d)", row.Deployment, row.Result, row.TaskID))
		}
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if len(failed) > 0 {
		return "", fmt.Errorf("stemcell %s: %d of %d deployments not upgraded: %s", nv, len(failed), len(rows), strings.Join(failed, ", "))
	}
	return summary, nil
}

// rollOne deploys one deployment and waits for its task.
func (f *Fleet) rollOne(ctx context.Context, r *task.Reporter, row *UpgradeRow, manifest, nv string, dryRun bool) error {
	desc := fmt.Sprintf("deploy %s with stemcell %s", row.Deployment, nv)
	if dryRun {
		desc = "dry run: " + desc
	}
	t, err := f.d.SubmitDeploy(row.Deployment, manifest, desc, dryRun)
	if err != nil {
		row.Result, row.Error = ResultFailed, err.Error()
		return err
	}
	row.TaskID = t.ID
	var after uint64
	var plan json.RawMessage // the deploy's "Plan" note
	for !t.Finished() {
		evs, cur, err := f.d.Tasks.Wait(ctx, t.ID, after)
		if ctx.Err() != nil {
			f.d.Tasks.Cancel(t.ID)
			row.Result = ResultCancelled
			return ctx.Err()
		}
		if err != nil {
			row.Result, row.Error = ResultFailed, err.Error()
			return err
		}
		for _, e := range evs {
			if e.Stage == "Plan" && e.State == "info" {
				plan = e.Data
			}
			after = e.Seq
		}
		t = cur
	}
	if t.State != store.TaskDone {
		row.Result, row.Error = ResultFailed, fmt.Sprintf("task %d %s: %s", t.ID, t.State, t.Error)
		if t.State == store.TaskCancelled {
			row.Result = ResultCancelled
		}
		return errors.New(row.Error)
	}
	row.Result = ResultUpgraded
	if dryRun {
		row.Result = ResultPlanned
		r.Event(store.Event{Stage: "Plan of " + row.Deployment, State: "info", Data: plan})
	}
	return nil
}

// planUpgrade finds the stemcell to roll out and, per deployment, its row
// and the manifest to deploy.
func (f *Fleet) planUpgrade(req UpgradeRequest) (store.Stemcell, []UpgradeRow, map[string]string, error) {
	var target store.Stemcell
	var rows []UpgradeRow
	manifests := map[string]string{}
	if req.OS == "" {
		return target, nil, nil, task.BadInput(errors.New("upgrade-stemcell: the stemcell OS is missing"))
	}
	if req.All == (len(req.Deployments) > 0) {
		return target, nil, nil, task.BadInput(errors.New("upgrade-stemcell: name the deployments (--deployments a,b) or --all, not both"))
	}
	err := f.d.Store.View(func(tx *store.Tx) error {
		ss, err := tx.Stemcells()
		if err != nil {
			return err
		}
		sortByUpload(ss)
		osOf := map[string]string{} // "name/version" → OS
		found := false
		for _, sc := range ss {
			osOf[sc.Name+"/"+sc.Version] = sc.OS
			if sc.Deleting || sc.OS != req.OS && sc.Name != req.OS || req.Version != "" && sc.Version != req.Version {
				continue
			}
			target, found = sc, true // the newest uploaded wins
		}
		if !found {
			what := req.OS
			if req.Version != "" {
				what += "/" + req.Version
			}
			return task.BadInput(fmt.Errorf("upgrade-stemcell: no stemcell %s is uploaded: run `director upload-stemcell` first", what))
		}
		nv := target.Name + "/" + target.Version
		ds, err := tx.Deployments()
		if err != nil {
			return err
		}
		byName := map[string]store.Deployment{}
		for _, d := range ds {
			byName[d.Name] = d
		}
		names := req.Deployments
		if req.All {
			names = nil
			for _, d := range ds {
				if slices.ContainsFunc(append(slices.Clone(d.Stemcells), d.PendingStemcells...), func(s string) bool { return osOf[s] == target.OS }) {
					names = append(names, d.Name)
				}
			}
		}
		for _, name := range names {
			d, ok := byName[name]
			if !ok {
				return task.BadInput(fmt.Errorf("upgrade-stemcell: deployment %s: %w", name, store.ErrNotFound))
			}
			row := UpgradeRow{Deployment: name, To: nv, Result: ResultNotStarted}
			var from []string
			for _, s := range d.Stemcells {
				if osOf[s] == target.OS {
					from = append(from, s)
				}
			}
			row.From = strings.Join(from, ", ")
			if d.ManifestID == 0 {
				row.Result, row.Error = ResultSkipped, "never deployed successfully"
				rows = append(rows, row)
				continue
			}
			m, err := tx.Manifest(name, d.ManifestID)
			if err != nil {
				return err
			}
			edited, matched, err := setStemcellVersion(m.Content, target, ss)
			if err != nil {
				return fmt.Errorf("deployment %s: its manifest: %w", name, err)
			}
			switch {
			case matched == 0:
				row.Result, row.Error = ResultSkipped, "its manifest has no stemcell of "+target.OS
			case len(from) == 1 && from[0] == nv && len(d.PendingStemcells) == 0:
				row.Result = ResultUpToDate
			default:
				manifests[name] = edited
			}
			rows = append(rows, row)
		}
		return nil
	})
	return target, rows, manifests, err
}

// setStemcellVersion sets, in a manifest, the version of every stemcell of
// target's OS (or name) to target's, keeping the rest of the text's
// structure and comments. A `latest` stays when target is the newest
// uploaded of its OS (the deploy resolves it to target). It returns how
// many stemcells matched.
func setStemcellVersion(manifest string, target store.Stemcell, all []store.Stemcell) (string, int, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(manifest), &doc); err != nil {
		return "", 0, err
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return "", 0, errors.New("not a YAML mapping")
	}
	newest := true
	for _, sc := range all {
		if sc.OS == target.OS && !sc.Deleting && sc.UploadedAt.After(target.UploadedAt) {
			newest = false
		}
	}
	top := doc.Content[0]
	matched, changed := 0, false
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value != "stemcells" || top.Content[i+1].Kind != yaml.SequenceNode {
			continue
		}
		for _, sc := range top.Content[i+1].Content {
			if sc.Kind != yaml.MappingNode {
				continue
			}
			os, name, version := field(sc, "os"), field(sc, "name"), field(sc, "version")
			if os != nil && os.Value != target.OS || name != nil && name.Value != target.Name || os == nil && name == nil {
				continue
			}
			matched++
			switch {
			case version == nil:
				sc.Content = append(sc.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "version"}, &yaml.Node{Kind: yaml.ScalarNode, Value: target.Version, Style: yaml.DoubleQuotedStyle})
				changed = true
			case version.Value == "latest" && newest, version.Value == target.Version:
			default:
				version.Value, version.Tag, version.Style = target.Version, "!!str", yaml.DoubleQuotedStyle
				changed = true
			}
		}
	}
	if !changed {
		return manifest, matched, nil
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return "", 0, err
	}
	return buf.String(), matched, nil
}

func field(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// formatRows is the summary table of a rollout.
func formatRows(rows []UpgradeRow) string {
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "Deployment\tFrom\tTo\tResult\tTask")
	for _, r := range rows {
		task := "-"
		if r.TaskID != 0 {
			task = fmt.Sprint(r.TaskID)
		}
		res := r.Result
		if r.Error != "" {
			res += ": " + r.Error
		}
		from := r.From
		if from == "" {
			from = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Deployment, from, r.To, res, task)
	}
	tw.Flush()
	return buf.String()
}
