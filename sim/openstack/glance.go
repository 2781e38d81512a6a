package openstack

import (
	"crypto/md5"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

type image struct {
	ID, Name, Status, DiskFormat, ContainerFormat, Visibility string
	MinDisk, MinRAM                                           int
	Protected                                                 bool
	Size                                                      int64
	Checksum, SHA512                                          string
	Tags                                                      []string
	Properties                                                map[string]any
	Created, Updated                                          time.Time
	seq                                                       int64
	hasData                                                   bool
}

// ImagePath is the file holding an image's uploaded data ("" until it has
// some).
func (c *Cloud) ImagePath(id string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if im, ok := c.images[id]; ok && im.hasData {
		return c.imageFile(id)
	}
	return ""
}

func (c *Cloud) imageFile(id string) string { return filepath.Join(c.dataDir, "images", id) }

// Glance's own image fields; every other key of a create request is a
// custom property.
var imageFields = map[string]bool{
	"id": true, "name": true, "status": true, "disk_format": true, "container_format": true, "visibility": true,
	"min_disk": true, "min_ram": true, "protected": true, "size": true, "checksum": true, "tags": true, "owner": true,
	"created_at": true, "updated_at": true, "self": true, "file": true, "schema": true, "os_hidden": true,
	"virtual_size": true, "os_hash_algo": true, "os_hash_value": true, "locations": true, "direct_url": true,
}

var (
	diskFormats      = []string{"ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop"}
	containerFormats = []string{"ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed"}
)

func (c *Cloud) routeGlance(mux *http.ServeMux) {
	h := func(pattern string, fn handler) { mux.HandleFunc(pattern, c.authed(glance, fn)) }
	versions := func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusMultipleChoices, map[string]any{"versions": []any{map[string]any{
			"id": "v2.16", "status": "CURRENT", "links": []any{map[string]string{"rel": "self", "href": c.baseURL + "/image/v2/"}}}}})
	}
	mux.HandleFunc("GET /image/{$}", versions)
	mux.HandleFunc("GET /image", versions)
	mux.HandleFunc("GET /image/versions", versions)
	h("POST /image/v2/images", c.createImage)
	h("GET /image/v2/images", c.listImages)
	h("GET /image/v2/images/{id}", c.showImage)
	h("PATCH /image/v2/images/{id}", c.patchImage)
	h("DELETE /image/v2/images/{id}", c.deleteImage)
	h("PUT /image/v2/images/{id}/file", c.uploadImage)
	h("GET /image/v2/images/{id}/file", c.downloadImage)
	h("GET /image/v2/schemas/image", func(w http.ResponseWriter, r *http.Request) *apiError {
		writeJSON(w, http.StatusOK, map[string]any{"name": "image", "properties": map[string]any{}, "additionalProperties": map[string]string{"type": "string"}})
		return nil
	})
	mux.HandleFunc("/image/", c.authed(glance, func(w http.ResponseWriter, r *http.Request) *apiError {
		return errorf(http.StatusNotFound, "The resource could not be found.")
	}))
}

func (c *Cloud) imageDoc(im *image) map[string]any {
	d := map[string]any{}
	for k, v := range im.Properties {
		d[k] = v
	}
	null := func(s string) any {
		if s == "" {
			return nil
		}
		return s
	}
	var size any
	if im.hasData {
		size = im.Size
	}
	tags := im.Tags
	if tags == nil {
		tags = []string{}
	}
	d["id"], d["name"], d["status"], d["visibility"] = im.ID, null(im.Name), im.Status, im.Visibility
	d["disk_format"], d["container_format"], d["min_disk"], d["min_ram"] = null(im.DiskFormat), null(im.ContainerFormat), im.MinDisk, im.MinRAM
	d["protected"], d["os_hidden"], d["size"], d["virtual_size"] = im.Protected, false, size, nil
	d["checksum"], d["os_hash_algo"], d["os_hash_value"] = null(im.Checksum), nil, null(im.SHA512)
	if im.SHA512 != "" {
		d["os_hash_algo"] = "sha512"
	}
	d["owner"], d["tags"] = c.projectID, tags
	d["created_at"], d["updated_at"] = timestamp(im.Created), timestamp(im.Updated)
	d["self"], d["file"], d["schema"] = "/v2/images/"+im.ID, "/v2/images/"+im.ID+"/file", "/v2/schemas/image"
	return d
}

