// Package azure_test checks the Azure example manifests with the director's
// own parsers: the cpi configs (interpolated), the cloud configs, and the
// deployments validated against them, for a real subscription and for the
// simulated Azure of cloudsim.
package azure_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/compleat/compleat/director/cpimanager"
	"github.com/compleat/compleat/director/manifest"
)

func TestExampleManifests(t *testing.T) {
	vars := []string{
		"azure_subscription_id=00000000-0000-4000-8000-000000000001", "azure_tenant_id=00000000-0000-4000-8000-000000000002",
		"azure_client_id=00000000-0000-4000-8000-000000000003", "azure_client_secret=s3cret", "azure_location=westeurope",
		"azure_endpoint=https://127.0.0.1:8443/", "azure_ca_cert=-----BEGIN CERTIFICATE-----", "ssh_public_key=ssh-ed25519 AAAA vcap",
		"lb_public_ip=20.50.0.10",
	}
	for _, dir := range []string{".", "cloudsim"} {
		t.Run(dir, func(t *testing.T) {
			read := func(name string) []byte {
				t.Helper()
				b, err := os.ReadFile(filepath.Join(dir, name))
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
			interpolate := func(name string) []byte {
				t.Helper()
				b, err := manifest.Interpolate(context.Background(), name, read(name), manifest.LoadOptions{Vars: vars, Strict: true})
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				return b
			}
			cfg, err := cpimanager.ParseConfig("cpi-config.yml", interpolate("cpi-config.yml"))
			if err != nil {
				t.Fatalf("cpi-config.yml: %v", err)
			}
			if len(cfg.CPIs) != 1 || cfg.CPIs[0].Type != "azure" {
				t.Errorf("cpi-config.yml: %+v, want one cpi of type azure", cfg.CPIs)
			}
			cc, err := manifest.ParseCloudConfig("cloud-config.yml", read("cloud-config.yml"))
			if err != nil {
				t.Fatalf("cloud-config.yml: %v", err)
			}
			dep, err := manifest.ParseDeployment("web.yml", interpolate("web.yml"))
			if err != nil {
				t.Fatalf("web.yml: %v", err)
			}
			if err := dep.Validate(cc); err != nil {
				t.Errorf("web.yml against cloud-config.yml: %v", err)
			}
		})
	}
}
