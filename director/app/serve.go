package app

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/compleat/compleat/cpi"
	"go.yaml.in/yaml/v3"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/compleat/compleat/cpi/host"
	"github.com/compleat/compleat/director/api"
	"github.com/compleat/compleat/director/blobstore"
	"github.com/compleat/compleat/director/cli"
	"github.com/compleat/compleat/director/cloudcheck"
	"github.com/compleat/compleat/director/config"
	"github.com/compleat/compleat/director/cpimanager"
	"github.com/compleat/compleat/director/deploy"
	"github.com/compleat/compleat/director/fleet"
	"github.com/compleat/compleat/director/health"
	"github.com/compleat/compleat/director/importer"
	"github.com/compleat/compleat/director/manifest"
	"github.com/compleat/compleat/director/mbus"
	"github.com/compleat/compleat/director/metrics"
	"github.com/compleat/compleat/director/pki"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
	"github.com/compleat/compleat/director/template"
	"github.com/compleat/compleat/director/ui"
)

// Director is a running director's parts. The deploy pipeline is built from
// it (see newDeployer).
type Director struct {
	DataDir string
	// ID is the director's uuid (DIR/director-uuid): every VM and disk it
	// creates is tagged with it (cpi.TagDirector).
	ID     string
	Logger *slog.Logger
	Store  *store.Store
	Tasks  *task.Manager
	CPIs   *cpimanager.Manager
	// Bus is the embedded NATS server; BusURL is how agents reach it, and
	// BusURLs every bus server of several directors (nil for one).
	Bus     *mbus.Server
	BusURL  string
	BusURLs []string
	// Conn is the director's own bus connection (for agent/client.New).
	Conn *nats.Conn
	// CA signs agents' bus certificates (IssueClient, IssueBootstrap);
	// DirectorCert is the director's own bus client certificate.
	CA           *pki.CA
	DirectorCert *pki.KeyPair
	Blobs        blobstore.Store
	// Signer signs blob URLs for agents; BlobURL is the base URL agents use
	// ("https://host:port"; blobs are at BlobURL + "/blobs/<id>").
	Signer  *blobstore.Signer
	BlobURL string
	// BlobCA is the PEM agents trust for BlobURL.
	BlobCA  []byte
	Metrics *metrics.Metrics
	// ERB renders BOSH jobs' ERB templates (one ruby process for the
	// director's life, stopped when it stops).
	ERB *template.ERB
	// Cluster is this director's part among several (director.yml ha:);
	// nil for a director on its own.
	Cluster *cluster
}

// The deploy pipeline is what the API's deploy, errand, variable, pause and
// rotate routes run.
var (
	_ api.Deployer            = (*deploy.Deployer)(nil)
	_ api.ErrandRunner        = (*deploy.Deployer)(nil)
	_ api.VariableRegenerator = (*deploy.Deployer)(nil)
	_ api.Pauser              = (*deploy.Deployer)(nil)
)

// newDeployer builds the deploy pipeline (plan, compile, update, the
// executor over the CPIs and the agents) from the running parts.
func newDeployer(d *Director) *deploy.Deployer {
	return deploy.New(deploy.Config{
		Store: d.Store, CPIs: d.CPIs, Conn: d.Conn, BusURL: d.BusURL, BusURLs: d.BusURLs, CA: d.CA, DirectorID: d.ID,
		Blobs: d.Blobs, Signer: d.Signer, BlobURL: d.BlobURL, BlobCA: d.BlobCA, Logger: d.Logger.With("component", "deploy"),
		ERB: d.ERB,
	})
}

const (
	heartbeatPrefix   = "hm.agent.heartbeat."
	heartbeatSubjects = heartbeatPrefix + "*"
)

// settings is the resolved server configuration of either mode.
type settings struct {
	dev       bool
	dataDir   string
	listen    string
	tokens    []config.Token
	tlsCert   string
	tlsKey    string
	tlsHosts  []string
	tlsCA     string // what signed tlsCert, handed to agents
	advertise string // https://HOST:PORT clients and agents use; "" = from listen
	blobstore config.Blobstore
	natsAddr  string
	natsURL   string
	cpis      *cpimanager.Config // used when no cpi config is stored
	// externalCPIs may be run by cpi config entries of type external.
	externalCPIs []string
	// store is where the state lives; the zero value is the bbolt file in
	// dataDir.
	store config.Store
	// ha makes this director one of several sharing the etcd state;
	// natsCluster joins its bus to theirs.
	ha          *config.HA
	natsCluster *config.NATSCluster
}

