package deploy_test

// An in-process director for tests and benchmarks of the whole deploy
// pipeline: the real Deployer, store, blobstore, task manager and embedded
// bus (mTLS), with a fake cloud (cpitest.Fake) and a fleet of fake agents
// that answer the agent protocol on the bus for every VM the cloud holds.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/cpitest"
	"github.com/compleat/compleat/director/api"
	"github.com/compleat/compleat/director/blobstore"
	"github.com/compleat/compleat/director/cpimanager"
	"github.com/compleat/compleat/director/deploy"
	"github.com/compleat/compleat/director/importer"
	"github.com/compleat/compleat/director/mbus"
	"github.com/compleat/compleat/director/pki"
	"github.com/compleat/compleat/director/release"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

// fleet is the fake agents of every VM the cloud holds. Each answers on
// agent.<id> as the real agent does, at once: long methods reply with a
// finished agent task, so no get_task poll is needed. StartDelay holds
// each start back, as jobs that take time to come up.
type fleet struct {
	StartDelay time.Duration

	mu     sync.Mutex
	agents map[string]*fakeAgent // by agent id
	byVM   map[string]string     // vm cid -> agent id
}

type fakeAgent struct {
	id, vmCID   string
	identityKey *ecdsa.PrivateKey // of its last request_identity
	certSerial  string            // of the certificate update_settings gave it
	jobState    string
	applied     int
	scripts     map[string]int // run_script name -> runs
	disks       []string
}

func newFleet() *fleet {
	return &fleet{agents: map[string]*fakeAgent{}, byVM: map[string]string{}}
}

func (f *fleet) boot(agentID, vmCID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.agents[agentID] = &fakeAgent{id: agentID, vmCID: vmCID, jobState: protocol.StateStopped, scripts: map[string]int{}}
	f.byVM[vmCID] = agentID
}

func (f *fleet) halt(vmCID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.agents, f.byVM[vmCID])
	delete(f.byVM, vmCID)
}

// scripts sums the runs of a script over every agent alive.
func (f *fleet) scripts(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, a := range f.agents {
		n += a.scripts[name]
	}
	return n
}

// serve answers requests for every agent on conn until it closes.
func (f *fleet) serve(conn *nats.Conn) (*nats.Subscription, error) {
	return conn.Subscribe(protocol.Subject("*"), func(m *nats.Msg) {
		go f.handle(m)
	})
}

func (f *fleet) handle(m *nats.Msg) {
	id := strings.TrimPrefix(m.Subject, protocol.Subject(""))
	var req protocol.Request
	if err := json.Unmarshal(m.Data, &req); err != nil {
		return
	}
	var arg json.RawMessage
	if len(req.Arguments) > 0 {
		arg = req.Arguments[0]
	}
	if req.Method == protocol.MethodStart && f.StartDelay > 0 {
		time.Sleep(f.StartDelay)
	}
	f.mu.Lock()
	a := f.agents[id]
	if a == nil {
		f.mu.Unlock()
		return // no VM runs this agent: nobody answers
	}
	value, exc := a.answer(req.Method, arg)
	f.mu.Unlock()
	resp := protocol.Response{Exception: exc}
	if exc == nil {
		raw, _ := json.Marshal(value)
		if protocol.Long(req.Method) {
			raw, _ = json.Marshal(protocol.TaskStatus{AgentTaskID: "t-" + req.Method, State: protocol.TaskDone, Result: raw})
		}
		resp.Value = raw
	}
	body, _ := json.Marshal(resp)
	m.Respond(body)
}

