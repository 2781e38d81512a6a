package azure

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/compleat/compleat/cpi"
)

const validProps = `{"subscription_id": "s", "tenant_id": "t", "client_id": "c", "client_secret": "x",
	"resource_group_name": "rg", "location": "westeurope", "ssh_public_key": "ssh-ed25519 AAAA"}`

// Bad plugin properties are refused naming the field, and no error holds
// the secret.
func TestProperties(t *testing.T) {
	with := func(k string, v any) json.RawMessage {
		var m map[string]any
		json.Unmarshal([]byte(validProps), &m)
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		b, _ := json.Marshal(m)
		return b
	}
	if _, err := New(context.Background(), json.RawMessage(validProps)); err != nil {
		t.Fatalf("valid properties: %v", err)
	}
	for _, tc := range []struct {
		raw   json.RawMessage
		field string
	}{
		{with("subscription_id", nil), "subscription_id"},
		{with("location", nil), "location"},
		{with("ssh_public_key", ""), "ssh_public_key"},
		{with("environment", "AzureGermanCloud"), "environment"},
		{with("client_certificate", "PEM"), "client_secret"},
		{with("credentials_source", "env"), "credentials_source"},
		{with("max_retries", 99), "max_retries"},
		{with("resource_manager_endpoint", "http://127.0.0.1:1"), "resource_manager_endpoint"},
		{with("poll_interval", "10ms"), "poll_interval"},
		{with("ca_cert", "not a pem"), "ca_cert"},
		{with("clinet_secret", "typo"), "clinet_secret"},
	} {
		_, err := New(context.Background(), tc.raw)
		var e *cpi.Error
		if !errors.As(err, &e) || e.Code != cpi.CodeInvalidCloudProperties || e.Field != tc.field {
			t.Errorf("New(%s): %v, want InvalidCloudProperties naming %s", tc.raw, err, tc.field)
		}
		if err != nil && strings.Contains(err.Error(), `"x"`) {
			t.Errorf("error %v holds the client secret", err)
		}
	}
}

// VM, network and disk cloud properties are checked field by field.
func TestCloudProperties(t *testing.T) {
	for _, tc := range []struct {
		raw, field string
	}{
		{`{}`, "instance_type"},
		{`{"instance_type": "t3.small"}`, "instance_type"},
		{`{"instance_type": "Standard_B2s", "availability_zone": "4"}`, "availability_zone"},
		{`{"instance_type": "Standard_B2s", "ephemeral_disk": {"size": "big"}}`, "ephemeral_disk.size"},
		{`{"instance_type": "Standard_B2s", "ephemeral_disk": {"use_root_disk": true, "size": 10}}`, "ephemeral_disk.use_root_disk"},
		{`{"instance_type": "Standard_B2s", "root_disk": {"type": "gp3"}}`, "root_disk.type"},
		{`{"instance_type": "Standard_B2s", "load_balancer": {"name": "lb", "pool": "web"}}`, "load_balancer.pool"},
		{`{"instance_type": "Standard_B2s", "managed_identity": {"type": "UserAssigned"}}`, "managed_identity"},
		{`{"instance_type": "Standard_B2s", "security_groups": ["a"]}`, "security_groups"},
	} {
		_, err := parseVMProperties(json.RawMessage(tc.raw))
		var e *cpi.Error
		if !errors.As(err, &e) || e.Code != cpi.CodeInvalidCloudProperties || e.Field != tc.field {
			t.Errorf("parseVMProperties(%s): %v, want InvalidCloudProperties naming %s", tc.raw, err, tc.field)
		}
	}
	p, err := parseVMProperties(json.RawMessage(`{"instance_type": "Standard_B2s", "load_balancer": "lb", "tags": {"team": "web"}}`))
	if err != nil || p.LoadBalancer.Name != "lb" {
		t.Errorf("a load balancer by name: %+v, %v", p.LoadBalancer, err)
	}
	if _, err := parseNetworkProperties("default", json.RawMessage(`{"virtual_network_name": "v"}`)); fieldOf(err) != "networks.default.subnet_name" {
		t.Errorf("a network without subnet_name: %v", err)
	}
	if _, err := parseDiskProperties(json.RawMessage(`{"storage_account_type": "PremiumV2_LRS", "caching": "ReadOnly"}`)); fieldOf(err) != "caching" {
		t.Errorf("PremiumV2 with caching: %v", err)
	}
	d, err := parseDiskProperties(nil)
	if err != nil || d.StorageAccountType != defaultStorageType || d.Caching != "None" {
		t.Errorf("default disk properties: %+v, %v", d, err)
	}
}

func fieldOf(err error) string {
	var e *cpi.Error
	if errors.As(err, &e) {
		return e.Field
	}
	return ""
}

// Names are Azure's: a VM named after its agent id within 64 characters.
func TestNames(t *testing.T) {
	long := strings.Repeat("a", 80)
	if n := vmName(long); len(n) > 64 || !strings.HasPrefix(n, "vm-") {
		t.Errorf("vmName(80 chars) = %q", n)
	}
	if n := vmName("web/0 x"); n != "vm-web-0-x" {
		t.Errorf("vmName = %q", n)
	}
	if _, ok := parseID("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/d", typeVM); ok {
		t.Error("a disk id parsed as a vm id")
	}
	r, ok := parseID("/subscriptions/s/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/vm-1", typeVM)
	if !ok || r.group != "RG" || r.name != "vm-1" {
		t.Errorf("parseID = %+v, %v", r, ok)
	}
}
