package azure

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v6"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v7"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/resources/armresources/v3"

	"github.com/compleat/compleat/cpi"
)

// Credential sources accepted in the credentials_source property.
const (
	// CredentialsStatic authenticates as a service principal: tenant_id,
	// client_id and client_secret or client_certificate (the default).
	CredentialsStatic = "static"
	// CredentialsManagedIdentity uses the managed identity of the machine
	// the plugin runs on (managed_identity_client_id picks a user-assigned
	// one).
	CredentialsManagedIdentity = "managed_identity"
	// CredentialsWorkloadIdentity exchanges a federated token read from
	// workload_identity_token_file (Kubernetes workload identity).
	CredentialsWorkloadIdentity = "workload_identity"
)

// Environments: the Azure clouds the plugin knows by name.
var environments = map[string]cloud.Configuration{
	"AzureCloud":        cloud.AzurePublic,
	"AzureChinaCloud":   cloud.AzureChina,
	"AzureUSGovernment": cloud.AzureGovernment,
}

const (
	// DefaultMaxRetries is how often a throttled or failed call is retried
	// when max_retries is not set (as BOSH's Azure CPI).
	DefaultMaxRetries = 10
	// DefaultPollInterval is how often a long-running operation is looked
	// at when Azure names no Retry-After.
	DefaultPollInterval = 5 * time.Second
	// DefaultOperationTimeout bounds one long-running operation (a VM
	// create, a delete); past it the outcome is unknown.
	DefaultOperationTimeout = 20 * time.Minute
)

// Properties are the plugin's configuration: the properties object of the
// director's cpi config, passed in COMPLEAT_CPI_PROPERTIES. They hold
// credentials and are never logged.
type Properties struct {
	// Environment is AzureCloud (default), AzureChinaCloud or
	// AzureUSGovernment.
	Environment       string `json:"environment,omitempty"`
	SubscriptionID    string `json:"subscription_id"`
	TenantID          string `json:"tenant_id,omitempty"`
	ClientID          string `json:"client_id,omitempty"`
	ClientSecret      string `json:"client_secret,omitempty"`
	CredentialsSource string `json:"credentials_source,omitempty"`
	// ClientCertificate is a PEM holding the service principal's
	// certificate and its private key.
	ClientCertificate string `json:"client_certificate,omitempty"`
	// ManagedIdentityClientID selects a user-assigned managed identity.
	ManagedIdentityClientID string `json:"managed_identity_client_id,omitempty"`
	// WorkloadIdentityTokenFile is the federated token file of workload
	// identity.
	WorkloadIdentityTokenFile string `json:"workload_identity_token_file,omitempty"`

	ResourceGroupName    string `json:"resource_group_name"`
	Location             string `json:"location"`
	DefaultSecurityGroup string `json:"default_security_group,omitempty"`
	SSHUser              string `json:"ssh_user,omitempty"`
	SSHPublicKey         string `json:"ssh_public_key"`
	MaxRetries           *int   `json:"max_retries,omitempty"`
	// PollInterval is how often a long-running operation is looked at
	// when Azure names no Retry-After (a Go duration, default "5s").
	PollInterval string `json:"poll_interval,omitempty"`
	// OperationTimeout bounds each long-running operation (default "20m").
	OperationTimeout string `json:"operation_timeout,omitempty"`

	// ResourceManagerEndpoint and AuthorityHost replace the environment's
	// endpoints (Azure Stack, or a simulator); CACert is a PEM of the CA
	// that signs their certificates, trusted besides the system's.
	ResourceManagerEndpoint string `json:"resource_manager_endpoint,omitempty"`
	AuthorityHost           string `json:"authority_host,omitempty"`
	CACert                  string `json:"ca_cert,omitempty"`
}

