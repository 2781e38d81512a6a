package aws

import (
	"context"
	"maps"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/compleat/compleat/cpi"
)

const (
	// agentIDTag is the agent id every instance carries (besides the
	// director's cpi.TagAgentID, which it may lack when created by an older
	// director).
	agentIDTag = "compleat:agent_id"
	// persistentTag marks the volumes CreateDisk made, apart from the root
	// and ephemeral volumes that carry the instance's tags.
	persistentTag = "compleat:persistent"
)

// tagList turns tags into EC2 tags in key order, leaving out keys EC2
// reserves and cutting what is too long.
func tagList(tags map[string]string) []types.Tag {
	out := make([]types.Tag, 0, len(tags))
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		if k == "" || strings.HasPrefix(strings.ToLower(k), "aws:") {
			continue
		}
		out = append(out, types.Tag{Key: aws.String(truncate(k, maxTagKeyLen)), Value: aws.String(truncate(tags[k], maxTagValueLen))})
	}
	return out
}

// diskTags are the tags of a new persistent disk: the request's and the
// persistent marker.
func diskTags(req map[string]string) []types.Tag {
	all := maps.Clone(req)
	if all == nil {
		all = map[string]string{}
	}
	all[persistentTag] = "true"
	return tagList(all)
}

func tagMap(tags []types.Tag) map[string]string {
	m := make(map[string]string, len(tags))
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

// directorFilter is the EC2 filter of a cpi.ListFilter: the director's tag
// with the asked value, or present at all.
func directorFilter(f cpi.ListFilter) types.Filter {
	if f.DirectorID != "" {
		return types.Filter{Name: aws.String("tag:" + cpi.TagDirector), Values: []string{f.DirectorID}}
	}
	return types.Filter{Name: aws.String("tag-key"), Values: []string{cpi.TagDirector}}
}

// ListVMs lists the instances tagged with the director's tag, as EC2
// describes them (filtered by EC2, not from a list kept by the plugin),
// leaving out terminated and terminating instances.
func (c *CPI) ListVMs(ctx context.Context, f cpi.ListFilter) ([]cpi.VMInfo, error) {
	pages := ec2.NewDescribeInstancesPaginator(c.ec2, &ec2.DescribeInstancesInput{
		Filters: []types.Filter{
			directorFilter(f),
			{Name: aws.String("instance-state-name"), Values: []string{"pending", "running", "stopping", "stopped"}},
		},
	})
	out := []cpi.VMInfo{}
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, classify("list vms", err, nil)
		}
		for _, r := range page.Reservations {
			for _, i := range r.Instances {
				if i.State == nil || gone(i) {
					continue
				}
				tags := tagMap(i.Tags)
				if !f.Match(tags) {
					continue // a simulator that ignores a filter lists no one else's instance
				}
				out = append(out, cpi.VMInfo{
					CID:     aws.ToString(i.InstanceId),
					AgentID: cmpOr(tags[agentIDTag], tags[cpi.TagAgentID]),
					Tags:    tags,
				})
			}
		}
	}
	return out, nil
}

// ListDisks lists the volumes CreateDisk made with the director's tag, with
// the instance each is attached to, leaving out deleted volumes.
func (c *CPI) ListDisks(ctx context.Context, f cpi.ListFilter) ([]cpi.DiskInfo, error) {
	pages := ec2.NewDescribeVolumesPaginator(c.ec2, &ec2.DescribeVolumesInput{
		Filters: []types.Filter{
			directorFilter(f),
			{Name: aws.String("tag:" + persistentTag), Values: []string{"true"}},
			{Name: aws.String("status"), Values: []string{"creating", "available", "in-use"}},
		},
	})
	out := []cpi.DiskInfo{}
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, classify("list disks", err, nil)
		}
		for _, v := range page.Volumes {
			tags := tagMap(v.Tags)
			if !f.Match(tags) || tags[persistentTag] != "true" {
				continue
			}
			if v.State == types.VolumeStateDeleting || v.State == types.VolumeStateDeleted {
				continue
			}
			d := cpi.DiskInfo{CID: aws.ToString(v.VolumeId), SizeMB: int64(aws.ToInt32(v.Size)) * 1024, Tags: tags}
			for _, a := range v.Attachments {
				if a.State == types.VolumeAttachmentStateAttached || a.State == types.VolumeAttachmentStateAttaching {
					d.VMCID = aws.ToString(a.InstanceId)
				}
			}
			out = append(out, d)
		}
	}
	return out, nil
}
