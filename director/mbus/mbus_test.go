package mbus_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/director/mbus"
	"github.com/compleat/compleat/director/pki"
)

type bus struct {
	srv *mbus.Server
	ca  *pki.CA
}

func startBus(t *testing.T) *bus {
	t.Helper()
	ca, err := pki.NewCA("mbus test ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ca.IssueServer([]string{"127.0.0.1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv, err := mbus.Start(ctx, mbus.Config{Listen: "127.0.0.1:0", CA: ca.CertPEM(), ServerCert: sc.CertPEM, ServerKey: sc.KeyPEM})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return &bus{srv: srv, ca: ca}
}

// violations collects asynchronous errors (permission violations) a
// connection reports.
type violations struct {
	mu   sync.Mutex
	errs []error
	ch   chan struct{}
}

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	v.mu.Lock()
	v.errs = append(v.errs, err)
	v.mu.Unlock()
	select {
	case v.ch <- struct{}{}:
	default:
	}
}

func (v *violations) waitFor(t *testing.T, substr string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		v.mu.Lock()
		for _, e := range v.errs {
			if errors.Is(e, nats.ErrPermissionViolation) && strings.Contains(e.Error(), substr) {
				v.mu.Unlock()
				return
			}
		}
		v.mu.Unlock()
		select {
		case <-v.ch:
		case <-timeout:
			t.Fatalf("no permission violation mentioning %q; saw %v", substr, v.errs)
		}
	}
}

func (b *bus) connect(t *testing.T, cn string) (*nats.Conn, *violations) {
	t.Helper()
	kp, err := b.ca.IssueClient(cn, 0)
	if err != nil {
		t.Fatal(err)
	}
	v := &violations{ch: make(chan struct{}, 1)}
	nc, err := mbus.Connect(context.Background(), b.srv.URL(), b.ca.CertPEM(), kp.CertPEM, kp.KeyPEM,
		nats.ErrorHandler(v.handler), nats.MaxReconnects(0))
	if err != nil {
		t.Fatalf("connect as %s: %v", cn, err)
	}
	t.Cleanup(nc.Close)
	return nc, v
}

