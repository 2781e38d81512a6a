package openstack

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"

	"github.com/compleat/compleat/cpi"
)

// Defaults of the properties (BOSH's OpenStack CPI's).
const (
	DefaultStateTimeout = 300 * time.Second
	DefaultPollInterval = 5 * time.Second
	DefaultMaxRetries   = 10
	// maxBackoff bounds the delay between two retries of one call.
	maxBackoff = 30 * time.Second
	// cleanupTimeout bounds what a failed call does to undo its work,
	// even when the caller's context has ended.
	cleanupTimeout = 5 * time.Minute
)

// Properties are the plugin's configuration: the properties object of the
// director's cpi config, passed in COMPLEAT_CPI_PROPERTIES. They hold
// credentials and are never logged.
type Properties struct {
	AuthURL string `json:"auth_url"`
	// Username and Password (BOSH calls it api_key) authenticate, or
	// ApplicationCredentialID and ApplicationCredentialSecret.
	Username                    string `json:"username,omitempty"`
	Password                    string `json:"password,omitempty"`
	APIKey                      string `json:"api_key,omitempty"`
	ApplicationCredentialID     string `json:"application_credential_id,omitempty"`
	ApplicationCredentialSecret string `json:"application_credential_secret,omitempty"`
	// Domain sets both the user's and the project's domain; the other two
	// set one each.
	Domain            string `json:"domain,omitempty"`
	UserDomainName    string `json:"user_domain_name,omitempty"`
	ProjectDomainName string `json:"project_domain_name,omitempty"`
	Project           string `json:"project,omitempty"`
	ProjectID         string `json:"project_id,omitempty"`
	Region            string `json:"region,omitempty"`
	// EndpointType is the catalog interface: public (BOSH's publicURL),
	// internal or admin.
	EndpointType string `json:"endpoint_type,omitempty"`
	// CACert is a PEM bundle the cloud's certificates chain to.
	CACert   string `json:"ca_cert,omitempty"`
	Insecure bool   `json:"insecure,omitempty"`

	DefaultKeyName        string   `json:"default_key_name,omitempty"`
	DefaultSecurityGroups []string `json:"default_security_groups,omitempty"`
	DefaultVolumeType     string   `json:"default_volume_type,omitempty"`
	BootFromVolume        bool     `json:"boot_from_volume,omitempty"`
	// ConfigDrive is "cdrom" or "disk" to give VMs a config drive; empty
	// leaves the agent to the metadata service.
	ConfigDrive string `json:"config_drive,omitempty"`
	// UseDHCP (default true) tells the agent to take its address by DHCP.
	UseDHCP                      *bool    `json:"use_dhcp,omitempty"`
	HumanReadableVMNames         bool     `json:"human_readable_vm_names,omitempty"`
	IgnoreServerAvailabilityZone bool     `json:"ignore_server_availability_zone,omitempty"`
	StemcellPublicVisibility     bool     `json:"stemcell_public_visibility,omitempty"`
	StateTimeout                 *Seconds `json:"state_timeout,omitempty"`
	PollInterval                 *Seconds `json:"poll_interval,omitempty"`
	MaxRetries                   *int     `json:"max_retries,omitempty"`
}

// Seconds is a duration given as a number of seconds (300, 0.5) or a Go
// duration string ("5m").
type Seconds time.Duration

// UnmarshalJSON reads a number of seconds or a duration string.
func (s *Seconds) UnmarshalJSON(b []byte) error {
	var n float64
	if err := json.Unmarshal(b, &n); err == nil {
		*s = Seconds(time.Duration(n * float64(time.Second)))
		return nil
	}
	var str string
	if err := json.Unmarshal(b, &str); err != nil {
		return &json.UnmarshalTypeError{Value: "a " + kindOfJSON(b), Type: durationType}
	}
	d, err := time.ParseDuration(str)
	if err != nil {
		return &json.UnmarshalTypeError{Value: strconv.Quote(str), Type: durationType}
	}
	*s = Seconds(d)
	return nil
}

// CPI is the OpenStack CPI. Its methods are safe for concurrent use.
type CPI struct {
	props      Properties
	logger     *slog.Logger
	state      time.Duration
	poll       time.Duration
	maxRetries int
	backoff    time.Duration // first delay between retries
	httpClient *http.Client

	mu      sync.Mutex
	clients *clients

	// attachMu serialises AttachDisk per server so two attachments never
	// race for a device letter.
	attachMu sync.Mutex
	attach   map[string]*sync.Mutex
}

