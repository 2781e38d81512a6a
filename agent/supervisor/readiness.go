package supervisor

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"syscall"
	"time"
)

// checkLoop runs the readiness check now and then every interval, sending
// each result (nil = passed) on results, until ctx ends. An exec check runs
// with the process's environment and working directory.
func (s *Supervisor) checkLoop(ctx context.Context, r *Readiness, env map[string]string, dir string, results chan<- error) {
	var transport *http.Transport
	if r.HTTP != nil {
		// Like Kubernetes' HTTPS probes, the check does not verify the
		// server's certificate: it sends nothing secret and only asks
		// whether the process answers; jobs commonly serve health endpoints
		// with certificates issued for names other than the check's URL.
		transport = &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // see above
		defer transport.CloseIdleConnections()
	}
	for {
		err := check(ctx, r, transport, env, dir)
		if ctx.Err() != nil {
			return
		}
		select {
		case results <- err:
		case <-ctx.Done():
			return
		}
		t := time.NewTimer(r.Interval)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// check runs one readiness check within the check's timeout.
func check(ctx context.Context, r *Readiness, transport *http.Transport, env map[string]string, dir string) error {
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	switch {
	case r.HTTP != nil:
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.HTTP.URL, nil)
		if err != nil {
			return fmt.Errorf("http %s: %w", r.HTTP.URL, err)
		}
		client := &http.Client{
			Transport: transport,
			// A redirect is an answer: compare its status as is.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("http: %w", err)
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) //nolint:errcheck // body is not used
		resp.Body.Close()
		if resp.StatusCode != r.HTTP.Status {
			return fmt.Errorf("http %s: status %d, want %d", r.HTTP.URL, resp.StatusCode, r.HTTP.Status)
		}
		return nil
	case r.TCP != "":
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", r.TCP)
		if err != nil {
			return fmt.Errorf("tcp: %w", err)
		}
		conn.Close()
		return nil
	case len(r.Exec) > 0:
		path, err := lookPath(r.Exec[0], env)
		if err != nil {
			return fmt.Errorf("exec: %w", err)
		}
		cmd := exec.CommandContext(ctx, path, r.Exec[1:]...)
		cmd.Args[0] = r.Exec[0]
		cmd.Env = envList(env)
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = time.Second
		out, err := cmd.CombinedOutput()
		if err != nil {
			if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("exec %s: timed out after %s", r.Exec[0], r.Timeout)
			}
			return fmt.Errorf("exec %s: %w: %s", r.Exec[0], err, tail(out, 200))
		}
		return nil
	}
	return errors.New("no readiness check")
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
