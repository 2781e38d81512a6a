package cloudsim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	simazure "github.com/compleat/compleat/sim/azure"
	"github.com/compleat/compleat/sim/machine"
)

// The simulated Azure's fixed names: one subscription and tenant, a
// service principal, a resource group for VMs and one for the network.
const (
	azureSubscription = "6a5e0c1d-0000-4000-8000-00000000c0de"
	azureTenant       = "6a5e0c1d-0000-4000-8000-0000000000aa"
	azureClient       = "6a5e0c1d-0000-4000-8000-0000000000cc"
	azureGroup        = "compleat"
	azureNetGroup     = "compleat-network"
	azureVNet         = "compleat-vnet"
	azureNSG          = "compleat-nsg"
	azureLB           = "compleat-lb"
	azureImage        = "Canonical:ubuntu-24_04-lts:server:24.04.202601010"
)

// runAzure runs the ARM and Entra ID simulator and boots its VMs: the
// simulated Azure.
func runAzure(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c common
	var listen, location string
	var zones int
	var pollAfter, opDelay time.Duration
	fs := flag.NewFlagSet("cloudsim azure", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.register(fs)
	fs.StringVar(&listen, "listen", "127.0.0.1:0", "address of the HTTPS endpoint of Resource Manager and Entra ID (loopback; port 0 picks one)")
	fs.StringVar(&location, "location", "westeurope", "the region")
	fs.IntVar(&zones, "zones", 2, "zones, each with a subnet of the simulated virtual network (127.81.<n>.0/24)")
	fs.DurationVar(&pollAfter, "poll-after", 250*time.Millisecond, "the Retry-After hinted on running operations (Azure's is usually some seconds)")
	fs.DurationVar(&opDelay, "operation-delay", 0, "how long each long-running operation runs")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := c.check(); err != nil {
		return err
	}
	if zones < 1 || zones > 3 {
		return &UsageError{fmt.Errorf("--zones %d: want 1 to 3 (Azure's zones)", zones)}
	}
	if !strings.HasPrefix(listen, "127.") && !strings.HasPrefix(listen, "localhost:") {
		return &UsageError{fmt.Errorf("--listen %s: want a loopback address", listen)}
	}
	logger := c.logger(stderr).With("cloud", "azure")

	host, err := machine.NewHost(filepath.Join(c.data, "machines"), machine.WithLogger(logger))
	if err != nil {
		return err
	}
	defer host.Close()
	// The simulator keeps its state in memory: VMs of an earlier run
	// belong to a cloud that is gone.
	left, err := host.Leftovers()
	if err != nil {
		return err
	}
	for _, id := range left {
		if err := host.Delete(ctx, id); err != nil {
			return fmt.Errorf("delete vm %s of an earlier run: %w", id, err)
		}
	}
	volumes := filepath.Join(c.data, "volumes")
	if err := os.RemoveAll(volumes); err != nil {
		return err
	}

	secret := make([]byte, 24)
	_, _ = rand.Read(secret)
	var subnets []simazure.Subnet
	for i := 1; i <= zones; i++ {
		subnets = append(subnets, simazure.Subnet{Name: fmt.Sprintf("z%d", i), AddressPrefix: fmt.Sprintf("127.81.%d.0/24", i)})
	}
	booter := &simazure.Booter{Host: host, Agent: c.agent, VolumeDir: volumes, Logger: logger}
	srv, err := simazure.New(simazure.Config{
		SubscriptionID: azureSubscription, TenantID: azureTenant, ClientID: azureClient, ClientSecret: hex.EncodeToString(secret),
		Location:        location,
		ResourceGroups:  []string{azureGroup},
		VirtualNetworks: []simazure.VirtualNetwork{{ResourceGroup: azureNetGroup, Name: azureVNet, AddressPrefix: "127.81.0.0/16", Subnets: subnets}},
		SecurityGroups:  []simazure.Named{{ResourceGroup: azureGroup, Name: azureNSG}},
		LoadBalancers:   []simazure.LoadBalancer{{ResourceGroup: azureGroup, Name: azureLB, Pools: []string{"web"}}},
		Images:          []string{azureImage},
		PollAfter:       pollAfter, OperationDelay: opDelay,
		Hooks: booter, Logger: logger,
	})
	if err != nil {
		return err
	}
	booter.SetServer(srv)
	if err := srv.Start(listen); err != nil {
		return err
	}
	defer srv.Close()
	defer func() {
		for _, vm := range host.List() {
			if err := host.Delete(context.WithoutCancel(ctx), vm.ID); err != nil {
				logger.Error("delete vm", "vm", vm.ID, "error", err)
			}
		}
	}()

	ca := filepath.Join(c.data, "azure-ca.pem")
	if err := os.WriteFile(ca, srv.CACert(), 0o644); err != nil {
		return err
	}
	cfg := srv.Config()
	vars := [][2]string{
		{"AZURE_TENANT_ID", cfg.TenantID},
		{"AZURE_CLIENT_ID", cfg.ClientID},
		{"AZURE_CLIENT_SECRET", cfg.ClientSecret},
		{"AZURE_AUTHORITY_HOST", srv.URL() + "/"},
		{"AZURE_SUBSCRIPTION_ID", cfg.SubscriptionID},
		{"AZURE_RESOURCE_MANAGER_ENDPOINT", srv.URL() + "/"},
		{"REQUESTS_CA_BUNDLE", ca},
		{"SSL_CERT_FILE", ca},
		{"COMPLEAT_AZURE_LOCATION", location},
		{"COMPLEAT_AZURE_RESOURCE_GROUP", azureGroup},
		{"COMPLEAT_AZURE_IMAGE", azureImage},
	}
	comment := fmt.Sprintf("The simulated Azure of cloudsim (pid %d): Resource Manager and Entra ID on this machine, VMs booted here.\n"+
		"Source it, then take a token (OAuth2 client credentials at $AZURE_AUTHORITY_HOST$AZURE_TENANT_ID/oauth2/v2.0/token)\n"+
		"and call $AZURE_RESOURCE_MANAGER_ENDPOINT as Azure's (docs/cpi/azure.md shows curl).", os.Getpid())
	if err := writeEnv(c.envFile, comment, vars); err != nil {
		return fmt.Errorf("write %s: %w", c.envFile, err)
	}
	defer os.Remove(c.envFile)
	// The same values for the director's cpi config, as variables for
	// `director interpolate -l`.
	varsFile := filepath.Join(c.data, "azure-vars.yml")
	if err := writeVars(varsFile, map[string]string{
		"azure_subscription_id": cfg.SubscriptionID, "azure_tenant_id": cfg.TenantID, "azure_client_id": cfg.ClientID,
		"azure_client_secret": cfg.ClientSecret, "azure_endpoint": srv.URL() + "/", "azure_ca_cert": string(srv.CACert()),
		"azure_location": location,
	}); err != nil {
		return err
	}
	defer os.Remove(varsFile)
	fmt.Fprintf(stdout, "Simulated Azure ready: Resource Manager and Entra ID at %s, location %s\n  subscription %s, resource group %s\n  virtual network %s/%s 127.81.0.0/16, marketplace image %s\n  env . %s   cpi config variables %s\n",
		srv.URL(), location, cfg.SubscriptionID, azureGroup, azureNetGroup, azureVNet, azureImage, c.envFile, varsFile)
	for _, sn := range subnets {
		fmt.Fprintf(stdout, "  subnet %s %s\n", sn.Name, sn.AddressPrefix)
	}
	<-ctx.Done()
	logger.Info("stopping: deleting every vm")
	if errors.Is(ctx.Err(), context.Canceled) {
		return nil
	}
	return ctx.Err()
}

// writeVars writes a file of variables (mode 0600: it holds a secret) in
// JSON, which YAML reads as well.
func writeVars(path string, vars map[string]string) error {
	b, err := json.MarshalIndent(vars, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
