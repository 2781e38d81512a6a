package store

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"time"
)

// Deployment is a deployed (or being deployed) manifest and what it uses.
type Deployment struct {
	Name string `json:"name"`
	// ManifestID is the id of the manifest version last deployed successfully;
	// 0 until the first deploy finishes.
	ManifestID uint64 `json:"manifest_id"`
	// Releases and Stemcells ("name/version") are those of the last
	// successful deploy: a stemcell is recorded once it is rolled out.
	Releases  []string `json:"releases,omitempty"`
	Stemcells []string `json:"stemcells,omitempty"`
	// PendingReleases and PendingStemcells are those of a deploy under way
	// or failed since the last successful one (some instances may run on
	// them): they count as used, and are cleared when a deploy succeeds.
	PendingReleases  []string `json:"pending_releases,omitempty"`
	PendingStemcells []string `json:"pending_stemcells,omitempty"`
	CloudConfigID    uint64   `json:"cloud_config_id,omitempty"`
	RuntimeConfigIDs []uint64 `json:"runtime_config_ids,omitempty"`
	// Links are the links the deployment provides (plan.ProvidedLink as
	// JSON), recorded when a deploy succeeds; other deployments consume
	// the shared ones. Their properties may hold generated secrets, so they
	// are sealed at rest with the variables key (storedDeployment).
	Links json.RawMessage `json:"links,omitempty"`
	// ConsumedLinks are the links of other deployments the last successful
	// deploy consumed: "deployment/link" → the provided link's hash.
	ConsumedLinks map[string]string `json:"consumed_links,omitempty"`
	// StaleLinks names the consumed links ("deployment/link") whose
	// provider was deployed again with other instances or properties since
	// this deployment consumed them: a deploy of this deployment picks the
	// change up (and clears the list).
	StaleLinks []string  `json:"stale_links,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// Manifest is one version of a deployment's manifest, as submitted.
type Manifest struct {
	ID         uint64    `json:"id"`
	Deployment string    `json:"deployment"`
	Content    string    `json:"content"`
	TaskID     uint64    `json:"task_id,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
}

// PutDeployment records or replaces a deployment.
func (t *Tx) PutDeployment(d Deployment) error {
	now := t.now().UTC()
	if d.CreatedAt.IsZero() {
		d.CreatedAt = now
	}
	d.UpdatedAt = now
	sd := storedDeployment{Deployment: d}
	if len(d.Links) > 0 {
		g, err := t.aead()
		if err != nil {
			return err
		}
		sd.LinksNonce = make([]byte, g.NonceSize())
		if _, err := rand.Read(sd.LinksNonce); err != nil {
			return fmt.Errorf("links nonce: %w", err)
		}
		sd.LinksSealed = g.Seal(nil, sd.LinksNonce, d.Links, linksAAD(d.Name))
		sd.Links = nil
	}
	return t.put(bucketDeployments, []byte(d.Name), sd)
}

// storedDeployment is a Deployment as the bucket holds it: its links
// sealed.
type storedDeployment struct {
	Deployment
	LinksNonce  []byte `json:"links_nonce,omitempty"`
	LinksSealed []byte `json:"links_sealed,omitempty"`
}

func linksAAD(deployment string) []byte { return []byte("deployment/" + deployment + "/links") }

func (t *Tx) openDeployment(sd storedDeployment) (Deployment, error) {
	d := sd.Deployment
	if sd.LinksSealed == nil {
		return d, nil
	}
	g, err := t.aead()
	if err != nil {
		return d, err
	}
	plain, err := g.Open(nil, sd.LinksNonce, sd.LinksSealed, linksAAD(d.Name))
	if err != nil {
		return d, fmt.Errorf("deployment %s: unseal links: wrong key for this state file?: %w", d.Name, err)
	}
	d.Links = plain
	return d, nil
}

// Deployment returns one deployment.
func (t *Tx) Deployment(name string) (Deployment, error) {
	var sd storedDeployment
	if err := t.get(bucketDeployments, []byte(name), &sd); err != nil {
		return sd.Deployment, fmt.Errorf("deployment %s: %w", name, err)
	}
	return t.openDeployment(sd)
}

