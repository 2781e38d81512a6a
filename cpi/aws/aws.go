package aws

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/compleat/compleat/cpi"
)

// Credentials sources accepted in the credentials_source property.
const (
	// CredentialsStatic uses access_key_id and secret_access_key (the
	// default when they are set).
	CredentialsStatic = "static"
	// CredentialsEnvOrProfile uses the SDK's default chain: environment,
	// shared config files, then the instance profile through IMDS.
	CredentialsEnvOrProfile = "env_or_profile"
)

const (
	// DefaultMaxRetries is how often a throttled or failed call is retried
	// when max_retries is not set.
	DefaultMaxRetries = 8
	// DefaultPollInterval is how often waits look at EC2 when poll_interval
	// is not set.
	DefaultPollInterval = 2 * time.Second
	// maxBackoff bounds the delay between two retries of one call.
	maxBackoff = 20 * time.Second
)

// Properties are the plugin's configuration: the properties object of the
// director's cpi config, passed in COMPLEAT_CPI_PROPERTIES. They may hold
// credentials and are never logged.
type Properties struct {
	Region            string `json:"region"`
	AccessKeyID       string `json:"access_key_id,omitempty"`
	SecretAccessKey   string `json:"secret_access_key,omitempty"`
	SessionToken      string `json:"session_token,omitempty"`
	CredentialsSource string `json:"credentials_source,omitempty"`
	// DefaultKeyName is the key pair of VMs whose cloud properties name none.
	DefaultKeyName string `json:"default_key_name,omitempty"`
	// DefaultSecurityGroups (names or sg- ids) apply to VMs whose cloud
	// properties and network name none.
	DefaultSecurityGroups []string `json:"default_security_groups,omitempty"`
	// Endpoint replaces the EC2 endpoint (a VPC endpoint; moto in tests).
	Endpoint string `json:"endpoint,omitempty"`
	// MaxRetries is how often one call is retried on throttling and
	// transient faults (default 8; 0 disables retries).
	MaxRetries *int `json:"max_retries,omitempty"`
	// PollInterval is how often waits look at EC2 (a Go duration, default
	// "2s").
	PollInterval string `json:"poll_interval,omitempty"`
}

// CPI is the AWS CPI. Its methods are safe for concurrent use.
type CPI struct {
	ec2          *ec2.Client
	region       string
	props        Properties
	poll         time.Duration
	logger       *slog.Logger
	httpClient   aws.HTTPClient
	retryBackoff time.Duration

	// attachMu guards attaching, which serialises AttachDisk per instance
	// so that two concurrent attachments in this process never pick the
	// same device name.
	attachMu  sync.Mutex
	attaching map[string]*instanceLock
}

// instanceLock is held while a device is chosen for an instance; users
// counts who holds or waits for it, so it can be dropped when none does.
type instanceLock struct {
	sync.Mutex
	users int
}

var _ cpi.CPI = (*CPI)(nil)

// Option configures a CPI.
type Option func(*CPI)

// WithLogger sets the logger; the default writes JSON to stderr, as plugins
// do.
func WithLogger(l *slog.Logger) Option { return func(c *CPI) { c.logger = l } }

// WithHTTPClient sets the HTTP client of every EC2 call (tests inject faults
// through it).
func WithHTTPClient(h aws.HTTPClient) Option { return func(c *CPI) { c.httpClient = h } }

// WithPollInterval overrides the poll_interval property.
func WithPollInterval(d time.Duration) Option { return func(c *CPI) { c.poll = d } }

// WithRetryBackoff makes the retryer wait d between attempts instead of its
// exponential backoff (tests).
func WithRetryBackoff(d time.Duration) Option { return func(c *CPI) { c.retryBackoff = d } }

