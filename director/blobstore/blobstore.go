// Package blobstore stores the director's blobs: release job and package
// tarballs, compiled packages and rendered jobs.
//
// A [Store] is content-addressed: [Store.Put] names a blob by the hex sha256
// of its content, so storing the same bytes twice keeps one copy.
// [Store.PutID] stores a body under an id chosen by the caller (the director
// picks one when it hands an agent a signed upload URL for a compiled
// package), optionally checking the body's sha256 first. Two
// implementations exist: [FS], a directory, and [S3], any S3-compatible
// bucket. Both pass the same suite, blobstoretest.Run.
//
// Agents never hold blobstore credentials. The director signs URLs with a
// [Signer] (HMAC-SHA256 over method, blob id, expiry and optional sha256) and
// serves them with [Handler] at /blobs/<id> on its HTTPS API server.
package blobstore

import (
	"context"
	"errors"
	"io"
	"regexp"
	"time"
)

// Store keeps blobs by id.
type Store interface {
	// Put stores r's content under the hex sha256 of that content.
	Put(ctx context.Context, r io.Reader) (Blob, error)
	// PutID stores r's content under id, replacing any blob of that id.
	// When sha256 is not empty the content must have that hex digest, else
	// nothing is stored and the error wraps ErrDigestMismatch.
	PutID(ctx context.Context, id string, r io.Reader, sha256 string) (Blob, error)
	// Get opens a blob; the error wraps ErrNotFound when it does not exist.
	Get(ctx context.Context, id string) (io.ReadCloser, error)
	// Delete removes a blob; deleting a missing blob is not an error.
	Delete(ctx context.Context, id string) error
	// Exists reports whether a blob exists.
	Exists(ctx context.Context, id string) (bool, error)
	// List calls fn with every stored blob, in no set order; an error of
	// fn stops the listing and is returned.
	List(ctx context.Context, fn func(Info) error) error
}

// Info is a stored blob as List sees it.
type Info struct {
	ID      string
	Size    int64
	ModTime time.Time
}

// Blob describes a stored blob.
type Blob struct {
	ID     string `json:"id"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// Errors of every Store.
var (
	ErrNotFound       = errors.New("blob not found")
	ErrInvalidID      = errors.New("invalid blob id")
	ErrDigestMismatch = errors.New("blob sha256 mismatch")
)

var idRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{1,199}$`)

// ValidID reports whether id may name a blob: letters, digits, '.', '_' and
// '-', starting with a letter or digit, 2 to 200 characters.
func ValidID(id string) bool { return idRE.MatchString(id) }
