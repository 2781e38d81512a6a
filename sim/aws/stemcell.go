package aws

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"go.yaml.in/yaml/v3"

	"github.com/compleat/compleat/cpi/tarball"
)

// Image is an AMI registered for a stemcell: its instances boot the agent
// the stemcell carries.
type Image struct {
	AMI   string `json:"ami"`
	Name  string `json:"name"`
	Agent string `json:"agent"`
}

// RegisterStemcell makes an AMI of a local stemcell tarball (stemcell.MF
// and an image holding the agent, as `director create-stemcell` writes
// it), as building a machine image from it would: the agent is extracted
// (safely, through cpi/tarball) to dir/<ami>/agent and an AMI named
// <name>-<version> is registered in moto. Give the result to the
// watcher (Config.Images), and name the AMI in a light stemcell.
func RegisterStemcell(ctx context.Context, client *ec2.Client, stemcell, dir string) (Image, error) {
	work, err := os.MkdirTemp(dir, ".stemcell-")
	if err != nil {
		return Image{}, err
	}
	defer os.RemoveAll(work)
	lim := tarball.Limits{MaxBytes: 2 << 30, MaxEntries: 1000}
	if err := tarball.ExtractFile(ctx, stemcell, filepath.Join(work, "stemcell"), lim); err != nil {
		return Image{}, fmt.Errorf("stemcell %s: %w", stemcell, err)
	}
	raw, err := os.ReadFile(filepath.Join(work, "stemcell", "stemcell.MF"))
	if err != nil {
		return Image{}, fmt.Errorf("stemcell %s: no stemcell.MF: %w", stemcell, err)
	}
	var mf struct {
		Name    string `yaml:"name"`
		Version string `yaml:"version"`
	}
	if err := yaml.Unmarshal(raw, &mf); err != nil || mf.Name == "" || mf.Version == "" {
		return Image{}, fmt.Errorf("stemcell %s: stemcell.MF: want a name and a version (%v)", stemcell, err)
	}
	image := filepath.Join(work, "stemcell", "image")
	if fi, err := os.Stat(image); err != nil || fi.Size() == 0 {
		return Image{}, fmt.Errorf("stemcell %s: a light stemcell carries no agent: give a local stemcell (director create-stemcell --agent)", stemcell)
	}
	if err := tarball.ExtractFile(ctx, image, filepath.Join(work, "image"), lim); err != nil {
		return Image{}, fmt.Errorf("stemcell %s: image: %w", stemcell, err)
	}
	agent := filepath.Join(work, "image", "agent")
	if fi, err := os.Lstat(agent); err != nil || !fi.Mode().IsRegular() {
		return Image{}, fmt.Errorf("stemcell %s: its image holds no agent file", stemcell)
	}
	name := mf.Name + "-" + mf.Version
	out, err := client.RegisterImage(ctx, &ec2.RegisterImageInput{
		Name:           aws.String(name),
		Description:    aws.String("Compleat stemcell " + mf.Name + "/" + mf.Version + ": its instances boot the stemcell's agent"),
		Architecture:   types.ArchitectureValuesX8664,
		RootDeviceName: aws.String("/dev/xvda"),
		BlockDeviceMappings: []types.BlockDeviceMapping{{
			DeviceName: aws.String("/dev/xvda"),
			Ebs:        &types.EbsBlockDevice{VolumeSize: aws.Int32(8), DeleteOnTermination: aws.Bool(true)},
		}},
		VirtualizationType: aws.String("hvm"),
		EnaSupport:         aws.Bool(true),
	})
	if err != nil {
		return Image{}, fmt.Errorf("register image %s: %w", name, err)
	}
	ami := aws.ToString(out.ImageId)
	if ami == "" {
		return Image{}, errors.New("register image: EC2 returned no image id")
	}
	if err := os.MkdirAll(filepath.Join(dir, ami), 0o755); err != nil {
		return Image{}, err
	}
	img := Image{AMI: ami, Name: name, Agent: filepath.Join(dir, ami, "agent")}
	if err := os.Rename(agent, img.Agent); err != nil {
		return Image{}, err
	}
	if err := os.Chmod(img.Agent, 0o755); err != nil {
		return Image{}, err
	}
	return img, nil
}
