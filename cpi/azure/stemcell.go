package azure

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v6"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/resources/armresources/v3"

	"github.com/compleat/compleat/cpi"
)

// stemcellPrefix starts every stemcell cid and the resource group tag that
// records it.
const stemcellPrefix = "compleat-stemcell-"

// stemcellProperties are the parts of stemcell.MF's cloud_properties the
// plugin reads (the others, name, version and so on, are ignored).
type stemcellProperties struct {
	// Image is a marketplace image (BOSH's light stemcells).
	Image *struct {
		Publisher string `json:"publisher"`
		Offer     string `json:"offer"`
		SKU       string `json:"sku"`
		Version   string `json:"version"`
	} `json:"image,omitempty"`
	// ImageID is a managed image's ARM id.
	ImageID string `json:"image_id,omitempty"`
	// GalleryImageID is an Azure Compute Gallery image version's ARM id.
	GalleryImageID string `json:"gallery_image_id,omitempty"`
}

// CreateStemcell records a light stemcell: it checks that the image it
// names exists in the plugin's location, then records the image reference
// as a tag of the plugin's resource group, "compleat-stemcell-<uuid>", whose
// name is the cid. CreateVM reads the tag back; DeleteStemcell removes it.
// The plugin thus keeps no state of its own and several plugin processes
// agree. Heavy stemcells (a VHD to upload) answer cpi.ErrNotImplemented.
func (c *CPI) CreateStemcell(ctx context.Context, req cpi.CreateStemcellRequest) (string, error) {
	var p stemcellProperties
	raw := req.CloudProperties
	if len(raw) == 0 || string(raw) == "null" {
		raw = json.RawMessage(`{}`)
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return "", cpi.InvalidCloudProperty("", "stemcell cloud properties: %v", err)
	}
	ref, err := c.checkImage(ctx, p)
	if err != nil {
		if cerr, ok := err.(*cpi.Error); ok && cerr.Field == "image" && p.Image == nil {
			if fi, serr := os.Stat(req.ImagePath); serr == nil && fi.Size() > 0 {
				return "", fmt.Errorf("create stemcell from %s: heavy stemcells (a VHD uploaded to a storage account) are not supported; use a light stemcell naming a marketplace image, image_id or gallery_image_id: %w",
					req.ImagePath, cpi.ErrNotImplemented)
			}
		}
		return "", err
	}
	if err := c.ensureGroup(ctx, c.rg); err != nil {
		return "", err
	}
	cid := stemcellPrefix + randomID()
	poller, err := c.tags.BeginUpdateAtScope(ctx, c.groupScope(), armresources.TagsPatchResource{
		Operation:  to.Ptr(armresources.TagsPatchOperationMerge),
		Properties: &armresources.Tags{Tags: map[string]*string{cid: to.Ptr(ref)}},
	}, nil)
	if err == nil {
		_, err = poll(ctx, c, poller)
	}
	if err != nil {
		return "", classify("create stemcell: tag resource group "+c.rg, err, nil)
	}
	c.logger.Info("stemcell recorded", "stemcell", cid, "image", ref)
	return cid, nil
}

// checkImage checks the image the stemcell names and returns its
// reference as recorded: "publisher:offer:sku:version" or an ARM id.
func (c *CPI) checkImage(ctx context.Context, p stemcellProperties) (string, error) {
	n := 0
	for _, set := range []bool{p.Image != nil, p.ImageID != "", p.GalleryImageID != ""} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		return "", cpi.InvalidCloudProperty("image", "a light stemcell names its image: image {publisher, offer, sku, version}, image_id or gallery_image_id")
	case n > 1:
		return "", cpi.InvalidCloudProperty("image", "name one of image, image_id and gallery_image_id")
	case p.Image != nil:
		im := *p.Image
		for k, v := range map[string]string{"publisher": im.Publisher, "offer": im.Offer, "sku": im.SKU, "version": im.Version} {
			if v == "" || strings.Contains(v, ":") {
				return "", cpi.InvalidCloudProperty("image."+k, "required, without ':'")
			}
		}
		var err error
		if im.Version == "latest" {
			var out armcompute.VirtualMachineImagesClientListResponse
			out, err = c.vmImages.List(ctx, c.props.Location, im.Publisher, im.Offer, im.SKU, &armcompute.VirtualMachineImagesClientListOptions{Top: to.Ptr[int32](1)})
			if err == nil && len(out.VirtualMachineImageResourceArray) == 0 {
				return "", cpi.InvalidCloudProperty("image", "no version of %s:%s:%s in %s", im.Publisher, im.Offer, im.SKU, c.props.Location)
			}
		} else {
			_, err = c.vmImages.Get(ctx, c.props.Location, im.Publisher, im.Offer, im.SKU, im.Version, nil)
		}
		ref := strings.Join([]string{im.Publisher, im.Offer, im.SKU, im.Version}, ":")
		if isNotFound(err) {
			return "", cpi.InvalidCloudProperty("image", "marketplace image %s does not exist in %s", ref, c.props.Location)
		}
		if err != nil {
			return "", classify("create stemcell: image "+ref, err, nil)
		}
		return ref, nil
	case p.ImageID != "":
		r, ok := parseID(p.ImageID, typeImage)
		if !ok {
			return "", cpi.InvalidCloudProperty("image_id", "%q is not a managed image id (/subscriptions/.../providers/Microsoft.Compute/images/NAME)", p.ImageID)
		}
		if _, err := c.images.Get(ctx, r.group, r.name, nil); err != nil {
			if isNotFound(err) {
				return "", cpi.InvalidCloudProperty("image_id", "image %s does not exist", p.ImageID)
			}
			return "", classify("create stemcell: image "+p.ImageID, err, nil)
		}
		return p.ImageID, nil
	default:
		if !strings.Contains(strings.ToLower(p.GalleryImageID), "/providers/microsoft.compute/galleries/") {
			return "", cpi.InvalidCloudProperty("gallery_image_id", "%q is not a gallery image id", p.GalleryImageID)
		}
		return p.GalleryImageID, nil
	}
}

