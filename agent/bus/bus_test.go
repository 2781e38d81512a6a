package bus_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/compleat/compleat/agent/bus"
	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/agent/settings"
	"github.com/compleat/compleat/director/mbus"
	"github.com/compleat/compleat/director/pki"
)

type echo struct{}

func (echo) Handle(_ context.Context, req []byte) []byte {
	return []byte(`{"value":"pong"}`)
}

// runAgent runs the agent's side of the bus with cfg until the test ends.
func runAgent(t *testing.T, ctx context.Context, cfg bus.Config) {
	t.Helper()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- bus.Run(runCtx, cfg) }()
	t.Cleanup(func() {
		stop()
		<-done
	})
}

// waitPong pings agent a1 through nc until it answers pong; the test fails
// if ctx ends first.
func waitPong(t *testing.T, ctx context.Context, nc *nats.Conn) {
	t.Helper()
	for {
		m, err := nc.Request(protocol.Subject("a1"), []byte(`{"method":"ping","arguments":[]}`), time.Second)
		if err == nil && string(m.Data) == `{"value":"pong"}` {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("agent does not answer: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type state struct{}

func (state) State() (protocol.State, error) {
	return protocol.State{AgentID: "a1", JobState: protocol.StateRunning}, nil
}

// TestReconnectsAfterBusOutage stops the director's bus, brings it back on
// the same address, and expects the agent to answer again by itself.
func TestReconnectsAfterBusOutage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ca, _ := pki.NewCA("ca", 0)
	srvKP, _ := ca.IssueServer([]string{"127.0.0.1"}, 0)
	cfg := mbus.Config{Listen: "127.0.0.1:0", CA: ca.CertPEM(), ServerCert: srvKP.CertPEM, ServerKey: srvKP.KeyPEM}
	srv, err := mbus.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(srv.URL()[len("nats://"):])
	cfg.Listen = net.JoinHostPort("127.0.0.1", port)

	agentKP, _ := ca.IssueClient("a1", 0)
	s := settings.Settings{AgentID: "a1", HeartbeatInterval: protocol.Duration(50 * time.Millisecond),
		Mbus: settings.Mbus{URL: srv.URL(), CACert: string(ca.CertPEM()), Cert: string(agentKP.CertPEM), Key: string(agentKP.KeyPEM)}}
	alerts := make(chan protocol.Alert, 1)
	runAgent(t, ctx, bus.Config{Settings: func() settings.Settings { return s }, Handler: echo{}, State: state{}, Alerts: alerts, MaxReconnectWait: 200 * time.Millisecond})

	dirKP, _ := ca.IssueClient(pki.DirectorCN, 0)
	ping := func(url string) {
		t.Helper()
		nc, err := mbus.Connect(ctx, url, ca.CertPEM(), dirKP.CertPEM, dirKP.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		hb := make(chan *nats.Msg, 8)
		al := make(chan *nats.Msg, 8)
		nc.ChanSubscribe(protocol.HeartbeatSubject("a1"), hb)
		nc.ChanSubscribe(protocol.AlertSubject("a1"), al)
		nc.Flush()
		waitPong(t, ctx, nc)
		select {
		case m := <-hb:
			var h protocol.Heartbeat
			if err := json.Unmarshal(m.Data, &h); err != nil || h.JobState != protocol.StateRunning {
				t.Fatalf("heartbeat %s", m.Data)
			}
		case <-ctx.Done():
			t.Fatal("no heartbeat")
		}
		alerts <- protocol.Alert{Title: "web/web failing"}
		select {
		case m := <-al:
			var a protocol.Alert
			if json.Unmarshal(m.Data, &a); a.Title != "web/web failing" {
				t.Fatalf("alert %s", m.Data)
			}
		case <-ctx.Done():
			t.Fatal("no alert")
		}
	}
	ping(srv.URL())

	srv.Shutdown()
	time.Sleep(300 * time.Millisecond)
	srv2, err := mbus.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv2.Shutdown)
	if srv2.URL() != "nats://"+net.JoinHostPort("127.0.0.1", port) {
		t.Fatalf("restarted on %s", srv2.URL())
	}
	ping(srv2.URL())
}

func TestBadTLSMaterial(t *testing.T) {
	_, err := bus.TLSConfig(settings.Settings{Mbus: settings.Mbus{CACert: "nope"}})
	if err == nil {
		t.Fatal("accepted a CA without certificates")
	}
}

// TestCertificateRotation replaces the agent's bootstrap certificate through
// settings, then restarts the bus trusting only the new certificate's CA:
// the agent must come back with the new certificate.
func TestCertificateRotation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ca1, _ := pki.NewCA("bootstrap ca", 0)
	ca2, _ := pki.NewCA("agents ca", 0)
	srvKP, _ := ca1.IssueServer([]string{"127.0.0.1"}, 0)
	both := append(ca1.CertPEM(), ca2.CertPEM()...)
	cfg := mbus.Config{Listen: "127.0.0.1:0", CA: both, ServerCert: srvKP.CertPEM, ServerKey: srvKP.KeyPEM}
	srv, err := mbus.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = srv.URL()[len("nats://"):]

	boot, _ := ca1.IssueBootstrap("a1")
	holder := settings.NewHolder(settings.Settings{AgentID: "a1", HeartbeatInterval: protocol.Duration(50 * time.Millisecond),
		Mbus: settings.Mbus{URL: srv.URL(), CACert: string(ca1.CertPEM()), Cert: string(boot.CertPEM), Key: string(boot.KeyPEM)}},
		settings.Store{Dir: t.TempDir()})
	runAgent(t, ctx, bus.Config{Settings: holder.Current, Handler: echo{}, State: state{}, MaxReconnectWait: 200 * time.Millisecond})

	dirKP, _ := ca1.IssueClient(pki.DirectorCN, 0)
	ping := func(url string) {
		t.Helper()
		nc, err := mbus.Connect(ctx, url, ca1.CertPEM(), dirKP.CertPEM, dirKP.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		waitPong(t, ctx, nc)
	}
	ping(srv.URL())

	wrong, _ := ca2.IssueClient("a2", 0)
	if err := holder.Update(protocol.UpdateSettingsRequest{Mbus: &protocol.MbusCredentials{Cert: string(wrong.CertPEM), Key: string(wrong.KeyPEM)}}); !errors.Is(err, protocol.ErrBadArguments) {
		t.Fatalf("certificate for another agent: err = %v", err)
	}
	long, _ := ca2.IssueClient("a1", 0)
	if err := holder.Update(protocol.UpdateSettingsRequest{Mbus: &protocol.MbusCredentials{Cert: string(long.CertPEM), Key: string(long.KeyPEM)}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	ping(srv.URL())

	srv.Shutdown()
	cfg.CA = ca2.CertPEM()
	srv2, err := mbus.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv2.Shutdown)
	dirKP, _ = ca2.IssueClient(pki.DirectorCN, 0)
	ping(srv2.URL())
}

// slowEcho answers pings after 2 ms and "slow" requests after 6 s, longer
// than a hand-over may wait for the bus.
type slowEcho struct{}

func (slowEcho) Handle(ctx context.Context, req []byte) []byte {
	d := 2 * time.Millisecond
	if strings.Contains(string(req), `"slow"`) {
		d = 6 * time.Second
	}
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
	return []byte(`{"value":"pong"}`)
}

// TestHandOverAnswersEveryRequest replaces the agent's certificate again
// and again (bootstrap first, as on a new VM) while the director keeps
// requests in flight: every request the agent took must be answered — the
// bus admits a reply only on the connection its request came in on. A
// request that finds no responder during a hand-over is sent again, as the
// director's client does.
func TestHandOverAnswersEveryRequest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ca, _ := pki.NewCA("ca", 0)
	srvKP, _ := ca.IssueServer([]string{"127.0.0.1"}, 0)
	srv, err := mbus.Start(ctx, mbus.Config{Listen: "127.0.0.1:0", CA: ca.CertPEM(), ServerCert: srvKP.CertPEM, ServerKey: srvKP.KeyPEM})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)

	boot, _ := ca.IssueBootstrap("a1")
	holder := settings.NewHolder(settings.Settings{AgentID: "a1", HeartbeatInterval: protocol.Duration(time.Second),
		Mbus: settings.Mbus{URL: srv.URL(), CACert: string(ca.CertPEM()), Cert: string(boot.CertPEM), Key: string(boot.KeyPEM)}},
		settings.Store{Dir: t.TempDir()})
	runAgent(t, ctx, bus.Config{Settings: holder.Current, Handler: slowEcho{}, State: state{}, MaxReconnectWait: 200 * time.Millisecond})

	dirKP, _ := ca.IssueClient(pki.DirectorCN, 0)
	nc, err := mbus.Connect(ctx, srv.URL(), ca.CertPEM(), dirKP.CertPEM, dirKP.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// ask sends one request until the agent takes it; a taken request
	// that is not answered within 5 s is lost.
	ask := func() error {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		defer rcancel()
		for {
			m, err := nc.RequestWithContext(rctx, protocol.Subject("a1"), []byte(`{"method":"ping","arguments":[]}`))
			if errors.Is(err, nats.ErrNoResponders) {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			if err != nil {
				return err
			}
			if string(m.Data) != `{"value":"pong"}` {
				return errors.New("answer " + string(m.Data))
			}
			return nil
		}
	}
	if err := ask(); err != nil {
		t.Fatal(err)
	}

	stopAsking := make(chan struct{})
	errs := make(chan error, 16)
	answered := make(chan int, 16)
	for range 16 {
		go func() {
			n := 0
			for {
				select {
				case <-stopAsking:
					answered <- n
					errs <- nil
					return
				default:
				}
				err := ask()
				if err != nil {
					answered <- n
					errs <- err
					return
				}
				n++
			}
		}()
	}
	for i := range 20 {
		kp, _ := ca.IssueClient("a1", 0)
		if err := holder.Update(protocol.UpdateSettingsRequest{Mbus: &protocol.MbusCredentials{Cert: string(kp.CertPEM), Key: string(kp.KeyPEM)}}); err != nil {
			t.Fatalf("rotation %d: %v", i, err)
		}
		time.Sleep(150 * time.Millisecond)
	}
	close(stopAsking)
	total := 0
	for range 16 {
		if err := <-errs; err != nil {
			t.Errorf("a request the agent took was not answered: %v", err)
		}
		total += <-answered
	}
	if total == 0 {
		t.Fatal("no request answered during the hand-overs")
	}
	if err := ask(); err != nil {
		t.Fatalf("after the hand-overs: %v", err)
	}

	// A long request spans a hand-over; its answer still goes out on the
	// connection that took it.
	slow := make(chan error, 1)
	go func() {
		m, err := nc.Request(protocol.Subject("a1"), []byte(`{"method":"slow","arguments":[]}`), 10*time.Second)
		if err == nil && string(m.Data) != `{"value":"pong"}` {
			err = errors.New("answer " + string(m.Data))
		}
		slow <- err
	}()
	time.Sleep(100 * time.Millisecond)
	kp, _ := ca.IssueClient("a1", 0)
	if err := holder.Update(protocol.UpdateSettingsRequest{Mbus: &protocol.MbusCredentials{Cert: string(kp.CertPEM), Key: string(kp.KeyPEM)}}); err != nil {
		t.Fatal(err)
	}
	if err := ask(); err != nil {
		t.Fatalf("during a long request: %v", err)
	}
	if err := <-slow; err != nil {
		t.Fatalf("the request that spanned a hand-over: %v", err)
	}
}

// TestConnectsToAnyServerItIsGiven: with several bus servers in its
// settings (several directors) and the first one gone, the agent answers
// through another.
func TestConnectsToAnyServerItIsGiven(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ca, _ := pki.NewCA("ca", 0)
	srvKP, _ := ca.IssueServer([]string{"127.0.0.1"}, 0)
	srv, err := mbus.Start(ctx, mbus.Config{Listen: "127.0.0.1:0", CA: ca.CertPEM(), ServerCert: srvKP.CertPEM, ServerKey: srvKP.KeyPEM})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := "nats://" + ln.Addr().String()
	ln.Close() // nothing listens there any more

	agentKP, _ := ca.IssueClient("a1", 0)
	s := settings.Settings{AgentID: "a1", HeartbeatInterval: protocol.Duration(time.Second),
		Mbus: settings.Mbus{URL: gone, URLs: []string{gone, srv.URL()}, CACert: string(ca.CertPEM()), Cert: string(agentKP.CertPEM), Key: string(agentKP.KeyPEM)}}
	runAgent(t, ctx, bus.Config{Settings: func() settings.Settings { return s }, Handler: echo{}, State: state{}, MaxReconnectWait: 200 * time.Millisecond})
	dirKP, _ := ca.IssueClient(pki.DirectorCN, 0)
	nc, err := mbus.Connect(ctx, srv.URL(), ca.CertPEM(), dirKP.CertPEM, dirKP.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	waitPong(t, ctx, nc)
}
