package openstack

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"github.com/compleat/compleat/cpi"
)

// lightProperty is the Glance property of the image that stands for a
// light stemcell: the id of the image the stemcell names.
const lightProperty = "compleat_light_image_id"

// stemcellProperties are the parts of stemcell.MF's cloud_properties the
// plugin reads. Other keys are allowed (stemcells carry many).
type stemcellProperties struct {
	Name            string `json:"name,omitempty"`
	Version         any    `json:"version,omitempty"`
	ImageID         string `json:"image_id,omitempty"`
	DiskFormat      string `json:"disk_format,omitempty"`
	ContainerFormat string `json:"container_format,omitempty"`
	OSType          string `json:"os_type,omitempty"`
	OSDistro        string `json:"os_distro,omitempty"`
	Architecture    string `json:"architecture,omitempty"`
	AutoDiskConfig  *bool  `json:"auto_disk_config,omitempty"`
	HypervisorType  string `json:"hypervisor_type,omitempty"`
}

// CreateStemcell imports a stemcell into Glance.
//
// A light stemcell (cloud property image_id) names an active image that
// exists already; the plugin records the stemcell as a small image of its
// own, without data, whose property compleat_light_image_id names that
// image, so that every stemcell has its own cid and deleting one deletes
// only the record. A heavy stemcell's image file is streamed to Glance
// (POST /v2/images, PUT .../file from the open file, never read into
// memory), then the plugin waits until the image is active.
func (c *CPI) CreateStemcell(ctx context.Context, req cpi.CreateStemcellRequest) (string, error) {
	var p stemcellProperties
	if err := decodeObject(orEmpty(req.CloudProperties), &p, false); err != nil {
		return "", err
	}
	cl, err := c.session(ctx)
	if err != nil {
		return "", err
	}
	name := "compleat-stemcell"
	if p.Name != "" {
		name = p.Name
		if p.Version != nil {
			name += "/" + fmt.Sprint(p.Version)
		}
	}
	visibility := images.ImageVisibilityPrivate
	if c.props.StemcellPublicVisibility {
		visibility = images.ImageVisibilityPublic
	}
	props := map[string]string{}
	for k, v := range map[string]string{"os_type": p.OSType, "os_distro": p.OSDistro, "architecture": p.Architecture, "hypervisor_type": p.HypervisorType} {
		if v != "" {
			props[k] = v
		}
	}
	if p.Version != nil {
		props["version"] = fmt.Sprint(p.Version)
	}
	if p.AutoDiskConfig != nil {
		props["auto_disk_config"] = fmt.Sprint(*p.AutoDiskConfig)
	}

	if p.ImageID != "" {
		im, err := images.Get(ctx, cl.image, p.ImageID).Extract()
		if isNotFound(err) {
			return "", cpi.InvalidCloudProperty("image_id", "the light stemcell names image %s, which does not exist in Glance (or this project cannot see it)", p.ImageID)
		}
		if err != nil {
			return "", classify("create stemcell: get image "+p.ImageID, err, nil)
		}
		if im.Status != images.ImageStatusActive {
			return "", cpi.InvalidCloudProperty("image_id", "the light stemcell names image %s, which is %s, not active", p.ImageID, im.Status)
		}
		props[lightProperty] = p.ImageID
		rec, err := images.Create(ctx, cl.image, images.CreateOpts{
			Name: "compleat-light/" + name, DiskFormat: "raw", ContainerFormat: "bare",
			Visibility: &visibility, Tags: []string{"compleat-light-stemcell"}, Properties: props,
		}).Extract()
		if err != nil {
			return "", classify("create stemcell: record light stemcell of image "+p.ImageID, err, nil)
		}
		c.logger.Info("light stemcell created", "stemcell", rec.ID, "image", p.ImageID)
		return rec.ID, nil
	}

	f, err := os.Open(req.ImagePath)
	if err != nil {
		return "", fmt.Errorf("create stemcell: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
		return "", cpi.InvalidCloudProperty("image_id", "a stemcell without an image file (%s is empty or not a file) must be light: name its Glance image in image_id", req.ImagePath)
	}
	diskFormat := cmpOr(p.DiskFormat, "qcow2")
	switch diskFormat {
	case "qcow2", "raw", "vmdk", "vhd", "vhdx", "vdi", "iso", "ami":
	default:
		return "", cpi.InvalidCloudProperty("disk_format", "%q is not a Glance disk format (qcow2, raw, ...)", diskFormat)
	}
	im, err := images.Create(ctx, cl.image, images.CreateOpts{
		Name: name, DiskFormat: diskFormat, ContainerFormat: cmpOr(p.ContainerFormat, "bare"),
		Visibility: &visibility, Tags: []string{"compleat-stemcell"}, Properties: props,
	}).Extract()
	if err != nil {
		return "", classify("create stemcell: create image "+name, err, nil)
	}
	log := c.logger.With("stemcell", im.ID, "bytes", fi.Size())
	undo := func(cause error) error {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if derr := images.Delete(cctx, cl.image, im.ID).ExtractErr(); derr != nil && !isNotFound(derr) {
			log.Error("delete the image of a failed stemcell upload", "error", shortError(derr))
		}
		return cause
	}
	log.Info("uploading stemcell image")
	// The open file is the request body: streamed, never read whole, and
	// seekable (a section reader, which net/http cannot close), so a
	// throttled upload starts again from its beginning.
	if err := imagedata.Upload(ctx, cl.image, im.ID, io.NewSectionReader(f, 0, fi.Size())).ExtractErr(); err != nil {
		return "", undo(classify("create stemcell: upload image "+im.ID, err, nil))
	}
	err = c.wait(ctx, "image "+im.ID+" active", func(ctx context.Context) (bool, error) {
		got, err := images.Get(ctx, cl.image, im.ID).Extract()
		if err != nil {
			return false, classify("get image "+im.ID, err, nil)
		}
		switch got.Status {
		case images.ImageStatusActive:
			return true, nil
		case images.ImageStatusKilled, images.ImageStatusDeleted, images.ImageStatusPendingDelete:
			return false, fmt.Errorf("image %s is %s", im.ID, got.Status)
		}
		return false, nil
	})
	if err != nil {
		return "", undo(fmt.Errorf("create stemcell: %w", err))
	}
	log.Info("stemcell created")
	return im.ID, nil
}

// DeleteStemcell deletes the stemcell's image (for a light stemcell, the
// record: the image it names stays). A missing stemcell is success.
func (c *CPI) DeleteStemcell(ctx context.Context, cid string) error {
	cl, err := c.session(ctx)
	if err != nil {
		return err
	}
	if !looksLikeID(cid) {
		return nil
	}
	err = images.Delete(ctx, cl.image, cid).ExtractErr()
	if err != nil && !isNotFound(err) {
		return classify("delete stemcell "+cid, err, nil)
	}
	return nil
}

// stemcellImage returns the image a VM of the stemcell boots from, or
// cpi.ErrStemcellNotFound.
func (c *CPI) stemcellImage(ctx context.Context, cl *clients, cid string) (string, error) {
	if !looksLikeID(cid) {
		return "", fmt.Errorf("stemcell %s: %w", cid, cpi.ErrStemcellNotFound)
	}
	im, err := images.Get(ctx, cl.image, cid).Extract()
	if err != nil {
		return "", classify("stemcell "+cid, err, cpi.ErrStemcellNotFound)
	}
	id := im.ID
	if light, ok := im.Properties[lightProperty].(string); ok && light != "" {
		target, err := images.Get(ctx, cl.image, light).Extract()
		if isNotFound(err) {
			return "", fmt.Errorf("light stemcell %s names image %s, which no longer exists in Glance: %w", cid, light, cpi.ErrStemcellNotFound)
		}
		if err != nil {
			return "", classify("light stemcell "+cid+": image "+light, err, nil)
		}
		im, id = target, light
	}
	if im.Status != images.ImageStatusActive {
		return "", fmt.Errorf("stemcell %s: image %s is %s, not active: %w", cid, id, im.Status, cpi.ErrStemcellNotFound)
	}
	return id, nil
}

// looksLikeID reports whether s can be an OpenStack id (a UUID, with or
// without dashes): anything else cannot name an object, and asking
// would only earn a 404 (or, on some clouds, a 400).
func looksLikeID(s string) bool {
	h := strings.ReplaceAll(s, "-", "")
	if len(h) != 32 {
		return false
	}
	for _, r := range h {
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return false
		}
	}
	return true
}
