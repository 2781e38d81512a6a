package manifest

import (
	"slices"

	"go.yaml.in/yaml/v3"
)

// RuntimeConfig adds jobs (addons) to the instances of every deployment
// they match, with the releases those jobs come from.
type RuntimeConfig struct {
	Releases  []Release         `json:"releases,omitempty"`
	Addons    []Addon           `json:"addons,omitempty"`
	Variables []Variable        `json:"variables,omitempty"`
	Tags      map[string]string `json:"tags,omitempty"`

	src source
}

// Addon is a set of jobs placed on every instance its rules match.
type Addon struct {
	Name       string         `json:"name"`
	Jobs       []Job          `json:"jobs"`
	Include    *AddonFilter   `json:"include,omitempty"`
	Exclude    *AddonFilter   `json:"exclude,omitempty"`
	Properties map[string]any `json:"properties,omitempty"`
}

// AddonFilter is a placement rule. Within one criterion any listed value
// matches; every criterion written must match.
type AddonFilter struct {
	Deployments    []string        `json:"deployments,omitempty"`
	Jobs           []AddonJob      `json:"jobs,omitempty"`
	InstanceGroups []string        `json:"instance_groups,omitempty"`
	Stemcells      []AddonStemcell `json:"stemcell,omitempty"`
	Networks       []string        `json:"networks,omitempty"`
	Teams          []string        `json:"teams,omitempty"`
	Lifecycle      string          `json:"lifecycle,omitempty"`
}

// AddonJob matches instance groups running the job Name from Release.
type AddonJob struct {
	Name    string `json:"name"`
	Release string `json:"release"`
}

// AddonStemcell matches instance groups on stemcells of OS.
type AddonStemcell struct {
	OS string `json:"os"`
}

// Target is what a placement rule is matched against: one instance group of
// one deployment.
type Target struct {
	Deployment string
	Group      *InstanceGroup
	StemcellOS string
	Teams      []string
}

// AppliesTo reports whether the addon goes on the target: it matches the
// include rule (or there is none) and does not match the exclude rule.
func (a *Addon) AppliesTo(t Target) bool {
	if a.Include != nil && !a.Include.matches(t) {
		return false
	}
	if a.Exclude != nil && a.Exclude.matches(t) {
		return false
	}
	return true
}

func (f *AddonFilter) matches(t Target) bool {
	if len(f.Deployments) > 0 && !slices.Contains(f.Deployments, t.Deployment) {
		return false
	}
	if len(f.InstanceGroups) > 0 && !slices.Contains(f.InstanceGroups, t.Group.Name) {
		return false
	}
	if len(f.Jobs) > 0 && !slices.ContainsFunc(f.Jobs, func(j AddonJob) bool {
		return slices.ContainsFunc(t.Group.Jobs, func(gj Job) bool { return gj.Name == j.Name && gj.Release == j.Release })
	}) {
		return false
	}
	if len(f.Stemcells) > 0 && !slices.ContainsFunc(f.Stemcells, func(s AddonStemcell) bool { return s.OS == t.StemcellOS }) {
		return false
	}
	if len(f.Networks) > 0 && !slices.ContainsFunc(t.Group.Networks, func(n InstanceNetwork) bool { return slices.Contains(f.Networks, n.Name) }) {
		return false
	}
	if len(f.Teams) > 0 && !slices.ContainsFunc(t.Teams, func(team string) bool { return slices.Contains(f.Teams, team) }) {
		return false
	}
	if f.Lifecycle != "" && f.Lifecycle != t.Group.Lifecycle {
		return false
	}
	return true
}

// Position returns where the field at path was written.
func (rc *RuntimeConfig) Position(path string) Position { return rc.src.Position(path) }

// Errorf makes an Error located at the field path.
func (rc *RuntimeConfig) Errorf(path, format string, args ...any) *Error {
	return rc.src.Errorf(path, format, args...)
}

// File is the name the runtime config was parsed under.
func (rc *RuntimeConfig) File() string { return rc.src.file }

// ParseRuntimeConfig parses and checks a runtime config: every field, and
// every addon job's release listed in releases.
func ParseRuntimeConfig(filename string, data []byte) (*RuntimeConfig, error) {
	root, err := parseYAML(filename, data)
	if err != nil {
		return nil, err
	}
	return decodeRuntimeConfig(filename, root, nil)
}

