// Package mbus runs the director's message bus: an embedded NATS server that
// accepts only TLS clients presenting a certificate signed by the director's
// CA, and maps each certificate's common name to a user with permissions.
//
// The director (common name pki.DirectorCN) may publish and subscribe to
// anything. Any other common name is an agent id, and that agent may only
//
//   - subscribe to agent.<id> (its requests),
//   - publish hm.agent.heartbeat.<id> and hm.agent.alert.<id>,
//   - reply to the requests it receives (one reply each).
//
// An agent connecting with its bootstrap certificate (pki.IssueBootstrap) may
// only subscribe to agent.<id> and reply: enough to answer the director's
// request_identity, not to publish heartbeats or alerts.
//
// A client without a certificate, with one from another CA, or whose common
// name cannot be a subject token (empty, or holding '.', '*', '>' or spaces)
// is refused, and so is one Config.Admit refuses (a certificate rotated out,
// the identity of a VM that was deleted).
//
// With Config.Cluster the server joins the bus servers of the other
// directors by routes (several directors, docs/ha.md): mutual TLS with the
// same CA, each side presenting a route certificate (pki.IssueRoute, common
// name pki.RouteCN) and refusing any other, so that an agent's certificate
// cannot open a route. Each server checks its own clients as above; a
// request published on one server reaches an agent connected to another,
// and the agent's one reply comes back.
package mbus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/director/pki"
)

// Config configures the server. CA, ServerCert and ServerKey are PEM.
type Config struct {
	// Listen is host:port; "127.0.0.1:0" picks a free port.
	Listen     string
	CA         []byte
	ServerCert []byte
	ServerKey  []byte
	// Logger receives the server's log lines (default discards).
	Logger *slog.Logger
	// Admit, when set, is asked about every agent certificate that
	// verified: false refuses the connection. The director answers from
	// the identities it recorded (agent id, certificate serial).
	Admit func(agentID string, cert *x509.Certificate) bool
	// Name is the server's name, unique in a cluster; default
	// "compleat-director".
	Name string
	// Cluster, when set, joins this server to others by routes.
	Cluster *Cluster
}

// Cluster configures the routes between the bus servers of several
// directors.
type Cluster struct {
	// Name is the cluster's name, the same on every server; default
	// "compleat".
	Name string
	// Listen is the host:port routes from the other servers come to.
	Listen string
	// Routes are the other servers' route URLs, nats-route://HOST:PORT
	// (this server's own is skipped when listed).
	Routes []string
	// Cert and Key (PEM) are the route certificate (pki.IssueRoute).
	Cert, Key []byte
}

// Server is a running message bus.
type Server struct {
	ns     *server.Server
	url    string
	logger *slog.Logger
}

// Start starts the server and waits until it accepts connections or ctx
// ends.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("mbus listen %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("mbus listen %q: bad port: %w", cfg.Listen, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	pool, err := pki.CertPool(cfg.CA)
	if err != nil {
		return nil, fmt.Errorf("mbus ca: %w", err)
	}
	pair, err := pki.X509KeyPair(cfg.ServerCert, cfg.ServerKey)
	if err != nil {
		return nil, fmt.Errorf("mbus server certificate: %w", err)
	}
	tlsConfig := &tls.Config{
		Certificates: []tls.Certificate{pair},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}
	name := cfg.Name
	if name == "" {
		name = "compleat-director"
	}
	opts := &server.Options{
		ServerName:                 name,
		Host:                       host,
		Port:                       port,
		NoSigs:                     true,
		TLS:                        true,
		TLSVerify:                  true,
		TLSConfig:                  tlsConfig,
		TLSTimeout:                 5,
		MaxPayload:                 8 << 20,
		CustomClientAuthentication: certAuth{pool: pool, logger: logger, admit: cfg.Admit},
	}
	if cfg.Cluster != nil {
		if err := clusterOptions(opts, *cfg.Cluster, pool, logger); err != nil {
			return nil, err
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("mbus: %w", err)
	}
	ns.SetLoggerV2(natsLogger{logger}, false, false, false)
	go ns.Start()
	deadline := time.Now().Add(15 * time.Second)
	for !ns.ReadyForConnections(100 * time.Millisecond) {
		if err := ctx.Err(); err != nil {
			ns.Shutdown()
			return nil, fmt.Errorf("mbus start: %w", err)
		}
		if time.Now().After(deadline) {
			ns.Shutdown()
			return nil, fmt.Errorf("mbus start on %s: not ready after 15s (is the address in use?)", cfg.Listen)
		}
	}
	addr, ok := ns.Addr().(*net.TCPAddr)
	if !ok {
		ns.Shutdown()
		return nil, errors.New("mbus start: no listen address")
	}
	url := "nats://" + net.JoinHostPort(host, strconv.Itoa(addr.Port))
	logger.Info("message bus listening", "url", url)
	return &Server{ns: ns, url: url, logger: logger}, nil
}

