package mbus_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/director/mbus"
	"github.com/compleat/compleat/director/pki"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startCluster starts n bus servers routed to each other, with routeCA
// signing their route certificates (the clients' CA otherwise).
func startCluster(t *testing.T, n int) (*pki.CA, []*mbus.Server, []string) {
	t.Helper()
	ca, err := pki.NewCA("mbus cluster ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	var routes []string
	for range n {
		routes = append(routes, "nats-route://"+freeAddr(t))
	}
	var srvs []*mbus.Server
	for i := range n {
		srvs = append(srvs, startMember(t, ca, ca, i, routes))
	}
	waitRoutes(t, srvs, n-1)
	return ca, srvs, routes
}

func startMember(t *testing.T, ca, routeCA *pki.CA, i int, routes []string) *mbus.Server {
	t.Helper()
	sc, err := ca.IssueServer([]string{"127.0.0.1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := routeCA.IssueRoute([]string{"127.0.0.1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv, err := mbus.Start(ctx, mbus.Config{Listen: "127.0.0.1:0", CA: ca.CertPEM(), ServerCert: sc.CertPEM, ServerKey: sc.KeyPEM,
		Name:    fmt.Sprintf("bus-%d", i),
		Cluster: &mbus.Cluster{Listen: strings.TrimPrefix(routes[i], "nats-route://"), Routes: routes, Cert: rc.CertPEM, Key: rc.KeyPEM}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

// waitRoutes waits until every server has want routes.
func waitRoutes(t *testing.T, srvs []*mbus.Server, want int) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ok := true
		for _, s := range srvs {
			if s.NumRoutes() < want {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			var got []int
			for _, s := range srvs {
				got = append(got, s.NumRoutes())
			}
			t.Fatalf("routes %v after 15s, want %d each", got, want)
		}
	}
}

func connectTo(t *testing.T, ca *pki.CA, url, cn string, opts ...nats.Option) (*nats.Conn, *violations) {
	t.Helper()
	kp, err := ca.IssueClient(cn, 0)
	if err != nil {
		t.Fatal(err)
	}
	v := &violations{ch: make(chan struct{}, 1)}
	nc, err := mbus.Connect(context.Background(), url, ca.CertPEM(), kp.CertPEM, kp.KeyPEM, append([]nats.Option{nats.ErrorHandler(v.handler)}, opts...)...)
	if err != nil {
		t.Fatalf("connect as %s to %s: %v", cn, url, err)
	}
	t.Cleanup(nc.Close)
	return nc, v
}

// request asks agent id through nc until it answers (the agent's
// subscription takes a moment to reach the other servers).
func request(t *testing.T, nc *nats.Conn, id string) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		m, err := nc.Request(protocol.Subject(id), []byte(`{"method":"ping","arguments":[]}`), 2*time.Second)
		if err == nil {
			return string(m.Data)
		}
		if time.Now().After(deadline) {
			t.Fatalf("request to %s: %v", id, err)
		}
	}
}

func answer(t *testing.T, nc *nats.Conn, id string) {
	t.Helper()
	if _, err := nc.Subscribe(protocol.Subject(id), func(m *nats.Msg) { m.Respond([]byte(`{"value":"pong from ` + id + `"}`)) }); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
}

// TestClusterCarriesRequestsAndHeartbeats: the director on one server asks
// an agent connected to another, which answers once; its heartbeats reach
// the director across the routes.
func TestClusterCarriesRequestsAndHeartbeats(t *testing.T) {
	ca, srvs, _ := startCluster(t, 3)
	director, _ := connectTo(t, ca, srvs[0].URL(), pki.DirectorCN)
	agent, _ := connectTo(t, ca, srvs[2].URL(), "agent-a")
	answer(t, agent, "agent-a")
	hb := make(chan *nats.Msg, 1)
	if _, err := director.ChanSubscribe("hm.agent.>", hb); err != nil {
		t.Fatal(err)
	}
	director.Flush()
	if got := request(t, director, "agent-a"); got != `{"value":"pong from agent-a"}` {
		t.Fatalf("answer %s", got)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		agent.Publish(protocol.HeartbeatSubject("agent-a"), []byte("{}"))
		select {
		case m := <-hb:
			if m.Subject != protocol.HeartbeatSubject("agent-a") {
				t.Fatalf("heartbeat on %s", m.Subject)
			}
			return
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no heartbeat across the routes")
		}
	}
}

// TestClusterKeepsAgentsConfined: an agent on one server cannot read or
// forge another agent's messages on another server.
func TestClusterKeepsAgentsConfined(t *testing.T) {
	ca, srvs, _ := startCluster(t, 3)
	director, _ := connectTo(t, ca, srvs[0].URL(), pki.DirectorCN)
	victim, _ := connectTo(t, ca, srvs[1].URL(), "agent-a")
	answer(t, victim, "agent-a")
	intruder, v := connectTo(t, ca, srvs[2].URL(), "agent-b")
	stolen := make(chan *nats.Msg, 1)
	if _, err := intruder.ChanSubscribe(protocol.Subject("agent-a"), stolen); err != nil {
		t.Fatal(err)
	}
	v.waitFor(t, `Subscription to "agent.agent-a"`)
	hb := make(chan *nats.Msg, 1)
	director.ChanSubscribe("hm.agent.>", hb)
	director.Flush()
	intruder.Publish(protocol.HeartbeatSubject("agent-a"), []byte("{}"))
	v.waitFor(t, `Publish to "hm.agent.heartbeat.agent-a"`)
	request(t, director, "agent-a")
	select {
	case m := <-stolen:
		t.Fatalf("the intruder read %s", m.Data)
	case m := <-hb:
		t.Fatalf("a forged heartbeat reached the director on %s", m.Subject)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestClusterRefusesOtherRoutes: a server whose route certificate comes
// from another CA is not joined, and an agent's certificate cannot open a
// route.
func TestClusterRefusesOtherRoutes(t *testing.T) {
	ca, srvs, routes := startCluster(t, 2)
	other, err := pki.NewCA("another ca", 0)
	if err != nil {
		t.Fatal(err)
	}
	routes = append(routes, "nats-route://"+freeAddr(t))
	rogue := startMember(t, ca, other, 2, routes)
	time.Sleep(time.Second)
	if n := rogue.NumRoutes(); n != 0 {
		t.Errorf("a server with another CA's route certificate has %d routes", n)
	}
	for _, s := range srvs {
		if n := s.NumRoutes(); n != 1 {
			t.Errorf("a member has %d routes, want 1 (the other member)", n)
		}
	}
	// An agent's certificate, signed by the right CA, is no route
	// certificate: the handshake fails.
	agent, err := ca.IssueClient("agent-a", 0)
	if err != nil {
		t.Fatal(err)
	}
	pair, _ := pki.X509KeyPair(agent.CertPEM, agent.KeyPEM)
	conn, err := tls.Dial("tcp", strings.TrimPrefix(routes[0], "nats-route://"), &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: ca.Pool(), ServerName: "127.0.0.1"})
	if err == nil {
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil {
		t.Error("a route opened with an agent's certificate")
	}
}

// TestClusterSurvivesAServer: with one server stopped, an agent that was on
// it reconnects to another (it was given every URL) and answers the
// director on a third.
func TestClusterSurvivesAServer(t *testing.T) {
	ca, srvs, _ := startCluster(t, 3)
	director, _ := connectTo(t, ca, srvs[1].URL(), pki.DirectorCN)
	agent, _ := connectTo(t, ca, srvs[0].URL()+","+srvs[2].URL(), "agent-a", nats.DontRandomize(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	answer(t, agent, "agent-a")
	request(t, director, "agent-a")
	if agent.ConnectedUrl() != srvs[0].URL() {
		t.Fatalf("agent on %s, want the first server", agent.ConnectedUrl())
	}
	srvs[0].Shutdown()
	if got := request(t, director, "agent-a"); got != `{"value":"pong from agent-a"}` {
		t.Fatalf("answer after a server stopped: %s", got)
	}
	if agent.ConnectedUrl() != srvs[2].URL() {
		t.Errorf("agent on %s after the first server stopped, want the third", agent.ConnectedUrl())
	}
}
