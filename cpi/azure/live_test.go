package azure_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/azure"
	"github.com/compleat/compleat/cpi/cpitest"
)

// TestConformanceLive runs the conformance suite against a real Azure
// subscription. It costs money (a few small VMs and 1 GiB disks for some
// minutes) and never runs in CI; the suite against the simulated Azure is
// in sim/azure. Configured from the environment:
//
//	COMPLEAT_LIVE_AZURE=1                turns it on
//	AZURE_SUBSCRIPTION_ID, AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET
//	                                     a service principal (Contributor on the group)
//	COMPLEAT_AZURE_RESOURCE_GROUP        the group VMs and disks go in (required)
//	COMPLEAT_AZURE_LOCATION              e.g. westeurope (required)
//	COMPLEAT_AZURE_VNET, COMPLEAT_AZURE_SUBNET, COMPLEAT_AZURE_VNET_RESOURCE_GROUP
//	                                     an existing subnet (required)
//	COMPLEAT_AZURE_IP_BASE               first of 8 free addresses in it (required)
//	COMPLEAT_AZURE_SSH_PUBLIC_KEY        an OpenSSH public key (required)
//	COMPLEAT_AZURE_VM_SIZE               default Standard_B1s
//	COMPLEAT_AZURE_IMAGE                 default Canonical:ubuntu-24_04-lts:server:latest
func TestConformanceLive(t *testing.T) {
	if os.Getenv("COMPLEAT_LIVE_AZURE") != "1" {
		t.Skip("live Azure: set COMPLEAT_LIVE_AZURE=1 and the variables in docs/cpi/azure.md (costs money; the simulated Azure runs in sim/azure)")
	}
	env := func(k, def string) string {
		v := os.Getenv(k)
		if v == "" && def == "" {
			t.Skipf("COMPLEAT_LIVE_AZURE=1 but %s is not set (see docs/cpi/azure.md, live mode)", k)
		}
		if v == "" {
			return def
		}
		return v
	}
	props, _ := json.Marshal(map[string]any{
		"subscription_id": env("AZURE_SUBSCRIPTION_ID", ""), "tenant_id": env("AZURE_TENANT_ID", ""),
		"client_id": env("AZURE_CLIENT_ID", ""), "client_secret": env("AZURE_CLIENT_SECRET", ""),
		"resource_group_name": env("COMPLEAT_AZURE_RESOURCE_GROUP", ""), "location": env("COMPLEAT_AZURE_LOCATION", ""),
		"ssh_public_key": env("COMPLEAT_AZURE_SSH_PUBLIC_KEY", ""),
	})
	image := strings.Split(env("COMPLEAT_AZURE_IMAGE", "Canonical:ubuntu-24_04-lts:server:latest"), ":")
	if len(image) != 4 {
		t.Fatalf("COMPLEAT_AZURE_IMAGE: want publisher:offer:sku:version")
	}
	stemcell, _ := json.Marshal(map[string]any{"image": map[string]string{"publisher": image[0], "offer": image[1], "sku": image[2], "version": image[3]}})
	netProps, _ := json.Marshal(map[string]string{
		"virtual_network_name": env("COMPLEAT_AZURE_VNET", ""), "subnet_name": env("COMPLEAT_AZURE_SUBNET", ""),
		"resource_group_name": env("COMPLEAT_AZURE_VNET_RESOURCE_GROUP", ""),
	})
	size := env("COMPLEAT_AZURE_VM_SIZE", "Standard_B1s")
	manual := cpitest.ManualNetworks(env("COMPLEAT_AZURE_IP_BASE", ""))
	img := filepath.Join(t.TempDir(), "image")
	os.WriteFile(img, nil, 0o644)
	cfg := cpitest.Config{
		Stemcell:                 cpi.CreateStemcellRequest{ImagePath: img, CloudProperties: stemcell},
		VMCloudProperties:        json.RawMessage(`{"instance_type": "` + size + `", "ephemeral_disk": {"size": 1024}}`),
		InvalidVMCloudProperties: json.RawMessage(`{"instance_type": "` + size + `", "ephemeral_disk": {"size": "big"}}`),
		InvalidField:             "ephemeral_disk.size",
		Networks: func(int) map[string]cpi.Network {
			return map[string]cpi.Network{"default": {Type: "dynamic", Default: []string{"dns", "gateway"}, CloudProperties: netProps}}
		},
		ManualNetworks: func(i int) map[string]cpi.Network {
			nets := manual(i)
			n := nets["default"]
			n.CloudProperties = netProps
			nets["default"] = n
			return nets
		},
		Timeout: 30 * time.Minute,
	}
	cpitest.RunInProcess(t, func(t *testing.T) cpi.CPI {
		c, err := azure.New(context.Background(), props)
		if err != nil {
			t.Fatalf("azure cpi: %v", err)
		}
		return c
	}, cfg)
}