// Deployments lists every deployment by name.
func (t *Tx) Deployments() ([]Deployment, error) {
	sds, err := list[storedDeployment](t, bucketDeployments, "")
	if err != nil {
		return nil, err
	}
	var out []Deployment
	for _, sd := range sds {
		d, err := t.openDeployment(sd)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// DeleteDeployment removes a deployment, its manifests and its instance
// records. VMs, disks and IP reservations are the caller's to remove (they
// stand for cloud objects that must be deleted first).
func (t *Tx) DeleteDeployment(name string) error {
	if err := t.del(bucketDeployments, []byte(name)); err != nil {
		return err
	}
	if err := t.tx.deleteBucket(path(bucketManifests, []byte(name))); err != nil {
		return fmt.Errorf("delete manifests of %s: %w", name, err)
	}
	insts, err := t.Instances(name)
	if err != nil {
		return err
	}
	for _, i := range insts {
		if err := t.DeleteInstance(i.Deployment, i.Group, i.ID); err != nil {
			return err
		}
	}
	return nil
}

// AddManifest stores a new manifest version of a deployment and returns its id.
func (t *Tx) AddManifest(deployment, content string, taskID uint64) (Manifest, error) {
	p := path(bucketManifests, []byte(deployment))
	id, err := t.tx.nextSequence(p)
	if err != nil {
		return Manifest{}, fmt.Errorf("next manifest id: %w", err)
	}
	m := Manifest{ID: id, Deployment: deployment, Content: content, TaskID: taskID, CreatedAt: t.now().UTC()}
	raw, err := json.Marshal(m)
	if err != nil {
		return m, err
	}
	return m, t.tx.put(p, itob(id), raw)
}

// Manifest returns one manifest version of a deployment; id 0 means the
// newest.
func (t *Tx) Manifest(deployment string, id uint64) (Manifest, error) {
	var m Manifest
	p := path(bucketManifests, []byte(deployment))
	var raw []byte
	var err error
	if id == 0 {
		err = t.tx.scan(p, nil, nil, true, func(_, v []byte) (bool, error) {
			raw = v
			return false, nil
		})
		if err == nil && raw == nil {
			return m, fmt.Errorf("manifest of %s: %w", deployment, ErrNotFound)
		}
	} else {
		raw, err = t.tx.get(p, itob(id))
	}
	if err != nil {
		return m, fmt.Errorf("manifest %d of %s: %w", id, deployment, err)
	}
	if raw == nil {
		return m, fmt.Errorf("manifest %d of %s: %w", id, deployment, ErrNotFound)
	}
	return m, decode(raw, &m)
}

// Instance is one instance of an instance group.
type Instance struct {
	Deployment string `json:"deployment"`
	Group      string `json:"group"`
	ID         string `json:"id"` // a uuid, stable for the instance's life
	Index      int    `json:"index"`
	AZ         string `json:"az,omitempty"`
	Bootstrap  bool   `json:"bootstrap,omitempty"`
	// State is the desired state: "started", "stopped" or "detached".
	State     string   `json:"state"`
	VMCID     string   `json:"vm_cid,omitempty"`
	AgentID   string   `json:"agent_id,omitempty"`
	DiskCIDs  []string `json:"disk_cids,omitempty"`
	IgnoreFix bool     `json:"ignore,omitempty"`
	// Unfinished is set when a deploy starts taking the instance down and
	// cleared when its update is recorded: a director that died in between
	// left it drained or stopped, and the next deploy updates it again.
	Unfinished bool `json:"unfinished,omitempty"`
	// Spec is the spec last applied to the instance's agent (the deploy
	// pipeline's own document); empty before the first apply.
	Spec      json.RawMessage `json:"spec,omitempty"`
	UpdatedAt time.Time       `json:"updated_at"`
}

func instanceKey(deployment, group, id string) []byte {
	return []byte(deployment + "/" + group + "/" + id)
}

// PutInstance records or replaces an instance.
func (t *Tx) PutInstance(i Instance) error {
	i.UpdatedAt = t.now().UTC()
	return t.put(bucketInstances, instanceKey(i.Deployment, i.Group, i.ID), i)
}

// Instance returns one instance.
func (t *Tx) Instance(deployment, group, id string) (Instance, error) {
	var i Instance
	if err := t.get(bucketInstances, instanceKey(deployment, group, id), &i); err != nil {
		return i, fmt.Errorf("instance %s/%s of %s: %w", group, id, deployment, err)
	}
	return i, nil
}

// Instances lists a deployment's instances ordered by group then id.
func (t *Tx) Instances(deployment string) ([]Instance, error) {
	return list[Instance](t, bucketInstances, deployment+"/")
}

// DeleteInstance removes an instance record.
func (t *Tx) DeleteInstance(deployment, group, id string) error {
	return t.del(bucketInstances, instanceKey(deployment, group, id))
}

// VM is a VM the director created (or is creating: State records intent
// before the CPI call so that an interrupted deploy can clean up).
type VM struct {
	CID        string    `json:"cid"`
	CPI        string    `json:"cpi"`
	AgentID    string    `json:"agent_id"`
	Deployment string    `json:"deployment,omitempty"`
	InstanceID string    `json:"instance_id,omitempty"`
	Stemcell   string    `json:"stemcell,omitempty"` // cid
	State      string    `json:"state,omitempty"`    // e.g. "creating", "created", "deleting"
	CreatedAt  time.Time `json:"created_at"`
	// CertSerial is the serial (hex) of the bus certificate the director
	// signed for the agent's own key (request_identity); the bus admits
	// only it. Empty: the agent has its bootstrap certificate still (or
	// one made before identities were recorded). PendingSerial is one
	// being handed over (rotate-agent-certs), admitted too meanwhile.
	CertSerial    string `json:"cert_serial,omitempty"`
	PendingSerial string `json:"pending_serial,omitempty"`
}

// PutVM records or replaces a VM.
func (t *Tx) PutVM(v VM) error {
	if v.CreatedAt.IsZero() {
		v.CreatedAt = t.now().UTC()
	}
	return t.put(bucketVMs, []byte(v.CID), v)
}

// VM returns one VM by cid.
func (t *Tx) VM(cid string) (VM, error) {
	var v VM
	if err := t.get(bucketVMs, []byte(cid), &v); err != nil {
		return v, fmt.Errorf("vm %s: %w", cid, err)
	}
	return v, nil
}

// VMs lists VMs of a deployment ("" for all).
func (t *Tx) VMs(deployment string) ([]VM, error) {
	all, err := list[VM](t, bucketVMs, "")
	return filter(all, func(v VM) bool { return deployment == "" || v.Deployment == deployment }), err
}

// DeleteVM removes a VM record.
func (t *Tx) DeleteVM(cid string) error { return t.del(bucketVMs, []byte(cid)) }

// Disk is a persistent disk; orphaned disks are kept until deleted.
type Disk struct {
	CID             string          `json:"cid"`
	CPI             string          `json:"cpi"`
	Deployment      string          `json:"deployment,omitempty"`
	InstanceID      string          `json:"instance_id,omitempty"`
	SizeMB          int64           `json:"size_mb"`
	DiskType        string          `json:"disk_type,omitempty"`
	CloudProperties json.RawMessage `json:"cloud_properties,omitempty"`
	State           string          `json:"state,omitempty"`
	Orphaned        bool            `json:"orphaned,omitempty"`
	OrphanedAt      time.Time       `json:"orphaned_at,omitzero"`
	CreatedAt       time.Time       `json:"created_at"`
}

// PutDisk records or replaces a disk.
func (t *Tx) PutDisk(d Disk) error {
	if d.CreatedAt.IsZero() {
		d.CreatedAt = t.now().UTC()
	}
	return t.put(bucketDisks, []byte(d.CID), d)
}

// Disk returns one disk by cid.
func (t *Tx) Disk(cid string) (Disk, error) {
	var d Disk
	if err := t.get(bucketDisks, []byte(cid), &d); err != nil {
		return d, fmt.Errorf("disk %s: %w", cid, err)
	}
	return d, nil
}

// Disks lists disks; orphaned selects orphaned disks only, else attached ones.
func (t *Tx) Disks(orphaned bool) ([]Disk, error) {
	all, err := list[Disk](t, bucketDisks, "")
	return filter(all, func(d Disk) bool { return d.Orphaned == orphaned }), err
}

// OrphanDisk marks a disk orphaned, detached from its instance.
func (t *Tx) OrphanDisk(cid string) error {
	d, err := t.Disk(cid)
	if err != nil {
		return err
	}
	d.Orphaned, d.OrphanedAt, d.InstanceID = true, t.now().UTC(), ""
	return t.PutDisk(d)
}

// DeleteDisk removes a disk record.
func (t *Tx) DeleteDisk(cid string) error { return t.del(bucketDisks, []byte(cid)) }

// IPReservation holds an address of a network for an instance.
type IPReservation struct {
	Network    string    `json:"network"`
	IP         string    `json:"ip"`
	Deployment string    `json:"deployment"`
	InstanceID string    `json:"instance_id"`
	Static     bool      `json:"static,omitempty"`
	ReservedAt time.Time `json:"reserved_at"`
}

func ipKey(network, ip string) []byte { return []byte(network + "/" + ip) }

// ReserveIP reserves an address; reserving it again for the same instance is a
// no-op, for another one ErrConflict.
func (t *Tx) ReserveIP(r IPReservation) error {
	var cur IPReservation
	err := t.get(bucketIPs, ipKey(r.Network, r.IP), &cur)
	if err == nil {
		if cur.Deployment == r.Deployment && cur.InstanceID == r.InstanceID {
			return nil
		}
		return fmt.Errorf("ip %s on network %s is reserved by %s/%s: %w", r.IP, r.Network, cur.Deployment, cur.InstanceID, ErrConflict)
	}
	if r.ReservedAt.IsZero() {
		r.ReservedAt = t.now().UTC()
	}
	return t.put(bucketIPs, ipKey(r.Network, r.IP), r)
}

// ReleaseIP frees an address.
func (t *Tx) ReleaseIP(network, ip string) error { return t.del(bucketIPs, ipKey(network, ip)) }

// IPReservations lists the reservations of a network ("" for all).
func (t *Tx) IPReservations(network string) ([]IPReservation, error) {
	prefix := ""
	if network != "" {
		prefix = network + "/"
	}
	return list[IPReservation](t, bucketIPs, prefix)
}

// CompiledPackage is a package compiled for a stemcell, cached by Key (the
// package fingerprint, its dependencies' fingerprints and the stemcell OS and
// version, combined by the compiler).
type CompiledPackage struct {
	Key         string    `json:"key"`
	Name        string    `json:"name"`
	Fingerprint string    `json:"fingerprint"`
	Stemcell    string    `json:"stemcell"` // "os/version"
	BlobID      string    `json:"blob_id"`
	SHA256      string    `json:"sha256"`
	CreatedAt   time.Time `json:"created_at"`
}

// PutCompiledPackage records a compiled package.
func (t *Tx) PutCompiledPackage(p CompiledPackage) error {
	if p.CreatedAt.IsZero() {
		p.CreatedAt = t.now().UTC()
	}
	return t.put(bucketCompiled, []byte(p.Key), p)
}

// CompiledPackage finds a compiled package by cache key.
func (t *Tx) CompiledPackage(key string) (CompiledPackage, error) {
	var p CompiledPackage
	if err := t.get(bucketCompiled, []byte(key), &p); err != nil {
		return p, fmt.Errorf("compiled package %s: %w", key, err)
	}
	return p, nil
}

// DeleteCompiledPackage removes a compiled package record (its blob is the
// caller's to delete).
func (t *Tx) DeleteCompiledPackage(key string) error { return t.del(bucketCompiled, []byte(key)) }

// CompiledPackages lists the compiled package cache.
func (t *Tx) CompiledPackages() ([]CompiledPackage, error) {
	return list[CompiledPackage](t, bucketCompiled, "")
}

func filter[T any](in []T, keep func(T) bool) []T {
	var out []T
	for _, v := range in {
		if keep(v) {
			out = append(out, v)
		}
	}
	return out
}