func serve(ctx context.Context, o cli.ServeOptions, stdout, stderr io.Writer) error {
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	var s settings
	var err error
	if o.Dev {
		s, err = devSettings(o)
	} else {
		s, err = fileSettings(o.Config)
	}
	if err != nil {
		return cli.Usage(err)
	}
	return run(ctx, s, stdout, logger)
}

func devSettings(o cli.ServeOptions) (settings, error) {
	dir, err := filepath.Abs(o.Data)
	if err != nil {
		return settings{}, err
	}
	host, _, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return settings{}, fmt.Errorf("--listen %q: %w", o.Listen, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return settings{}, fmt.Errorf("--listen %q: serve --dev listens on loopback only (127.x.y.z)", o.Listen)
	}
	props, _ := json.Marshal(map[string]any{"data_dir": dir, "dynamic_range": "127.77.0.0/16"})
	return settings{
		dev:      true,
		dataDir:  dir,
		listen:   o.Listen,
		tlsHosts: []string{"127.0.0.1", "localhost", host},
		natsAddr: "127.0.0.1:0",
		cpis:     &cpimanager.Config{CPIs: []cpimanager.Plugin{{Name: "local", Type: "local", Properties: props}}},
		// BOSH CPI executables copied here by the operator may be used by
		// cpi config entries of type external.
		externalCPIs: []string{filepath.Join(dir, "external-cpis")},
	}, nil
}

func fileSettings(file string) (settings, error) {
	c, err := config.Load(file)
	if err != nil {
		return settings{}, err
	}
	s := settings{
		dataDir: c.DataDir, listen: c.Listen, tokens: c.Tokens,
		tlsCert: c.TLS.CertFile, tlsKey: c.TLS.KeyFile, tlsHosts: c.TLS.Hosts, tlsCA: c.TLS.CAFile,
		advertise: strings.TrimRight(c.Advertise, "/"),
		blobstore: c.Blobstore, natsAddr: c.NATS.Listen, natsURL: c.NATS.URL,
		externalCPIs: c.ExternalCPIs, store: c.Store, ha: c.HA, natsCluster: c.NATS.Cluster,
	}
	if s.natsAddr == "" {
		s.natsAddr = "0.0.0.0:4222"
	}
	if host, _, _ := net.SplitHostPort(c.Listen); host != "" && host != "0.0.0.0" && host != "::" {
		s.tlsHosts = append(s.tlsHosts, host)
	}
	// The advertised names go into the certificates the director issues
	// itself (API and bus), so that what agents and clients dial verifies.
	for _, raw := range []string{c.Advertise, c.Blobstore.PublicURL} {
		if u, err := url.Parse(raw); err == nil && u.Hostname() != "" {
			s.tlsHosts = append(s.tlsHosts, u.Hostname())
		}
	}
	if c.CPIs.Kind != 0 {
		raw, err := yamlNodeDoc("cpis", &c.CPIs)
		if err != nil {
			return s, err
		}
		cfg, err := cpimanager.ParseConfig(file, raw)
		if err != nil {
			return s, err
		}
		s.cpis = &cfg
	}
	return s, nil
}

// run starts every part, serves until ctx ends, then stops them in reverse
// order. Each step is a method below that adds what it started to stops.
func run(ctx context.Context, s settings, stdout io.Writer, logger *slog.Logger) error {
	var stops stack
	defer stops.unwind()
	d, err := openState(s, logger, &stops)
	if err != nil {
		return err
	}
	if err := d.startBus(ctx, s, &stops); err != nil {
		return err
	}
	if err := d.openBlobs(ctx, s); err != nil {
		return err
	}
	if err := d.startMetrics(); err != nil {
		return err
	}
	if err := d.startCPIs(s, &stops); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", s.listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.listen, err)
	}
	stops.push(func() { ln.Close() })
	target := "https://" + advertised(ln.Addr(), s)
	if s.advertise != "" {
		target = s.advertise
	}
	if err := d.setBlobURL(s, target); err != nil {
		return err
	}
	handler, adminToken, err := d.newAPI(ctx, s, &stops)
	if err != nil {
		return err
	}
	var lost <-chan error
	if d.Cluster != nil {
		if err := d.startCluster(ctx, s, &stops); err != nil {
			return err
		}
		lost = d.Cluster.Lost()
	}
	// The task queue: a task on a busy deployment waits as queued and starts
	// when the deployment frees; the queued data tasks a previous process left
	// start now. An HA director gates dispatch with task.Options.MayDispatch
	// (docs/tasks.md).
	queueCtx, stopQueue := context.WithCancel(ctx)
	stops.push(stopQueue)
	go d.Tasks.RunQueue(queueCtx)

	srv, served, cancelBase, err := serveAPI(ctx, s, d, handler, ln)
	if err != nil {
		return err
	}
	stops.push(cancelBase)
	if err := announce(stdout, s, target, adminToken, d); err != nil {
		return err
	}
	var stopErr error
	select {
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("api server: %w", err)
	case stopErr = <-lost:
		logger.Error("stopping", "error", stopErr)
	}
	logger.Info("director shutting down")
	stopCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := d.Tasks.Shutdown(stopCtx); err != nil {
		logger.Warn("tasks did not stop in time", "error", err)
	}
	cancelBase() // ends event streams
	if err := srv.Shutdown(stopCtx); err != nil {
		srv.Close()
	}
	logger.Info("director stopped")
	return stopErr
}

