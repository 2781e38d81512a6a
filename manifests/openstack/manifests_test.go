// Package openstack_test checks the OpenStack example manifests with the director's own
// parsers: the cpi config, the cloud config, and the deployment validated
// against that cloud config (zones, vm types, extensions, networks, the
// static IP in a static range).
package openstack_test

import (
	"context"
	"os"
	"testing"

	"github.com/compleat/compleat/director/cpimanager"
	"github.com/compleat/compleat/director/manifest"
)

func TestExampleManifests(t *testing.T) {
	read := func(name string) []byte {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if _, err := cpimanager.ParseConfig("cpi-config.yml", read("cpi-config.yml")); err != nil {
		t.Errorf("cpi-config.yml: %v", err)
	}
	cc, err := manifest.ParseCloudConfig("cloud-config.yml", read("cloud-config.yml"))
	if err != nil {
		t.Fatalf("cloud-config.yml: %v", err)
	}
	web, err := manifest.Interpolate(context.Background(), "web.yml", read("web.yml"), manifest.LoadOptions{
		Strict: true,
	})
	if err != nil {
		t.Fatalf("web.yml: %v", err)
	}
	dep, err := manifest.ParseDeployment("web.yml", web)
	if err != nil {
		t.Fatalf("web.yml: %v", err)
	}
	if err := dep.Validate(cc); err != nil {
		t.Errorf("web.yml against cloud-config.yml: %v", err)
	}
}
