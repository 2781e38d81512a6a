package manifest

import (
	"net/netip"

	"go.yaml.in/yaml/v3"
)

// Deployment is a BOSH v2 deployment manifest.
type Deployment struct {
	Name           string            `json:"name"`
	Releases       []Release         `json:"releases"`
	Stemcells      []Stemcell        `json:"stemcells"`
	Update         Update            `json:"update"`
	InstanceGroups []InstanceGroup   `json:"instance_groups"`
	Variables      []Variable        `json:"variables,omitempty"`
	Features       Features          `json:"features"`
	Tags           map[string]string `json:"tags,omitempty"`
	// Addons declared in the deployment itself apply like runtime config
	// addons, limited to this deployment.
	Addons []Addon `json:"addons,omitempty"`
	// Properties is the deprecated global properties block, merged under
	// each job's properties by the planner if it chooses to support it.
	Properties map[string]any `json:"properties,omitempty"`

	src source
}

// Release names a release the deployment uses.
type Release struct {
	Name string `json:"name"`
	// Version is the version string as written ("1.2.3"), or "latest".
	Version string `json:"version"`
	URL     string `json:"url,omitempty"`
	SHA1    string `json:"sha1,omitempty"`
	// Stemcell is set for compiled releases: the OS and version they were
	// compiled against.
	Stemcell *ReleaseStemcell `json:"stemcell,omitempty"`
}

// ReleaseStemcell is the stemcell a compiled release was built for.
type ReleaseStemcell struct {
	OS      string `json:"os"`
	Version string `json:"version"`
}

// Stemcell binds an alias to a stemcell chosen by OS (or by full name) and
// version ("latest" allowed).
type Stemcell struct {
	Alias   string `json:"alias"`
	OS      string `json:"os,omitempty"`
	Name    string `json:"name,omitempty"`
	Version string `json:"version"`
}

// Lifecycles of an instance group.
const (
	Service = "service"
	Errand  = "errand"
)

// InstanceGroup is a set of identical instances running the same jobs.
type InstanceGroup struct {
	Name               string            `json:"name"`
	AZs                []string          `json:"azs"`
	Instances          int               `json:"instances"`
	Jobs               []Job             `json:"jobs"`
	VMType             string            `json:"vm_type,omitempty"`
	VMResources        *VMResources      `json:"vm_resources,omitempty"`
	VMExtensions       []string          `json:"vm_extensions,omitempty"`
	Stemcell           string            `json:"stemcell"`
	PersistentDisk     int               `json:"persistent_disk,omitempty"` // MB; 0 means none
	PersistentDiskType string            `json:"persistent_disk_type,omitempty"`
	Networks           []InstanceNetwork `json:"networks"`
	// Update is the deployment's update block with this group's overrides
	// applied: always complete.
	Update Update `json:"update"`
	// Lifecycle is Service (default) or Errand.
	Lifecycle string `json:"lifecycle"`
	// Properties is the deprecated group-level properties block.
	Properties map[string]any `json:"properties,omitempty"`
	Env        map[string]any `json:"env,omitempty"`
}

// VMResources asks the CPI to pick a VM size (instead of vm_type).
type VMResources struct {
	CPU               int `json:"cpu"`
	RAM               int `json:"ram"`
	EphemeralDiskSize int `json:"ephemeral_disk_size"`
}

// Job places one job of a release on every instance of a group.
type Job struct {
	Name                      string                     `json:"name"`
	Release                   string                     `json:"release"`
	Properties                map[string]any             `json:"properties,omitempty"`
	Consumes                  map[string]Consume         `json:"consumes,omitempty"`
	Provides                  map[string]Provide         `json:"provides,omitempty"`
	CustomProviderDefinitions []CustomProviderDefinition `json:"custom_provider_definitions,omitempty"`
}

// Consume says where a job's consumed link comes from. The zero value means
// "resolve implicitly by type".
type Consume struct {
	// Blocked is set by `link: nil`: the optional link is not wired.
	Blocked     bool        `json:"blocked,omitempty"`
	From        string      `json:"from,omitempty"`
	Deployment  string      `json:"deployment,omitempty"`
	Network     string      `json:"network,omitempty"`
	IPAddresses *bool       `json:"ip_addresses,omitempty"`
	Manual      *ManualLink `json:"manual,omitempty"`
}

// ManualLink is a link written out by hand instead of provided by a job.
type ManualLink struct {
	Address    string           `json:"address,omitempty"`
	Instances  []ManualInstance `json:"instances,omitempty"`
	Properties map[string]any   `json:"properties,omitempty"`
}