// stack holds what run started, to be stopped in reverse order.
type stack []func()

func (s *stack) push(f func()) { *s = append(*s, f) }

func (s stack) unwind() {
	for i := len(s) - 1; i >= 0; i-- {
		s[i]()
	}
}

// openState opens the data directory: its CA (created with a new data
// directory, before the state file, so that a state file always has a CA
// beside it; an existing one must have kept its CA, as agents trust only
// it), the state file (a second director on the same data directory fails
// here, before it touches anything else), and the tasks a previous process
// left.
func openState(s settings, logger *slog.Logger, stops *stack) (*Director, error) {
	if err := os.MkdirAll(s.dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	statePath := filepath.Join(s.dataDir, "state.db")
	keyPath := s.store.VariablesKeyFile
	if keyPath == "" {
		keyPath = statePath + ".key"
	}
	// With etcd the state is elsewhere: a director without the variables
	// key is a new one (the store refuses data sealed with a missing key).
	fresh := false
	if s.store.Backend == "etcd" {
		_, statErr := os.Stat(keyPath)
		fresh = errors.Is(statErr, os.ErrNotExist)
	} else {
		_, statErr := os.Stat(statePath)
		fresh = errors.Is(statErr, os.ErrNotExist)
	}
	var ca *pki.CA
	if fresh {
		var err error
		if ca, err = loadOrCreateCA(s.dataDir, true); err != nil {
			return nil, err
		}
	}
	var st *store.Store
	var err error
	if s.store.Backend == "etcd" {
		st, err = store.OpenEtcd(EtcdOptions(s.store), store.Options{KeyPath: keyPath})
	} else {
		st, err = store.Open(statePath, store.Options{Timeout: time.Second, KeyPath: keyPath})
	}
	if errors.Is(err, store.ErrLocked) {
		return nil, fmt.Errorf("state file is locked: is another director running with --data %s?", s.dataDir)
	}
	if err != nil {
		return nil, err
	}
	stops.push(func() { st.Close() })

	d := &Director{DataDir: s.dataDir, Logger: logger, Store: st}
	// Deploys queued before a restart wait a little for the agents to
	// reconnect to the new bus (their backoff is at most 10 s).
	opts := task.Options{RecoveredGrace: 15 * time.Second}
	if s.ha != nil {
		// One of several: the leader runs the queue's data tasks, and
		// fails the tasks of directors that are gone when it takes over
		// (startCluster); the others' tasks are theirs.
		if d.Cluster, err = newCluster(*s.ha, logger); err != nil {
			return nil, err
		}
		opts.Instance, opts.MayDispatch = d.Cluster.Instance, d.Cluster.Leading
	}
	d.Tasks = task.NewManager(st, logger, opts)
	if d.Cluster == nil {
		if n, err := d.Tasks.Recover(); err != nil {
			return nil, err
		} else if n > 0 {
			logger.Warn("marked tasks the previous director left running (or queued as closures) as failed", "tasks", n)
		}
	}
	if d.CA = ca; d.CA == nil {
		if d.CA, err = loadOrCreateCA(s.dataDir, false); err != nil {
			return nil, err
		}
	}
	if d.DirectorCert, err = d.CA.IssueClient(pki.DirectorCN, 0); err != nil {
		return nil, err
	}
	if d.ID, err = directorUUID(s.dataDir); err != nil {
		return nil, err
	}
	return d, nil
}

// startBus starts the embedded message bus and connects the director to it.
func (d *Director) startBus(ctx context.Context, s settings, stops *stack) error {
	busHosts := append(append([]string{"127.0.0.1", "localhost"}, hostOf(s.natsAddr)...), s.tlsHosts...)
	if u, err := url.Parse(s.natsURL); err == nil && u.Hostname() != "" {
		busHosts = append(busHosts, u.Hostname()) // the name agents dial
	}
	busCert, err := d.CA.IssueServer(dedupe(busHosts), 0)
	if err != nil {
		return err
	}
	busCfg := mbus.Config{Listen: s.natsAddr, CA: d.CA.CertPEM(), ServerCert: busCert.CertPEM, ServerKey: busCert.KeyPEM, Logger: d.Logger.With("component", "mbus"),
		Admit: admitAgent(d.Store, d.Logger.With("component", "mbus"))}
	if c := s.natsCluster; c != nil {
		// Routes to the other directors' bus servers: a route certificate
		// for this one's route address (and the names it is known by).
		routeHosts := append(append([]string{"127.0.0.1", "localhost"}, hostOf(c.Listen)...), s.tlsHosts...)
		for _, r := range c.Routes {
			if u, err := url.Parse(r); err == nil && u.Host == c.Listen {
				routeHosts = append(routeHosts, u.Hostname())
			}
		}
		routeCert, err := d.CA.IssueRoute(dedupe(routeHosts), 0)
		if err != nil {
			return err
		}
		busCfg.Cluster = &mbus.Cluster{Listen: c.Listen, Routes: c.Routes, Cert: routeCert.CertPEM, Key: routeCert.KeyPEM}
		busCfg.Name = "compleat-" + strings.ReplaceAll(d.Cluster.Instance, "@", "-")
		d.BusURLs = c.AgentURLs
	}
	// In dev mode the bus keeps its port across restarts (DIR/bus.addr):
	// running agents hold its URL in their settings.
	busAddrFile := filepath.Join(s.dataDir, "bus.addr")
	if prev, rerr := os.ReadFile(busAddrFile); s.dev && rerr == nil {
		cfg := busCfg
		cfg.Listen = strings.TrimSpace(string(prev))
		d.Bus, _ = mbus.Start(ctx, cfg) // the port may be taken by now: then a new one below
	}
	if d.Bus == nil {
		if d.Bus, err = mbus.Start(ctx, busCfg); err != nil {
			return err
		}
	}
	if u, perr := url.Parse(d.Bus.URL()); s.dev && perr == nil {
		os.WriteFile(busAddrFile, []byte(u.Host+"\n"), 0o600)
	}
	stops.push(d.Bus.Shutdown)
	d.BusURL = s.natsURL
	if d.BusURL == "" {
		d.BusURL = busURL(d.Bus.URL(), s)
	}
	// The director dials its own bus on loopback: a bus listening on every
	// interface (0.0.0.0) has no address of that name in its certificate.
	d.Conn, err = mbus.Connect(ctx, selfURL(d.Bus.URL()), d.CA.CertPEM(), d.DirectorCert.CertPEM, d.DirectorCert.KeyPEM)
	if err != nil {
		return err
	}
	stops.push(d.Conn.Close)
	return nil
}

// openBlobs opens the blobstore and the key that signs agents' blob URLs.
func (d *Director) openBlobs(ctx context.Context, s settings) error {
	var err error
	if d.Blobs, err = openBlobstore(ctx, s); err != nil {
		return err
	}
	signKey, err := loadOrCreateSecret(filepath.Join(s.dataDir, "blobs.key"))
	if err != nil {
		return err
	}
	d.Signer = blobstore.NewSigner(signKey)
	return nil
}

// startMetrics registers the metrics and feeds the agents-seen and
// heartbeat-age ones from heartbeats (the health monitor subscribes on its
// own).
func (d *Director) startMetrics() error {
	d.Metrics = metrics.New(func() float64 {
		n := 0
		d.Store.View(func(tx *store.Tx) error {
			ts, err := tx.Tasks(0, func(t store.Task) bool { return !t.Finished() })
			n = len(ts)
			return err
		})
		return float64(n)
	}, func() float64 { return float64(d.Bus.NumClients()) })
	d.Tasks.OnFinish = d.Metrics.TaskFinished
	if _, err := d.Conn.Subscribe(heartbeatSubjects, func(m *nats.Msg) {
		d.Metrics.AgentHeartbeat(strings.TrimPrefix(m.Subject, heartbeatPrefix), time.Now())
	}); err != nil {
		return fmt.Errorf("subscribe to heartbeats: %w", err)
	}
	return nil
}

// startCPIs starts the CPI manager on the stored cpi config, else the one
// of the mode (stored so that `director cpi-config` shows it).
func (d *Director) startCPIs(s settings, stops *stack) error {
	cpiCfg, err := currentCPIConfig(d.Store, s.cpis)
	if err != nil {
		return err
	}
	exe, _ := os.Executable()
	d.CPIs = cpimanager.New(cpiCfg, cpimanager.Options{
		Launcher:     hostLauncher{logger: d.Logger},
		Logger:       d.Logger,
		Observer:     d.Metrics.ObserveCPI,
		SearchDirs:   []string{filepath.Dir(exe)},
		ExternalCPIs: s.externalCPIs,
		DirectorUUID: d.ID,
	})
	stops.push(func() { d.CPIs.Close() })
	return nil
}

// setBlobURL sets where agents fetch blobs (the API's target, or the
// blobstore's public_url) and what they trust there.
func (d *Director) setBlobURL(s settings, target string) error {
	d.BlobURL = target
	var err error
	if d.BlobCA, err = blobCA(d.CA, s); err != nil {
		return err
	}
	if s.blobstore.PublicURL != "" {
		d.BlobURL = strings.TrimRight(s.blobstore.PublicURL, "/")
	}
	return nil
}

// newAPI builds the deploy pipeline, the health service (the monitor, the
// resurrector recreating through the deploy pipeline, cloud-check) and the
// API over them; every finished task becomes an audit event. It returns the
// admin token of dev mode.
func (d *Director) newAPI(ctx context.Context, s settings, stops *stack) (*api.Server, string, error) {
	auth, adminToken, err := tokens(s)
	if err != nil {
		return nil, "", err
	}
	uploadDir := filepath.Join(s.dataDir, "tmp")
	os.RemoveAll(uploadDir)
	if err := os.MkdirAll(uploadDir, 0o700); err != nil {
		return nil, "", err
	}
	d.ERB = template.NewERB("")
	stops.push(func() { d.ERB.Close() })
	deployer := newDeployer(d)
	hsvc, err := health.Start(ctx, health.Deps{Store: d.Store, Conn: d.Conn, Tasks: d.Tasks,
		Recreate: func(ctx context.Context, r *task.Reporter, deployment, target string) error {
			_, err := deployer.ChangeState(ctx, r, api.StateRequest{Deployment: deployment, Action: "recreate", Target: target, SkipDrain: true})
			return err
		},
		CPIs: func(ctx context.Context, name string) (health.VMCloud, error) { return d.CPIs.Get(ctx, name) },
		CheckVM: func(ctx context.Context, name, cid, agentID string) error {
			return d.CPIs.CheckVM(ctx, name, cid, d.ID, agentID)
		},
		Registerer: d.Metrics.Registry, Logger: d.Logger, Leading: d.leading()})
	if err != nil {
		return nil, "", err
	}
	stops.push(func() { hsvc.Close() })
	st := d.Store
	d.Tasks.OnFinish = func(t store.Task) { d.Metrics.TaskFinished(t); health.RecordTask(st, t) }
	disks := diskDeleter{cpis: d.CPIs, directorID: d.ID}
	checker := &cloudcheck.Checker{Store: st, Agents: cloudcheck.BusAgents{Conn: d.Conn}, Recreator: hsvc.Recreator,
		Events: health.Store{S: st}, Busy: health.Store{S: st}.Busy, Logger: d.Logger.With("component", "cloud-check"),
		CPIs:     func(ctx context.Context, name string) (cloudcheck.CPI, error) { return d.CPIs.Get(ctx, name) },
		Director: d.ID,
		Lister:   cloudcheck.CPIVMs{Names: d.CPIs.Names, Get: d.CPIs.Get, DirectorID: d.ID}}
	srv, err := api.New(api.Deps{
		Store: st, Tasks: d.Tasks, Auth: auth, Logger: d.Logger.With("component", "api"), Metrics: d.Metrics.Registry,
		Blobs:    blobstore.NewHandler(d.Blobs, d.Signer, d.Logger.With("component", "blobs")),
		Importer: &importer.Uploads{Store: st, Blobs: d.Blobs, CPIs: d.CPIs, TempDir: uploadDir, Logger: d.Logger},
		Configs:  configs{cpis: d.CPIs},
		Deployer: deployer,
		Fleet: fleet.New(fleet.Deps{Store: st, Tasks: d.Tasks, CPIs: d.CPIs, Blobs: d.Blobs, Logger: d.Logger.With("component", "fleet"),
			DeleteDisk: disks.DeleteDisk,
			SubmitDeploy: func(deployment, manifest, description string, dryRun bool) (store.Task, error) {
				return d.Tasks.Submit(task.Spec{Type: "deploy", Description: description, Deployment: deployment},
					api.DeployRequest{Deployment: deployment, Manifest: manifest, DryRun: dryRun})
			}}),
		Health:    api.Health{Monitor: hsvc.Monitor, CloudCheck: checker},
		Agents:    agentStates{conn: d.Conn},
		Remote:    newRemote(d),
		Disks:     disks,
		CPIs:      d.CPIs.Names,
		UploadDir: uploadDir,
		Cluster:   d.clusterNames(),
	})
	return srv, adminToken, err
}

// leading is the health service's leadership gate: nil (always) for a
// director on its own.
func (d *Director) leading() func() bool {
	if d.Cluster == nil {
		return nil
	}
	return d.Cluster.Leading
}

// clusterNames gives /v1/info this director's instance and the leader's;
// nil for a director on its own.
func (d *Director) clusterNames() func() (string, string) {
	if d.Cluster == nil {
		return nil
	}
	return func() (string, string) { return d.Cluster.Instance, d.Cluster.Leader() }
}

// serveAPI serves the API and the web console (/ui/, a client of the API in
// this process) on ln. The requests' base context outlives ctx (a shutdown
// drains them); cancelBase ends it (event streams).
func serveAPI(ctx context.Context, s settings, d *Director, handler *api.Server, ln net.Listener) (srv *http.Server, served chan error, cancelBase func(), err error) {
	tlsCfg, err := serverTLS(d.CA, s)
	if err != nil {
		return nil, nil, nil, err
	}
	baseCtx, cancelBase := context.WithCancel(context.WithoutCancel(ctx))
	mux := http.NewServeMux()
	mux.Handle("/ui/", ui.New(handler, d.Logger.With("component", "ui")))
	mux.Handle("/", handler)
	srv = &http.Server{
		Handler:           mux,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: api.ReadHeaderTimeout,
		IdleTimeout:       api.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(d.Logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
	}
	served = make(chan error, 1)
	go func() { served <- srv.ServeTLS(ln, "", "") }()
	return srv, served, cancelBase, nil
}

// announce says the director is ready: on stdout, in the log, and in dev
// mode in DIR/env for the CLI.
func announce(stdout io.Writer, s settings, target, adminToken string, d *Director) error {
	if s.dev {
		if err := writeEnv(s.dataDir, target, adminToken); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Director ready at %s\n  data   %s\n  bus    %s\n  env    source %s\n",
			target, s.dataDir, d.BusURL, filepath.Join(s.dataDir, "env"))
	} else {
		fmt.Fprintf(stdout, "Director ready at %s (bus %s)\n", target, d.BusURL)
	}
	d.Logger.Info("director ready", "target", target, "data", s.dataDir, "bus", d.BusURL)
	return nil
}

func hostOf(addr string) []string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil || h == "" || h == "0.0.0.0" || h == "::" {
		return nil
	}
	return []string{h}
}