// clients are the service clients of one authenticated session.
type clients struct {
	compute, network, volume, image *gophercloud.ServiceClient
}

var _ cpi.CPI = (*CPI)(nil)

// Option configures a CPI.
type Option func(*CPI)

// WithLogger sets the logger (default: JSON on stderr, as plugins log).
func WithLogger(l *slog.Logger) Option { return func(c *CPI) { c.logger = l } }

// WithHTTPClient sets the HTTP client of every call.
func WithHTTPClient(h *http.Client) Option { return func(c *CPI) { c.httpClient = h } }

// WithRetryBackoff sets the first delay between retries (default 1s,
// doubling up to 30s; a Retry-After answer overrides it).
func WithRetryBackoff(d time.Duration) Option { return func(c *CPI) { c.backoff = d } }

// New returns the OpenStack CPI configured by properties (a JSON object,
// see Properties). Bad properties yield cpi.ErrInvalidCloudProperties
// naming the field; no error holds a credential. New makes no call: the
// plugin authenticates on its first call and again when its token
// expires.
func New(properties json.RawMessage, opts ...Option) (*CPI, error) {
	p, err := parseProperties(properties)
	if err != nil {
		return nil, err
	}
	c := &CPI{
		props:      p,
		logger:     slog.New(slog.NewJSONHandler(os.Stderr, nil)),
		state:      DefaultStateTimeout,
		poll:       DefaultPollInterval,
		maxRetries: DefaultMaxRetries,
		backoff:    time.Second,
		attach:     map[string]*sync.Mutex{},
	}
	if p.StateTimeout != nil {
		c.state = time.Duration(*p.StateTimeout)
	}
	if p.PollInterval != nil {
		c.poll = time.Duration(*p.PollInterval)
	}
	if p.MaxRetries != nil {
		c.maxRetries = *p.MaxRetries
	}
	for _, o := range opts {
		o(c)
	}
	if c.httpClient == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		if p.CACert != "" || p.Insecure {
			tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: p.Insecure} // #nosec G402 -- operator's explicit choice
			if p.CACert != "" {
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM([]byte(p.CACert)) {
					return nil, cpi.InvalidCloudProperty("ca_cert", "holds no PEM certificate")
				}
				tc.RootCAs = pool
			}
			tr.TLSClientConfig = tc
		}
		c.httpClient = &http.Client{Transport: tr}
	}
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
	u, err := url.Parse(p.AuthURL)
	switch {
	case p.AuthURL == "":
		return Properties{}, cpi.InvalidCloudProperty("auth_url", "required: Keystone's v3 endpoint (https://keystone.example.com:5000/v3)")
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return Properties{}, cpi.InvalidCloudProperty("auth_url", "is not an http(s) URL")
	case strings.Contains(u.Path, "/v2.0"):
		return Properties{}, cpi.InvalidCloudProperty("auth_url", "names Keystone v2.0, which this plugin does not speak: use the v3 endpoint")
	}
	if p.APIKey != "" && p.Password != "" && p.APIKey != p.Password {
		return Properties{}, cpi.InvalidCloudProperty("api_key", "api_key and password are the same property; set one")
	}
	if p.Password == "" {
		p.Password = p.APIKey
	}
	appCred := p.ApplicationCredentialID != "" || p.ApplicationCredentialSecret != ""
	switch {
	case appCred && (p.Username != "" || p.Password != ""):
		return Properties{}, cpi.InvalidCloudProperty("application_credential_id", "an application credential takes no username or password")
	case appCred && (p.ApplicationCredentialID == "" || p.ApplicationCredentialSecret == ""):
		return Properties{}, cpi.InvalidCloudProperty("application_credential_secret", "application_credential_id and application_credential_secret go together")
	case !appCred && (p.Username == "" || p.Password == ""):
		return Properties{}, cpi.InvalidCloudProperty("username", "username and api_key (or password) are required unless application_credential_id and _secret are set")
	case !appCred && p.Project == "" && p.ProjectID == "":
		return Properties{}, cpi.InvalidCloudProperty("project", "project (name) or project_id is required")
	case !appCred && p.Project != "" && p.ProjectID == "" && p.Domain == "" && p.ProjectDomainName == "":
		return Properties{}, cpi.InvalidCloudProperty("project_domain_name", "a project named by name needs its domain: domain or project_domain_name")
	case !appCred && p.Domain == "" && p.UserDomainName == "":
		return Properties{}, cpi.InvalidCloudProperty("user_domain_name", "a user named by name needs its domain: domain or user_domain_name")
	}
	switch strings.TrimSuffix(p.EndpointType, "URL") {
	case "", "public", "internal", "admin":
	default:
		return Properties{}, cpi.InvalidCloudProperty("endpoint_type", "must be public, internal or admin, got %q", p.EndpointType)
	}
	switch p.ConfigDrive {
	case "", "cdrom", "disk":
	default:
		return Properties{}, cpi.InvalidCloudProperty("config_drive", "must be cdrom or disk, got %q", p.ConfigDrive)
	}
	if p.StateTimeout != nil && *p.StateTimeout <= 0 {
		return Properties{}, cpi.InvalidCloudProperty("state_timeout", "must be positive")
	}
	if p.PollInterval != nil && *p.PollInterval <= 0 {
		return Properties{}, cpi.InvalidCloudProperty("poll_interval", "must be positive")
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
		Name:            "openstack",
		APIVersion:      cpi.APIVersion,
		StemcellFormats: []string{"openstack-raw", "openstack-qcow2", "openstack-light"},
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

// session returns the service clients, authenticating first when no
// session exists yet.
func (c *CPI) session(ctx context.Context) (*clients, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.clients != nil {
		return c.clients, nil
	}
	p := c.props
	pc, err := openstack.NewClient(p.AuthURL)
	if err != nil {
		return nil, cpi.InvalidCloudProperty("auth_url", "%v", err)
	}
	pc.HTTPClient = *c.httpClient
	pc.UserAgent.Prepend("compleat-cpi-openstack")
	pc.MaxBackoffRetries = uint(c.maxRetries)
	pc.RetryBackoffFunc = c.retryBackoff
	pc.RetryFunc = c.retry
	opts := gophercloud.AuthOptions{
		IdentityEndpoint:            p.AuthURL,
		Username:                    p.Username,
		Password:                    p.Password,
		DomainName:                  cmpOr(p.UserDomainName, p.Domain),
		ApplicationCredentialID:     p.ApplicationCredentialID,
		ApplicationCredentialSecret: p.ApplicationCredentialSecret,
		AllowReauth:                 true,
	}
	if p.ApplicationCredentialID == "" {
		opts.Scope = &gophercloud.AuthScope{ProjectID: p.ProjectID}
		if p.ProjectID == "" {
			opts.Scope.ProjectName = p.Project
			opts.Scope.DomainName = cmpOr(p.ProjectDomainName, p.Domain)
		}
	}
	if err := openstack.AuthenticateV3(ctx, pc, &opts, gophercloud.EndpointOpts{}); err != nil {
		if gophercloud.ResponseCodeIs(err, http.StatusUnauthorized) {
			return nil, fmt.Errorf("authenticate at %s: the credentials, project or domain were refused (401)", p.AuthURL)
		}
		return nil, fmt.Errorf("authenticate at %s: %w", p.AuthURL, err)
	}
	eo := gophercloud.EndpointOpts{Region: p.Region, Availability: gophercloud.Availability(cmpOr(strings.TrimSuffix(p.EndpointType, "URL"), "public"))}
	cl := &clients{}
	for _, s := range []struct {
		name string
		sc   **gophercloud.ServiceClient
		fn   func(*gophercloud.ProviderClient, gophercloud.EndpointOpts) (*gophercloud.ServiceClient, error)
	}{
		{"compute", &cl.compute, openstack.NewComputeV2},
		{"network", &cl.network, openstack.NewNetworkV2},
		{"block-storage v3", &cl.volume, openstack.NewBlockStorageV3},
		{"image", &cl.image, openstack.NewImageV2},
	} {
		sc, err := s.fn(pc, eo)
		if err != nil {
			return nil, fmt.Errorf("the service catalog has no %s endpoint (region %q, interface %s): %w", s.name, p.Region, eo.Availability, err)
		}
		*s.sc = sc
	}
	c.clients = cl
	return cl, nil
}

// retryBackoff is gophercloud's hook for 429 (and 498) answers: wait as
// Retry-After says, else back off exponentially, then try again.
func (c *CPI) retryBackoff(ctx context.Context, respErr *gophercloud.ErrUnexpectedResponseCode, err error, retries uint) error {
	if int(retries) > c.maxRetries {
		return respErr
	}
	return c.sleep(ctx, c.delay(respErr, retries), respErr)
}

// retry is gophercloud's hook for every other failed request. It tries
// again after an overLimit answer (413, or a 429 past the backoff hook),
// which the cloud refused without acting on; and after a 5xx or a
// network error only when the request was a GET, HEAD or DELETE, which
// are safe to repeat: a POST or PUT that failed that way may have acted.
func (c *CPI) retry(ctx context.Context, method, u string, options *gophercloud.RequestOpts, err error, failCount uint) error {
	if int(failCount) > c.maxRetries || ctx.Err() != nil {
		return err
	}
	var re gophercloud.ErrUnexpectedResponseCode
	isCode := errors.As(err, &re)
	switch {
	case isCode && (re.Actual == http.StatusTooManyRequests ||
		re.Actual == http.StatusRequestEntityTooLarge && (isOverLimit(re.Body) || re.ResponseHeader.Get("Retry-After") != "")):
		switch body := options.RawBody.(type) {
		case nil:
		case *io.SectionReader:
			// A fresh reader over the same bytes: the failed request's
			// transport may still be reading the old one (a server that
			// answers before it has read the whole body), so rewinding
			// the shared reader would lose what that read takes.
			r, off, n := body.Outer()
			options.RawBody = io.NewSectionReader(r, off, n)
		case io.Seeker:
			if _, serr := body.Seek(0, io.SeekStart); serr != nil {
				return err
			}
		default:
			return err
		}
	case !idempotent(method):
		return err
	case isCode && re.Actual >= 500 && re.Actual != http.StatusNotImplemented:
	case !isCode && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) && isNetworkError(err):
	default:
		return err
	}
	c.logger.Debug("retrying an openstack request", "method", method, "url", redactURL(u), "attempt", failCount, "error", shortError(err))
	var rp *gophercloud.ErrUnexpectedResponseCode
	if isCode {
		rp = &re
	}
	return c.sleep(ctx, c.delay(rp, failCount), err)
}

