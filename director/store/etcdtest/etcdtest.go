// Package etcdtest runs a real single-member etcd server inside the test
// process (go.etcd.io/etcd/server/v3/embed), listening on 127.0.0.1 ports
// chosen at random and keeping its data under t.TempDir(). It stops when the
// test ends.
package etcdtest

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// Server is a running embedded etcd.
type Server struct {
	// Endpoint is the client URL, http://127.0.0.1:PORT.
	Endpoint string
	etcd     *embed.Etcd
	stop     sync.Once
}

// MaxTxnOps is the embedded server's limit on operations per transaction:
// higher than etcd's default (128) so that tests can exercise the store with
// deployment-sized transactions; the store checks the limit it is told.
const MaxTxnOps = 4096

// Options tune a server.
type Options struct {
	// Fsync makes the server sync its log to disk as a production member
	// does (benchmarks); tests skip it to stay fast.
	Fsync bool
}

// Start starts a server and registers its stop with t.Cleanup.
func Start(t testing.TB) *Server { t.Helper(); return StartWith(t, Options{}) }

// StartWith starts a server with opts and registers its stop with
// t.Cleanup.
func StartWith(t testing.TB, opts Options) *Server {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		s, err := start(t.TempDir(), opts)
		if err == nil {
			t.Cleanup(s.Stop)
			return s
		}
		lastErr = err // most likely a port taken between pick and bind
	}
	t.Fatalf("start embedded etcd: %v", lastErr)
	return nil
}

func start(dir string, opts Options) (*Server, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	client, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", ports[0]))
	peer, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", ports[1]))
	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = dir
	cfg.ListenClientUrls = []url.URL{*client}
	cfg.AdvertiseClientUrls = []url.URL{*client}
	cfg.ListenPeerUrls = []url.URL{*peer}
	cfg.AdvertisePeerUrls = []url.URL{*peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// Its errors reach the test through Start; the log would only hold the
	// noise of stopping.
	cfg.LogLevel = "fatal"
	cfg.MaxTxnOps = MaxTxnOps
	// Test data is thrown away: skip fsync to keep the tests fast.
	cfg.UnsafeNoFsync = !opts.Fsync
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, err
	case <-time.After(30 * time.Second):
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("etcd not ready after 30s")
	}
	return &Server{Endpoint: client.String(), etcd: e}, nil
}

// Stop stops the server; stopping it again does nothing.
func (s *Server) Stop() { s.stop.Do(s.etcd.Close) }

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

var shared struct {
	sync.Mutex
	s   *Server
	dir string
	err error
}

// Shared returns a server shared by every test of the process, started on
// first use; tests sharing it keep apart by key prefix. StopShared (from
// TestMain) stops it and removes its data.
func Shared(t testing.TB) *Server {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	if shared.s == nil && shared.err == nil {
		shared.dir, shared.err = os.MkdirTemp("", "etcdtest-")
		for attempt := 0; attempt < 3 && shared.err == nil; attempt++ {
			shared.s, shared.err = start(filepath.Join(shared.dir, strconv.Itoa(attempt)), Options{})
			if shared.err == nil {
				break
			}
			if attempt < 2 {
				shared.err = nil
			}
		}
	}
	if shared.err != nil {
		t.Fatalf("start embedded etcd: %v", shared.err)
	}
	return shared.s
}

// StopShared stops the shared server, if one was started, and removes its
// data.
func StopShared() {
	shared.Lock()
	defer shared.Unlock()
	if shared.s != nil {
		shared.s.Stop()
		shared.s = nil
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
		shared.dir = ""
	}
}

// Cluster is n embedded etcd members that form one cluster.
type Cluster struct {
	Members []*Server
}

// Endpoints are the members' client URLs.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, m.Endpoint)
	}
	return out
}

// StartCluster starts an n-member cluster inside the test process and
// registers its stop with t.Cleanup.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		c, err := startCluster(t.TempDir(), n)
		if err == nil {
			t.Cleanup(func() {
				for _, m := range c.Members {
					m.Stop()
				}
			})
			return c
		}
		lastErr = err
	}
	t.Fatalf("start embedded etcd cluster: %v", lastErr)
	return nil
}

func startCluster(dir string, n int) (*Cluster, error) {
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, err
	}
	cfgs := make([]*embed.Config, n)
	initial := ""
	for i := range n {
		client, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", ports[2*i]))
		peer, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]))
		cfg := embed.NewConfig()
		cfg.Name = fmt.Sprintf("m%d", i)
		cfg.Dir = filepath.Join(dir, cfg.Name)
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
		cfg.LogLevel = "fatal"
		cfg.MaxTxnOps = MaxTxnOps
		cfg.UnsafeNoFsync = true
		cfg.InitialClusterToken = "etcdtest"
		if initial != "" {
			initial += ","
		}
		initial += cfg.Name + "=" + peer.String()
		cfgs[i] = cfg
	}
	c := &Cluster{}
	type started struct {
		i   int
		e   *embed.Etcd
		err error
	}
	ch := make(chan started, n)
	for i, cfg := range cfgs {
		cfg.InitialCluster = initial
		go func() {
			e, err := embed.StartEtcd(cfg)
			ch <- started{i, e, err}
		}()
	}
	members := make([]*Server, n)
	var firstErr error
	for range n {
		s := <-ch
		if s.err != nil {
			firstErr = s.err
			continue
		}
		members[s.i] = &Server{Endpoint: cfgs[s.i].ListenClientUrls[0].String(), etcd: s.e}
	}
	stopAll := func() {
		for _, m := range members {
			if m != nil {
				m.Stop()
			}
		}
	}
	if firstErr != nil {
		stopAll()
		return nil, firstErr
	}
	for _, m := range members {
		select {
		case <-m.etcd.Server.ReadyNotify():
		case err := <-m.etcd.Err():
			stopAll()
			return nil, err
		case <-time.After(30 * time.Second):
			stopAll()
			return nil, fmt.Errorf("etcd cluster not ready after 30s")
		}
	}
	c.Members = members
	return c, nil
}
