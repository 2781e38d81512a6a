package azure

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config describes the simulated subscription and what exists in it before
// any call: resource groups, networks, security groups, load balancers and
// the marketplace images a light stemcell may name.
type Config struct {
	SubscriptionID string
	TenantID       string
	// ClientID and ClientSecret are the one service principal the token
	// endpoint accepts.
	ClientID     string
	ClientSecret string
	// Location is the one region (default "westeurope").
	Location string

	ResourceGroups  []string
	VirtualNetworks []VirtualNetwork
	SecurityGroups  []Named
	LoadBalancers   []LoadBalancer
	// PublicIPs are Standard static public IPs that exist from the start
	// (the addresses a vip network names).
	PublicIPs []PublicIP
	// Images are marketplace images as "publisher:offer:sku:version".
	Images []string

	// OperationDelay is how long a long-running operation runs before it
	// ends (default 0: it ends as soon as it started, but still after the
	// first answer said it runs).
	OperationDelay time.Duration
	// PollAfter is the Retry-After the simulator hints on a running
	// operation (default 1s). Below a second it is also sent as
	// x-ms-retry-after-ms, which the SDKs prefer, so that tests run fast.
	PollAfter time.Duration
	// PageSize bounds the items of one page of a list (default 100).
	PageSize int

	// Hooks hear of VMs that start, restart, change disks and go away.
	Hooks Hooks
	// Logger logs every request (default: discard).
	Logger *slog.Logger
}

// VirtualNetwork is a read-only virtual network with its subnets.
type VirtualNetwork struct {
	ResourceGroup string
	Name          string
	AddressPrefix string // e.g. "127.80.0.0/16"
	Subnets       []Subnet
}

// Subnet is one subnet of a virtual network; private addresses of NICs
// are allocated from its prefix (Azure keeps the first four and the last).
type Subnet struct {
	Name          string
	AddressPrefix string // e.g. "127.80.1.0/24"
}

// Named is a read-only resource known by group and name.
type Named struct {
	ResourceGroup string
	Name          string
}

// LoadBalancer is a read-only load balancer with its backend pools.
type LoadBalancer struct {
	ResourceGroup string
	Name          string
	Pools         []string
}

// PublicIP is a public IP that exists from the start.
type PublicIP struct {
	ResourceGroup string
	Name          string
	Address       string // in 127.0.0.0/8
}

// Server is the simulated Entra ID and Resource Manager.
type Server struct {
	cfg    Config
	logger *slog.Logger

	mu     sync.Mutex
	objs   map[string]*object // by lower-cased ARM id
	groups map[string]*group  // by lower-cased name
	ops    map[string]*operation
	tokens map[string]time.Time
	faults []*Fault
	calls  map[string]int
	ips    map[string]string // private address -> NIC id
	pubIPs map[string]string // public address -> public IP id
	nextIP uint32

	lis   net.Listener
	srv   *http.Server
	url   string
	caPEM []byte
	wg    sync.WaitGroup
}

// group is a resource group and its tags.
type group struct {
	name     string
	location string
	tags     map[string]string
}

// New returns a server for cfg, not yet listening.
func New(cfg Config) (*Server, error) {
	if cfg.SubscriptionID == "" || cfg.TenantID == "" || cfg.ClientID == "" || cfg.ClientSecret == "" {
		return nil, errors.New("azure sim: SubscriptionID, TenantID, ClientID and ClientSecret are required")
	}
	if cfg.Location == "" {
		cfg.Location = "westeurope"
	}
	if cfg.PollAfter == 0 {
		cfg.PollAfter = time.Second
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = 100
	}
	if cfg.Hooks == nil {
		cfg.Hooks = NoHooks{}
	}
	s := &Server{
		cfg: cfg, logger: cfg.Logger,
		objs: map[string]*object{}, groups: map[string]*group{}, ops: map[string]*operation{},
		tokens: map[string]time.Time{}, calls: map[string]int{}, ips: map[string]string{}, pubIPs: map[string]string{},
	}
	if s.logger == nil {
		s.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := s.seed(); err != nil {
		return nil, err
	}
	return s, nil
}

// Start serves HTTPS on addr (e.g. "127.0.0.1:0") with a certificate for
// the listening address signed by a CA made for this server.
func (s *Server) Start(addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("azure sim: listen: %w", err)
	}
	host, _, _ := net.SplitHostPort(lis.Addr().String())
	cert, caPEM, err := selfCA(host)
	if err != nil {
		lis.Close()
		return err
	}
	s.caPEM = caPEM
	s.lis = tls.NewListener(lis, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	s.url = "https://" + lis.Addr().String()
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.logger.Handler(), slog.LevelDebug)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.srv.Serve(s.lis)
	}()
	return nil
}