func idempotent(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodDelete
}

// isOverLimit reports whether a 413 body is Nova's or Cinder's overLimit
// (rate limiting), not a request that is too large.
func isOverLimit(body []byte) bool {
	return bytes.Contains(body, []byte(`"overLimit"`))
}

// isNetworkError reports whether err is a failure to talk to the cloud
// (refused, reset, EOF, timeout) rather than an answer.
func isNetworkError(err error) bool {
	var ue *url.Error
	if errors.As(err, &ue) {
		return true
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// delay is how long to wait before attempt n+1: Retry-After (or Nova's
// retryAfter) when the answer gives one, else backoff doubling from the
// first delay.
func (c *CPI) delay(re *gophercloud.ErrUnexpectedResponseCode, n uint) time.Duration {
	if re != nil {
		if d, ok := retryAfter(re.ResponseHeader.Get("Retry-After"), re.Body); ok {
			return min(d, maxBackoff)
		}
	}
	d := c.backoff
	for i := uint(1); i < n && d < maxBackoff; i++ {
		d *= 2
	}
	return min(d, maxBackoff)
}

// retryAfter reads a Retry-After header (seconds or an HTTP date) or the
// retryAfter of an overLimit body.
func retryAfter(header string, body []byte) (time.Duration, bool) {
	if header == "" {
		var doc map[string]struct {
			RetryAfter any `json:"retryAfter"`
		}
		if json.Unmarshal(body, &doc) == nil {
			if o, ok := doc["overLimit"]; ok && o.RetryAfter != nil {
				header = fmt.Sprint(o.RetryAfter)
			}
		}
	}
	if header == "" {
		return 0, false
	}
	if n, err := strconv.ParseFloat(header, 64); err == nil && n >= 0 {
		return time.Duration(n * float64(time.Second)), true
	}
	if t, err := http.ParseTime(header); err == nil {
		return max(time.Until(t), 0), true
	}
	return 0, false
}

func (c *CPI) sleep(ctx context.Context, d time.Duration, cause error) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("%w (while retrying after: %v)", ctx.Err(), shortError(cause))
	case <-t.C:
		return nil
	}
}

// wait polls check every poll interval until it reports done, fails, or
// state_timeout (or ctx) ends.
func (c *CPI) wait(ctx context.Context, what string, check func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, c.state)
	defer cancel()
	t := time.NewTicker(c.poll)
	defer t.Stop()
	for {
		done, err := check(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return fmt.Errorf("wait for %s: %w (state_timeout %v)", what, ctx.Err(), c.state)
		case err != nil:
			return err
		case done:
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w (state_timeout %v)", what, ctx.Err(), c.state)
		case <-t.C:
		}
	}
}

// redactURL drops the query of a URL for logs.
func redactURL(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i]
	}
	return u
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
