package health_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/director/health"
	"github.com/compleat/compleat/director/mbus"
	"github.com/compleat/compleat/director/store"
)

const benchAgents = 1000

// heartbeat is a realistic heartbeat: two jobs, three processes, vitals.
func heartbeat(agentID string) []byte {
	hb := protocol.Heartbeat{Time: time.Now(), State: protocol.State{AgentID: agentID, VMCID: "vm-" + agentID, Deployment: "bench",
		Name: "web", ID: agentID, JobState: "running",
		Jobs: []protocol.JobState{
			{Name: "web", State: "running", Processes: []protocol.ProcessState{{Name: "nginx", State: "running", PID: 100}, {Name: "app", State: "running", PID: 101}}},
			{Name: "metrics", State: "running", Processes: []protocol.ProcessState{{Name: "exporter", State: "running", PID: 102}}},
		},
		Vitals: protocol.Vitals{CPU: protocol.CPU{User: 3.2, System: 1.1}, Mem: protocol.Usage{KB: 524288, Percent: 25}, Load: [3]float64{0.3, 0.2, 0.1},
			Disk: map[string]protocol.Disk{"system": {Percent: 40}, "ephemeral": {Percent: 10}, "persistent": {Percent: 5}}, Uptime: 3600}}}
	raw, _ := json.Marshal(hb)
	return raw
}