// decodeRuntimeConfig is ParseRuntimeConfig for a node tree (see decodeDeployment).
func decodeRuntimeConfig(filename string, root *yaml.Node, origins map[*yaml.Node]string) (*RuntimeConfig, error) {
	d := newDecoder(filename, origins)
	rc := &RuntimeConfig{}
	d.object(root, "", fields{
		"releases": func(v *yaml.Node, p string) {
			for i, c := range d.list(v, p) {
				rc.Releases = append(rc.Releases, d.release(c, index(p, i)))
			}
			d.unique(v, p, len(rc.Releases), func(i int) string { return rc.Releases[i].Name }, "release")
		},
		"addons":    func(v *yaml.Node, p string) { rc.Addons = d.addons(v, p, true) },
		"variables": func(v *yaml.Node, p string) { rc.Variables = d.variables(v, p) },
		"tags":      func(v *yaml.Node, p string) { rc.Tags = d.tags(v, p) },
	})
	d.checkAddonReleases("", rc.Addons, rc.Releases)
	if err := d.errs.err(); err != nil {
		return nil, err
	}
	rc.src = source{file: filename, pos: d.pos, root: root}
	return rc, nil
}

// checkAddonReleases reports addon jobs whose release is not listed.
func (d *decoder) checkAddonReleases(prefix string, addons []Addon, releases []Release) {
	for i, a := range addons {
		for j, job := range a.Jobs {
			if job.Release == "" || slices.ContainsFunc(releases, func(r Release) bool { return r.Name == job.Release }) {
				continue
			}
			p := join(prefix, join(index(join(index("addons", i), "jobs"), j), "release"))
			d.errorAt(p, "release %q is not in releases", job.Release)
		}
	}
}

func (d *decoder) addons(n *yaml.Node, path string, runtime bool) []Addon {
	var out []Addon
	for i, c := range d.list(n, path) {
		p := index(path, i)
		var a Addon
		d.object(c, p, fields{
			"name": func(v *yaml.Node, p string) { a.Name = d.name(v, p) },
			"jobs": func(v *yaml.Node, p string) {
				for i, c := range d.list(v, p) {
					a.Jobs = append(a.Jobs, d.job(c, index(p, i)))
				}
				d.unique(v, p, len(a.Jobs), func(i int) string { return a.Jobs[i].Name }, "job")
			},
			"include":    func(v *yaml.Node, p string) { a.Include = d.addonFilter(v, p, runtime) },
			"exclude":    func(v *yaml.Node, p string) { a.Exclude = d.addonFilter(v, p, runtime) },
			"properties": func(v *yaml.Node, p string) { a.Properties = d.props(v, p) },
		}, "name", "jobs")
		out = append(out, a)
	}
	d.unique(n, path, len(out), func(i int) string { return out[i].Name }, "addon")
	return out
}

func (d *decoder) addonFilter(n *yaml.Node, path string, runtime bool) *AddonFilter {
	f := &AddonFilter{}
	fs := fields{
		"jobs": func(v *yaml.Node, p string) {
			for i, c := range d.list(v, p) {
				var j AddonJob
				d.object(c, index(p, i), fields{
					"name":    func(v *yaml.Node, p string) { j.Name = d.name(v, p) },
					"release": func(v *yaml.Node, p string) { j.Release = d.name(v, p) },
				}, "name", "release")
				f.Jobs = append(f.Jobs, j)
			}
		},
		"instance_groups": func(v *yaml.Node, p string) { f.InstanceGroups = d.names(v, p) },
		"stemcell": func(v *yaml.Node, p string) {
			for i, c := range d.list(v, p) {
				var s AddonStemcell
				d.object(c, index(p, i), fields{
					"os": func(v *yaml.Node, p string) { s.OS = d.name(v, p) },
				}, "os")
				f.Stemcells = append(f.Stemcells, s)
			}
		},
		"networks": func(v *yaml.Node, p string) { f.Networks = d.names(v, p) },
		"lifecycle": func(v *yaml.Node, p string) {
			f.Lifecycle = d.str(v, p)
			if f.Lifecycle != Service && f.Lifecycle != Errand {
				d.errorf(v, p, "must be %q or %q, not %q", Service, Errand, f.Lifecycle)
			}
		},
	}
	if runtime {
		fs["deployments"] = func(v *yaml.Node, p string) { f.Deployments = d.names(v, p) }
		fs["teams"] = func(v *yaml.Node, p string) { f.Teams = d.names(v, p) }
	}
	d.object(n, path, fs)
	return f
}
