// Package client is the Go client of the director's API: the transport
// (HTTPS with the director's CA, the bearer token, the API's error bodies)
// and typed calls over the wire types of director/apiv1. The CLI is built
// on it; scripts and tests in Go use it instead of parsing the CLI's output.
package client

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
	"strconv"
	"strings"

	"github.com/compleat/compleat/director/apiv1"
)

// Client talks to one director.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// Options name the director and how to trust and authenticate to it.
type Options struct {
	// Target is the director's URL, https://HOST:PORT.
	Target string
	// Token is the bearer token.
	Token string
	// CACert is the PEM of the CA that signed the director's certificate;
	// empty: the system's roots.
	CACert []byte
}

// New returns a client for o. Errors name what is wrong in o.
func New(o Options) (*Client, error) {
	target, err := Target(o.Target)
	if err != nil {
		return nil, err
	}
	if o.Token == "" {
		return nil, errors.New("no token")
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(o.CACert) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(o.CACert) {
			return nil, errors.New("the CA certificate holds no PEM certificate")
		}
		tc.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	return &Client{base: target, token: o.Token, http: &http.Client{Transport: tr}}, nil
}

// Target checks a director URL and returns it without a trailing slash.
func Target(raw string) (string, error) {
	target := strings.TrimRight(raw, "/")
	u, err := url.Parse(target)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "", fmt.Errorf("target %q is not a URL like https://127.0.0.1:25555", raw)
	}
	return target, nil
}

// Error is an error answer of the director: its HTTP status, message and
// code.
type Error struct {
	Status  int
	Message string
	Code    string
}

func (e *Error) Error() string { return e.Message }

// IsBadInput reports whether err is the director's verdict that the
// request was wrong (400): a usage error, not a failure.
func IsBadInput(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusBadRequest
}

// Send makes a request and returns the response when its status is 2xx;
// otherwise an *Error.
func (c *Client) Send(ctx context.Context, method, path string, body io.Reader, contentType string) (*http.Response, error) {
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
	return nil, &Error{Status: resp.StatusCode, Message: e.Error, Code: e.Code}
}

// Do sends in as JSON (nil for no body) and decodes the JSON answer into
// out (nil to discard it).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	ct := ""
	if in != nil {
		raw, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body, ct = bytes.NewReader(raw), "application/json"
	}
	resp, err := c.Send(ctx, method, path, body, ct)
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

// GetRaw fetches a JSON document as it is.
func (c *Client) GetRaw(ctx context.Context, path string) (json.RawMessage, error) {
	var raw json.RawMessage
	err := c.Do(ctx, "GET", path, nil, &raw)
	return raw, err
}

// Lines calls fn for each JSON line of a streamed answer until the stream
// ends, fn fails or ctx ends.
func (c *Client) Lines(ctx context.Context, path string, fn func(line []byte) error) error {
	resp, err := c.Send(ctx, "GET", path, nil, "")
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

// Info is GET /v1/info.
func (c *Client) Info(ctx context.Context) (apiv1.Info, error) {
	var i apiv1.Info
	err := c.Do(ctx, "GET", "/v1/info", nil, &i)
	return i, err
}

// Task is GET /v1/tasks/{id}.
func (c *Client) Task(ctx context.Context, id uint64) (apiv1.Task, error) {
	var t apiv1.Task
	err := c.Do(ctx, "GET", "/v1/tasks/"+strconv.FormatUint(id, 10), nil, &t)
	return t, err
}

// Tasks lists the last limit tasks, newest first (GET /v1/tasks).
func (c *Client) Tasks(ctx context.Context, limit int) ([]apiv1.Task, error) {
	var ts []apiv1.Task
	err := c.Do(ctx, "GET", "/v1/tasks?limit="+strconv.Itoa(limit), nil, &ts)
	return ts, err
}

// Follow calls fn with each event of task id after seq after, waiting for
// new ones until the task ends, then returns the task's record.
func (c *Client) Follow(ctx context.Context, id, after uint64, fn func(apiv1.Event) error) (apiv1.Task, error) {
	path := fmt.Sprintf("/v1/tasks/%d/events?follow=true&after=%d", id, after)
	err := c.Lines(ctx, path, func(line []byte) error {
		var e apiv1.Event
		if err := json.Unmarshal(line, &e); err != nil {
			return fmt.Errorf("task %d: bad event: %w", id, err)
		}
		return fn(e)
	})
	if err != nil {
		return apiv1.Task{}, err
	}
	return c.Task(ctx, id)
}

// Deploy submits a deploy (POST /v1/deployments) and returns its task.
func (c *Client) Deploy(ctx context.Context, req apiv1.DeployRequest) (apiv1.Task, error) {
	var t apiv1.Task
	err := c.Do(ctx, "POST", "/v1/deployments", req, &t)
	return t, err
}

// Cancel asks task id to stop (POST /v1/tasks/{id}/cancel).
func (c *Client) Cancel(ctx context.Context, id uint64) (apiv1.Task, error) {
	var t apiv1.Task
	err := c.Do(ctx, "POST", fmt.Sprintf("/v1/tasks/%d/cancel", id), struct{}{}, &t)
	return t, err
}