// CPI is the Azure CPI. Its methods are safe for concurrent use.
type CPI struct {
	props  Properties
	rg     string
	logger *slog.Logger
	poll   time.Duration
	opTime time.Duration

	vms       *armcompute.VirtualMachinesClient
	disks     *armcompute.DisksClient
	snapshots *armcompute.SnapshotsClient
	images    *armcompute.ImagesClient
	vmImages  *armcompute.VirtualMachineImagesClient
	nics      *armnetwork.InterfacesClient
	pips      *armnetwork.PublicIPAddressesClient
	subnets   *armnetwork.SubnetsClient
	nsgs      *armnetwork.SecurityGroupsClient
	lbs       *armnetwork.LoadBalancersClient
	groups    *armresources.ResourceGroupsClient
	tags      *armresources.TagsClient

	// vmLocks serialise the changes of one VM's data disks in this
	// process, so that two attachments never pick the same LUN.
	vmLocksMu sync.Mutex
	vmLocks   map[string]*vmLock
}

type vmLock struct {
	sync.Mutex
	users int
}

var _ cpi.CPI = (*CPI)(nil)

// Option configures a CPI.
type Option func(*options)

type options struct {
	logger    *slog.Logger
	transport policy.Transporter
	cred      azcore.TokenCredential
	retry     *policy.RetryOptions
}

// WithLogger sets the logger; the default writes JSON to stderr.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithTransport sets the HTTP transport of every call, the token's
// included (tests).
func WithTransport(t policy.Transporter) Option { return func(o *options) { o.transport = t } }

// WithCredential replaces the credential the properties describe (tests).
func WithCredential(c azcore.TokenCredential) Option { return func(o *options) { o.cred = c } }

// WithRetryDelay makes retries wait d (and at most max) between attempts
// when Azure names no Retry-After (tests).
func WithRetryDelay(d, max time.Duration) Option {
	return func(o *options) { o.retry = &policy.RetryOptions{RetryDelay: d, MaxRetryDelay: max} }
}