// answer carries out one method (f.mu held).
func (a *fakeAgent) answer(method string, arg json.RawMessage) (any, *protocol.Exception) {
	switch method {
	case protocol.MethodPing:
		return "pong", nil
	case protocol.MethodGetState:
		return protocol.State{AgentID: a.id, VMCID: a.vmCID, JobState: a.jobState, Jobs: []protocol.JobState{}, Disks: a.disks}, nil
	case protocol.MethodPrepare:
		return "prepared", nil
	case protocol.MethodApply:
		a.applied++
		return "applied", nil
	case protocol.MethodStart:
		a.jobState = protocol.StateRunning
		return protocol.StartResult{JobState: a.jobState}, nil
	case protocol.MethodStop:
		a.jobState = protocol.StateStopped
		return "stopped", nil
	case protocol.MethodDrain:
		return protocol.DrainResult{}, nil
	case protocol.MethodRunScript:
		var r protocol.RunScriptRequest
		if err := json.Unmarshal(arg, &r); err != nil {
			return nil, &protocol.Exception{Code: protocol.CodeBadArguments, Message: err.Error()}
		}
		a.scripts[r.Name]++
		return protocol.RunScriptResult{Jobs: map[string]protocol.ScriptResult{}}, nil
	case protocol.MethodMountDisk:
		var r protocol.MountDiskRequest
		json.Unmarshal(arg, &r)
		a.disks = append(a.disks, r.DiskCID)
		return "mounted", nil
	case protocol.MethodUnmountDisk, protocol.MethodMigrateDisk:
		return "done", nil
	case protocol.MethodListDisk:
		return protocol.ListDiskResult{Disks: a.disks}, nil
	case protocol.MethodRequestIdentity:
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: a.id}}, key)
		if err != nil {
			return nil, &protocol.Exception{Code: protocol.CodeFailed, Message: err.Error()}
		}
		a.identityKey = key
		return protocol.IdentityRequest{CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))}, nil
	case protocol.MethodUpdateSettings:
		var u protocol.UpdateSettingsRequest
		json.Unmarshal(arg, &u)
		if u.Mbus != nil {
			block, _ := pem.Decode([]byte(u.Mbus.Cert))
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil || a.identityKey == nil || !a.identityKey.PublicKey.Equal(cert.PublicKey) || cert.Subject.CommonName != a.id {
				return nil, &protocol.Exception{Code: protocol.CodeBadArguments, Message: "fake agent: mbus.cert is not for my key"}
			}
			a.certSerial = cert.SerialNumber.Text(16)
		}
		return struct{}{}, nil
	case protocol.MethodCancelTask:
		return "canceled", nil
	}
	return nil, &protocol.Exception{Code: protocol.CodeUnknownMethod, Message: "fake agent: unknown method " + method}
}

// fleetCloud is the fake cloud; VMs it creates boot an agent of the fleet
// and VMs it deletes halt theirs.
type fleetCloud struct {
	*cpitest.Fake
	fleet    *fleet
	unlisted *unlisted
}

// refusingBlobs is the director's blobstore, refusing every Put once
// refuse is set, after the first allow of them, as a disk filling does.
type refusingBlobs struct {
	blobstore.Store
	refuse atomic.Bool
	allow  atomic.Int64
}

func (b *refusingBlobs) Put(ctx context.Context, r io.Reader) (blobstore.Blob, error) {
	if b.refuse.Load() && b.allow.Add(-1) < 0 {
		return blobstore.Blob{}, errors.New("no space left on device")
	}
	return b.Store.Put(ctx, r)
}

// unlisted are VMs the cloud has but its ListVMs leaves out, as a cloud
// whose list lags behind its VMs does.
type unlisted struct {
	mu   sync.Mutex
	cids map[string]bool
}

func (u *unlisted) hide(cid string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.cids[cid] = true
}

func (c fleetCloud) ListVMs(ctx context.Context, filter cpi.ListFilter) ([]cpi.VMInfo, error) {
	vms, err := c.Fake.ListVMs(ctx, filter)
	c.unlisted.mu.Lock()
	defer c.unlisted.mu.Unlock()
	return slices.DeleteFunc(vms, func(v cpi.VMInfo) bool { return c.unlisted.cids[v.CID] }), err
}

func (c fleetCloud) CreateVM(ctx context.Context, req cpi.CreateVMRequest) (cpi.CreateVMResult, error) {
	res, err := c.Fake.CreateVM(ctx, req)
	if err == nil {
		c.fleet.boot(req.AgentID, res.CID)
	}
	return res, err
}

func (c fleetCloud) DeleteVM(ctx context.Context, cid string) error {
	err := c.Fake.DeleteVM(ctx, cid)
	if err == nil {
		c.fleet.halt(cid)
	}
	return err
}

func (fleetCloud) Close() error { return nil }

type fleetLauncher struct{ cloud fleetCloud }

func (l fleetLauncher) Launch(ctx context.Context, binary string, p cpimanager.Plugin, _ cpi.CallObserver) (cpimanager.Process, error) {
	return l.cloud, nil
}

// rig is a director without HTTP: call its Deployer through run.
type rig struct {
	tb    testing.TB
	store *store.Store
	tasks *task.Manager
	d     *deploy.Deployer
	cloud *cpitest.Fake
	// unlisted VMs are left out of the cloud's ListVMs.
	unlisted *unlisted
	blobs    *refusingBlobs
	cpis     *cpimanager.Manager
	fleet    *fleet

	stateFile string
}

