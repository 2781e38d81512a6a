package health_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/director/health"
	"github.com/compleat/compleat/director/mbus"
	"github.com/compleat/compleat/director/pki"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/store/storetest"
)

// bus is a real embedded message bus with the director's connection.
type bus struct {
	srv  *mbus.Server
	ca   *pki.CA
	conn *nats.Conn
}

func startBus(t testing.TB) *bus {
	t.Helper()
	ca, err := pki.NewCA("health test ca", 0)
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
	dc, err := ca.IssueClient(pki.DirectorCN, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := mbus.Connect(ctx, srv.URL(), ca.CertPEM(), dc.CertPEM, dc.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	return &bus{srv: srv, ca: ca, conn: conn}
}

// agent is an agent-shaped publisher: it connects with its own
// certificate, answers ping, and publishes heartbeats every interval.
type agent struct {
	id   string
	conn *nats.Conn
	mu   sync.Mutex
	st   protocol.State
	stop chan struct{}
	done chan struct{}
}

func (b *bus) agent(t testing.TB, id string, interval time.Duration) *agent {
	t.Helper()
	kp, err := b.ca.IssueClient(id, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := mbus.Connect(ctx, b.srv.URL(), b.ca.CertPEM(), kp.CertPEM, kp.KeyPEM, nats.Name(id))
	if err != nil {
		t.Fatal(err)
	}
	a := &agent{id: id, conn: conn, stop: make(chan struct{}), done: make(chan struct{}),
		st: protocol.State{AgentID: id, JobState: protocol.StateRunning, Jobs: []protocol.JobState{{Name: "web", State: protocol.StateRunning,
			Processes: []protocol.ProcessState{{Name: "nginx", State: protocol.StateRunning, PID: 42}}}},
			Vitals: protocol.Vitals{Load: [3]float64{0.5, 0.4, 0.3}, Mem: protocol.Usage{KB: 1024, Percent: 12}}}}
	if _, err := conn.Subscribe(protocol.Subject(id), func(m *nats.Msg) {
		m.Respond([]byte(`{"value":"pong"}`))
	}); err != nil {
		t.Fatal(err)
	}
	conn.Flush()
	go func() {
		defer close(a.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			a.beat()
			select {
			case <-a.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(a.kill)
	return a
}

func (a *agent) beat() {
	a.mu.Lock()
	hb := protocol.Heartbeat{State: a.st, Time: time.Now()}
	a.mu.Unlock()
	raw, _ := json.Marshal(hb)
	a.conn.Publish(protocol.HeartbeatSubject(a.id), raw)
}

func (a *agent) setJob(state string, procErr string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.st.JobState = state
	a.st.Jobs[0].State = state
	a.st.Jobs[0].Processes[0].State = state
	a.st.Jobs[0].Processes[0].Error = procErr
}

func (a *agent) alert(title, state string) {
	raw, _ := json.Marshal(protocol.Alert{ID: "1", Severity: 2, Title: title, Job: "web", Process: "nginx", State: state, Time: time.Now()})
	a.conn.Publish(protocol.AlertSubject(a.id), raw)
	a.conn.Flush()
}

// kill stops heartbeats and drops the connection, like a dead process.
func (a *agent) kill() {
	select {
	case <-a.stop:
		return
	default:
	}
	close(a.stop)
	<-a.done
	a.conn.Close()
}

// silence stops heartbeats but keeps the connection (a hung agent).
func (a *agent) silence() {
	select {
	case <-a.stop:
		return
	default:
	}
	close(a.stop)
	<-a.done
}

// deployment records a deployment with n instances of group "web" in st;
// instance i has id "i<i>", agent "agent-<i>" and VM "vm-<i>".
func deployment(t testing.TB, st *store.Store, name string, n int) []store.Instance {
	t.Helper()
	var out []store.Instance
	err := st.Update(func(tx *store.Tx) error {
		if err := tx.PutDeployment(store.Deployment{Name: name}); err != nil {
			return err
		}
		for i := range n {
			in := store.Instance{Deployment: name, Group: "web", ID: fmt.Sprintf("i%d", i), Index: i, State: "started",
				VMCID: fmt.Sprintf("vm-%s-%d", name, i), AgentID: fmt.Sprintf("agent-%s-%d", name, i)}
			if err := tx.PutInstance(in); err != nil {
				return err
			}
			if err := tx.PutVM(store.VM{CID: in.VMCID, CPI: "fake", AgentID: in.AgentID, Deployment: name, InstanceID: in.ID, State: "created"}); err != nil {
				return err
			}
			out = append(out, in)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func newStore(t testing.TB) *store.Store { return storetest.New(t) }

// events returns the audit events with action, oldest first.
func events(t testing.TB, st *store.Store, action string) []store.AuditEvent {
	t.Helper()
	var evs []store.AuditEvent
	if err := st.View(func(tx *store.Tx) error {
		var err error
		evs, err = tx.AuditEvents(store.AuditFilter{Action: action})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for i, j := 0, len(evs)-1; i < j; i, j = i+1, j-1 {
		evs[i], evs[j] = evs[j], evs[i]
	}
	return evs
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func status(m *health.Monitor, deployment, id string) string {
	h, ok := m.Instance(deployment, id)
	if !ok {
		return "absent"
	}
	return h.Status
}

// runMonitor starts m's checks until the test ends.
func runMonitor(t testing.TB, m *health.Monitor, conn *nats.Conn) {
	t.Helper()
	unsub, err := m.Subscribe(conn)
	if err != nil {
		t.Fatal(err)
	}
	conn.Flush()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; unsub() })
}

// recreator is a fake Recreator: each call waits for release (when set),
// then replaces the instance's VM and agent in the store and starts a new
// agent on the bus, as the deploy pipeline's recreate would.
type recreator struct {
	t        testing.TB
	st       *store.Store
	bus      *bus
	interval time.Duration
	release  chan struct{}
	fail     error

	mu    sync.Mutex
	calls []string
	peak  int
	now   int
}

func (r *recreator) Recreate(ctx context.Context, deployment, instanceID, reason string) (uint64, error) {
	return 0, r.recreate(ctx, deployment, instanceID, reason)
}

func (r *recreator) recreate(ctx context.Context, deployment, instanceID, reason string) error {
	r.mu.Lock()
	r.calls = append(r.calls, deployment+"/"+instanceID+": "+reason)
	r.now++
	r.peak = max(r.peak, r.now)
	r.mu.Unlock()
	defer func() { r.mu.Lock(); r.now--; r.mu.Unlock() }()
	if r.release != nil {
		select {
		case <-r.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if r.fail != nil {
		return r.fail
	}
	var in store.Instance
	err := r.st.Update(func(tx *store.Tx) error {
		var err error
		in, err = tx.Instance(deployment, "web", instanceID)
		if err != nil {
			return err
		}
		if err := tx.DeleteVM(in.VMCID); err != nil {
			return err
		}
		n := len(r.calls)
		in.VMCID, in.AgentID = fmt.Sprintf("%s-r%d", in.VMCID, n), fmt.Sprintf("%s-r%d", in.AgentID, n)
		if err := tx.PutVM(store.VM{CID: in.VMCID, CPI: "fake", AgentID: in.AgentID, Deployment: deployment, InstanceID: in.ID}); err != nil {
			return err
		}
		return tx.PutInstance(in)
	})
	if err != nil {
		return err
	}
	r.bus.agent(r.t, in.AgentID, r.interval)
	return nil
}

func (r *recreator) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}