// advertised is the host:port clients use: the listen host, or the first
// TLS host when listening on every interface.
func advertised(a net.Addr, s settings) string {
	tcp := a.(*net.TCPAddr)
	host, _, _ := net.SplitHostPort(s.listen)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
		if len(s.tlsHosts) > 0 {
			host = s.tlsHosts[len(s.tlsHosts)-1]
		}
	}
	return net.JoinHostPort(host, fmt.Sprint(tcp.Port))
}

// unspecifiedHost reports whether host means every interface.
func unspecifiedHost(host string) bool { return host == "" || host == "0.0.0.0" || host == "::" }

// selfURL is a nats:// URL the director itself can dial: an unspecified
// listen host becomes 127.0.0.1.
func selfURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || !unspecifiedHost(u.Hostname()) {
		return raw
	}
	u.Host = net.JoinHostPort("127.0.0.1", u.Port())
	return u.String()
}

// busURL is the bus URL agents are given when nats.url is not set: the
// listen address, or, when that is every interface, the advertised API
// host (or the last of tls.hosts) with the bus's port.
func busURL(raw string, s settings) string {
	u, err := url.Parse(raw)
	if err != nil || !unspecifiedHost(u.Hostname()) {
		return raw
	}
	host := "127.0.0.1"
	if a, err := url.Parse(s.advertise); err == nil && a.Hostname() != "" {
		host = a.Hostname()
	} else if len(s.tlsHosts) > 0 {
		host = s.tlsHosts[len(s.tlsHosts)-1]
	}
	u.Host = net.JoinHostPort(host, u.Port())
	return u.String()
}