// New returns the Azure CPI configured by properties (a JSON object, see
// Properties). Bad properties yield cpi.ErrInvalidCloudProperties naming
// the field; no error ever holds a credential. Nothing is read from the
// environment: every credential is passed explicitly.
func New(ctx context.Context, properties json.RawMessage, opts ...Option) (*CPI, error) {
	p, err := parseProperties(properties)
	if err != nil {
		return nil, err
	}
	o := options{logger: slog.New(slog.NewJSONHandler(os.Stderr, nil))}
	for _, opt := range opts {
		opt(&o)
	}
	c := &CPI{props: p, rg: p.ResourceGroupName, logger: o.logger, poll: DefaultPollInterval, opTime: DefaultOperationTimeout, vmLocks: map[string]*vmLock{}}
	if p.PollInterval != "" {
		if c.poll, err = time.ParseDuration(p.PollInterval); err != nil || c.poll < time.Second {
			return nil, cpi.InvalidCloudProperty("poll_interval", "%q is not a duration of a second or more such as \"5s\"", p.PollInterval)
		}
	}
	if p.OperationTimeout != "" {
		if c.opTime, err = time.ParseDuration(p.OperationTimeout); err != nil || c.opTime <= 0 {
			return nil, cpi.InvalidCloudProperty("operation_timeout", "%q is not a positive duration such as \"20m\"", p.OperationTimeout)
		}
	}

	cfg := environments[p.Environment]
	cfg.Services = map[cloud.ServiceName]cloud.ServiceConfiguration{cloud.ResourceManager: cfg.Services[cloud.ResourceManager]}
	if p.ResourceManagerEndpoint != "" {
		rm := cfg.Services[cloud.ResourceManager]
		rm.Endpoint = p.ResourceManagerEndpoint
		cfg.Services[cloud.ResourceManager] = rm
	}
	if p.AuthorityHost != "" {
		cfg.ActiveDirectoryAuthorityHost = p.AuthorityHost
	}
	transport := o.transport
	if transport == nil && p.CACert != "" {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM([]byte(p.CACert)) {
			return nil, cpi.InvalidCloudProperty("ca_cert", "holds no PEM certificate")
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		transport = &http.Client{Transport: tr}
	}
	maxRetries := DefaultMaxRetries
	if p.MaxRetries != nil {
		maxRetries = *p.MaxRetries
	}
	retry := policy.RetryOptions{RetryDelay: 4 * time.Second, MaxRetryDelay: 60 * time.Second}
	if o.retry != nil {
		retry = *o.retry
	}
	retry.MaxRetries = int32(maxRetries)
	if maxRetries == 0 {
		retry.MaxRetries = -1 // azcore: -1 means none, 0 its default
	}
	client := azcore.ClientOptions{Cloud: cfg, Retry: retry, Transport: transport}

	cred := o.cred
	if cred == nil {
		if cred, err = credential(p, client); err != nil {
			return nil, err
		}
	}
	arm := &arm.ClientOptions{ClientOptions: client}
	sub := p.SubscriptionID
	cf, err := armcompute.NewClientFactory(sub, cred, arm)
	if err != nil {
		return nil, fmt.Errorf("azure cpi: compute client: %w", err)
	}
	nf, err := armnetwork.NewClientFactory(sub, cred, arm)
	if err != nil {
		return nil, fmt.Errorf("azure cpi: network client: %w", err)
	}
	rf, err := armresources.NewClientFactory(sub, cred, arm)
	if err != nil {
		return nil, fmt.Errorf("azure cpi: resources client: %w", err)
	}
	c.vms, c.disks, c.snapshots = cf.NewVirtualMachinesClient(), cf.NewDisksClient(), cf.NewSnapshotsClient()
	c.images, c.vmImages = cf.NewImagesClient(), cf.NewVirtualMachineImagesClient()
	c.nics, c.pips, c.subnets, c.nsgs = nf.NewInterfacesClient(), nf.NewPublicIPAddressesClient(), nf.NewSubnetsClient(), nf.NewSecurityGroupsClient()
	c.lbs = nf.NewLoadBalancersClient()
	c.groups, c.tags = rf.NewResourceGroupsClient(), rf.NewTagsClient()
	return c, nil
}

// credential is the azidentity credential the properties describe.
func credential(p Properties, client azcore.ClientOptions) (azcore.TokenCredential, error) {
	// A custom authority (Azure Stack, a simulator) cannot be checked
	// against Entra ID's list of instances, which lives on the internet.
	disco := p.AuthorityHost != ""
	switch p.CredentialsSource {
	case CredentialsStatic:
		if p.ClientCertificate != "" {
			certs, key, err := azidentity.ParseCertificates([]byte(p.ClientCertificate), nil)
			if err != nil {
				return nil, cpi.InvalidCloudProperty("client_certificate", "not a PEM certificate with its private key: %v", err)
			}
			cred, err := azidentity.NewClientCertificateCredential(p.TenantID, p.ClientID, certs, key,
				&azidentity.ClientCertificateCredentialOptions{ClientOptions: client, DisableInstanceDiscovery: disco})
			if err != nil {
				return nil, cpi.InvalidCloudProperty("client_certificate", "%v", err)
			}
			return cred, nil
		}
		cred, err := azidentity.NewClientSecretCredential(p.TenantID, p.ClientID, p.ClientSecret,
			&azidentity.ClientSecretCredentialOptions{ClientOptions: client, DisableInstanceDiscovery: disco})
		if err != nil {
			return nil, cpi.InvalidCloudProperty("client_id", "%v", err)
		}
		return cred, nil
	case CredentialsManagedIdentity:
		o := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: client}
		if p.ManagedIdentityClientID != "" {
			o.ID = azidentity.ClientID(p.ManagedIdentityClientID)
		}
		return azidentity.NewManagedIdentityCredential(o)
	case CredentialsWorkloadIdentity:
		return azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
			ClientOptions: client, TenantID: p.TenantID, ClientID: p.ClientID,
			TokenFilePath: p.WorkloadIdentityTokenFile, DisableInstanceDiscovery: disco,
		})
	}
	return nil, cpi.InvalidCloudProperty("credentials_source", "unknown source %q", p.CredentialsSource)
}

