// Package bus connects the agent to the director's message bus: NATS over
// mutual TLS with the agent's own certificate. It subscribes to the agent's
// subject only, hands each request to a Handler and sends back its reply,
// publishes a heartbeat every interval and the alerts it is given.
//
// The connection is retried forever with a capped, jittered backoff, from
// the first attempt on: an agent that boots before the director, or loses
// it for a while, keeps working and resumes answering when the bus is back.
// Long actions run as tasks that survive the outage, so their results are
// still there for the director's get_task.
package bus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/agent/settings"
)

// Handler answers a request.
type Handler interface {
	Handle(ctx context.Context, request []byte) []byte
}

// StateSource gives the state heartbeats carry.
type StateSource interface {
	State() (protocol.State, error)
}

// Config configures Run.
type Config struct {
	// Settings gives the agent id, the bus URL and the TLS material; its
	// heartbeat interval is read at each beat, so updates apply.
	Settings func() settings.Settings
	Handler  Handler
	State    StateSource
	// Alerts are published as they arrive.
	Alerts <-chan protocol.Alert
	Logger *slog.Logger
	// MaxReconnectWait caps the backoff between connection attempts
	// (default 10s).
	MaxReconnectWait time.Duration
}

// TLSConfig builds the client TLS configuration from the settings.
func TLSConfig(s settings.Settings) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(s.Mbus.CACert)) {
		return nil, errors.New("settings mbus.ca_cert: no certificate in PEM")
	}
	pair, err := tls.X509KeyPair([]byte(s.Mbus.Cert), []byte(s.Mbus.Key))
	if err != nil {
		return nil, fmt.Errorf("settings mbus.cert/mbus.key: %w", err)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// Run connects and serves until ctx ends.
//
// Each connection uses one certificate for its whole life. When
// update_settings replaces the certificate, Run hands over: it opens a
// connection with the new one, drains the subscription of the old one (the
// requests the bus already delivered there are still answered, and answered
// there: the bus admits a reply only on the connection its request came in
// on), subscribes on the new one, and closes the old one once its answers
// are out. A request published between the two subscriptions finds no
// responder, which the director's client treats as "resend shortly".
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := cfg.Settings()
	if _, err := TLSConfig(s); err != nil {
		return err
	}
	r := &runner{cfg: cfg, log: log, connected: make(chan struct{}, 1)}
	cur, err := r.dial(s)
	if err != nil {
		return err
	}
	if err := r.subscribe(ctx, cur); err != nil {
		cur.nc.Close()
		return err
	}
	defer func() { cur.nc.Close() }()
	if cur.nc.IsConnected() {
		r.poke()
	}

	// A bootstrap certificate (OU=bootstrap) may only answer the
	// director: no heartbeat or alert until the agent has its identity.
	beat := func() {
		if !cur.nc.IsConnected() || cur.bootstrap {
			return
		}
		st, err := cfg.State.State()
		if err != nil {
			log.Warn("heartbeat state", "err", err)
		}
		b, err := json.Marshal(protocol.Heartbeat{State: st, Time: time.Now().UTC()})
		if err != nil {
			log.Error("encode heartbeat", "err", err)
			return
		}
		if err := cur.nc.Publish(protocol.HeartbeatSubject(s.AgentID), b); err != nil {
			log.Warn("publish heartbeat", "err", err)
		}
	}
	interval := cfg.Settings().Heartbeat()
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	// A certificate replaced by update_settings is taken into use within
	// the next look.
	certCheck := time.NewTicker(200 * time.Millisecond)
	defer certCheck.Stop()
	for {
		select {
		case <-ctx.Done():
			cur.nc.Flush()
			return nil
		case <-r.connected:
			beat()
		case <-certCheck.C:
			next := cfg.Settings()
			if next.Mbus.Cert == cur.cert {
				continue
			}
			log.Info("bus certificate replaced; handing over to a connection with it", "bootstrap", isBootstrap(next.Mbus.Cert))
			nl, err := r.handOver(ctx, cur, next)
			if err != nil {
				log.Warn("hand over to the new certificate", "err", err)
				continue
			}
			cur = nl
		case <-ticker.C:
			beat()
			if iv := cfg.Settings().Heartbeat(); iv != interval {
				interval = iv
				ticker.Reset(iv)
			}
		case a, ok := <-cfg.Alerts:
			if !ok {
				cfg.Alerts = nil
				continue
			}
			if cur.bootstrap {
				log.Debug("alert not sent: the bootstrap certificate may not publish", "alert", a.Title)
				continue
			}
			b, err := json.Marshal(a)
			if err != nil {
				continue
			}
			if err := cur.nc.Publish(protocol.AlertSubject(s.AgentID), b); err != nil {
				log.Warn("publish alert", "err", err)
			}
		}
	}
}