// DeleteStemcell removes the stemcell's tag. A missing stemcell is
// success.
func (c *CPI) DeleteStemcell(ctx context.Context, cid string) error {
	ref, err := c.stemcellRef(ctx, cid)
	if err != nil {
		if isStemcellNotFound(err) {
			return nil
		}
		return err
	}
	poller, err := c.tags.BeginUpdateAtScope(ctx, c.groupScope(), armresources.TagsPatchResource{
		Operation:  to.Ptr(armresources.TagsPatchOperationDelete),
		Properties: &armresources.Tags{Tags: map[string]*string{cid: to.Ptr(ref)}},
	}, nil)
	if err == nil {
		_, err = poll(ctx, c, poller)
	}
	if err != nil && !isNotFound(err) {
		return classify("delete stemcell "+cid, err, nil)
	}
	return nil
}

func isStemcellNotFound(err error) bool {
	e, ok := err.(*cpi.Error)
	return ok && e.Code == cpi.CodeStemcellNotFound
}

// stemcellRef reads the image reference the stemcell recorded.
func (c *CPI) stemcellRef(ctx context.Context, cid string) (string, error) {
	notFound := cpi.Errorf(cpi.CodeStemcellNotFound, "stemcell %s not found in resource group %s", cid, c.rg)
	if !strings.HasPrefix(cid, stemcellPrefix) {
		return "", notFound
	}
	out, err := c.tags.GetAtScope(ctx, c.groupScope(), nil)
	if isNotFound(err) {
		return "", notFound
	}
	if err != nil {
		return "", classify("stemcell "+cid, err, nil)
	}
	if out.Properties == nil || out.Properties.Tags[cid] == nil {
		return "", notFound
	}
	return *out.Properties.Tags[cid], nil
}

// imageReference is the VM's image for a recorded reference.
func imageReference(ref string) *armcompute.ImageReference {
	if strings.HasPrefix(ref, "/") {
		return &armcompute.ImageReference{ID: to.Ptr(ref)}
	}
	parts := strings.Split(ref, ":")
	if len(parts) != 4 {
		return &armcompute.ImageReference{ID: to.Ptr(ref)}
	}
	return &armcompute.ImageReference{Publisher: &parts[0], Offer: &parts[1], SKU: &parts[2], Version: &parts[3]}
}

func (c *CPI) groupScope() string {
	return fmt.Sprintf("/subscriptions/%s/resourceGroups/%s", c.props.SubscriptionID, c.rg)
}

// ensureGroup creates the resource group in the plugin's location unless
// it exists.
func (c *CPI) ensureGroup(ctx context.Context, group string) error {
	_, err := c.groups.Get(ctx, group, nil)
	if err == nil {
		return nil
	}
	if !isNotFound(err) {
		return classify("resource group "+group, err, nil)
	}
	_, err = c.groups.CreateOrUpdate(ctx, group, armresources.ResourceGroup{Location: to.Ptr(c.props.Location)}, nil)
	if err != nil {
		return classify("create resource group "+group, err, nil)
	}
	c.logger.Info("resource group created", "resource_group", group, "location", c.props.Location)
	return nil
}