func parseProperties(raw json.RawMessage) (Properties, error) {
	var p Properties
	if err := cpi.DecodeCloudProperties(raw, &p); err != nil {
		return Properties{}, err
	}
	if p.Environment == "" {
		p.Environment = "AzureCloud"
	}
	if _, ok := environments[p.Environment]; !ok {
		return Properties{}, cpi.InvalidCloudProperty("environment", "%q is not AzureCloud, AzureChinaCloud or AzureUSGovernment", p.Environment)
	}
	required := []struct{ field, value, example string }{
		{"subscription_id", p.SubscriptionID, "a subscription's GUID"},
		{"resource_group_name", p.ResourceGroupName, "the resource group VMs and disks go in"},
		{"location", p.Location, `e.g. "westeurope"`},
		{"ssh_public_key", p.SSHPublicKey, "an OpenSSH public key for ssh_user"},
	}
	for _, r := range required {
		if strings.TrimSpace(r.value) == "" {
			return Properties{}, cpi.InvalidCloudProperty(r.field, "required (%s)", r.example)
		}
	}
	if p.SSHUser == "" {
		p.SSHUser = "vcap"
	}
	if p.CredentialsSource == "" {
		p.CredentialsSource = CredentialsStatic
	}
	switch p.CredentialsSource {
	case CredentialsStatic:
		if p.TenantID == "" || p.ClientID == "" {
			return Properties{}, cpi.InvalidCloudProperty("tenant_id", "tenant_id and client_id are required with credentials_source %q", CredentialsStatic)
		}
		if (p.ClientSecret == "") == (p.ClientCertificate == "") {
			return Properties{}, cpi.InvalidCloudProperty("client_secret", "give exactly one of client_secret and client_certificate")
		}
	case CredentialsManagedIdentity:
		if p.ClientSecret != "" || p.ClientCertificate != "" {
			return Properties{}, cpi.InvalidCloudProperty("credentials_source", "%q takes no client_secret or client_certificate", CredentialsManagedIdentity)
		}
	case CredentialsWorkloadIdentity:
		if p.TenantID == "" || p.ClientID == "" || p.WorkloadIdentityTokenFile == "" {
			return Properties{}, cpi.InvalidCloudProperty("workload_identity_token_file", "tenant_id, client_id and workload_identity_token_file are required with credentials_source %q", CredentialsWorkloadIdentity)
		}
	default:
		return Properties{}, cpi.InvalidCloudProperty("credentials_source", "must be %q, %q or %q", CredentialsStatic, CredentialsManagedIdentity, CredentialsWorkloadIdentity)
	}
	for field, v := range map[string]string{"resource_manager_endpoint": p.ResourceManagerEndpoint, "authority_host": p.AuthorityHost} {
		if v == "" {
			continue
		}
		u, err := url.Parse(v)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return Properties{}, cpi.InvalidCloudProperty(field, "%q is not an https URL", v)
		}
	}
	if p.MaxRetries != nil && (*p.MaxRetries < 0 || *p.MaxRetries > 50) {
		return Properties{}, cpi.InvalidCloudProperty("max_retries", "must be between 0 and 50, got %d", *p.MaxRetries)
	}
	return p, nil
}

// Info describes the plugin.
func (c *CPI) Info(context.Context) (cpi.Info, error) {
	return cpi.Info{
		Name:            "azure",
		APIVersion:      cpi.APIVersion,
		StemcellFormats: []string{"azure-light"},
		Capabilities: cpi.Capabilities{
			Snapshots:       true,
			ResizeDisk:      true,
			DiskHints:       true,
			DynamicNetworks: true,
			ListVMs:         true,
			ListDisks:       true,
		},
	}, nil
}

// lockVM serialises data disk changes of one VM; call the returned func
// to unlock.
func (c *CPI) lockVM(id string) func() {
	id = strings.ToLower(id)
	c.vmLocksMu.Lock()
	l := c.vmLocks[id]
	if l == nil {
		l = &vmLock{}
		c.vmLocks[id] = l
	}
	l.users++
	c.vmLocksMu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		c.vmLocksMu.Lock()
		if l.users--; l.users == 0 {
			delete(c.vmLocks, id)
		}
		c.vmLocksMu.Unlock()
	}
}
