package azure_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi"
	azurecpi "github.com/compleat/compleat/cpi/azure"
	"github.com/compleat/compleat/cpi/cpitest"
	"github.com/compleat/compleat/sim/azure"
)

const (
	testImage  = "Canonical:ubuntu-24_04-lts:server:24.04.202601010"
	testSubnet = "127.80.1.0/24"
)

// newSim starts a simulator with one resource group, network, security
// group and load balancer, stopped when the test ends.
func newSim(t testing.TB) *azure.Server { return newSimWith(t, nil) }

// newSimWith is newSim with hooks.
func newSimWith(t testing.TB, hooks azure.Hooks) *azure.Server {
	t.Helper()
	s, err := azure.New(azure.Config{
		Hooks:          hooks,
		SubscriptionID: "00000000-0000-4000-8000-000000000001",
		TenantID:       "00000000-0000-4000-8000-0000000000aa",
		ClientID:       "00000000-0000-4000-8000-0000000000cc",
		ClientSecret:   "sim-secret-" + fmt.Sprint(time.Now().UnixNano()),
		ResourceGroups: []string{"compleat"},
		VirtualNetworks: []azure.VirtualNetwork{{
			ResourceGroup: "compleat-net", Name: "vnet", AddressPrefix: "127.80.0.0/16",
			Subnets: []azure.Subnet{{Name: "default", AddressPrefix: testSubnet}},
		}},
		SecurityGroups: []azure.Named{{ResourceGroup: "compleat", Name: "compleat-nsg"}},
		LoadBalancers:  []azure.LoadBalancer{{ResourceGroup: "compleat", Name: "lb", Pools: []string{"web"}}},
		Images:         []string{testImage},
		PublicIPs: []azure.PublicIP{
			{ResourceGroup: "compleat", Name: "vip-0", Address: "127.254.200.10"},
			{ResourceGroup: "compleat", Name: "vip-1", Address: "127.254.200.11"},
			{ResourceGroup: "compleat", Name: "vip-5", Address: "127.254.200.15"},
		},
		PollAfter: 20 * time.Millisecond,
		PageSize:  3,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// properties are the plugin's properties for the simulator.
func properties(s *azure.Server, extra map[string]any) json.RawMessage {
	cfg := s.Config()
	p := map[string]any{
		"subscription_id": cfg.SubscriptionID, "tenant_id": cfg.TenantID, "client_id": cfg.ClientID, "client_secret": cfg.ClientSecret,
		"resource_group_name": "compleat", "location": cfg.Location, "default_security_group": "compleat-nsg",
		"ssh_public_key":            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHcompleatsimulatedkey vcap",
		"resource_manager_endpoint": s.URL(), "authority_host": s.URL() + "/", "ca_cert": string(s.CACert()),
		"poll_interval": "1s", "max_retries": 4,
	}
	for k, v := range extra {
		p[k] = v
	}
	b, _ := json.Marshal(p)
	return b
}

func newCPI(t testing.TB, s *azure.Server, extra map[string]any, opts ...azurecpi.Option) *azurecpi.CPI {
	t.Helper()
	opts = append([]azurecpi.Option{azurecpi.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))), azurecpi.WithRetryDelay(10*time.Millisecond, 2*time.Second)}, opts...)
	c, err := azurecpi.New(context.Background(), properties(s, extra), opts...)
	if err != nil {
		t.Fatalf("azure cpi: %v", err)
	}
	return c
}

var netProps = json.RawMessage(`{"virtual_network_name": "vnet", "subnet_name": "default", "resource_group_name": "compleat-net"}`)

func conformanceConfig(t *testing.T, s *azure.Server) cpitest.Config {
	img := filepath.Join(t.TempDir(), "image")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p := strings.Split(testImage, ":")
	stemcell, _ := json.Marshal(map[string]any{"name": "bosh-azure-hyperv-ubuntu-noble", "version": "1.0", "image": map[string]string{"publisher": p[0], "offer": p[1], "sku": p[2], "version": p[3]}})
	manual := cpitest.ManualNetworks("127.80.1.10")
	return cpitest.Config{
		Stemcell:                 cpi.CreateStemcellRequest{ImagePath: img, CloudProperties: stemcell},
		VMCloudProperties:        json.RawMessage(`{"instance_type": "Standard_B2s", "ephemeral_disk": {"size": 1024}, "tags": {"purpose": "cpitest"}}`),
		DiskCloudProperties:      json.RawMessage(`{"storage_account_type": "StandardSSD_LRS"}`),
		InvalidVMCloudProperties: json.RawMessage(`{"instance_type": "Standard_B2s", "ephemeral_disk": {"size": "big"}}`),
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
		VIPNetworks: func(i int) map[string]cpi.Network {
			return map[string]cpi.Network{"public": {Type: "vip", IP: fmt.Sprintf("127.254.200.%d", 10+i)}}
		},
		DeliveredSettings: func(_ context.Context, cid string) (json.RawMessage, error) { return userData(s, cid) },
		Timeout:           time.Minute,
	}
}

// httpsClient trusts the simulator's CA.
func httpsClient(s *azure.Server) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.CACert())
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// armToken takes a token from the simulator's Entra ID endpoint as any
// OAuth2 client does (client credentials).
func armToken(t testing.TB, s *azure.Server) string {
	t.Helper()
	cfg := s.Config()
	resp, err := httpsClient(s).PostForm(s.URL()+"/"+cfg.TenantID+"/oauth2/v2.0/token", url.Values{
		"grant_type": {"client_credentials"}, "client_id": {cfg.ClientID}, "client_secret": {cfg.ClientSecret},
		"scope": {"https://management.azure.com/.default"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || resp.StatusCode != 200 || tok.TokenType != "Bearer" {
		t.Fatalf("token: %s %v", resp.Status, err)
	}
	return tok.AccessToken
}

// userData is the settings document the VM got, as IMDS serves it.
func userData(s *azure.Server, cid string) (json.RawMessage, error) {
	for _, vm := range s.VMs() {
		if strings.EqualFold(vm.ID, cid) {
			return base64.StdEncoding.DecodeString(vm.UserData)
		}
	}
	return nil, fmt.Errorf("no vm %s", cid)
}

// The suite in-process over real gRPC, against the simulator over HTTPS.
func TestConformanceInProcess(t *testing.T) {
	s := newSim(t)
	cpitest.RunInProcess(t, func(t *testing.T) cpi.CPI { return newCPI(t, s, nil) }, conformanceConfig(t, s))
	checkNothingLeft(t, s)
}

// checkNothingLeft fails when VMs, NICs, public IPs or disks outlived the
// test that made them.
func checkNothingLeft(t *testing.T, s *azure.Server) {
	t.Helper()
	for _, typ := range []string{"Microsoft.Compute/virtualMachines", "Microsoft.Network/networkInterfaces", "Microsoft.Network/publicIPAddresses", "Microsoft.Compute/disks", "Microsoft.Compute/snapshots"} {
		n := s.Count(typ)
		if typ == "Microsoft.Network/publicIPAddresses" {
			n -= len(s.Config().PublicIPs) // the vip addresses, there from the start
		}
		if n != 0 {
			t.Errorf("%d %s left behind", n, typ)
		}
	}
}