// blobCA is what agents trust for blob URLs: the director's CA, plus, with
// an API certificate of the operator's (tls.cert_file), what signed it
// (tls.ca_file, else the certificate file's own certificates).
func blobCA(ca *pki.CA, s settings) ([]byte, error) {
	out := append([]byte(nil), ca.CertPEM()...)
	if s.tlsCert == "" {
		return out, nil
	}
	file := s.tlsCA
	if file == "" {
		file = s.tlsCert
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("tls certificates for agents: %w", err)
	}
	for rest := raw; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			out = append(out, pem.EncodeToMemory(b)...)
		}
	}
	return out, nil
}

func openBlobstore(ctx context.Context, s settings) (blobstore.Store, error) {
	switch s.blobstore.Type {
	case "s3":
		c := s.blobstore.S3
		return blobstore.NewS3(blobstore.S3Options{Bucket: c.Bucket, Region: c.Region, Endpoint: c.Endpoint, PathStyle: c.PathStyle,
			AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, Prefix: c.Prefix})
	default:
		dir := s.blobstore.Dir
		if dir == "" {
			dir = filepath.Join(s.dataDir, "blobs")
		}
		return blobstore.NewFS(dir)
	}
}

// currentCPIConfig reads the stored cpi config, storing fallback first when
// there is none.
func currentCPIConfig(st *store.Store, fallback *cpimanager.Config) (cpimanager.Config, error) {
	var c store.Config
	err := st.Update(func(tx *store.Tx) error {
		var err error
		c, err = tx.LatestConfig(store.ConfigCPI, "")
		if errors.Is(err, store.ErrNotFound) && fallback != nil {
			raw, merr := fallback.Marshal()
			if merr != nil {
				return merr
			}
			c, _, err = tx.AddConfig(store.ConfigCPI, "", string(raw))
		}
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return cpimanager.Config{}, nil
	}
	if err != nil {
		return cpimanager.Config{}, err
	}
	return cpimanager.ParseConfig(fmt.Sprintf("cpi config %d", c.ID), []byte(c.Content))
}

// configs validates configs with the manifest and cpimanager parsers and
// restarts changed CPI plugins when a cpi config is stored.
type configs struct{ cpis *cpimanager.Manager }

func (c configs) Validate(typ, file string, content []byte) error {
	switch typ {
	case store.ConfigCloud:
		cc, err := manifest.ParseCloudConfig(file, content)
		if err != nil {
			return err
		}
		// An AZ naming a CPI must name a configured one; an AZ naming none
		// takes the default CPI when a deploy places instances in it.
		var errs []error
		for i, az := range cc.AZs {
			if az.CPI == "" {
				continue
			}
			if _, err := c.cpis.Resolve(az.CPI); err != nil {
				errs = append(errs, fmt.Errorf("%s:%s azs[%d].cpi: %w", file, azCPILine(content, i), i, err))
			}
		}
		return errors.Join(errs...)
	case store.ConfigRuntime:
		_, err := manifest.ParseRuntimeConfig(file, content)
		return err
	case store.ConfigCPI:
		_, err := cpimanager.ParseConfig(file, content)
		return err
	}
	return fmt.Errorf("unknown config type %q", typ)
}

// azCPILine is "LINE:COL:" of azs[i].cpi in a cloud config, or "" when it
// cannot be found.
func azCPILine(content []byte, i int) string {
	var doc yaml.Node
	if yaml.Unmarshal(content, &doc) != nil || len(doc.Content) == 0 {
		return ""
	}
	find := func(m *yaml.Node, key string) *yaml.Node {
		if m == nil || m.Kind != yaml.MappingNode {
			return nil
		}
		for k := 0; k+1 < len(m.Content); k += 2 {
			if m.Content[k].Value == key {
				return m.Content[k+1]
			}
		}
		return nil
	}
	azs := find(doc.Content[0], "azs")
	if azs == nil || azs.Kind != yaml.SequenceNode || i >= len(azs.Content) {
		return ""
	}
	if n := find(azs.Content[i], "cpi"); n != nil {
		return fmt.Sprintf("%d:%d:", n.Line, n.Column)
	}
	return ""
}

func (c configs) Applied(cfg store.Config) error {
	if cfg.Type != store.ConfigCPI {
		return nil
	}
	parsed, err := cpimanager.ParseConfig("cpi config", []byte(cfg.Content))
	if err != nil {
		return err
	}
	c.cpis.SetConfig(parsed)
	return nil
}

// directorUUID is the director's uuid, made once and kept in
// DIR/director-uuid (external CPIs receive it in every call's context).
func directorUUID(dir string) (string, error) {
	path := filepath.Join(dir, "director-uuid")
	if raw, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(raw))) == 36 {
		return strings.TrimSpace(string(raw)), nil
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	uuid := fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
	if err := os.WriteFile(path, []byte(uuid+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write director uuid: %w", err)
	}
	return uuid, nil
}

// hostLauncher launches plugins with the CPI SDK's host.
type hostLauncher struct{ logger *slog.Logger }

func (h hostLauncher) Launch(ctx context.Context, binary string, p cpimanager.Plugin, observe cpi.CallObserver) (cpimanager.Process, error) {
	return host.Start(ctx, host.Config{Path: binary, Properties: p.Properties, Logger: h.logger.With("cpi_name", p.Name), Observe: observe})
}

// tokens builds the API's token list; in dev mode it is one admin token
// kept in DIR/admin.token (reused across restarts so DIR/env stays valid).
func tokens(s settings) (*api.Auth, string, error) {
	if s.dev {
		path := filepath.Join(s.dataDir, "admin.token")
		raw, err := os.ReadFile(path)
		tok := strings.TrimSpace(string(raw))
		if err != nil || tok == "" {
			secret := make([]byte, 24)
			if _, err := rand.Read(secret); err != nil {
				return nil, "", err
			}
			tok = hex.EncodeToString(secret)
			if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
				return nil, "", fmt.Errorf("write admin token: %w", err)
			}
		}
		return api.NewAuth([]api.Token{{Name: "admin", SHA256: sha256.Sum256([]byte(tok)), Scopes: []string{config.ScopeAdmin}}}), tok, nil
	}
	var out []api.Token
	for _, t := range s.tokens {
		d, err := t.Digest()
		if err != nil {
			return nil, "", err
		}
		out = append(out, api.Token{Name: t.Name, SHA256: d, Scopes: t.Scopes})
	}
	return api.NewAuth(out), "", nil
}

