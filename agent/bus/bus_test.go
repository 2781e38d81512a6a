package bus_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
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
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- bus.Run(runCtx, bus.Config{Settings: func() settings.Settings { return s }, Handler: echo{}, State: state{}, Alerts: alerts, MaxReconnectWait: 200 * time.Millisecond})
	}()
	t.Cleanup(func() {
		stop()
		<-done
	})

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
		for {
			m, err := nc.Request(protocol.Subject("a1"), []byte(`{"method":"ping","arguments":[]}`), time.Second)
			if err == nil && string(m.Data) == `{"value":"pong"}` {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("agent does not answer: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
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
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- bus.Run(runCtx, bus.Config{Settings: holder.Current, Handler: echo{}, State: state{}, MaxReconnectWait: 200 * time.Millisecond})
	}()
	t.Cleanup(func() {
		stop()
		<-done
	})

	dirKP, _ := ca1.IssueClient(pki.DirectorCN, 0)
	ping := func(url string) {
		t.Helper()
		nc, err := mbus.Connect(ctx, url, ca1.CertPEM(), dirKP.CertPEM, dirKP.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
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
