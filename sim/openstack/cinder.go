package openstack

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"
)

type volume struct {
	ID, Name, Description, Status, VolumeType, AZ string
	Size                                          int // GiB
	Bootable                                      bool
	Metadata                                      map[string]string
	Attachments                                   []*volAttachment
	Created                                       time.Time
	seq                                           int64
	deleteWithServer                              bool
}

type volAttachment struct {
	ID, ServerID, Device string
	At                   time.Time
}

type snapshot struct {
	ID, Name, Description, VolumeID, Status string
	Size                                    int
	Metadata                                map[string]string
	Created                                 time.Time
	seq                                     int64
}

type volumeType struct {
	ID, Name string
	IsPublic bool
}

// VolumePath is where the data of a volume lives: a sparse image file of
// the volume's size, which the boot machinery shows the VM the volume is
// attached to as a block device.
func (c *Cloud) VolumePath(id string) string { return filepath.Join(c.dataDir, "volumes", id+".img") }

// sizeVolume makes (or grows) the volume's image file, sparse.
func (c *Cloud) sizeVolume(id string, gib int) error {
	if err := os.MkdirAll(filepath.Join(c.dataDir, "volumes"), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(c.VolumePath(id), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Truncate(int64(gib) << 30)
}

func (c *Cloud) routeCinder(mux *http.ServeMux) {
	h := func(pattern string, fn handler) { mux.HandleFunc(pattern, c.authed(cinder, fn)) }
	versions := func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusMultipleChoices, map[string]any{"versions": []any{c.cinderVersionDoc()}})
	}
	mux.HandleFunc("GET /volume/{$}", versions)
	mux.HandleFunc("GET /volume", versions)
	mux.HandleFunc("GET /volume/v3/{$}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"versions": []any{c.cinderVersionDoc()}})
	})
	base := "/volume/v3/{project}"
	h("GET "+base+"/{$}", func(w http.ResponseWriter, r *http.Request) *apiError {
		writeJSON(w, http.StatusOK, map[string]any{"versions": []any{c.cinderVersionDoc()}})
		return nil
	})
	h("POST "+base+"/volumes", c.createVolume)
	h("GET "+base+"/volumes", c.listVolumes(false))
	h("GET "+base+"/volumes/detail", c.listVolumes(true))
	h("GET "+base+"/volumes/{id}", c.showVolume)
	h("PUT "+base+"/volumes/{id}", c.updateVolume)
	h("DELETE "+base+"/volumes/{id}", c.deleteVolume)
	h("POST "+base+"/volumes/{id}/action", c.volumeAction)
	h("GET "+base+"/volumes/{id}/metadata", c.volumeMetadata)
	h("POST "+base+"/volumes/{id}/metadata", c.volumeMetadata)
	h("PUT "+base+"/volumes/{id}/metadata", c.volumeMetadata)
	h("POST "+base+"/snapshots", c.createSnapshot)
	h("GET "+base+"/snapshots", c.listSnapshots)
	h("GET "+base+"/snapshots/detail", c.listSnapshots)
	h("GET "+base+"/snapshots/{id}", c.showSnapshot)
	h("DELETE "+base+"/snapshots/{id}", c.deleteSnapshot)
	h("GET "+base+"/types", c.listVolumeTypes)
	h("GET "+base+"/types/{id}", c.showVolumeType)
	mux.HandleFunc("/volume/", c.authed(cinder, func(w http.ResponseWriter, r *http.Request) *apiError {
		return errorf(http.StatusNotFound, "The resource could not be found.")
	}))
}

