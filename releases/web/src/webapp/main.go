// Command webapp is the sample release's web server. It answers "/" with
// its version text and instance name and "/health" with 200 while serving,
// 503 once draining. "webapp drain" is the client the job's drain script
// runs: it asks the server to drain and waits until it has.
//
//	webapp serve --listen 127.77.0.11:8080 --version v1 --instance web/0
//	webapp drain --url http://127.77.0.11:8080 --notice 3s --timeout 60s
//
// Endpoints:
//
//	GET  /              "<version> <instance>\n"; ?delay=300ms holds the answer (tests)
//	GET  /health        200 "ok", or 503 "draining"
//	POST /drain         fail /health from now on, wait ?notice= so load balancers
//	                    notice, then until in-flight requests are done (at most
//	                    ?timeout=); answers 200 "drained <n>" or 504
//	GET  /inflight      the number of requests in progress (not counting itself)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "webapp:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: webapp serve|drain [flags]")
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stderr)
	case "drain":
		return drain(args[1:], stdout)
	default:
		return fmt.Errorf("unknown command %q: want serve or drain", args[0])
	}
}

type server struct {
	version  string
	instance string
	draining atomic.Bool
	inflight atomic.Int64
	log      *log.Logger
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.counted(s.root))
	mux.HandleFunc("GET /health", s.health)
	mux.HandleFunc("POST /drain", s.drain)
	mux.HandleFunc("GET /inflight", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, s.inflight.Load())
	})
	return mux
}

func (s *server) counted(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.inflight.Add(1)
		defer s.inflight.Add(-1)
		h(w, r)
	}
}

func (s *server) root(w http.ResponseWriter, r *http.Request) {
	if d := r.URL.Query().Get("delay"); d != "" {
		delay, err := time.ParseDuration(d)
		if err != nil || delay < 0 || delay > 30*time.Second {
			http.Error(w, "delay: want a duration up to 30s", http.StatusBadRequest)
			return
		}
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "%s %s\n", s.version, s.instance)
}

func (s *server) health(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		http.Error(w, "draining", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

func (s *server) drain(w http.ResponseWriter, r *http.Request) {
	notice, err1 := durationParam(r, "notice", 3*time.Second)
	timeout, err2 := durationParam(r, "timeout", 60*time.Second)
	if err := errors.Join(err1, err2); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if !s.draining.Swap(true) {
		s.log.Printf("draining: /health answers 503 from now on")
	}
	select {
	case <-time.After(notice):
	case <-r.Context().Done():
		return
	}
	deadline := time.Now().Add(timeout)
	for s.inflight.Load() > 0 {
		if time.Now().After(deadline) {
			http.Error(w, fmt.Sprintf("%d requests still in flight after %s", s.inflight.Load(), timeout), http.StatusGatewayTimeout)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.log.Printf("drained: no request in flight")
	fmt.Fprintln(w, "drained")
}

func durationParam(r *http.Request, name string, def time.Duration) (time.Duration, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s: want a duration, got %q", name, v)
	}
	return d, nil
}

func serve(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8080", "address to listen on")
	version := fs.String("version", "v1", "version text served on /")
	instance := fs.String("instance", "", "instance name served on /")
	grace := fs.Duration("shutdown-grace", 10*time.Second, "how long in-flight requests may finish on SIGTERM")
	if err := fs.Parse(args); err != nil {
		return err
	}
	logger := log.New(stderr, "webapp: ", log.LstdFlags)
	s := &server{version: *version, instance: *instance, log: logger}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	logger.Printf("serving %s (%s) on %s", *version, *instance, ln.Addr())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	logger.Printf("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), *grace)
	defer cancel()
	return srv.Shutdown(sctx)
}

// drain asks the server at --url to drain, waits for it, and prints "0"
// (BOSH's drain contract: done, no further wait) on success.
func drain(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("drain", flag.ContinueOnError)
	base := fs.String("url", "http://127.0.0.1:8080", "the server's base URL")
	notice := fs.Duration("notice", 3*time.Second, "time for load balancers to notice the failing health check")
	timeout := fs.Duration("timeout", 60*time.Second, "longest wait for in-flight requests")
	if err := fs.Parse(args); err != nil {
		return err
	}
	client := &http.Client{Timeout: *notice + *timeout + 10*time.Second}
	u := *base + "/drain?notice=" + notice.String() + "&timeout=" + timeout.String()
	resp, err := client.Post(u, "text/plain", nil)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			// Nothing listens: nothing to drain.
			fmt.Fprintln(stdout, 0)
			return nil
		}
		return fmt.Errorf("drain %s: %w", *base, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("drain %s: %s: %s", *base, resp.Status, body)
	}
	fmt.Fprintln(stdout, 0)
	return nil
}