// writeEnv writes DIR/env, the shell file that points the CLI at this
// director.
func writeEnv(dir, target, token string) error {
	body := fmt.Sprintf("# Source this file to use the director in %s.\nexport DIRECTOR_TARGET=%s\nexport DIRECTOR_TOKEN=%s\nexport DIRECTOR_CA_CERT=%s\n",
		dir, target, token, filepath.Join(dir, "ca.pem"))
	tmp := filepath.Join(dir, "env.tmp")
	if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
		return fmt.Errorf("write env: %w", err)
	}
	return os.Rename(tmp, filepath.Join(dir, "env"))
}

// loadOrCreateCA keeps the director's CA in DIR/ca.pem and DIR/ca.key. It
// creates them only when create is set (a data directory without a state
// file) and neither exists; otherwise a missing file is an error naming it,
// since a new CA would cut every agent off.
func loadOrCreateCA(dir string, create bool) (*pki.CA, error) {
	certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	certPEM, cerr := os.ReadFile(certPath)
	keyPEM, kerr := os.ReadFile(keyPath)
	if cerr == nil && kerr == nil {
		ca, err := pki.LoadCA(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("director CA in %s: %w", dir, err)
		}
		return ca, nil
	}
	for _, e := range []struct {
		path string
		err  error
	}{{certPath, cerr}, {keyPath, kerr}} {
		if e.err != nil && !errors.Is(e.err, os.ErrNotExist) {
			return nil, fmt.Errorf("director CA: %w", e.err)
		}
		if e.err != nil && (!create || cerr == nil || kerr == nil) {
			return nil, fmt.Errorf("director CA: %s is missing from the data directory %s, which holds a state file: restore it from your copy (a new CA would cut every agent off)", e.path, dir)
		}
	}
	ca, err := pki.NewCA("compleat director CA", 0)
	if err != nil {
		return nil, err
	}
	keyPEM, err = ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("write CA key: %w", err)
	}
	if err := os.WriteFile(certPath, ca.CertPEM(), 0o644); err != nil {
		return nil, fmt.Errorf("write CA certificate: %w", err)
	}
	return ca, nil
}

func loadOrCreateSecret(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err == nil && len(raw) == 32 {
		return raw, nil
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, key, 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return key, nil
}

// serverTLS is the API's TLS configuration: the configured certificate, or
// one the director's CA issues for the TLS hosts.
func serverTLS(ca *pki.CA, s settings) (*tls.Config, error) {
	if s.tlsCert != "" {
		pair, err := tls.LoadX509KeyPair(s.tlsCert, s.tlsKey)
		if err != nil {
			return nil, fmt.Errorf("api tls certificate: %w", err)
		}
		return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
	}
	hosts := append([]string{"127.0.0.1", "localhost"}, s.tlsHosts...)
	kp, err := ca.IssueServer(dedupe(hosts), 0)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{kp.TLSCertificate()}, MinVersion: tls.VersionTLS12}, nil
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// EtcdOptions are the store's etcd options of a director.yml store section.
func EtcdOptions(c config.Store) store.EtcdOptions {
	return store.EtcdOptions{Endpoints: c.Endpoints, CAFile: c.CAFile, CertFile: c.CertFile, KeyFile: c.KeyFile,
		Prefix: c.Prefix, MaxTxnOps: c.MaxTxnOps}
}
