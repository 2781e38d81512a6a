package blobstore

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Errors of signed URL verification.
var (
	ErrBadSignature = errors.New("invalid blob URL signature")
	ErrExpired      = errors.New("blob URL expired")
)

// Signer signs and verifies blob URLs. A signature is the HMAC-SHA256, under
// the director's key, of "compleat-blob-v1", the HTTP method, the blob id,
// the expiry (Unix seconds) and the expected sha256 (may be empty), joined by
// newlines. The URL carries the expiry, the sha256 and the signature as the
// query parameters expires, sha256 and signature.
type Signer struct {
	key []byte
	now func() time.Time
}

// NewSigner returns a signer with key, which should be at least 32 random
// bytes kept by the director.
func NewSigner(key []byte) *Signer {
	return &Signer{key: append([]byte(nil), key...), now: time.Now}
}

// WithClock returns a copy of the signer reading time from now (tests).
func (s *Signer) WithClock(now func() time.Time) *Signer {
	c := *s
	c.now = now
	return &c
}

func (s *Signer) mac(method, id string, expires int64, sum string) string {
	m := hmac.New(sha256.New, s.key)
	fmt.Fprintf(m, "compleat-blob-v1\n%s\n%s\n%d\n%s", method, id, expires, sum)
	return hex.EncodeToString(m.Sum(nil))
}

// URL returns a URL that lets its holder perform method (GET or PUT) on
// blob id until ttl has passed. base is the director's URL
// ("https://10.0.0.1:25555"); the path is base + "/blobs/<id>". For a PUT a
// non-empty sha256 makes the handler reject a body with another digest; for
// a GET it is informational.
func (s *Signer) URL(base, method, id string, ttl time.Duration, sha256 string) (string, error) {
	if method != http.MethodGet && method != http.MethodPut {
		return "", fmt.Errorf("sign blob url: method %q: want GET or PUT", method)
	}
	if !ValidID(id) {
		return "", fmt.Errorf("sign blob url %q: %w", id, ErrInvalidID)
	}
	expires := s.now().Add(ttl).Unix()
	q := url.Values{}
	q.Set("expires", strconv.FormatInt(expires, 10))
	if sha256 != "" {
		q.Set("sha256", sha256)
	}
	q.Set("signature", s.mac(method, id, expires, sha256))
	return strings.TrimSuffix(base, "/") + "/blobs/" + id + "?" + q.Encode(), nil
}

// Verify checks a request's method, blob id and query against their
// signature and expiry, and returns the sha256 the URL names ("" if none).
func (s *Signer) Verify(method, id string, q url.Values) (string, error) {
	sig := q.Get("signature")
	exp := q.Get("expires")
	sum := q.Get("sha256")
	expires, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || sig == "" {
		return "", ErrBadSignature
	}
	want := s.mac(method, id, expires, sum)
	if !hmac.Equal([]byte(sig), []byte(want)) {
		return "", ErrBadSignature
	}
	if s.now().Unix() > expires {
		return "", ErrExpired
	}
	return sum, nil
}

// Handler serves GET and PUT /blobs/<id> for requests bearing a valid,
// unexpired signature from its Signer. A PUT stores the body under <id>
// (checking its sha256 when the URL names one) and answers 201 with the
// Blob as JSON. A PUT URL is single-use: once a blob of that id exists, a
// PUT to it answers 409, so a replayed URL cannot replace what was stored.
// Signatures and query strings are never logged.
type Handler struct {
	store  Store
	signer *Signer
	logger *slog.Logger
	// MaxPutSize bounds an upload's body; 0 means 8 GiB.
	MaxPutSize int64
}

// NewHandler returns the handler; mount it at "/blobs/" on the API server.
func NewHandler(store Store, signer *Signer, logger *slog.Logger) *Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Handler{store: store, signer: signer, logger: logger}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, ok := strings.CutPrefix(r.URL.Path, "/blobs/")
	if !ok || !ValidID(id) {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodPut {
		w.Header().Set("Allow", "GET, PUT")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	log := h.logger.With("blob", id, "method", r.Method, "remote", r.RemoteAddr)
	sum, err := h.signer.Verify(r.Method, id, r.URL.Query())
	if err != nil {
		log.Warn("blob request refused", "reason", err.Error())
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	switch r.Method {
	case http.MethodGet:
		h.get(w, r, id, log)
	case http.MethodPut:
		h.put(w, r, id, sum, log)
	}
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request, id string, log *slog.Logger) {
	rc, err := h.store.Get(r.Context(), id)
	if errors.Is(err, ErrNotFound) {
		http.Error(w, "blob not found", http.StatusNotFound)
		return
	}
	if err != nil {
		log.Error("get blob", "error", err)
		http.Error(w, "blobstore error", http.StatusInternalServerError)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	if sizer, ok := rc.(statter); ok {
		if fi, err := sizer.Stat(); err == nil {
			w.Header().Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
		}
	}
	n, err := io.Copy(w, rc)
	if err != nil {
		log.Warn("serve blob", "bytes", n, "error", err)
		return
	}
	log.Debug("blob served", "bytes", n)
}

// statter is what an *os.File offers to learn a blob's size.
type statter interface{ Stat() (os.FileInfo, error) }

func (h *Handler) put(w http.ResponseWriter, r *http.Request, id, sum string, log *slog.Logger) {
	max := h.MaxPutSize
	if max == 0 {
		max = 8 << 30
	}
	if exists, err := h.store.Exists(r.Context(), id); err != nil {
		log.Error("put blob", "error", err)
		http.Error(w, "blobstore error", http.StatusInternalServerError)
		return
	} else if exists {
		log.Warn("blob upload refused", "reason", "blob exists: an upload URL is single-use")
		http.Error(w, "blob exists: an upload URL is single-use", http.StatusConflict)
		return
	}
	body := http.MaxBytesReader(w, r.Body, max)
	b, err := h.store.PutID(r.Context(), id, body, sum)
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		http.Error(w, fmt.Sprintf("body larger than %d bytes", max), http.StatusRequestEntityTooLarge)
		return
	case errors.Is(err, ErrDigestMismatch):
		log.Warn("blob upload refused", "reason", err.Error())
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	case err != nil:
		log.Error("put blob", "error", err)
		http.Error(w, "blobstore error", http.StatusInternalServerError)
		return
	}
	log.Info("blob stored", "sha256", b.SHA256, "bytes", b.Size)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(b)
}