func (c *Cloud) cinderVersionDoc() map[string]any {
	return map[string]any{
		"id": "v3.0", "status": "CURRENT", "version": "3.0", "min_version": "3.0", "updated": "2023-08-31T00:00:00Z",
		"links":       []any{map[string]any{"rel": "self", "href": c.baseURL + "/volume/v3/"}},
		"media-types": []any{map[string]any{"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}},
	}
}

func (c *Cloud) volumeDoc(v *volume, detail bool) map[string]any {
	d := map[string]any{"id": v.ID, "name": v.Name, "links": []any{map[string]string{"rel": "self", "href": c.baseURL + "/volume/v3/" + c.projectID + "/volumes/" + v.ID}}}
	if !detail {
		return d
	}
	atts := []any{}
	for _, a := range v.Attachments {
		atts = append(atts, map[string]any{"id": v.ID, "attachment_id": a.ID, "volume_id": v.ID, "server_id": a.ServerID,
			"device": a.Device, "host_name": "compleat-sim", "attached_at": a.At.UTC().Format("2006-01-02T15:04:05.000000")})
	}
	md := v.Metadata
	if md == nil {
		md = map[string]string{}
	}
	d["status"], d["size"], d["volume_type"], d["availability_zone"] = v.Status, v.Size, v.VolumeType, v.AZ
	d["description"], d["metadata"], d["attachments"], d["bootable"] = v.Description, md, atts, boolString(v.Bootable)
	d["created_at"], d["updated_at"] = v.Created.UTC().Format("2006-01-02T15:04:05.000000"), nil
	d["encrypted"], d["multiattach"], d["replication_status"] = false, false, nil
	d["snapshot_id"], d["source_volid"], d["consistencygroup_id"] = nil, nil, nil
	d["os-vol-tenant-attr:tenant_id"], d["user_id"] = c.projectID, c.userID
	return d
}

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func (c *Cloud) volumeType(nameOrID string) *volumeType {
	for _, t := range c.volTypes {
		if t.ID == nameOrID || t.Name == nameOrID {
			return t
		}
	}
	return nil
}

func (c *Cloud) createVolume(w http.ResponseWriter, r *http.Request) *apiError {
	var req struct {
		Volume struct {
			Size             int               `json:"size"`
			Name             string            `json:"name"`
			Description      string            `json:"description"`
			VolumeType       string            `json:"volume_type"`
			AvailabilityZone string            `json:"availability_zone"`
			Metadata         map[string]string `json:"metadata"`
		} `json:"volume"`
	}
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	in := req.Volume
	if in.Size <= 0 {
		return errorf(http.StatusBadRequest, "Invalid input for field/attribute size. Value: %d. %d is less than the minimum of 1", in.Size, in.Size)
	}
	if in.AvailabilityZone != "" && in.AvailabilityZone != DefaultAZ {
		return errorf(http.StatusBadRequest, "Invalid input received: Availability zone '%s' is invalid.", in.AvailabilityZone)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	vt := c.volTypes[0]
	if in.VolumeType != "" {
		if vt = c.volumeType(in.VolumeType); vt == nil {
			return errorf(http.StatusNotFound, "Volume type with name %s could not be found.", in.VolumeType)
		}
	}
	v := &volume{ID: newID(), Name: in.Name, Description: in.Description, Size: in.Size, Status: "creating",
		VolumeType: vt.Name, AZ: DefaultAZ, Metadata: map[string]string{}, Created: time.Now(), seq: c.next()}
	for k, val := range in.Metadata {
		v.Metadata[k] = val
	}
	if err := c.sizeVolume(v.ID, v.Size); err != nil {
		return errorf(http.StatusInternalServerError, "could not create the volume's storage: %v", err)
	}
	c.volumes[v.ID] = v
	c.later(c.cfg.BuildTime/2, func() {
		if v.Status == "creating" {
			v.Status = "available"
		}
	})
	writeJSON(w, http.StatusAccepted, map[string]any{"volume": c.volumeDoc(v, true)})
	return nil
}

func (c *Cloud) listVolumes(detail bool) handler {
	return func(w http.ResponseWriter, r *http.Request) *apiError {
		q := r.URL.Query()
		c.mu.Lock()
		defer c.mu.Unlock()
		all := sortedBySeq(c.volumes, func(v *volume) int64 { return v.seq })
		slices.Reverse(all)
		all = filtered(all, q, map[string]func(*volume) string{
			"name": func(v *volume) string { return v.Name }, "status": func(v *volume) string { return v.Status },
		})
		if m := q.Get("metadata"); m != "" {
			var want map[string]string
			if err := json.Unmarshal([]byte(m), &want); err != nil {
				return errorf(http.StatusBadRequest, "Invalid filter metadata: %v", err)
			}
			all = slices.DeleteFunc(all, func(v *volume) bool {
				for k, val := range want {
					if v.Metadata[k] != val {
						return true
					}
				}
				return false
			})
		}
		pg, more, err := page(all, func(v *volume) string { return v.ID }, q, c.cfg.MaxLimit)
		if err != nil {
			return err
		}
		docs := []any{}
		for _, v := range pg {
			docs = append(docs, c.volumeDoc(v, detail))
		}
		body := map[string]any{"volumes": docs}
		if more {
			body["volumes_links"] = []any{map[string]string{"rel": "next", "href": c.nextLink(r, pg[len(pg)-1].ID)}}
		}
		writeJSON(w, http.StatusOK, body)
		return nil
	}
}

func (c *Cloud) lookupVolume(r *http.Request) (*volume, *apiError) {
	v, ok := c.volumes[r.PathValue("id")]
	if !ok {
		return nil, errorf(http.StatusNotFound, "Volume %s could not be found.", r.PathValue("id"))
	}
	return v, nil
}

func (c *Cloud) showVolume(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, err := c.lookupVolume(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"volume": c.volumeDoc(v, true)})
	return nil
}

func (c *Cloud) updateVolume(w http.ResponseWriter, r *http.Request) *apiError {
	var req struct {
		Volume struct {
			Name        *string           `json:"name"`
			Description *string           `json:"description"`
			Metadata    map[string]string `json:"metadata"`
		} `json:"volume"`
	}
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	v, err := c.lookupVolume(r)
	if err != nil {
		return err
	}
	if req.Volume.Name != nil {
		v.Name = *req.Volume.Name
	}
	if req.Volume.Description != nil {
		v.Description = *req.Volume.Description
	}
	if req.Volume.Metadata != nil {
		v.Metadata = req.Volume.Metadata
	}
	writeJSON(w, http.StatusOK, map[string]any{"volume": c.volumeDoc(v, true)})
	return nil
}

func (c *Cloud) deleteVolume(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, err := c.lookupVolume(r)
	if err != nil {
		return err
	}
	switch v.Status {
	case "available", "error", "error_restoring", "error_extending":
	case "deleting":
		w.WriteHeader(http.StatusAccepted)
		return nil
	default:
		return errorf(http.StatusBadRequest, "Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots, awaiting a transfer, or be disassociated from snapshots after volume transfer.")
	}
	for _, s := range c.snapshots {
		if s.VolumeID == v.ID {
			return errorf(http.StatusBadRequest, "Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots, awaiting a transfer, or be disassociated from snapshots after volume transfer.")
		}
	}
	v.Status = "deleting"
	c.later(c.cfg.BuildTime/2, func() {
		delete(c.volumes, v.ID)
		if err := os.Remove(c.VolumePath(v.ID)); err != nil && !os.IsNotExist(err) {
			c.log.Error("remove the storage of a volume", "volume", v.ID, "error", err)
		}
	})
	w.WriteHeader(http.StatusAccepted)
	return nil
}

func (c *Cloud) volumeAction(w http.ResponseWriter, r *http.Request) *apiError {
	var req struct {
		Extend *struct {
			NewSize int `json:"new_size"`
		} `json:"os-extend"`
	}
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	v, err := c.lookupVolume(r)
	if err != nil {
		return err
	}
	if req.Extend == nil {
		return errorf(http.StatusBadRequest, "There is no such action")
	}
	if v.Status != "available" {
		return errorf(http.StatusBadRequest, "Invalid volume: Volume %s status must be available to extend, but current status is: %s.", v.ID, v.Status)
	}
	if req.Extend.NewSize <= v.Size {
		return errorf(http.StatusBadRequest, "Invalid input received: New size for extend must be greater than current size. (current: %d, extended: %d).", v.Size, req.Extend.NewSize)
	}
	v.Status = "extending"
	size := req.Extend.NewSize
	c.later(c.cfg.BuildTime/2, func() {
		if v.Status == "extending" {
			v.Status, v.Size = "available", size
			if err := c.sizeVolume(v.ID, size); err != nil {
				v.Status = "error_extending"
				c.log.Error("extend the storage of a volume", "volume", v.ID, "error", err)
			}
		}
	})
	w.WriteHeader(http.StatusAccepted)
	return nil
}

func (c *Cloud) volumeMetadata(w http.ResponseWriter, r *http.Request) *apiError {
	var req struct {
		Metadata map[string]string `json:"metadata"`
	}
	if r.Method != http.MethodGet {
		if err := decodeBody(r, &req); err != nil {
			return err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	v, err := c.lookupVolume(r)
	if err != nil {
		return err
	}
	switch r.Method {
	case http.MethodPut:
		v.Metadata = map[string]string{}
		fallthrough
	case http.MethodPost:
		for k, val := range req.Metadata {
			if len(k) == 0 || len(k) > 255 || len(val) > 255 {
				return errorf(http.StatusBadRequest, "Invalid input received: metadata keys and values are 1 to 255 characters")
			}
			v.Metadata[k] = val
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"metadata": v.Metadata})
	return nil
}

func (c *Cloud) snapshotDoc(s *snapshot) map[string]any {
	md := s.Metadata
	if md == nil {
		md = map[string]string{}
	}
	return map[string]any{"id": s.ID, "name": s.Name, "description": s.Description, "volume_id": s.VolumeID,
		"status": s.Status, "size": s.Size, "metadata": md, "created_at": s.Created.UTC().Format("2006-01-02T15:04:05.000000"), "updated_at": nil}
}

func (c *Cloud) createSnapshot(w http.ResponseWriter, r *http.Request) *apiError {
	var req struct {
		Snapshot struct {
			VolumeID    string            `json:"volume_id"`
			Force       bool              `json:"force"`
			Name        string            `json:"name"`
			Description string            `json:"description"`
			Metadata    map[string]string `json:"metadata"`
		} `json:"snapshot"`
	}
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.volumes[req.Snapshot.VolumeID]
	if !ok {
		return errorf(http.StatusNotFound, "Volume %s could not be found.", req.Snapshot.VolumeID)
	}
	if v.Status != "available" && !(v.Status == "in-use" && req.Snapshot.Force) {
		return errorf(http.StatusBadRequest, "Invalid volume: Volume %s status must be available, but current status is: %s.", v.ID, v.Status)
	}
	s := &snapshot{ID: newID(), Name: req.Snapshot.Name, Description: req.Snapshot.Description, VolumeID: v.ID,
		Status: "creating", Size: v.Size, Metadata: req.Snapshot.Metadata, Created: time.Now(), seq: c.next()}
	c.snapshots[s.ID] = s
	c.later(c.cfg.BuildTime/2, func() {
		if s.Status == "creating" {
			s.Status = "available"
		}
	})
	writeJSON(w, http.StatusAccepted, map[string]any{"snapshot": c.snapshotDoc(s)})
	return nil
}

func (c *Cloud) listSnapshots(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	all := filtered(sortedBySeq(c.snapshots, func(s *snapshot) int64 { return s.seq }), r.URL.Query(), map[string]func(*snapshot) string{
		"volume_id": func(s *snapshot) string { return s.VolumeID }, "status": func(s *snapshot) string { return s.Status },
		"name": func(s *snapshot) string { return s.Name },
	})
	docs := []any{}
	for _, s := range all {
		docs = append(docs, c.snapshotDoc(s))
	}
	writeJSON(w, http.StatusOK, map[string]any{"snapshots": docs})
	return nil
}

func (c *Cloud) showSnapshot(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.snapshots[r.PathValue("id")]
	if !ok {
		return errorf(http.StatusNotFound, "Snapshot %s could not be found.", r.PathValue("id"))
	}
	writeJSON(w, http.StatusOK, map[string]any{"snapshot": c.snapshotDoc(s)})
	return nil
}

func (c *Cloud) deleteSnapshot(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.snapshots[r.PathValue("id")]
	if !ok {
		return errorf(http.StatusNotFound, "Snapshot %s could not be found.", r.PathValue("id"))
	}
	if s.Status == "creating" {
		return errorf(http.StatusBadRequest, "Invalid snapshot: Snapshot status must be available or error and must not be part of a group.")
	}
	s.Status = "deleting"
	c.later(c.cfg.BuildTime/2, func() { delete(c.snapshots, s.ID) })
	w.WriteHeader(http.StatusAccepted)
	return nil
}

func (c *Cloud) volumeTypeDoc(t *volumeType) map[string]any {
	return map[string]any{"id": t.ID, "name": t.Name, "is_public": t.IsPublic, "extra_specs": map[string]string{}, "description": nil,
		"os-volume-type-access:is_public": t.IsPublic, "qos_specs_id": nil}
}

func (c *Cloud) listVolumeTypes(w http.ResponseWriter, r *http.Request) *apiError {
	docs := []any{}
	for _, t := range c.volTypes {
		docs = append(docs, c.volumeTypeDoc(t))
	}
	writeJSON(w, http.StatusOK, map[string]any{"volume_types": docs})
	return nil
}

func (c *Cloud) showVolumeType(w http.ResponseWriter, r *http.Request) *apiError {
	id := r.PathValue("id")
	t := c.volumeType(id)
	if id == "default" {
		t = c.volTypes[0]
	}
	if t == nil {
		return errorf(http.StatusNotFound, "Volume type %s could not be found.", id)
	}
	writeJSON(w, http.StatusOK, map[string]any{"volume_type": c.volumeTypeDoc(t)})
	return nil
}
