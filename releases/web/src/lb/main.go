// Command lb is the sample release's HTTP load balancer: a reverse proxy in
// front of a fixed list of backends that takes them in and out of service by
// itself.
//
//	lb --listen 127.77.0.20:8000 --backend 127.77.0.11:8080 --backend 127.77.0.12:8080 \
//	   --health-path /health --interval 1s --timeout 1s
//
// Every backend is checked on an interval (GET <health-path>, 200 means
// healthy); a backend starts out of service and enters it on its first
// passing check. It leaves service on a failing check or on a connection
// error while proxying. Requests go round-robin to backends in service; an
// idempotent request without a body (GET, HEAD, OPTIONS, TRACE, PUT, DELETE)
// whose backend fails before answering is retried once on another backend.
// GET /_lb/status answers the backends' state as JSON.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "lb:", err)
		os.Exit(1)
	}
}

type backendList []string

func (b *backendList) String() string     { return strings.Join(*b, ",") }
func (b *backendList) Set(v string) error { *b = append(*b, v); return nil }

func run(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("lb", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8000", "address to listen on")
	var backends backendList
	fs.Var(&backends, "backend", "backend host:port (repeatable)")
	healthPath := fs.String("health-path", "/health", "path of the backends' health check")
	interval := fs.Duration("interval", time.Second, "time between health checks of a backend")
	timeout := fs.Duration("timeout", time.Second, "health check timeout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	logger := log.New(stderr, "lb: ", log.LstdFlags)
	if len(backends) == 0 {
		// A deployment may scale web to zero: serve 503 until redeployed.
		logger.Printf("no --backend given: every request answers 503")
	}
	p := newProxy(backends, logger)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	for _, b := range p.backends {
		go p.check(ctx, b, *healthPath, *interval, *timeout)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	logger.Printf("listening on %s for %d backends", ln.Addr(), len(backends))
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

type backend struct {
	addr    string
	healthy atomic.Bool
	// why is the last reason the backend left service, for the status page.
	mu  sync.Mutex
	why string
}

type proxy struct {
	backends  []*backend
	next      atomic.Uint64
	transport *http.Transport
	log       *log.Logger
}

func newProxy(addrs []string, logger *log.Logger) *proxy {
	p := &proxy{log: logger, transport: &http.Transport{
		DialContext:           (&net.Dialer{Timeout: time.Second}).DialContext,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
	}}
	for _, a := range addrs {
		p.backends = append(p.backends, &backend{addr: a, why: "not checked yet"})
	}
	return p
}

func (p *proxy) setHealthy(b *backend, ok bool, why string) {
	b.mu.Lock()
	b.why = why
	b.mu.Unlock()
	if b.healthy.Swap(ok) != ok {
		if ok {
			p.log.Printf("backend %s in service", b.addr)
		} else {
			p.log.Printf("backend %s out of service: %s", b.addr, why)
		}
	}
}

func (p *proxy) check(ctx context.Context, b *backend, path string, interval, timeout time.Duration) {
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	for {
		resp, err := client.Get("http://" + b.addr + path)
		switch {
		case err != nil:
			p.setHealthy(b, false, "health check: "+err.Error())
		case resp.StatusCode != http.StatusOK:
			p.setHealthy(b, false, "health check: "+resp.Status)
		default:
			p.setHealthy(b, true, "")
		}
		if resp != nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// pick returns the next backend in service other than skip, or nil.
func (p *proxy) pick(skip *backend) *backend {
	n := uint64(len(p.backends))
	if n == 0 {
		return nil
	}
	start := p.next.Add(1)
	for i := uint64(0); i < n; i++ {
		b := p.backends[(start+i)%n]
		if b != skip && b.healthy.Load() {
			return b
		}
	}
	return nil
}

// hopHeaders are meaningful for one connection only and are not forwarded.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func idempotent(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0
	}
	return false
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/_lb/status" {
		p.status(w)
		return
	}
	b := p.pick(nil)
	if b == nil {
		http.Error(w, "no backend in service", http.StatusServiceUnavailable)
		return
	}
	resp, err := p.forward(r, b)
	if err != nil && idempotent(r) && r.Context().Err() == nil {
		if other := p.pick(b); other != nil {
			p.log.Printf("retrying %s %s on %s after %s failed: %v", r.Method, r.URL.Path, other.addr, b.addr, err)
			resp, err = p.forward(r, other)
		}
	}
	if err != nil {
		http.Error(w, "bad gateway", http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for _, h := range hopHeaders {
		resp.Header.Del(h)
	}
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// forward sends r to b; a connection-level failure takes b out of service.
func (p *proxy) forward(r *http.Request, b *backend) (*http.Response, error) {
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme = "http"
	out.URL.Host = b.addr
	out.Close = false
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if prior := r.Header.Get("X-Forwarded-For"); prior != "" {
			ip = prior + ", " + ip
		}
		out.Header.Set("X-Forwarded-For", ip)
	}
	resp, err := p.transport.RoundTrip(out)
	if err != nil && r.Context().Err() == nil {
		p.setHealthy(b, false, "proxying: "+err.Error())
	}
	return resp, err
}

func (p *proxy) status(w http.ResponseWriter) {
	type state struct {
		Address string `json:"address"`
		Healthy bool   `json:"healthy"`
		Reason  string `json:"reason,omitempty"`
	}
	var out []state
	for _, b := range p.backends {
		b.mu.Lock()
		why := b.why
		b.mu.Unlock()
		ok := b.healthy.Load()
		if ok {
			why = ""
		}
		out = append(out, state{Address: b.addr, Healthy: ok, Reason: why})
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"backends": out})
}