// benchStore records deployment "bench" with benchAgents instances.
func benchStore(b *testing.B) *store.Store {
	st := newStore(b)
	err := st.Update(func(tx *store.Tx) error {
		tx.PutDeployment(store.Deployment{Name: "bench"})
		for i := range benchAgents {
			id := fmt.Sprintf("a%04d", i)
			if err := tx.PutInstance(store.Instance{Deployment: "bench", Group: "web", ID: id, Index: i, State: "started", VMCID: "vm-" + id, AgentID: id}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return st
}

// BenchmarkHeartbeatsOverBus measures the director's cost of one heartbeat
// end to end: published on the real bus (TLS) under one of 1,000 agent ids,
// delivered to the monitor's subscription, decoded and recorded. It reports
// heartbeats/s and the share of one core that 1,000 agents at the default
// 5 s interval (200 heartbeats/s) cost.
func BenchmarkHeartbeatsOverBus(b *testing.B) {
	bs := startBus(b)
	st := benchStore(b)
	m := health.NewMonitor(health.Config{Instances: health.Store{S: st}})
	unsub, err := m.Subscribe(bs.conn)
	if err != nil {
		b.Fatal(err)
	}
	defer unsub()
	bs.conn.Flush()
	// Publishers: a few director-identity connections publishing on the
	// agents' subjects (the bus lets the director publish anywhere).
	const pubs = 4
	var conns []*nats.Conn
	for range pubs {
		dc, err := bs.ca.IssueClient("director", 0)
		if err != nil {
			b.Fatal(err)
		}
		c, err := mbus.Connect(context.Background(), bs.srv.URL(), bs.ca.CertPEM(), dc.CertPEM, dc.KeyPEM)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	payloads := make([][]byte, benchAgents)
	for i := range payloads {
		payloads[i] = heartbeat(fmt.Sprintf("a%04d", i))
	}
	base := m.Stats().Heartbeats
	b.SetBytes(int64(len(payloads[0])))
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		a := i % benchAgents
		conns[i%pubs].Publish(protocol.HeartbeatSubject(fmt.Sprintf("a%04d", a)), payloads[a])
	}
	for _, c := range conns {
		c.Flush()
	}
	want := base + uint64(b.N)
	deadline := time.Now().Add(time.Minute)
	for m.Stats().Heartbeats < want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	took := time.Since(start)
	b.StopTimer()
	got := m.Stats().Heartbeats - base
	if got < uint64(b.N) {
		b.Fatalf("monitor received %d of %d heartbeats", got, b.N)
	}
	perBeat := took / time.Duration(b.N)
	b.ReportMetric(float64(b.N)/took.Seconds(), "heartbeats/s")
	b.ReportMetric(float64(perBeat)*200/1e9*100, "%core@1000agents")
	b.ReportMetric(float64(len(payloads[0])*200)/1024, "KiB/s@1000agents")
}

// BenchmarkCheck1000 measures one check pass over 1,000 instances (state
// file read, statuses, snapshot for the healer).
func BenchmarkCheck1000(b *testing.B) {
	st := benchStore(b)
	now := time.Now()
	m := health.NewMonitor(health.Config{Instances: health.Store{S: st}, Now: func() time.Time { return now }})
	ctx := context.Background()
	for i := range benchAgents {
		id := fmt.Sprintf("a%04d", i)
		var hb protocol.Heartbeat
		json.Unmarshal(heartbeat(id), &hb)
		m.Heartbeat(id, hb)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := m.Check(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if h := m.Deployment("bench"); len(h) != benchAgents || h[0].Status != health.StatusRunning {
		b.Fatalf("%d instances, first %+v", len(h), h[0])
	}
	// Checks run every 500 ms by default.
	b.ReportMetric(float64(b.Elapsed())/float64(b.N)*2/1e9*100, "%core@500ms")
}

// BenchmarkThousandAgentConnections connects 1,000 agents to the real bus,
// each with its own certificate, and measures one round of heartbeats (one
// from every agent: what the director receives every 5 s). It reports the
// process's CPU time per round as a share of a core at the 5 s default —
// an upper bound on the director's cost, since the agents' side of the
// TLS connections (on the VMs in production) runs in this process too.
func BenchmarkThousandAgentConnections(b *testing.B) {
	bs := startBus(b)
	st := benchStore(b)
	m := health.NewMonitor(health.Config{Instances: health.Store{S: st}})
	unsub, err := m.Subscribe(bs.conn)
	if err != nil {
		b.Fatal(err)
	}
	defer unsub()
	bs.conn.Flush()
	conns := make([]*nats.Conn, benchAgents)
	payloads := make([][]byte, benchAgents)
	errs := make(chan error, benchAgents)
	sem := make(chan struct{}, 16)
	for i := range benchAgents {
		sem <- struct{}{}
		go func(i int) {
			defer func() { <-sem }()
			id := fmt.Sprintf("a%04d", i)
			kp, err := bs.ca.IssueClient(id, 0)
			if err != nil {
				errs <- err
				return
			}
			c, err := mbus.Connect(context.Background(), bs.srv.URL(), bs.ca.CertPEM(), kp.CertPEM, kp.KeyPEM, nats.Name(id))
			if err != nil {
				errs <- err
				return
			}
			conns[i], payloads[i] = c, heartbeat(id)
			errs <- nil
		}(i)
	}
	for range benchAgents {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	base := m.Stats().Heartbeats
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for a, c := range conns {
			c.Publish(protocol.HeartbeatSubject(fmt.Sprintf("a%04d", a)), payloads[a])
		}
		want := base + uint64((i+1)*benchAgents)
		deadline := time.Now().Add(time.Minute)
		for m.Stats().Heartbeats < want && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if m.Stats().Heartbeats < want {
			b.Fatalf("round %d: monitor received %d of %d heartbeats", i, m.Stats().Heartbeats-base, want-base)
		}
	}
	b.StopTimer()
	perRound := (cpuTime() - cpu0) / time.Duration(b.N)
	b.ReportMetric(float64(perRound)/float64(5*time.Second)*100, "%core@5s")
	b.ReportMetric(float64(perRound)/float64(time.Millisecond), "cpu-ms/round")
	m.Check(context.Background())
	if h := m.Deployment("bench"); len(h) != benchAgents || h[benchAgents-1].Status != health.StatusRunning {
		b.Fatalf("%d instances watched", len(h))
	}
}