// clusterOptions sets opts up to route to the other servers of c.
func clusterOptions(opts *server.Options, c Cluster, pool *x509.CertPool, logger *slog.Logger) error {
	host, portStr, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("mbus cluster listen %q: %w", c.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 {
		return fmt.Errorf("mbus cluster listen %q: want a port", c.Listen)
	}
	pair, err := pki.X509KeyPair(c.Cert, c.Key)
	if err != nil {
		return fmt.Errorf("mbus route certificate: %w", err)
	}
	// Both ends verify the other's chain (the CA) and its name: only a
	// route certificate may open or answer a route.
	onlyRoutes := func(_ [][]byte, chains [][]*x509.Certificate) error {
		if len(chains) == 0 || len(chains[0]) == 0 || chains[0][0].Subject.CommonName != pki.RouteCN {
			return errors.New("not a bus route certificate")
		}
		return nil
	}
	name := c.Name
	if name == "" {
		name = "compleat"
	}
	opts.Cluster = server.ClusterOpts{
		Name: name, Host: host, Port: port,
		TLSConfig: &tls.Config{
			Certificates:          []tls.Certificate{pair},
			ClientCAs:             pool,
			RootCAs:               pool,
			ClientAuth:            tls.RequireAndVerifyClientCert,
			MinVersion:            tls.VersionTLS12,
			VerifyPeerCertificate: onlyRoutes,
		},
		TLSTimeout: 5,
		// One route to each other server (no pool): the bus carries
		// requests and heartbeats, not bulk.
		PoolSize: -1,
		// Agents are given every server's address; the servers do not
		// hand their own (listen) addresses to clients.
		NoAdvertise: true,
	}
	opts.CustomRouterAuthentication = routeAuth{logger: logger}
	for _, r := range c.Routes {
		u, err := url.Parse(r)
		if err != nil || u.Scheme != "nats-route" || u.Port() == "" {
			return fmt.Errorf("mbus cluster route %q: want nats-route://HOST:PORT", r)
		}
		if u.Host == c.Listen {
			continue
		}
		opts.Routes = append(opts.Routes, u)
	}
	return nil
}

// routeAuth admits a route whose verified certificate is a route
// certificate (the TLS layer checked it already; check again so that this
// check alone is sufficient).
type routeAuth struct{ logger *slog.Logger }

func (a routeAuth) Check(c server.ClientAuthentication) bool {
	st := c.GetTLSConnectionState()
	if st == nil || len(st.VerifiedChains) == 0 || st.VerifiedChains[0][0].Subject.CommonName != pki.RouteCN {
		a.logger.Warn("mbus refused a route", "remote", c.RemoteAddress())
		return false
	}
	return true
}

// URL is the nats:// URL clients connect to.
func (s *Server) URL() string { return s.url }

// NumClients is the number of connected clients.
func (s *Server) NumClients() int { return s.ns.NumClients() }

// NumRoutes is the number of routes to other servers.
func (s *Server) NumRoutes() int { return s.ns.NumRoutes() }

// Shutdown stops the server and closes every connection.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// AgentPermissions are the permissions of the agent agentID.
func AgentPermissions(agentID string) *server.Permissions {
	return &server.Permissions{
		Subscribe: &server.SubjectPermission{Allow: []string{protocol.Subject(agentID)}},
		Publish: &server.SubjectPermission{Allow: []string{
			protocol.HeartbeatSubject(agentID),
			protocol.AlertSubject(agentID),
		}},
		Response: &server.ResponsePermission{MaxMsgs: 1, Expires: 10 * time.Minute},
	}
}

// BootstrapPermissions are the permissions of an agent connected with its
// bootstrap certificate: its requests, and one reply each.
func BootstrapPermissions(agentID string) *server.Permissions {
	return &server.Permissions{
		Subscribe: &server.SubjectPermission{Allow: []string{protocol.Subject(agentID)}},
		Publish:   &server.SubjectPermission{Deny: []string{">"}},
		Response:  &server.ResponsePermission{MaxMsgs: 1, Expires: time.Minute},
	}
}

// ValidIdentity reports whether cn can be a bus identity: a single subject
// token of letters, digits, '-' and '_'.
func ValidIdentity(cn string) bool {
	if cn == "" || len(cn) > 128 {
		return false
	}
	for _, r := range cn {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
		default:
			return false
		}
	}
	return true
}

