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
	"sync/atomic"
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
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := cfg.Settings()
	if _, err := TLSConfig(s); err != nil {
		return err
	}
	// The certificate is read at every handshake, so that one replaced by
	// update_settings is used from the next connection on.
	certCB := func() (tls.Certificate, error) {
		pair, err := tls.X509KeyPair([]byte(cfg.Settings().Mbus.Cert), []byte(cfg.Settings().Mbus.Key))
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("settings mbus.cert/mbus.key: %w", err)
		}
		return pair, nil
	}
	rootsCB := func() (*x509.CertPool, error) {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(cfg.Settings().Mbus.CACert)) {
			return nil, errors.New("settings mbus.ca_cert: no certificate in PEM")
		}
		return pool, nil
	}
	inUse := s.Mbus.Cert
	maxWait := cfg.MaxReconnectWait
	if maxWait <= 0 {
		maxWait = 10 * time.Second
	}
	connected := make(chan struct{}, 1)
	poke := func() {
		select {
		case connected <- struct{}{}:
		default:
		}
	}
	nc, err := nats.Connect(s.Mbus.URL,
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
		nats.ConnectHandler(func(*nats.Conn) { log.Info("connected to the message bus"); poke() }),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info("reconnected to the message bus"); poke() }),
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
		return fmt.Errorf("connect to %s: %w", s.Mbus.URL, err)
	}
	defer nc.Close()
	if nc.IsConnected() {
		poke()
	}

	// inFlight counts the requests being answered: a reply must go out on
	// the connection its request came in on (the bus admits one reply per
	// request received there), so a reconnect waits for them.
	var inFlight atomic.Int64
	_, err = nc.Subscribe(protocol.Subject(s.AgentID), func(m *nats.Msg) {
		inFlight.Add(1)
		go func() {
			defer inFlight.Add(-1)
			reply := cfg.Handler.Handle(ctx, m.Data)
			if m.Reply == "" {
				return
			}
			if err := m.Respond(reply); err != nil {
				log.Warn("send reply", "err", err)
			}
		}()
	})
	if err != nil {
		return fmt.Errorf("subscribe to %s: %w", protocol.Subject(s.AgentID), err)
	}

	// A bootstrap certificate (OU=bootstrap) may only answer the
	// director: no heartbeat or alert until the agent has its identity.
	bootstrap := isBootstrap(inUse)
	beat := func() {
		if !nc.IsConnected() || bootstrap {
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
		if err := nc.Publish(protocol.HeartbeatSubject(s.AgentID), b); err != nil {
			log.Warn("publish heartbeat", "err", err)
		}
	}
	interval := cfg.Settings().Heartbeat()
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	// A certificate replaced by update_settings is used at once (the
	// update's answer has gone by the next look), once no request is being
	// answered.
	certCheck := time.NewTicker(200 * time.Millisecond)
	defer certCheck.Stop()
	// certSeen is when a replaced certificate was first seen: a reconnect
	// waits for the requests in flight, five seconds at most.
	var seenCert string
	var seenAt time.Time
	certSeen := func(cert string) time.Time {
		if cert != seenCert {
			seenCert, seenAt = cert, time.Now()
		}
		return seenAt
	}
	for {
		select {
		case <-ctx.Done():
			nc.Flush()
			return nil
		case <-connected:
			beat()
		case <-certCheck.C:
			if cur := cfg.Settings().Mbus.Cert; cur != inUse && (inFlight.Load() == 0 || time.Since(certSeen(cur)) > 5*time.Second) {
				inUse, bootstrap = cur, isBootstrap(cur)
				log.Info("bus certificate replaced; reconnecting with it", "bootstrap", bootstrap)
				if err := nc.ForceReconnect(); err != nil {
					log.Warn("reconnect with the new certificate", "err", err)
				}
			}
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
			if bootstrap {
				log.Debug("alert not sent: the bootstrap certificate may not publish", "alert", a.Title)
				continue
			}
			b, err := json.Marshal(a)
			if err != nil {
				continue
			}
			if err := nc.Publish(protocol.AlertSubject(s.AgentID), b); err != nil {
				log.Warn("publish alert", "err", err)
			}
		}
	}
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