func TestDirectorRequestsAgentReplies(t *testing.T) {
	t.Parallel()
	b := startBus(t)
	director, _ := b.connect(t, pki.DirectorCN)
	agent, _ := b.connect(t, "agent-a")

	if _, err := agent.Subscribe(protocol.Subject("agent-a"), func(m *nats.Msg) {
		m.Respond([]byte(`{"value":"pong"}`))
	}); err != nil {
		t.Fatal(err)
	}
	agent.Flush()

	hb := make(chan *nats.Msg, 1)
	if _, err := director.ChanSubscribe("hm.agent.>", hb); err != nil {
		t.Fatal(err)
	}
	director.Flush()

	msg, err := director.Request(protocol.Subject("agent-a"), []byte(`{"method":"ping","arguments":[]}`), 5*time.Second)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	if string(msg.Data) != `{"value":"pong"}` {
		t.Fatalf("reply %s", msg.Data)
	}

	if err := agent.Publish(protocol.HeartbeatSubject("agent-a"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-hb:
		if m.Subject != "hm.agent.heartbeat.agent-a" {
			t.Fatalf("subject %s", m.Subject)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("director did not receive the heartbeat")
	}
}

func TestAgentConfinedToItsOwnSubjects(t *testing.T) {
	t.Parallel()
	b := startBus(t)
	director, _ := b.connect(t, pki.DirectorCN)
	_, _ = b.connect(t, "agent-a")
	intruder, v := b.connect(t, "agent-b")

	hb := make(chan *nats.Msg, 4)
	if _, err := director.ChanSubscribe("hm.agent.>", hb); err != nil {
		t.Fatal(err)
	}
	director.Flush()

	// Reading another agent's requests is refused.
	stolen := make(chan *nats.Msg, 1)
	if _, err := intruder.ChanSubscribe(protocol.Subject("agent-a"), stolen); err != nil {
		t.Fatal(err)
	}
	v.waitFor(t, `Subscription to "agent.a`)

	// So is a wildcard that would cover it.
	if _, err := intruder.ChanSubscribe("agent.*", stolen); err != nil {
		t.Fatal(err)
	}
	v.waitFor(t, `Subscription to "agent.*"`)

	// Nor may it listen to other agents' heartbeats, or to everything.
	if _, err := intruder.ChanSubscribe("hm.agent.>", stolen); err != nil {
		t.Fatal(err)
	}
	v.waitFor(t, `Subscription to "hm.agent.>"`)
	if _, err := intruder.ChanSubscribe(">", stolen); err != nil {
		t.Fatal(err)
	}
	v.waitFor(t, `Subscription to ">"`)

	// Publishing another agent's heartbeat is refused and never delivered.
	if err := intruder.Publish(protocol.HeartbeatSubject("agent-a"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	v.waitFor(t, `Publish to "hm.agent.heartbeat.agent-a"`)

	// Sending requests to another agent is refused too.
	if err := intruder.Publish(protocol.Subject("agent-a"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	v.waitFor(t, `Publish to "agent.agent-a"`)

	director.Publish(protocol.Subject("agent-a"), []byte("secret"))
	director.Flush()
	intruder.Flush()
	select {
	case m := <-stolen:
		t.Fatalf("intruder received %s on %s", m.Data, m.Subject)
	case m := <-hb:
		t.Fatalf("director received forged heartbeat on %s", m.Subject)
	case <-time.After(300 * time.Millisecond):
	}
}

func TestRefusesClientsWithoutTrustedCertificate(t *testing.T) {
	t.Parallel()
	b := startBus(t)

	// No client certificate.
	_, err := nats.Connect(b.srv.URL(), nats.Secure(&tls.Config{RootCAs: b.ca.Pool()}), nats.MaxReconnects(0), nats.Timeout(3*time.Second))
	if err == nil {
		t.Fatal("connected without a client certificate")
	}

	// A certificate from another CA, even named "director".
	other, err := pki.NewCA("other", 0)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := other.IssueClient(pki.DirectorCN, 0)
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := mbus.Connect(context.Background(), b.srv.URL(), b.ca.CertPEM(), forged.CertPEM, forged.KeyPEM, nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("connected with a certificate from another ca")
	}

	// A common name that is not a single subject token.
	bad, err := b.ca.IssueClient("a.>", 0)
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := mbus.Connect(context.Background(), b.srv.URL(), b.ca.CertPEM(), bad.CertPEM, bad.KeyPEM, nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("connected with common name a.>")
	}
	// A refused connection is counted until the server has closed it.
	for deadline := time.Now().Add(5 * time.Second); b.srv.NumClients() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d clients still connected 5 s after being refused", b.srv.NumClients())
		}
	}
}

func TestValidIdentity(t *testing.T) {
	t.Parallel()
	for cn, want := range map[string]bool{
		"director": true, "4b9c-11ef_a": true, "": false, "a.b": false, "*": false, ">": false, "a b": false,
	} {
		if got := mbus.ValidIdentity(cn); got != want {
			t.Errorf("ValidIdentity(%q) = %v", cn, got)
		}
	}
}

func TestBootstrapCertificateOnlyAnswers(t *testing.T) {
	t.Parallel()
	b := startBus(t)
	director, _ := b.connect(t, pki.DirectorCN)
	kp, err := b.ca.IssueBootstrap("agent-new")
	if err != nil {
		t.Fatal(err)
	}
	v := &violations{ch: make(chan struct{}, 1)}
	agent, err := mbus.Connect(context.Background(), b.srv.URL(), b.ca.CertPEM(), kp.CertPEM, kp.KeyPEM, nats.ErrorHandler(v.handler), nats.MaxReconnects(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(agent.Close)
	if _, err := agent.Subscribe(protocol.Subject("agent-new"), func(m *nats.Msg) { m.Respond([]byte(`{"value":"csr"}`)) }); err != nil {
		t.Fatal(err)
	}
	agent.Flush()
	msg, err := director.Request(protocol.Subject("agent-new"), []byte(`{"method":"request_identity","arguments":[]}`), 5*time.Second)
	if err != nil || string(msg.Data) != `{"value":"csr"}` {
		t.Fatalf("the director's request to a bootstrapping agent: %v %s", err, msg.Data)
	}
	// No heartbeat, no alert with a bootstrap certificate.
	if err := agent.Publish(protocol.HeartbeatSubject("agent-new"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	v.waitFor(t, `Publish to "hm.agent.heartbeat.agent-new"`)
}

func TestAdmitRefusesRotatedCertificates(t *testing.T) {
	t.Parallel()
	ca, _ := pki.NewCA("mbus test ca", 0)
	sc, _ := ca.IssueServer([]string{"127.0.0.1"}, 0)
	old, _ := ca.IssueClient("agent-a", 0)
	current, _ := ca.IssueClient("agent-a", 0)
	srv, err := mbus.Start(context.Background(), mbus.Config{Listen: "127.0.0.1:0", CA: ca.CertPEM(), ServerCert: sc.CertPEM, ServerKey: sc.KeyPEM,
		Admit: func(agentID string, cert *x509.Certificate) bool {
			return agentID == "agent-a" && cert.SerialNumber.Cmp(current.Cert.SerialNumber) == 0
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := mbus.Connect(context.Background(), srv.URL(), ca.CertPEM(), current.CertPEM, current.KeyPEM, nats.MaxReconnects(0))
	if err != nil {
		t.Fatalf("the current certificate: %v", err)
	}
	nc.Close()
	if nc, err := mbus.Connect(context.Background(), srv.URL(), ca.CertPEM(), old.CertPEM, old.KeyPEM, nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("a rotated-out certificate connected")
	}
	dir, _ := ca.IssueClient(pki.DirectorCN, 0)
	if nc, err := mbus.Connect(context.Background(), srv.URL(), ca.CertPEM(), dir.CertPEM, dir.KeyPEM, nats.MaxReconnects(0)); err != nil {
		t.Fatalf("the director is not subject to Admit: %v", err)
	} else {
		nc.Close()
	}
}