// runner holds what Run's connections share.
type runner struct {
	cfg       Config
	log       *slog.Logger
	connected chan struct{}
}

// link is one connection to the bus and the certificate it presents.
type link struct {
	nc        *nats.Conn
	sub       *nats.Subscription
	cert      string
	bootstrap bool
	// inFlight counts the requests taken on this connection and not yet
	// answered.
	inFlight sync.WaitGroup
}

func (r *runner) poke() {
	select {
	case r.connected <- struct{}{}:
	default:
	}
}

// dial opens a connection that presents s's certificate, retrying in the
// background until the bus answers.
func (r *runner) dial(s settings.Settings) (*link, error) {
	pair, err := tls.X509KeyPair([]byte(s.Mbus.Cert), []byte(s.Mbus.Key))
	if err != nil {
		return nil, fmt.Errorf("settings mbus.cert/mbus.key: %w", err)
	}
	certCB := func() (tls.Certificate, error) { return pair, nil }
	rootsCB := func() (*x509.CertPool, error) {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(r.cfg.Settings().Mbus.CACert)) {
			return nil, errors.New("settings mbus.ca_cert: no certificate in PEM")
		}
		return pool, nil
	}
	maxWait := r.cfg.MaxReconnectWait
	if maxWait <= 0 {
		maxWait = 10 * time.Second
	}
	log := r.log
	// Every bus server the settings name (several directors): the client
	// moves to another when the one it is on goes.
	servers := strings.Join(s.Mbus.Servers(), ",")
	nc, err := nats.Connect(servers,
		nats.ClientTLSConfig(certCB, rootsCB),
		nats.Name("agent "+s.AgentID),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			d := 100 * time.Millisecond << min(attempts, 10)
			d = min(d, maxWait)
			return d/2 + rand.N(d/2+1)
		}),
		nats.PingInterval(20*time.Second),
		nats.ConnectHandler(func(*nats.Conn) { log.Info("connected to the message bus"); r.poke() }),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info("reconnected to the message bus"); r.poke() }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from the message bus", "err", err)
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn("message bus error", "err", err)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", servers, err)
	}
	return &link{nc: nc, cert: s.Mbus.Cert, bootstrap: isBootstrap(s.Mbus.Cert)}, nil
}

// subscribe takes the agent's requests on l and answers each on l.
func (r *runner) subscribe(ctx context.Context, l *link) error {
	subject := protocol.Subject(r.cfg.Settings().AgentID)
	sub, err := l.nc.Subscribe(subject, func(m *nats.Msg) {
		l.inFlight.Add(1)
		go func() {
			defer l.inFlight.Done()
			reply := r.cfg.Handler.Handle(ctx, m.Data)
			if m.Reply == "" {
				return
			}
			if err := m.Respond(reply); err != nil {
				r.log.Warn("send reply", "err", err)
			}
		}()
	})
	if err != nil {
		return fmt.Errorf("subscribe to %s: %w", subject, err)
	}
	l.sub = sub
	return nil
}

// drainWait bounds how long a hand-over waits for the bus to confirm that
// the old connection takes no more requests; past it the old subscription
// is dropped.
const drainWait = 5 * time.Second

// handOver moves the agent from old to a connection presenting next's
// certificate and returns it. old is closed once its answers are out.
func (r *runner) handOver(ctx context.Context, old *link, next settings.Settings) (*link, error) {
	nl, err := r.dial(next)
	if err != nil {
		return nil, err
	}
	// Drain: the bus stops sending to old, and what it sent is handled.
	if err := old.sub.Drain(); err == nil {
		deadline := time.Now().Add(drainWait)
		for old.sub.IsValid() && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if old.sub.IsValid() {
		_ = old.sub.Unsubscribe()
	}
	if err := r.subscribe(ctx, nl); err != nil {
		nl.nc.Close()
		// Take requests on the old connection again rather than none.
		if rerr := r.subscribe(ctx, old); rerr != nil {
			r.log.Warn("resubscribe on the old connection", "err", rerr)
		}
		return nil, err
	}
	go func() {
		old.inFlight.Wait()
		old.nc.Flush()
		old.nc.Close()
	}()
	if nl.nc.IsConnected() {
		r.poke()
	}
	return nl, nil
}

// isBootstrap reports whether the PEM certificate is a bootstrap one (its
// organizational unit is "bootstrap").
func isBootstrap(certPEM string) bool {
	block, _ := pem.Decode([]byte(certPEM))
	if block == nil {
		return false
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return false
	}
	return slices.Contains(cert.Subject.OrganizationalUnit, "bootstrap")
}
