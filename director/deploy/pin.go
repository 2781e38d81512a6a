package deploy

// Pinning the releases a rollback restores. A manifest naming a release
// `version: latest` would, redeployed after a failure, resolve to the
// newest upload, usually the very release that failed. Before a rollback
// redeploys the last successful manifest, each `latest` is replaced by the
// uploaded version whose jobs and packages match what the instances the
// failed rollout did not change still run.

import (
	"encoding/json"
	"fmt"

	"go.yaml.in/yaml/v3"

	"github.com/compleat/compleat/director/plan"
	"github.com/compleat/compleat/director/store"
)

// pinLatest returns the manifest with every release at `latest` pinned to
// the version the given instance records run (the instances the failed
// rollout left as they were), and what it pinned ("web 2"). A release it
// cannot identify is left at latest and named in unresolved.
func pinLatest(content string, records []store.Instance, releases []store.Release) (out string, pinned, unresolved []string, err error) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(content), &doc); err != nil {
		return "", nil, nil, fmt.Errorf("last successful manifest: %w", err)
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return content, nil, nil, nil
	}
	rels := mappingValue(doc.Content[0], "releases")
	if rels == nil || rels.Kind != yaml.SequenceNode {
		return content, nil, nil, nil
	}
	// What the unchanged instances run: job fingerprints by release, and
	// package fingerprints by name.
	jobs := map[string]map[string]bool{}
	pkgs := map[string]string{}
	for _, rec := range records {
		var st plan.InstanceState
		if json.Unmarshal(rec.Spec, &st) != nil {
			continue
		}
		for _, j := range st.Jobs {
			if jobs[j.Release] == nil {
				jobs[j.Release] = map[string]bool{}
			}
			jobs[j.Release][j.Fingerprint] = true
		}
		for name, fp := range st.Packages {
			pkgs[name] = fp
		}
	}
	changed := false
	for _, r := range rels.Content {
		name, version := mappingValue(r, "name"), mappingValue(r, "version")
		if name == nil || version == nil || version.Value != "latest" {
			continue
		}
		v, ok := runningVersion(name.Value, jobs[name.Value], pkgs, releases)
		if !ok {
			unresolved = append(unresolved, name.Value)
			continue
		}
		version.Value, version.Style, version.Tag = v, yaml.DoubleQuotedStyle, "!!str"
		pinned = append(pinned, name.Value+" "+v)
		changed = true
	}
	if !changed {
		return content, nil, unresolved, nil
	}
	raw, err := yaml.Marshal(&doc)
	if err != nil {
		return "", nil, nil, err
	}
	return string(raw), pinned, unresolved, nil
}

// runningVersion finds the newest upload of the release holding every job
// fingerprint the instances run, and whose packages the instances run
// carry the same fingerprints.
func runningVersion(name string, jobFPs map[string]bool, pkgs map[string]string, releases []store.Release) (string, bool) {
	if len(jobFPs) == 0 {
		return "", false
	}
	best, found := store.Release{}, false
	for _, rel := range releases {
		if rel.Name != name {
			continue
		}
		have := map[string]bool{}
		for _, j := range rel.Jobs {
			have[j.Fingerprint] = true
		}
		ok := true
		for fp := range jobFPs {
			ok = ok && have[fp]
		}
		for _, p := range rel.Packages {
			if fp, runs := pkgs[p.Name]; runs && fp != p.Fingerprint {
				ok = false
			}
		}
		if ok && (!found || rel.UploadedAt.After(best.UploadedAt)) {
			best, found = rel, true
		}
	}
	return best.Version, found
}

// mappingValue is the value node of key in a YAML mapping, or nil.
func mappingValue(m *yaml.Node, key string) *yaml.Node {
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}
