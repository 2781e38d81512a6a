// Package blob moves blobs between the agent and the director's blobstore by
// signed URLs: Fetch downloads over HTTPS, verifies the sha256 the message
// named and keeps the verified blob in a content-addressed cache; Upload
// PUTs a file and reports its sha256 and size.
//
// A signed URL is a credential until it expires: errors and logs show only
// its scheme, host and path, never the query that carries the signature.
package blob

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/compleat/compleat/agent/applyspec"
	"github.com/compleat/compleat/agent/protocol"
)

// NewHTTPClient returns a client that trusts caPEM (the system roots when
// caPEM is empty).
func NewHTTPClient(caPEM string) (*http.Client, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caPEM != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(caPEM)) {
			return nil, errors.New("blobstore ca: no certificate in PEM")
		}
		tc.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	tr.Proxy = nil
	return &http.Client{Transport: tr, Timeout: 0}, nil
}

// Redact strips the query and user info of a URL for messages.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable url)"
	}
	u.RawQuery, u.User, u.Fragment = "", nil, ""
	return u.String()
}

// Store fetches and caches blobs.
type Store struct {
	// Client makes the requests (see NewHTTPClient); replace it with
	// SetClient once the Store is in use.
	Client *http.Client
	mu     sync.Mutex
	// CacheDir holds verified blobs named by sha256.
	CacheDir string
	// Timeout bounds one transfer (0: 30 minutes).
	Timeout time.Duration
}

// SetClient replaces the HTTP client (a new blobstore CA).
func (s *Store) SetClient(c *http.Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Client = c
}

func (s *Store) client() *http.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Client
}

// Path is where the verified blob with sha256 sum lives in the cache.
func (s *Store) Path(sum string) string { return filepath.Join(s.CacheDir, sum) }

// Fetch returns the path of the verified blob b, downloading it unless it
// is cached. A content mismatch is an error matching protocol.ErrBlobMismatch
// and leaves nothing behind.
func (s *Store) Fetch(ctx context.Context, b applyspec.Blob) (string, error) {
	if !applyspec.ValidSHA256(b.SHA256) {
		return "", fmt.Errorf("blob %s: bad sha256 %q", Redact(b.URL), b.SHA256)
	}
	final := s.Path(b.SHA256)
	if _, err := os.Stat(final); err == nil {
		return final, nil
	}
	if err := os.MkdirAll(s.CacheDir, 0o700); err != nil {
		return "", fmt.Errorf("blob cache: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.URL, nil)
	if err != nil {
		return "", fmt.Errorf("fetch blob %s: %w", Redact(b.URL), redactErr(err))
	}
	resp, err := s.client().Do(req)
	if err != nil {
		return "", fmt.Errorf("fetch blob %s: %w", Redact(b.URL), redactErr(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("fetch blob %s: %s", Redact(b.URL), resp.Status)
	}
	tmp, err := os.CreateTemp(s.CacheDir, ".fetch-*")
	if err != nil {
		return "", fmt.Errorf("fetch blob: %w", err)
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), resp.Body)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("fetch blob %s: %w", Redact(b.URL), redactErr(err))
	}
	got := hex.EncodeToString(h.Sum(nil))
	if got != b.SHA256 {
		return "", fmt.Errorf("fetch blob %s: %w", Redact(b.URL), &protocol.Exception{
			Code:    protocol.CodeBlobMismatch,
			Message: fmt.Sprintf("sha256 %s, want %s (%d bytes)", got, b.SHA256, n),
		})
	}
	if b.Size > 0 && n != b.Size {
		return "", fmt.Errorf("fetch blob %s: %w", Redact(b.URL), &protocol.Exception{
			Code:    protocol.CodeBlobMismatch,
			Message: fmt.Sprintf("size %d, want %d", n, b.Size),
		})
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", fmt.Errorf("fetch blob: %w", err)
	}
	return final, nil
}

// Remove drops the blob with sha256 sum from the cache; a missing blob is
// not an error.
func (s *Store) Remove(sum string) error {
	if !applyspec.ValidSHA256(sum) {
		return fmt.Errorf("remove blob: bad sha256 %q", sum)
	}
	if err := os.Remove(s.Path(sum)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove blob: %w", err)
	}
	return nil
}

// Upload PUTs the file at path to u and returns its sha256 and size.
func (s *Store) Upload(ctx context.Context, u protocol.Upload, path string) (sum string, size int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("upload: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if size, err = io.Copy(h, f); err != nil {
		return "", 0, fmt.Errorf("upload: %w", err)
	}
	sum = hex.EncodeToString(h.Sum(nil))
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", 0, fmt.Errorf("upload: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.URL, f)
	if err != nil {
		return "", 0, fmt.Errorf("upload to %s: %w", Redact(u.URL), redactErr(err))
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/gzip")
	for k, v := range u.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("X-Content-Sha256", sum)
	resp, err := s.client().Do(req)
	if err != nil {
		return "", 0, fmt.Errorf("upload to %s: %w", Redact(u.URL), redactErr(err))
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return "", 0, fmt.Errorf("upload to %s: %s", Redact(u.URL), resp.Status)
	}
	return sum, size, nil
}

func (s *Store) timeout() time.Duration {
	if s.Timeout > 0 {
		return s.Timeout
	}
	return 30 * time.Minute
}

// redactErr removes the URL (with its signature) that net/http puts into
// *url.Error messages.
func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}