func (c *Cloud) createImage(w http.ResponseWriter, r *http.Request) *apiError {
	var req map[string]json.RawMessage
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	im := &image{ID: newID(), Status: "queued", Visibility: "shared", Properties: map[string]any{}, Created: time.Now(), Updated: time.Now()}
	str := func(k string) (string, *apiError) {
		raw, ok := req[k]
		if !ok || string(raw) == "null" {
			return "", nil
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", errorf(http.StatusBadRequest, "Provided object does not match schema 'image': %s is not of type 'string'", k)
		}
		return s, nil
	}
	var err *apiError
	for k, raw := range req {
		switch k {
		case "name":
			im.Name, err = str(k)
		case "disk_format":
			if im.DiskFormat, err = str(k); err == nil && !slices.Contains(diskFormats, im.DiskFormat) {
				err = errorf(http.StatusBadRequest, "Invalid value '%s' for parameter 'disk_format'", im.DiskFormat)
			}
		case "container_format":
			if im.ContainerFormat, err = str(k); err == nil && !slices.Contains(containerFormats, im.ContainerFormat) {
				err = errorf(http.StatusBadRequest, "Invalid value '%s' for parameter 'container_format'", im.ContainerFormat)
			}
		case "visibility":
			if im.Visibility, err = str(k); err == nil && !slices.Contains([]string{"public", "private", "shared", "community"}, im.Visibility) {
				err = errorf(http.StatusBadRequest, "Invalid value '%s' for parameter 'visibility'", im.Visibility)
			}
		case "id":
			im.ID, err = str(k)
		case "min_disk", "min_ram":
			var n int
			if json.Unmarshal(raw, &n) != nil || n < 0 {
				err = errorf(http.StatusBadRequest, "Provided object does not match schema 'image': %s must be a non-negative integer", k)
			}
			if k == "min_disk" {
				im.MinDisk = n
			} else {
				im.MinRAM = n
			}
		case "protected":
			if json.Unmarshal(raw, &im.Protected) != nil {
				err = errorf(http.StatusBadRequest, "Provided object does not match schema 'image': protected is not of type 'boolean'")
			}
		case "tags":
			if json.Unmarshal(raw, &im.Tags) != nil {
				err = errorf(http.StatusBadRequest, "Provided object does not match schema 'image': tags is not of type 'array'")
			}
		default:
			if imageFields[k] {
				err = errorf(http.StatusForbidden, "Attribute '%s' is read-only.", k)
				break
			}
			var s string
			if json.Unmarshal(raw, &s) != nil {
				err = errorf(http.StatusBadRequest, "Provided object does not match schema 'image': %s is not of type 'string'", k)
				break
			}
			im.Properties[k] = s
		}
		if err != nil {
			return err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.images[im.ID]; ok {
		return errorf(http.StatusConflict, "Image with identifier %s already exists!", im.ID)
	}
	im.seq = c.next()
	c.images[im.ID] = im
	w.Header().Set("Location", c.baseURL+"/image/v2/images/"+im.ID)
	writeJSON(w, http.StatusCreated, c.imageDoc(im))
	return nil
}

func (c *Cloud) listImages(w http.ResponseWriter, r *http.Request) *apiError {
	q := r.URL.Query()
	c.mu.Lock()
	defer c.mu.Unlock()
	all := sortedBySeq(c.images, func(im *image) int64 { return im.seq })
	slices.Reverse(all)
	all = filtered(all, q, map[string]func(*image) string{
		"name": func(im *image) string { return im.Name }, "status": func(im *image) string { return im.Status },
		"visibility": func(im *image) string { return im.Visibility }, "id": func(im *image) string { return im.ID },
	})
	pg, more, err := page(all, func(im *image) string { return im.ID }, q, c.cfg.MaxLimit)
	if err != nil {
		return err
	}
	docs := []any{}
	for _, im := range pg {
		docs = append(docs, c.imageDoc(im))
	}
	body := map[string]any{"images": docs, "first": "/v2/images", "schema": "/v2/schemas/images"}
	if more {
		nq := r.URL.Query()
		nq.Set("marker", pg[len(pg)-1].ID)
		body["next"] = "/v2/images?" + nq.Encode()
	}
	writeJSON(w, http.StatusOK, body)
	return nil
}

func (c *Cloud) lookupImage(r *http.Request) (*image, *apiError) {
	im, ok := c.images[r.PathValue("id")]
	if !ok {
		return nil, errorf(http.StatusNotFound, "No image found with ID %s", r.PathValue("id"))
	}
	return im, nil
}

func (c *Cloud) showImage(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	im, err := c.lookupImage(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, c.imageDoc(im))
	return nil
}

// patchImage applies a JSON patch (openstack-images-v2.1) to the name and
// custom properties.
func (c *Cloud) patchImage(w http.ResponseWriter, r *http.Request) *apiError {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/openstack-images-v2.1-json-patch") {
		return errorf(http.StatusUnsupportedMediaType, "Unsupported Content-Type")
	}
	var ops []struct {
		Op    string          `json:"op"`
		Path  string          `json:"path"`
		Value json.RawMessage `json:"value"`
	}
	if err := decodeBody(r, &ops); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	im, err := c.lookupImage(r)
	if err != nil {
		return err
	}
	for _, op := range ops {
		key := strings.TrimPrefix(op.Path, "/")
		if key == "name" && op.Op != "remove" {
			if json.Unmarshal(op.Value, &im.Name) != nil {
				return errorf(http.StatusBadRequest, "name is not of type 'string'")
			}
			continue
		}
		if imageFields[key] {
			return errorf(http.StatusForbidden, "Attribute '%s' is read-only.", key)
		}
		switch op.Op {
		case "add", "replace":
			var s string
			if json.Unmarshal(op.Value, &s) != nil {
				return errorf(http.StatusBadRequest, "%s is not of type 'string'", key)
			}
			im.Properties[key] = s
		case "remove":
			if _, ok := im.Properties[key]; !ok {
				return errorf(http.StatusConflict, "Property %s does not exist.", key)
			}
			delete(im.Properties, key)
		default:
			return errorf(http.StatusBadRequest, "Invalid operation: `%s`", op.Op)
		}
	}
	im.Updated = time.Now()
	writeJSON(w, http.StatusOK, c.imageDoc(im))
	return nil
}

func (c *Cloud) deleteImage(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	defer c.mu.Unlock()
	im, err := c.lookupImage(r)
	if err != nil {
		return err
	}
	if im.Protected {
		return errorf(http.StatusForbidden, "Image %s is protected and cannot be deleted.", im.ID)
	}
	delete(c.images, im.ID)
	if err := os.Remove(c.imageFile(im.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		c.log.Error("remove the data of an image", "image", im.ID, "error", err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// uploadImage streams the request body to the image's file, hashing it on
// the way (never holding it in memory), and makes the image active.
func (c *Cloud) uploadImage(w http.ResponseWriter, r *http.Request) *apiError {
	if ct := r.Header.Get("Content-Type"); ct != "application/octet-stream" {
		return errorf(http.StatusUnsupportedMediaType, "The server could not comply with the request since it is either malformed or otherwise incorrect. Content-Type must be application/octet-stream, got %q", ct)
	}
	c.mu.Lock()
	im, err := c.lookupImage(r)
	if err == nil && im.Status != "queued" {
		err = errorf(http.StatusConflict, "Image status transition from %s to saving is not allowed", im.Status)
	}
	if err != nil {
		c.mu.Unlock()
		return err
	}
	im.Status = "saving"
	c.mu.Unlock()

	size, md5sum, sha, uerr := c.storeImageData(im.ID, r.Body)

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.images[im.ID] != im {
		_ = os.Remove(c.imageFile(im.ID))
		return errorf(http.StatusGone, "Image %s could not be found after upload. The image may have been deleted during the upload.", im.ID)
	}
	if uerr != nil {
		im.Status = "queued"
		_ = os.Remove(c.imageFile(im.ID))
		return uerr
	}
	im.Status, im.Size, im.Checksum, im.SHA512, im.hasData, im.Updated = "active", size, md5sum, sha, true, time.Now()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (c *Cloud) storeImageData(id string, body io.Reader) (int64, string, string, *apiError) {
	f, err := os.OpenFile(c.imageFile(id), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, "", "", errorf(http.StatusInternalServerError, "could not store the image: %v", err)
	}
	defer f.Close()
	m, s := md5.New(), sha512.New()
	lim := &io.LimitedReader{R: body, N: c.cfg.MaxImageBytes + 1}
	sw := &sparseWriter{f: f}
	n, err := io.CopyBuffer(io.MultiWriter(sw, m, s), lim, make([]byte, 1<<20))
	if err != nil {
		return 0, "", "", errorf(http.StatusBadRequest, "Error in store configuration or the upload was interrupted: %v", err)
	}
	if n > c.cfg.MaxImageBytes {
		return 0, "", "", errorf(http.StatusRequestEntityTooLarge, "Image exceeds the storage quota: the image is larger than %d bytes.", c.cfg.MaxImageBytes)
	}
	if err := f.Truncate(n); err != nil {
		return 0, "", "", errorf(http.StatusInternalServerError, "could not store the image: %v", err)
	}
	if err := f.Close(); err != nil {
		return 0, "", "", errorf(http.StatusInternalServerError, "could not store the image: %v", err)
	}
	return n, hexSum(m), hexSum(s), nil
}

func hexSum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

func (c *Cloud) downloadImage(w http.ResponseWriter, r *http.Request) *apiError {
	c.mu.Lock()
	im, err := c.lookupImage(r)
	if err != nil {
		c.mu.Unlock()
		return err
	}
	has, sum := im.hasData, im.Checksum
	c.mu.Unlock()
	if !has {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	f, ferr := os.Open(c.imageFile(im.ID))
	if ferr != nil {
		return errorf(http.StatusNotFound, "Image %s has no data: %v", im.ID, ferr)
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-MD5", sum)
	if fi, err := f.Stat(); err == nil {
		w.Header().Set("Content-Length", fmt.Sprint(fi.Size()))
	}
	_, _ = io.Copy(w, f)
	return nil
}

// sparseWriter writes to a file, seeking over blocks of zeros so that a
// sparse image stays sparse on disk (the file is truncated to its size
// at the end).
type sparseWriter struct {
	f *os.File
}

func (w *sparseWriter) Write(p []byte) (int, error) {
	const block = 64 << 10
	for off := 0; off < len(p); off += block {
		b := p[off:min(off+block, len(p))]
		if allZero(b) {
			if _, err := w.f.Seek(int64(len(b)), io.SeekCurrent); err != nil {
				return off, err
			}
			continue
		}
		if _, err := w.f.Write(b); err != nil {
			return off, err
		}
	}
	return len(p), nil
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
