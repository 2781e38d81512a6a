package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// rotation watches the load balancers' view of their backends
// (GET /_lb/status) and records every backend that leaves service, with
// the reason the load balancer gives. A backend taken out by its drain
// script leaves with a failing health check (503) while it still answers;
// one stopped without drain leaves only when a connection to it fails.
type rotation struct {
	addrs  []string
	client *http.Client

	mu    sync.Mutex
	last  map[string]bool // "lb|backend" -> healthy at the last poll
	exits []exit
}

// exit is one backend leaving one load balancer's rotation.
type exit struct {
	at      time.Time
	lb      string
	backend string
	reason  string
}

// drained reports whether the backend left because its health check
// failed while it still answered (its drain script had begun).
func (e exit) drained() bool { return strings.Contains(e.reason, "503") }

func newRotation(addrs []string) *rotation {
	return &rotation{addrs: addrs, last: map[string]bool{}, client: &http.Client{
		Timeout:   500 * time.Millisecond,
		Transport: &http.Transport{DisableKeepAlives: true},
	}}
}

func (r *rotation) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		for _, lb := range r.addrs {
			r.poll(ctx, lb)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *rotation) poll(ctx context.Context, lb string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+lb+"/_lb/status", nil)
	if err != nil {
		return
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return // the load balancer itself is restarting
	}
	defer resp.Body.Close()
	var st struct {
		Backends []struct {
			Address string `json:"address"`
			Healthy bool   `json:"healthy"`
			Reason  string `json:"reason"`
		} `json:"backends"`
	}
	if json.NewDecoder(resp.Body).Decode(&st) != nil {
		return
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, b := range st.Backends {
		key := lb + "|" + b.Address
		was, seen := r.last[key]
		r.last[key] = b.Healthy
		// A load balancer that restarted lists its backends as not
		// checked yet: that is not a backend leaving.
		if seen && was && !b.Healthy && !strings.Contains(b.Reason, "not checked") {
			r.exits = append(r.exits, exit{at: now, lb: lb, backend: b.Address, reason: b.Reason})
		}
	}
}

// between counts the exits in [from, to): drained and abrupt ones.
func (r *rotation) between(from, to time.Time) (drained, abrupt int, reasons []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	for _, e := range r.exits {
		if e.at.Before(from) || !e.at.Before(to) {
			continue
		}
		if e.drained() {
			drained++
			continue
		}
		abrupt++
		if why := shortErr(e.reason); !seen[why] {
			seen[why] = true
			reasons = append(reasons, why)
		}
	}
	return drained, abrupt, reasons
}

// lbRetries counts the requests the load balancers retried on another
// backend after the first failed (their log lines "retrying ..."), logged
// in [from, to] (to the second), from the logs of every load balancer VM
// under the director's data directory.
func lbRetries(data string, from, to time.Time) int {
	logs, _ := filepath.Glob(filepath.Join(data, "vms", "*", "root", "sys", "log", "lb", "*.log"))
	from, to = from.Truncate(time.Second), to.Add(time.Second)
	n := 0
	for _, p := range logs {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			rest, ok := strings.CutPrefix(line, "lb: ")
			if !ok || !strings.Contains(rest, " retrying ") || len(rest) < 19 {
				continue
			}
			at, err := time.ParseInLocation("2006/01/02 15:04:05", rest[:19], time.Local)
			if err == nil && !at.Before(from) && at.Before(to) {
				n++
			}
		}
		f.Close()
	}
	return n
}