// certAuth authenticates clients by their verified certificate.
type certAuth struct {
	pool   *x509.CertPool
	logger *slog.Logger
	admit  func(agentID string, cert *x509.Certificate) bool
}

func (a certAuth) Check(c server.ClientAuthentication) bool {
	if c.Kind() != server.CLIENT {
		return false
	}
	st := c.GetTLSConnectionState()
	if st == nil || len(st.PeerCertificates) == 0 {
		a.logger.Warn("mbus refused client without certificate", "remote", c.RemoteAddress())
		return false
	}
	leaf := st.PeerCertificates[0]
	// The TLS layer verified the chain already; verify again so that this
	// check alone is sufficient.
	inter := x509.NewCertPool()
	for _, ic := range st.PeerCertificates[1:] {
		inter.AddCert(ic)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: a.pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		a.logger.Warn("mbus refused certificate", "remote", c.RemoteAddress(), "err", err)
		return false
	}
	cn := leaf.Subject.CommonName
	if !ValidIdentity(cn) {
		a.logger.Warn("mbus refused certificate with unusable common name", "remote", c.RemoteAddress(), "cn", cn)
		return false
	}
	if cn == pki.DirectorCN {
		c.RegisterUser(&server.User{Username: cn})
		return true
	}
	if a.admit != nil && !a.admit(cn, leaf) {
		a.logger.Warn("mbus refused an agent certificate that is no longer the agent's", "agent", cn, "serial", leaf.SerialNumber.Text(16), "remote", c.RemoteAddress())
		return false
	}
	perms := AgentPermissions(cn)
	if pki.IsBootstrap(leaf) {
		perms = BootstrapPermissions(cn)
	}
	c.RegisterUser(&server.User{Username: cn, Permissions: perms})
	a.logger.Debug("mbus agent connected", "agent", cn, "bootstrap", pki.IsBootstrap(leaf), "remote", c.RemoteAddress())
	return true
}

// ClientTLS builds a client TLS configuration from PEM: the CA that signed
// the server's certificate and the client's own certificate and key.
func ClientTLS(caPEM, certPEM, keyPEM []byte) (*tls.Config, error) {
	pool, err := pki.CertPool(caPEM)
	if err != nil {
		return nil, err
	}
	pair, err := pki.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// Connect connects to the bus at url with a client certificate (the
// director's, normally) and reconnects forever. Extra options are applied
// last.
func Connect(ctx context.Context, url string, caPEM, certPEM, keyPEM []byte, extra ...nats.Option) (*nats.Conn, error) {
	tc, err := ClientTLS(caPEM, certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("mbus connect %s: %w", url, err)
	}
	opts := []nats.Option{
		nats.Secure(tc),
		nats.Name(pki.DirectorCN),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.Timeout(5 * time.Second),
	}
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d > 0 && d < 5*time.Second {
			opts = append(opts, nats.Timeout(d))
		}
	}
	opts = append(opts, extra...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("mbus connect %s: %w", url, err)
	}
	return nc, nil
}

type natsLogger struct{ l *slog.Logger }

func (n natsLogger) Noticef(f string, v ...any) { n.l.Info(strings.TrimSpace(fmt.Sprintf(f, v...))) }
func (n natsLogger) Warnf(f string, v ...any)   { n.l.Warn(strings.TrimSpace(fmt.Sprintf(f, v...))) }
func (n natsLogger) Fatalf(f string, v ...any)  { n.l.Error(strings.TrimSpace(fmt.Sprintf(f, v...))) }
func (n natsLogger) Errorf(f string, v ...any)  { n.l.Error(strings.TrimSpace(fmt.Sprintf(f, v...))) }
func (n natsLogger) Debugf(f string, v ...any)  { n.l.Debug(strings.TrimSpace(fmt.Sprintf(f, v...))) }
func (n natsLogger) Tracef(f string, v ...any)  { n.l.Debug(strings.TrimSpace(fmt.Sprintf(f, v...))) }
