package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// client talks to the director's API.
type client struct {
	base  string
	token string
	http  *http.Client
}

func (a *app) client() (*client, error) {
	target := strings.TrimRight(a.g.Target, "/")
	if target == "" {
		return nil, Usage(errors.New("no director: pass -e URL or set DIRECTOR_TARGET (serve --dev writes DIR/env to source)"))
	}
	u, err := url.Parse(target)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, Usage(fmt.Errorf("target %q is not a URL like https://127.0.0.1:25555", target))
	}
	token := a.g.Token
	if token == "" {
		token = a.d.Getenv("DIRECTOR_TOKEN")
	}
	if token == "" {
		return nil, Usage(errors.New("no token: pass --token or set DIRECTOR_TOKEN"))
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if a.g.CACert != "" {
		pem, err := os.ReadFile(a.g.CACert)
		if err != nil {
			return nil, Usage(fmt.Errorf("read --ca-cert: %w", err))
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, Usage(fmt.Errorf("--ca-cert %s holds no PEM certificate", a.g.CACert))
		}
		tc.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	return &client{base: target, token: token, http: &http.Client{Transport: tr}}, nil
}

// apiError is an error answer of the director.
type apiError struct {
	Status  int
	Message string
	Code    string
}

func (e *apiError) Error() string { return e.Message }

// classify turns an API error into an exit status: the director's verdict
// on bad input is a usage error.
func classify(err error) error {
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusBadRequest {
		return Usage(err)
	}
	return err
}

// send makes a request and returns the response when its status is 2xx.
func (c *client) send(ctx context.Context, method, path string, body io.Reader, contentType string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("director %s: %w", c.base, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var e struct{ Error, Code string }
	if json.Unmarshal(raw, &e) != nil || e.Error == "" {
		e.Error = strings.TrimSpace(string(raw))
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		e.Error = "the director refused the token (check DIRECTOR_TOKEN / --token)"
	case http.StatusForbidden:
		e.Error = "the token may not do this: " + e.Error
	}
	return nil, classify(&apiError{Status: resp.StatusCode, Message: e.Error, Code: e.Code})
}

// do sends a JSON body (nil for none) and decodes the JSON answer into out
// (nil to discard).
func (c *client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	ct := ""
	if in != nil {
		raw, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body, ct = bytes.NewReader(raw), "application/json"
	}
	resp, err := c.send(ctx, method, path, body, ct)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode director answer to %s %s: %w", method, path, err)
	}
	return nil
}

// getRaw fetches a JSON document as is (for --json output).
func (c *client) getRaw(ctx context.Context, path string) (json.RawMessage, error) {
	var raw json.RawMessage
	err := c.do(ctx, "GET", path, nil, &raw)
	return raw, err
}

// lines calls fn for each JSON line of a streamed answer.
func (c *client) lines(ctx context.Context, path string, fn func(line []byte) error) error {
	resp, err := c.send(ctx, "GET", path, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		if err := fn(sc.Bytes()); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("stream %s: %w", path, err)
	}
	return ctx.Err()
}