// New returns the AWS CPI configured by properties (a JSON object, see
// Properties). Bad properties yield cpi.ErrInvalidCloudProperties naming the
// field; no error ever holds a credential.
func New(ctx context.Context, properties json.RawMessage, opts ...Option) (*CPI, error) {
	p, err := parseProperties(properties)
	if err != nil {
		return nil, err
	}
	c := &CPI{
		region:    p.Region,
		props:     p,
		poll:      DefaultPollInterval,
		logger:    slog.New(slog.NewJSONHandler(os.Stderr, nil)),
		attaching: map[string]*instanceLock{},
	}
	if p.PollInterval != "" {
		d, err := time.ParseDuration(p.PollInterval)
		if err != nil || d <= 0 {
			return nil, cpi.InvalidCloudProperty("poll_interval", "%q is not a positive duration such as \"2s\"", p.PollInterval)
		}
		c.poll = d
	}
	for _, o := range opts {
		o(c)
	}
	maxRetries := DefaultMaxRetries
	if p.MaxRetries != nil {
		maxRetries = *p.MaxRetries
	}

	var cfg aws.Config
	switch p.CredentialsSource {
	case CredentialsEnvOrProfile:
		cfg, err = config.LoadDefaultConfig(ctx, config.WithRegion(p.Region))
		if err != nil {
			return nil, fmt.Errorf("aws cpi: load the default credentials chain: %w", err)
		}
	default:
		cfg = aws.Config{
			Region: p.Region,
			Credentials: aws.NewCredentialsCache(
				credentials.NewStaticCredentialsProvider(p.AccessKeyID, p.SecretAccessKey, p.SessionToken)),
		}
	}
	cfg.Retryer = func() aws.Retryer {
		return retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = maxRetries + 1
			o.MaxBackoff = maxBackoff
			// The director's calls are few and each must get its retries;
			// a shared token bucket would fail calls once many retried.
			o.RateLimiter = ratelimit.None
			if c.retryBackoff > 0 {
				d := c.retryBackoff
				o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return d, nil })
			}
		})
	}
	if c.httpClient != nil {
		cfg.HTTPClient = c.httpClient
	}
	c.ec2 = ec2.NewFromConfig(cfg, func(o *ec2.Options) {
		if p.Endpoint != "" {
			o.BaseEndpoint = aws.String(p.Endpoint)
		}
	})
	return c, nil
}

func parseProperties(raw json.RawMessage) (Properties, error) {
	var p Properties
	if len(bytes.TrimSpace(raw)) == 0 {
		raw = json.RawMessage(`{}`)
	}
	if err := decodeObject(raw, &p, true); err != nil {
		return Properties{}, err
	}
	if p.Region == "" {
		return Properties{}, cpi.InvalidCloudProperty("region", "required (e.g. \"us-east-1\")")
	}
	switch p.CredentialsSource {
	case "":
		if p.AccessKeyID == "" || p.SecretAccessKey == "" {
			return Properties{}, cpi.InvalidCloudProperty("access_key_id",
				"access_key_id and secret_access_key are required unless credentials_source is %q", CredentialsEnvOrProfile)
		}
		p.CredentialsSource = CredentialsStatic
	case CredentialsStatic:
		if p.AccessKeyID == "" || p.SecretAccessKey == "" {
			return Properties{}, cpi.InvalidCloudProperty("access_key_id", "access_key_id and secret_access_key are required with credentials_source %q", CredentialsStatic)
		}
	case CredentialsEnvOrProfile:
		if p.AccessKeyID != "" || p.SecretAccessKey != "" {
			return Properties{}, cpi.InvalidCloudProperty("credentials_source", "%q takes no access_key_id or secret_access_key", CredentialsEnvOrProfile)
		}
	default:
		return Properties{}, cpi.InvalidCloudProperty("credentials_source", "must be %q or %q", CredentialsStatic, CredentialsEnvOrProfile)
	}
	if p.Endpoint != "" {
		u, err := url.Parse(p.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return Properties{}, cpi.InvalidCloudProperty("endpoint", "%q is not an http(s) URL", p.Endpoint)
		}
	}
	if p.MaxRetries != nil && (*p.MaxRetries < 0 || *p.MaxRetries > 50) {
		return Properties{}, cpi.InvalidCloudProperty("max_retries", "must be between 0 and 50, got %d", *p.MaxRetries)
	}
	for i, g := range p.DefaultSecurityGroups {
		if strings.TrimSpace(g) == "" {
			return Properties{}, cpi.InvalidCloudProperty(fmt.Sprintf("default_security_groups.%d", i), "empty security group")
		}
	}
	return p, nil
}

// Info describes the plugin.
func (c *CPI) Info(context.Context) (cpi.Info, error) {
	return cpi.Info{
		Name:            "aws",
		APIVersion:      cpi.APIVersion,
		StemcellFormats: []string{"aws-light"},
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

// wait polls check every poll interval until it reports done, fails, or ctx
// ends. A look that EC2 throttled even after the SDK's retries is not a
// failure: the next poll looks again.
func (c *CPI) wait(ctx context.Context, what string, check func(context.Context) (bool, error)) error {
	t := time.NewTicker(c.poll)
	defer t.Stop()
	for {
		done, err := check(ctx)
		switch {
		case err != nil && (isRetryable(err) || cpi.IsRetryable(err)) && ctx.Err() == nil:
			c.logger.Debug("throttled while waiting; looking again", "for", what, "error", err)
		case err != nil:
			return err
		case done:
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}