// URL is the server's base URL: the Resource Manager endpoint and the
// authority host.
func (s *Server) URL() string { return s.url }

// CACert is the PEM of the CA that signed the server's certificate.
func (s *Server) CACert() []byte { return s.caPEM }

// Close stops serving.
func (s *Server) Close() error {
	if s.srv == nil {
		return nil
	}
	err := s.srv.Close()
	s.wg.Wait()
	return err
}

// Calls returns how many requests were answered, by "METHOD type" (e.g.
// "PUT Microsoft.Compute/virtualMachines", "POST token").
func (s *Server) Calls() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.calls))
	for k, v := range s.calls {
		out[k] = v
	}
	return out
}

// selfCA makes a CA and a server certificate for host signed by it.
func selfCA(host string) (tls.Certificate, []byte, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Compleat Azure simulator CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: host},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost"},
	}
	if ip := net.ParseIP(host); ip != nil {
		leaf.IPAddresses = []net.IP{ip}
	} else {
		leaf.DNSNames = append(leaf.DNSNames, host)
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	return tls.Certificate{Certificate: [][]byte{leafDER, caDER}, PrivateKey: key}, caPEM, nil
}

// armError is an error answer in ARM's shape.
type armError struct {
	status     int
	code       string
	message    string
	retryAfter time.Duration
}

func (e *armError) Error() string { return e.code + ": " + e.message }

