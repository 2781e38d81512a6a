package cli

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	apiclient "github.com/compleat/compleat/director/client"
)

// client talks to the director's API through director/client; the
// director's verdict on bad input (400) becomes a usage error (exit 2).
type client struct {
	api *apiclient.Client
}

func (a *app) client() (*client, error) {
	if strings.TrimRight(a.g.Target, "/") == "" {
		return nil, Usage(errors.New("no director: pass -e URL or set DIRECTOR_TARGET (serve --dev writes DIR/env to source)"))
	}
	target, err := apiclient.Target(a.g.Target)
	if err != nil {
		return nil, Usage(err)
	}
	token := a.g.Token
	if token == "" {
		token = a.d.Getenv("DIRECTOR_TOKEN")
	}
	if token == "" {
		return nil, Usage(errors.New("no token: pass --token or set DIRECTOR_TOKEN"))
	}
	var ca []byte
	if a.g.CACert != "" {
		pem, err := os.ReadFile(a.g.CACert)
		if err != nil {
			return nil, Usage(fmt.Errorf("read --ca-cert: %w", err))
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return nil, Usage(fmt.Errorf("--ca-cert %s holds no PEM certificate", a.g.CACert))
		}
		ca = pem
	}
	c, err := apiclient.New(apiclient.Options{Target: target, Token: token, CACert: ca})
	if err != nil {
		return nil, Usage(err)
	}
	return &client{api: c}, nil
}

// classify turns an API error into an exit status: the director's verdict
// on bad input is a usage error.
func classify(err error) error {
	if apiclient.IsBadInput(err) {
		return Usage(err)
	}
	return err
}

// send makes a request and returns the response when its status is 2xx.
func (c *client) send(ctx context.Context, method, path string, body io.Reader, contentType string) (*http.Response, error) {
	resp, err := c.api.Send(ctx, method, path, body, contentType)
	return resp, classify(err)
}

// do sends a JSON body (nil for none) and decodes the JSON answer into out
// (nil to discard).
func (c *client) do(ctx context.Context, method, path string, in, out any) error {
	return classify(c.api.Do(ctx, method, path, in, out))
}

// getRaw fetches a JSON document as is (for --json output).
func (c *client) getRaw(ctx context.Context, path string) (json.RawMessage, error) {
	raw, err := c.api.GetRaw(ctx, path)
	return raw, classify(err)
}

// lines calls fn for each JSON line of a streamed answer.
func (c *client) lines(ctx context.Context, path string, fn func(line []byte) error) error {
	return classify(c.api.Lines(ctx, path, fn))
}
