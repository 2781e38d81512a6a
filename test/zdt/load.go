package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// sample is one request's outcome.
type sample struct {
	at      time.Time // when it was sent
	latency time.Duration
	status  int    // 0 on a connection error
	err     string // connection error, if any
	version string // first word of the answer
}

// loader sends GET / at a constant rate through the load balancers from a
// fixed pool of connections. Like a client given a name with one address
// per load balancer, it spreads its connections over the addresses and,
// when one refuses a connection, dials the next. Go's transport retries an
// idempotent request whose reused connection was closed by the server
// before it answered, as browsers do.
type loader struct {
	addrs  []string // host:port of each load balancer
	rate   int      // requests per second
	conns  int      // concurrent connections (workers)
	limit  int      // at most this many requests in all
	client *http.Client

	next atomic.Uint64

	mu      sync.Mutex
	samples []sample
}

func newLoader(addrs []string, rate, conns, limit int) *loader {
	l := &loader{addrs: addrs, rate: rate, conns: conns, limit: limit}
	tr := &http.Transport{
		DialContext:         l.dial,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		IdleConnTimeout:     90 * time.Second,
	}
	l.client = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	return l
}

// dial connects to the load balancers in turn, starting from the next one.
func (l *loader) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	start := int(l.next.Add(1))
	var errs []error
	d := net.Dialer{Timeout: time.Second}
	for i := range l.addrs {
		a := l.addrs[(start+i)%len(l.addrs)]
		c, err := d.DialContext(ctx, network, a)
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// run sends requests until ctx ends or the limit is reached.
func (l *loader) run(ctx context.Context) {
	work := make(chan time.Time)
	var wg sync.WaitGroup
	for range l.conns {
		wg.Go(func() {
			for at := range work {
				l.record(l.one(ctx, at))
			}
		})
	}
	tick := time.NewTicker(time.Second / time.Duration(l.rate))
	defer tick.Stop()
	sent := 0
	for sent < l.limit {
		select {
		case <-ctx.Done():
			sent = l.limit
		case at := <-tick.C:
			select {
			case work <- at:
				sent++
			case <-ctx.Done():
				sent = l.limit
			}
		}
	}
	close(work)
	wg.Wait()
}

func (l *loader) one(ctx context.Context, _ time.Time) sample {
	s := sample{at: time.Now()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://lb/", nil)
	if err != nil {
		s.err = err.Error()
		return s
	}
	resp, err := l.client.Do(req)
	if err != nil {
		s.latency = time.Since(s.at)
		s.err = err.Error()
		return s
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	s.latency = time.Since(s.at)
	s.status = resp.StatusCode
	if err != nil {
		s.err = "read answer: " + err.Error()
		return s
	}
	if f := strings.Fields(string(body)); len(f) > 0 {
		s.version = f[0]
	}
	return s
}

func (l *loader) record(s sample) {
	if s.err != "" && strings.Contains(s.err, context.Canceled.Error()) {
		return // the harness stopped the load, not a failure
	}
	l.mu.Lock()
	l.samples = append(l.samples, s)
	l.mu.Unlock()
}

// window returns the samples sent in [from, to).
func (l *loader) window(from, to time.Time) []sample {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []sample
	for _, s := range l.samples {
		if !s.at.Before(from) && s.at.Before(to) {
			out = append(out, s)
		}
	}
	return out
}

// stats summarises a window of samples.
type stats struct {
	requests int
	failures int
	p50, p99 time.Duration
	// reasons counts the failures by kind, for the report.
	reasons map[string]int
}

// summarise counts failures: a connection error or a non-2xx answer
// always; an answer whose version is not in allowed (when allowed is not
// empty).
func summarise(ss []sample, allowed map[string]bool) stats {
	st := stats{requests: len(ss), reasons: map[string]int{}}
	lat := make([]time.Duration, 0, len(ss))
	for _, s := range ss {
		lat = append(lat, s.latency)
		switch {
		case s.err != "":
			st.failures++
			st.reasons["error: "+shortErr(s.err)]++
		case s.status < 200 || s.status > 299:
			st.failures++
			st.reasons[fmt.Sprintf("status %d", s.status)]++
		case len(allowed) > 0 && !allowed[s.version]:
			st.failures++
			st.reasons["version "+s.version]++
		}
	}
	st.p50, st.p99 = percentile(lat, 0.50), percentile(lat, 0.99)
	return st
}

func (st *stats) add(o stats) {
	st.requests += o.requests
	st.failures += o.failures
	for k, v := range o.reasons {
		st.reasons[k] += v
	}
}

// percentile is the nearest-rank percentile of ds (0 for none).
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := int(p*float64(len(s))+0.999999) - 1
	rank = max(0, min(rank, len(s)-1))
	return s[rank]
}

// shortErr keeps the end of an error, where the cause is.
func shortErr(e string) string {
	if i := strings.LastIndex(e, ": "); i >= 0 && len(e)-i < 60 {
		return e[i+2:]
	}
	if len(e) > 60 {
		return e[len(e)-60:]
	}
	return e
}