func errf(status int, code, format string, args ...any) *armError {
	return &armError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

func notFound(typ, group, name string) *armError {
	return errf(http.StatusNotFound, "ResourceNotFound",
		"The Resource '%s/%s' under resource group '%s' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix", typ, name, group)
}

func groupNotFound(name string) *armError {
	return errf(http.StatusNotFound, "ResourceGroupNotFound", "Resource group '%s' could not be found.", name)
}

func writeError(w http.ResponseWriter, e *armError) {
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((e.retryAfter+time.Second-1)/time.Second)))
	}
	w.Header().Set("x-ms-failure-cause", "gateway")
	writeJSON(w, e.status, map[string]any{"error": map[string]any{"code": e.code, "message": e.message}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	if v != nil {
		_ = json.NewEncoder(w).Encode(v)
	}
}

func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// maxBody bounds a request body.
const maxBody = 1 << 20

// ServeHTTP answers Entra ID's and Resource Manager's requests.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("x-ms-request-id", newID())
	if id := r.Header.Get("x-ms-client-request-id"); id != "" {
		w.Header().Set("x-ms-client-request-id", id)
	}
	w.Header().Set("x-ms-correlation-request-id", newID())
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	seg := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	low := make([]string, len(seg))
	for i, p := range seg {
		low[i] = strings.ToLower(p)
	}
	s.logger.Debug("request", "method", r.Method, "path", r.URL.Path)
	if len(low) >= 2 && (low[1] == "v2.0" || low[1] == "oauth2") {
		s.entra(w, r, seg, low)
		return
	}
	if len(low) < 2 || low[0] != "subscriptions" {
		writeError(w, errf(http.StatusNotFound, "NotFound", "No HTTP resource was found that matches the request URI '%s'.", r.URL.Path))
		return
	}
	if e := s.authorize(r); e != nil {
		w.Header().Set("WWW-Authenticate", `Bearer authorization_uri="`+s.url+"/"+s.cfg.TenantID+`", error="invalid_token"`)
		writeError(w, e)
		return
	}
	if r.URL.Query().Get("api-version") == "" {
		writeError(w, errf(http.StatusBadRequest, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required for all requests."))
		return
	}
	if !strings.EqualFold(seg[1], s.cfg.SubscriptionID) {
		writeError(w, errf(http.StatusNotFound, "SubscriptionNotFound", "The subscription '%s' could not be found.", seg[1]))
		return
	}
	typ := requestType(low[2:])
	s.mu.Lock()
	s.calls[r.Method+" "+typ]++
	f := s.matchFault(r.Method, strings.ToLower(r.URL.Path))
	s.mu.Unlock()
	if f != nil && !f.Async && !f.Hang {
		writeError(w, &armError{status: f.Status, code: f.Code, message: f.Message, retryAfter: f.RetryAfter})
		return
	}
	var body map[string]any
	if r.Method == http.MethodPut || r.Method == http.MethodPatch {
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body == nil {
			writeError(w, errf(http.StatusBadRequest, "InvalidRequestContent", "The request content was invalid and could not be deserialized: %v", err))
			return
		}
	}
	req := &request{r: r, w: w, seg: seg[2:], low: low[2:], body: body, fault: f}
	s.route(req)
}

// requestType names a request for Calls: the resource type it is about.
func requestType(low []string) string {
	switch {
	case len(low) >= 4 && low[0] == "providers" && low[2] == "locations":
		if len(low) >= 5 && (low[4] == "operations" || low[4] == "operationresults") {
			return "operation"
		}
		return low[1] + "/" + low[3]
	case len(low) >= 5 && low[2] == "providers":
		return canonType(low[3] + "/" + low[4])
	case len(low) >= 3 && low[0] == "providers":
		return canonType(low[1] + "/" + low[2])
	case len(low) >= 1 && low[0] == "resourcegroups":
		return "resourceGroups"
	}
	return "subscription"
}

// request is one ARM request being answered.
type request struct {
	r     *http.Request
	w     http.ResponseWriter
	seg   []string // path after /subscriptions/{id}
	low   []string
	body  map[string]any
	fault *Fault
}

func (s *Server) route(q *request) {
	low := q.low
	switch {
	case len(low) == 0:
		writeJSON(q.w, 200, map[string]any{"id": "/subscriptions/" + s.cfg.SubscriptionID, "subscriptionId": s.cfg.SubscriptionID, "displayName": "Compleat simulated subscription", "state": "Enabled", "tenantId": s.cfg.TenantID})
	case low[0] == "resourcegroups" && len(low) == 1 && q.r.Method == http.MethodGet:
		s.listGroups(q)
	case low[0] == "resourcegroups" && len(low) == 2:
		s.resourceGroup(q, q.seg[1])
	case low[0] == "resourcegroups" && len(low) == 6 && low[2] == "providers" && low[3] == "microsoft.resources" && low[4] == "tags" && low[5] == "default":
		s.groupTags(q, q.seg[1])
	case low[0] == "resourcegroups" && len(low) >= 5 && low[2] == "providers":
		s.resource(q)
	case low[0] == "providers" && len(low) == 3 && q.r.Method == http.MethodGet:
		s.list(q, "", canonType(low[1]+"/"+low[2]))
	case low[0] == "providers" && len(low) == 6 && low[2] == "locations" && (low[4] == "operations" || low[4] == "operationresults"):
		s.operationStatus(q, low[4] == "operationresults", q.seg[5])
	case low[0] == "providers" && len(low) >= 9 && low[1] == "microsoft.compute" && low[2] == "locations" && low[4] == "publishers":
		s.marketplace(q)
	default:
		writeError(q.w, errf(http.StatusBadRequest, "InvalidResourceType", "The resource type could not be found in the namespace for api version '%s'.", q.r.URL.Query().Get("api-version")))
	}
}

// ipv4 helpers for address allocation.
func addrOf(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	return a, err == nil && a.Is4()
}

// Config is the server's configuration, defaults filled in.
func (s *Server) Config() Config { return s.cfg }
