package aws

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/compleat/compleat/cpi"
)

// stemcellPrefix starts the name of every launch template that records a
// stemcell; DeleteStemcell deletes no other.
const stemcellPrefix = "compleat-stemcell-"

// stemcellProperties are the parts of stemcell.MF's cloud_properties the
// plugin reads; the others (name, version, ...) are recorded as tags.
type stemcellProperties struct {
	// AMI maps a region to the stemcell's image there (BOSH's light
	// stemcells).
	AMI map[string]string `json:"ami,omitempty"`
	// AMIID names the image directly, whatever the region.
	AMIID   string `json:"ami_id,omitempty"`
	Name    string `json:"name,omitempty"`
	Version any    `json:"version,omitempty"`
}

// CreateStemcell records a light stemcell: it checks that the AMI named for
// the plugin's region exists, then creates the launch template that stands
// for the stemcell. Heavy stemcells (a real image to import) answer
// cpi.ErrNotImplemented: importing needs an S3 bucket and the vmimport
// service role (see docs/cpi/aws.md).
func (c *CPI) CreateStemcell(ctx context.Context, req cpi.CreateStemcellRequest) (string, error) {
	var p stemcellProperties
	if err := decodeObject(orEmpty(req.CloudProperties), &p, false); err != nil {
		return "", err
	}
	ami := p.AMIID
	field := "ami_id"
	if ami == "" && p.AMI != nil {
		ami, field = p.AMI[c.region], "ami."+c.region
		if ami == "" {
			return "", cpi.InvalidCloudProperty("ami", "the light stemcell names no AMI for region %s", c.region)
		}
	}
	if ami == "" {
		if fi, err := os.Stat(req.ImagePath); err == nil && fi.Size() > 0 {
			return "", fmt.Errorf("create stemcell from %s: heavy stemcells (image import through S3 and the vmimport role) are not supported; use a light stemcell naming an AMI: %w",
				req.ImagePath, cpi.ErrNotImplemented)
		}
		return "", cpi.InvalidCloudProperty("ami", "a light stemcell must name its image: ami: {%s: ami-...} or ami_id", c.region)
	}
	if !strings.HasPrefix(ami, "ami-") {
		return "", cpi.InvalidCloudProperty(field, "%q is not an AMI id (ami-...)", ami)
	}
	out, err := c.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{ami}})
	if err != nil {
		if isNotFound(err) {
			return "", cpi.InvalidCloudProperty(field, "AMI %s does not exist in %s", ami, c.region)
		}
		return "", classify("create stemcell: describe image "+ami, err, nil)
	}
	if len(out.Images) == 0 {
		return "", cpi.InvalidCloudProperty(field, "AMI %s does not exist in %s", ami, c.region)
	}
	if st := out.Images[0].State; st != types.ImageStateAvailable && st != "" {
		return "", cpi.InvalidCloudProperty(field, "AMI %s is %s, not available", ami, st)
	}

	tags := []types.Tag{{Key: aws.String("compleat:ami"), Value: aws.String(ami)}}
	if p.Name != "" {
		tags = append(tags, types.Tag{Key: aws.String("compleat:stemcell"), Value: aws.String(truncate(p.Name, 256))})
	}
	if p.Version != nil {
		tags = append(tags, types.Tag{Key: aws.String("compleat:stemcell_version"), Value: aws.String(truncate(fmt.Sprint(p.Version), 256))})
	}
	lt, err := c.ec2.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{
		LaunchTemplateName: aws.String(stemcellPrefix + randomHex(8)),
		LaunchTemplateData: &types.RequestLaunchTemplateData{ImageId: aws.String(ami)},
		VersionDescription: aws.String("compleat light stemcell"),
		TagSpecifications: []types.TagSpecification{{
			ResourceType: types.ResourceTypeLaunchTemplate,
			Tags:         tags,
		}},
	})
	if err != nil {
		return "", classify("create stemcell: create launch template for "+ami, err, nil)
	}
	if lt.LaunchTemplate == nil || lt.LaunchTemplate.LaunchTemplateId == nil {
		return "", fmt.Errorf("create stemcell: EC2 returned no launch template id")
	}
	cid := *lt.LaunchTemplate.LaunchTemplateId
	c.logger.Info("stemcell created", "stemcell", cid, "ami", ami)
	return cid, nil
}

// DeleteStemcell deletes the launch template that stands for the stemcell;
// the AMI, which the stemcell only named, stays. A missing stemcell is
// success.
func (c *CPI) DeleteStemcell(ctx context.Context, cid string) error {
	if _, err := c.stemcellImage(ctx, cid); err != nil {
		if errors.Is(err, cpi.ErrStemcellNotFound) {
			return nil
		}
		return fmt.Errorf("delete stemcell %s: %w", cid, err)
	}
	_, err := c.ec2.DeleteLaunchTemplate(ctx, &ec2.DeleteLaunchTemplateInput{LaunchTemplateId: aws.String(cid)})
	if err != nil && !isNotFound(err) {
		return classify("delete stemcell "+cid, err, nil)
	}
	return nil
}

// stemcellImage returns the AMI a stemcell cid stands for, or
// cpi.ErrStemcellNotFound when cid is no stemcell of this plugin.
func (c *CPI) stemcellImage(ctx context.Context, cid string) (string, error) {
	if !strings.HasPrefix(cid, "lt-") {
		return "", fmt.Errorf("stemcell %s: %w", cid, cpi.ErrStemcellNotFound)
	}
	out, err := c.ec2.DescribeLaunchTemplateVersions(ctx, &ec2.DescribeLaunchTemplateVersionsInput{
		LaunchTemplateId: aws.String(cid),
		Versions:         []string{"$Latest"},
	})
	if err != nil {
		return "", classify("stemcell "+cid, err, cpi.ErrStemcellNotFound)
	}
	for _, v := range out.LaunchTemplateVersions {
		if !strings.HasPrefix(aws.ToString(v.LaunchTemplateName), stemcellPrefix) || v.LaunchTemplateData == nil {
			continue
		}
		if ami := aws.ToString(v.LaunchTemplateData.ImageId); ami != "" {
			return ami, nil
		}
	}
	return "", fmt.Errorf("stemcell %s: %w", cid, cpi.ErrStemcellNotFound)
}

// orEmpty reads a missing or null document as {}.
func orEmpty(raw json.RawMessage) json.RawMessage {
	if t := bytes.TrimSpace(raw); len(t) == 0 || string(t) == "null" {
		return json.RawMessage(`{}`)
	}
	return raw
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