// newRig builds the director, uploads a release "bench" (one job "app"
// whose templates use the instance's index, address and a property; no
// packages, so nothing compiles) and a stemcell, and sets a cloud config
// with two AZs and a manual network of 16,000 addresses.
func newRig(tb testing.TB) *rig {
	tb.Helper()
	return newRigLogging(tb, slog.New(slog.DiscardHandler))
}

// newRigLogging is newRig with the director logging to logger.
func newRigLogging(tb testing.TB, logger *slog.Logger) *rig {
	tb.Helper()
	ctx := context.Background()
	dir := tb.TempDir()
	st, err := store.Open(filepath.Join(dir, "state.db"), store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	tasks := task.NewManager(st, logger, task.Options{})
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tasks.Shutdown(ctx)
	})

	ca, err := pki.NewCA("bench-ca", 0)
	if err != nil {
		tb.Fatal(err)
	}
	busCert, err := ca.IssueServer([]string{"127.0.0.1"}, 0)
	if err != nil {
		tb.Fatal(err)
	}
	bus, err := mbus.Start(ctx, mbus.Config{Listen: "127.0.0.1:0", CA: ca.CertPEM(), ServerCert: busCert.CertPEM, ServerKey: busCert.KeyPEM})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(bus.Shutdown)
	connect := func() *nats.Conn {
		kp, err := ca.IssueClient(pki.DirectorCN, 0)
		if err != nil {
			tb.Fatal(err)
		}
		conn, err := mbus.Connect(ctx, bus.URL(), ca.CertPEM(), kp.CertPEM, kp.KeyPEM)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(conn.Close)
		return conn
	}
	fl := newFleet()
	if _, err := fl.serve(connect()); err != nil {
		tb.Fatal(err)
	}
	cloud := fleetCloud{Fake: cpitest.NewFake(), fleet: fl, unlisted: &unlisted{cids: map[string]bool{}}}
	// The launcher serves the fake in process; the file only satisfies the
	// manager's rule that plugins run from next to the director.
	pluginDir := filepath.Join(dir, "plugins")
	if err := os.MkdirAll(pluginDir, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pluginDir, "cpi-fake"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		tb.Fatal(err)
	}
	cpis := cpimanager.New(cpimanager.Config{CPIs: []cpimanager.Plugin{{Name: "fake", Type: "fake"}}}, cpimanager.Options{Launcher: fleetLauncher{cloud}, Logger: logger, SearchDirs: []string{pluginDir}})

	fsBlobs, err := blobstore.NewFS(filepath.Join(dir, "blobs"))
	if err != nil {
		tb.Fatal(err)
	}
	blobs := &refusingBlobs{Store: fsBlobs}
	d := deploy.New(deploy.Config{
		Store: st, CPIs: cpis, Conn: connect(), BusURL: bus.URL(), CA: ca,
		Blobs: blobs, Signer: blobstore.NewSigner([]byte("bench-signing-key-0123456789abcdef")), BlobURL: "https://127.0.0.1:1/blobs",
		Logger: logger, AgentTimeout: 10 * time.Second, AgentAbsentGrace: 100 * time.Millisecond,
	})
	r := &rig{tb: tb, store: st, tasks: tasks, d: d, cloud: cloud.Fake, unlisted: cloud.unlisted, blobs: blobs, cpis: cpis, fleet: fl, stateFile: filepath.Join(dir, "state.db")}

	// The release, built from source and uploaded as the API does.
	src := filepath.Join(dir, "release")
	files := map[string]string{
		"jobs/app/spec": `---
name: app
templates:
  config.json.tmpl: config/config.json
  processes.yml.tmpl: config/processes.yml
properties:
  version: {default: v1}
  port: {default: 8080}
`,
		"jobs/app/templates/config.json.tmpl":   `{"index": {{ spec.Index }}, "address": "{{ spec.Address }}", "version": "{{ p "version" }}"}` + "\n",
		"jobs/app/templates/processes.yml.tmpl": "processes:\n- name: app\n  executable: /bin/sleep\n  args: [\"infinity\"]\n  readiness: {tcp: \"{{ spec.Address }}:{{ p \"port\" }}\"}\n",
	}
	for name, content := range files {
		path := filepath.Join(src, name)
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(src, "packages"), 0o755)
	_, tarball, err := release.Create(src, release.CreateOptions{Name: "bench", Version: "1", Tarball: filepath.Join(dir, "bench.tgz")})
	if err != nil {
		tb.Fatal(err)
	}
	up := &importer.Uploads{Store: st, Blobs: blobs, CPIs: cpis, TempDir: dir, Logger: logger}
	r.run("upload-release", "", func(ctx context.Context, rep *task.Reporter) (string, error) {
		return up.ImportRelease(ctx, rep, tarball)
	})
	// The stemcell: made in the cloud, recorded as an upload records it.
	scid, err := cloud.CreateStemcell(ctx, cpi.CreateStemcellRequest{ImagePath: "/nonexistent/image", CloudProperties: json.RawMessage(`{}`)})
	if err != nil {
		tb.Fatal(err)
	}
	err = st.Update(func(tx *store.Tx) error {
		if err := tx.PutStemcell(store.Stemcell{Name: "bench-stemcell", Version: "1", OS: "ubuntu-noble", CIDs: map[string]string{"fake": scid}}); err != nil {
			return err
		}
		_, _, err := tx.AddConfig(store.ConfigCloud, "", benchCloudConfig)
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

const benchCloudConfig = `azs:
- name: z1
- name: z2
vm_types:
- name: small
  cloud_properties: {instance_type: small}
networks:
- name: default
  type: manual
  subnets:
  - range: 127.60.0.0/18
    gateway: 127.60.0.1
    reserved: [127.60.0.2-127.60.0.9]
    azs: [z1, z2]
compilation:
  workers: 2
  az: z1
  vm_type: small
  network: default
`

// manifest deploys n instances of app with the version property, in two
// AZs, 1 canary and max_in_flight 10, watch times from minWatch.
func benchManifest(n int, version string, minWatch time.Duration) string {
	return fmt.Sprintf(`name: big
releases:
- {name: bench, version: latest}
stemcells:
- {alias: default, os: ubuntu-noble, version: latest}
update:
  canaries: 1
  max_in_flight: 10
  canary_watch_time: %[3]d-30000
  update_watch_time: %[3]d-30000
instance_groups:
- name: app
  instances: %[1]d
  azs: [z1, z2]
  vm_type: small
  stemcell: default
  networks: [{name: default}]
  jobs:
  - name: app
    release: bench
    properties: {version: %[2]s}
`, n, version, minWatch.Milliseconds())
}

// run runs fn as a task on deployment dep and returns its record and
// events once it ended; a task that fails fails the test.
func (r *rig) run(typ, dep string, fn task.Func) (store.Task, []store.Event) {
	r.tb.Helper()
	t, err := r.tasks.Start(context.Background(), task.Spec{Type: typ, Description: typ, Deployment: dep}, fn)
	if err != nil {
		r.tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var evs []store.Event
	var after uint64
	for {
		got, cur, err := r.tasks.Wait(ctx, t.ID, after)
		if err != nil {
			r.tb.Fatal(err)
		}
		for _, e := range got {
			evs = append(evs, e)
			after = e.Seq
		}
		if cur.Finished() && len(got) == 0 {
			if cur.State != store.TaskDone {
				r.tb.Fatalf("%s task %s: %s", typ, cur.State, cur.Error)
			}
			return cur, evs
		}
	}
}

// deploy deploys the manifest and returns the task's result and events.
func (r *rig) deploy(manifest string, dryRun bool) (string, []store.Event) {
	r.tb.Helper()
	t, evs := r.run("deploy", "big", func(ctx context.Context, rep *task.Reporter) (string, error) {
		return r.d.Deploy(ctx, rep, api.DeployRequest{Deployment: "big", Manifest: manifest, DryRun: dryRun})
	})
	return t.Result, evs
}

func stageEvents(evs []store.Event, stage, state string) int {
	n := 0
	for _, e := range evs {
		if e.Stage == stage && e.State == state {
			n++
		}
	}
	return n
}

// TestPlanHash: two dry runs with nothing changed between them have the
// same plan hash; a deploy given it applies; a deploy given the hash of a
// plan that changed since (another manifest deployed meanwhile) refuses and
// changes nothing.
func TestPlanHash(t *testing.T) {
	r := newRig(t)
	r.deploy(benchManifest(2, "v1", 0), false)
	hashOf := func(result string) string {
		_, h, ok := strings.Cut(result, "\nPlan hash: ")
		if !ok {
			t.Fatalf("no plan hash in the dry run's result:\n%s", result)
		}
		return strings.TrimSpace(h)
	}
	v2 := benchManifest(3, "v2", 0)
	first, _ := r.deploy(v2, true)
	second, _ := r.deploy(v2, true)
	h := hashOf(first)
	if hashOf(second) != h || !strings.HasPrefix(h, "sha256:") {
		t.Fatalf("two dry runs with nothing changed: %s and %s", h, hashOf(second))
	}
	if other, _ := r.deploy(benchManifest(3, "v3", 0), true); hashOf(other) == h {
		t.Fatal("another manifest has the same plan hash")
	}
	deployWith := func(manifest, hash string) store.Task {
		tk, err := r.tasks.Start(context.Background(), task.Spec{Type: "deploy", Deployment: "big"}, func(ctx context.Context, rep *task.Reporter) (string, error) {
			return r.d.Deploy(ctx, rep, api.DeployRequest{Deployment: "big", Manifest: manifest, PlanHash: hash})
		})
		if err != nil {
			t.Fatal(err)
		}
		for !tk.Finished() {
			_, tk, _ = r.tasks.Wait(context.Background(), tk.ID, 1<<62)
		}
		return tk
	}
	// The reviewed plan is applied.
	if tk := deployWith(v2, h); tk.State != store.TaskDone {
		t.Fatalf("deploy with the reviewed plan's hash: %s %s", tk.State, tk.Error)
	}
	// The state changed since: the same hash is refused.
	v4 := benchManifest(3, "v4", 0)
	h4 := hashOf(func() string { s, _ := r.deploy(v4, true); return s }())
	r.deploy(benchManifest(2, "v5", 0), false) // someone else deploys meanwhile
	tk := deployWith(v4, h4)
	if tk.State != store.TaskError || !strings.Contains(tk.Error, "plan changed since the dry run") {
		t.Fatalf("deploy with a stale plan hash: %s %s", tk.State, tk.Error)
	}
	var n int
	r.store.View(func(tx *store.Tx) error {
		is, err := tx.Instances("big")
		n = len(is)
		return err
	})
	if n != 2 {
		t.Errorf("the refused deploy changed the deployment: %d instances, want 2", n)
	}
}

// TestAgentIdentities: every VM's agent gets a certificate for a key it
// made, recorded by serial; rotate-agent-certs gives each a new one, and an
// agent that does not answer is reported while the others rotate.
func TestAgentIdentities(t *testing.T) {
	r := newRig(t)
	r.deploy(benchManifest(3, "v1", 0), false)
	serials := func() map[string]string {
		out := map[string]string{}
		r.store.View(func(tx *store.Tx) error {
			vms, err := tx.VMs("big")
			for _, vm := range vms {
				out[vm.CID] = vm.CertSerial
			}
			return err
		})
		return out
	}
	agentSerial := func(vmCID string) string {
		r.fleet.mu.Lock()
		defer r.fleet.mu.Unlock()
		return r.fleet.agents[r.fleet.byVM[vmCID]].certSerial
	}
	before := serials()
	if len(before) != 3 {
		t.Fatalf("%d VMs", len(before))
	}
	for cid, serial := range before {
		if serial == "" || agentSerial(cid) != serial {
			t.Errorf("VM %s: recorded serial %q, its agent's %q", cid, serial, agentSerial(cid))
		}
	}
	tk, _ := r.run("rotate-agent-certs", "big", func(ctx context.Context, rep *task.Reporter) (string, error) {
		return r.d.RotateAgentCerts(ctx, rep, "big")
	})
	if !strings.Contains(tk.Result, "3 of 3 agents") {
		t.Errorf("rotation: %s", tk.Result)
	}
	after := serials()
	var silent string
	for cid, serial := range after {
		if serial == before[cid] || agentSerial(cid) != serial {
			t.Errorf("VM %s after rotation: recorded %q (was %q), its agent's %q", cid, serial, before[cid], agentSerial(cid))
		}
		silent = cid
	}
	// One agent gone: the others rotate, it is named.
	r.fleet.halt(silent)
	failed, err := r.tasks.Start(context.Background(), task.Spec{Type: "rotate-agent-certs", Deployment: "big"}, func(ctx context.Context, rep *task.Reporter) (string, error) {
		return r.d.RotateAgentCerts(ctx, rep, "big")
	})
	if err != nil {
		t.Fatal(err)
	}
	for !failed.Finished() {
		_, failed, _ = r.tasks.Wait(context.Background(), failed.ID, 1<<62)
	}
	if failed.State != store.TaskError || !strings.Contains(failed.Error, "2 of 3 agents") || !strings.Contains(failed.Error, "Not rotated") {
		t.Errorf("rotation with a silent agent: %s %s", failed.State, failed.Error)
	}
	if got := serials()[silent]; got != after[silent] {
		t.Errorf("the silent agent's recorded serial changed: %s -> %s", after[silent], got)
	}
}
