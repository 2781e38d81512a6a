package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/compleat/compleat/agent/applyspec"
	"github.com/compleat/compleat/agent/client"
	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/director/mbus"
	"github.com/compleat/compleat/director/pki"
)

// fakeAgent answers on the real bus like an agent whose apply task takes a
// few polls, and records cancellations.
type fakeAgent struct {
	mu       sync.Mutex
	polls    int
	canceled []string
	pollsFor int // polls before the task is done; <0: never
	// dieAfterStart: the agent leaves the bus once it has started a task.
	dieAfterStart bool
	// lateBy: the agent joins the bus only this long after setup (an agent
	// reconnecting after a director restart).
	lateBy time.Duration
	conn   *nats.Conn
}

func (f *fakeAgent) handle(m *nats.Msg) {
	var req protocol.Request
	json.Unmarshal(m.Data, &req)
	reply := func(v any) {
		b, _ := json.Marshal(v)
		out, _ := json.Marshal(protocol.Response{Value: b})
		m.Respond(out)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch req.Method {
	case protocol.MethodPing:
		reply("pong")
	case protocol.MethodGetState:
		reply(protocol.State{AgentID: "a1", JobState: protocol.StateFailing, Jobs: []protocol.JobState{{
			Name: "web", State: protocol.StateFailing,
			Processes: []protocol.ProcessState{{Name: "web", State: protocol.StateFailing, Error: "exited with status 1"}, {Name: "sidecar", State: protocol.StateRunning}},
		}}})
	case protocol.MethodApply, protocol.MethodCompilePackage:
		reply(protocol.TaskStatus{AgentTaskID: "t1", State: protocol.TaskRunning})
		if f.dieAfterStart {
			go f.conn.Close()
		}
	case protocol.MethodGetTask:
		f.polls++
		if f.pollsFor >= 0 && f.polls >= f.pollsFor {
			res, _ := json.Marshal(protocol.CompilePackageResult{SHA256: "abc", Size: 3})
			reply(protocol.TaskStatus{AgentTaskID: "t1", State: protocol.TaskDone, Result: res})
			return
		}
		reply(protocol.TaskStatus{AgentTaskID: "t1", State: protocol.TaskRunning})
	case protocol.MethodCancelTask:
		var tr protocol.TaskRequest
		json.Unmarshal(req.Arguments[0], &tr)
		f.canceled = append(f.canceled, tr.AgentTaskID)
		reply("canceled")
	default:
		out, _ := json.Marshal(protocol.Response{Exception: &protocol.Exception{Code: protocol.CodeUnknownMethod, Message: "unknown method " + req.Method}})
		m.Respond(out)
	}
}

func setup(t *testing.T, f *fakeAgent) *nats.Conn {
	t.Helper()
	ctx := context.Background()
	ca, _ := pki.NewCA("ca", 0)
	srv, _ := ca.IssueServer([]string{"127.0.0.1"}, 0)
	bus, err := mbus.Start(ctx, mbus.Config{Listen: "127.0.0.1:0", CA: ca.CertPEM(), ServerCert: srv.CertPEM, ServerKey: srv.KeyPEM})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Shutdown)
	dir, _ := ca.IssueClient(pki.DirectorCN, 0)
	nc, err := mbus.Connect(ctx, bus.URL(), ca.CertPEM(), dir.CertPEM, dir.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if f != nil {
		ag, _ := ca.IssueClient("a1", 0)
		anc, err := mbus.Connect(ctx, bus.URL(), ca.CertPEM(), ag.CertPEM, ag.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(anc.Close)
		f.conn = anc
		join := func() {
			anc.Subscribe(protocol.Subject("a1"), f.handle)
			anc.Flush()
		}
		if f.lateBy > 0 {
			time.AfterFunc(f.lateBy, join)
		} else {
			join()
		}
	}
	return nc
}

func TestLongTaskIsPolledToItsResult(t *testing.T) {
	f := &fakeAgent{pollsFor: 3}
	c := client.New(setup(t, f), "a1", client.Options{PollInterval: time.Millisecond})
	res, err := c.CompilePackage(context.Background(), protocol.CompilePackageRequest{Name: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if res.SHA256 != "abc" || res.Size != 3 || f.polls != 3 {
		t.Fatalf("result %+v after %d polls", res, f.polls)
	}
}

// A quick task is polled soon after it starts, not after a whole poll
// interval: with an interval of an hour, a task done at its first poll
// still returns long before the test's deadline.
func TestQuickTaskIsPolledSoon(t *testing.T) {
	f := &fakeAgent{pollsFor: 2}
	c := client.New(setup(t, f), "a1", client.Options{PollInterval: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.CompilePackage(ctx, protocol.CompilePackageRequest{Name: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if res.SHA256 != "abc" || f.polls != 2 {
		t.Fatalf("result %+v after %d polls", res, f.polls)
	}
}

func TestContextEndCancelsTheAgentTask(t *testing.T) {
	f := &fakeAgent{pollsFor: -1}
	c := client.New(setup(t, f), "a1", client.Options{PollInterval: time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := c.Apply(ctx, applyspec.Spec{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the context's", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.canceled) != 1 || f.canceled[0] != "t1" {
		t.Fatalf("cancelled %v, want [t1]", f.canceled)
	}
}

func TestErrors(t *testing.T) {
	c := client.New(setup(t, &fakeAgent{}), "a1", client.Options{})
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	err := c.Call(context.Background(), "warp", nil, nil)
	var exc *protocol.Exception
	if !errors.Is(err, protocol.ErrUnknownMethod) || !errors.As(err, &exc) || exc.Message != "unknown method warp" {
		t.Fatalf("err = %v", err)
	}
	// Nobody listens on a2's subject.
	other := client.New(setup(t, nil), "a2", client.Options{RequestTimeout: time.Second})
	if err := other.Ping(context.Background()); !errors.Is(err, client.ErrUnresponsive) {
		t.Fatalf("err = %v, want ErrUnresponsive", err)
	}
}

func TestWaitRunningNamesWhatIsNotRunning(t *testing.T) {
	c := client.New(setup(t, &fakeAgent{}), "a1", client.Options{})
	if err := c.WaitReady(context.Background(), 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second) // room for a poll to answer under load
	defer cancel()
	st, err := c.WaitRunning(ctx, 20*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "web/web is failing (exited with status 1)") || strings.Contains(err.Error(), "sidecar") {
		t.Fatalf("err = %v", err)
	}
	if st.JobState != protocol.StateFailing {
		t.Fatalf("last state %+v", st)
	}
}

func TestHeartbeatsAndAlertsNameTheSender(t *testing.T) {
	ctx := context.Background()
	ca, _ := pki.NewCA("ca", 0)
	srv, _ := ca.IssueServer([]string{"127.0.0.1"}, 0)
	bus, err := mbus.Start(ctx, mbus.Config{Listen: "127.0.0.1:0", CA: ca.CertPEM(), ServerCert: srv.CertPEM, ServerKey: srv.KeyPEM})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Shutdown)
	dir, _ := ca.IssueClient(pki.DirectorCN, 0)
	nc, _ := mbus.Connect(ctx, bus.URL(), ca.CertPEM(), dir.CertPEM, dir.KeyPEM)
	t.Cleanup(nc.Close)
	got := make(chan string, 2)
	client.Heartbeats(nc, func(id string, hb protocol.Heartbeat) { got <- "hb " + id + " " + hb.JobState })
	client.Alerts(nc, func(id string, a protocol.Alert) { got <- "alert " + id + " " + a.Title })
	nc.Flush()
	ag, _ := ca.IssueClient("a7", 0)
	anc, _ := mbus.Connect(ctx, bus.URL(), ca.CertPEM(), ag.CertPEM, ag.KeyPEM)
	t.Cleanup(anc.Close)
	hb, _ := json.Marshal(protocol.Heartbeat{State: protocol.State{AgentID: "spoofed", JobState: "running"}})
	anc.Publish(protocol.HeartbeatSubject("a7"), hb)
	al, _ := json.Marshal(protocol.Alert{Title: "web/web failing"})
	anc.Publish(protocol.AlertSubject("a7"), al)
	anc.Flush()
	seen := map[string]bool{}
	for len(seen) < 2 {
		select {
		case g := <-got:
			seen[g] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("saw only %v", seen)
		}
	}
	if !seen["hb a7 running"] || !seen["alert a7 web/web failing"] {
		t.Fatalf("saw %v", seen)
	}
}

// An agent that dies while its task runs fails the caller as unresponsive
// once its polls have gone unanswered for the silence limit, even when the
// caller's context has no end.
func TestAgentGoneMidTaskIsUnresponsive(t *testing.T) {
	f := &fakeAgent{pollsFor: -1, dieAfterStart: true}
	c := client.New(setup(t, f), "a1", client.Options{PollInterval: time.Millisecond, SilenceLimit: 200 * time.Millisecond})
	done := make(chan error, 1)
	go func() { done <- c.Apply(context.Background(), applyspec.Spec{}) }()
	select {
	case err := <-done:
		if !errors.Is(err, client.ErrUnresponsive) || !strings.Contains(err.Error(), "no answer for 200ms") {
			t.Fatalf("err = %v, want unresponsive after the silence limit", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Apply still waits a minute after its agent left the bus")
	}
}

func TestAbsentAgentIsAskedAgainWithinTheGrace(t *testing.T) {
	nc := setup(t, &fakeAgent{lateBy: 300 * time.Millisecond})
	err := client.New(nc, "a1", client.Options{}).Ping(context.Background())
	if !errors.Is(err, client.ErrUnresponsive) || !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("ping without a grace = %v, want unresponsive at once (no responders)", err)
	}
	if err := client.New(nc, "a1", client.Options{AbsentGrace: time.Minute}).Ping(context.Background()); err != nil {
		t.Fatalf("ping with a grace of a minute, agent joining after 300ms: %v", err)
	}
}

func TestAbsentAgentFailsAfterTheGrace(t *testing.T) {
	nc := setup(t, nil)
	err := client.New(nc, "a1", client.Options{AbsentGrace: 200 * time.Millisecond}).Ping(context.Background())
	if !errors.Is(err, client.ErrUnresponsive) || !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("ping of an agent that never joins = %v, want unresponsive (no responders)", err)
	}
}