// ManualInstance is one instance of a manual link.
type ManualInstance struct {
	Name    string `json:"name,omitempty"`
	ID      string `json:"id,omitempty"`
	Index   int    `json:"index"`
	AZ      string `json:"az,omitempty"`
	Address string `json:"address"`
}

// Provide renames, shares or blocks a link a job provides.
type Provide struct {
	Blocked bool        `json:"blocked,omitempty"`
	As      string      `json:"as,omitempty"`
	Shared  bool        `json:"shared,omitempty"`
	Aliases []LinkAlias `json:"aliases,omitempty"`
}

// LinkAlias is an extra DNS name for a provided link.
type LinkAlias struct {
	Domain       string `json:"domain"`
	HealthFilter string `json:"health_filter,omitempty"`
}

// CustomProviderDefinition declares a link a job provides beyond its spec.
type CustomProviderDefinition struct {
	Name       string   `json:"name"`
	Type       string   `json:"type"`
	Properties []string `json:"properties,omitempty"`
}

// InstanceNetwork attaches an instance group to a cloud config network.
type InstanceNetwork struct {
	Name string `json:"name"`
	// StaticIPs lists every address, ranges ("10.0.0.10 - 10.0.0.12")
	// expanded, in the order written.
	StaticIPs []netip.Addr `json:"static_ips,omitempty"`
	// Default lists what this network is the default for: "dns",
	// "gateway", "addressable".
	Default []string `json:"default,omitempty"`

	staticItem []int // for each of StaticIPs, the index of the item it was written in
}

// Variable types the director can generate.
const (
	VarPassword    = "password"
	VarCertificate = "certificate"
	VarSSH         = "ssh"
	VarRSA         = "rsa"
)

// Variable declares a value the director generates and stores.
type Variable struct {
	Name    string         `json:"name"`
	Type    string         `json:"type"`
	Options map[string]any `json:"options,omitempty"`
	// UpdateMode is "" (generate once) or "converge" (regenerate when the
	// options change).
	UpdateMode string `json:"update_mode,omitempty"`
}

// Features toggles deployment-wide behaviour. Nil means unset (the
// director's default applies).
type Features struct {
	UseDNSAddresses      *bool `json:"use_dns_addresses,omitempty"`
	UseShortDNSAddresses *bool `json:"use_short_dns_addresses,omitempty"`
	UseLinkDNSNames      *bool `json:"use_link_dns_names,omitempty"`
	RandomizeAZPlacement *bool `json:"randomize_az_placement,omitempty"`
	ConvergeVariables    *bool `json:"converge_variables,omitempty"`
	UseTmpfsConfig       *bool `json:"use_tmpfs_config,omitempty"`
}

// source remembers where each field of a parsed document was written.
type source struct {
	file string
	pos  map[string]Position
	root *yaml.Node
}

// Position returns where the field at path (as in error messages:
// "instance_groups[1].jobs[0].release") was written; for a field that was
// not written, the position of its closest written parent.
func (s source) Position(path string) Position {
	for {
		if p, ok := s.pos[path]; ok {
			return p
		}
		if path == "" {
			return Position{File: s.file}
		}
		path = parent(path)
	}
}

// Errorf makes an Error located at the field path, for callers (the planner)
// that find problems the parser cannot.
func (s source) Errorf(path, format string, args ...any) *Error {
	return &Error{Position: s.Position(path), Path: path, Message: sprintf(format, args...)}
}

// File is the name the document was parsed under.
func (s source) File() string { return s.file }

func parent(path string) string {
	for i := len(path) - 1; i >= 0; i-- {
		switch path[i] {
		case '.':
			return path[:i]
		case '[':
			return path[:i]
		}
	}
	return ""
}

// InstanceGroup returns the instance group called name.
func (dep *Deployment) InstanceGroup(name string) (*InstanceGroup, bool) {
	for i := range dep.InstanceGroups {
		if dep.InstanceGroups[i].Name == name {
			return &dep.InstanceGroups[i], true
		}
	}
	return nil, false
}

// Release returns the release called name.
func (dep *Deployment) Release(name string) (*Release, bool) {
	for i := range dep.Releases {
		if dep.Releases[i].Name == name {
			return &dep.Releases[i], true
		}
	}
	return nil, false
}

// Stemcell returns the stemcell with the given alias.
func (dep *Deployment) Stemcell(alias string) (*Stemcell, bool) {
	for i := range dep.Stemcells {
		if dep.Stemcells[i].Alias == alias {
			return &dep.Stemcells[i], true
		}
	}
	return nil, false
}
