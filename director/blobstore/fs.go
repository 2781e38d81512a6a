package blobstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// FS is a Store in a local directory: blob <id> lives at
// <dir>/<first two characters of id>/<id>; uploads go to <dir>/tmp first and
// are renamed into place once complete, so a reader never sees a partial
// blob.
type FS struct {
	dir string
}

var _ Store = (*FS)(nil)

// NewFS returns a store in dir, creating it if needed.
func NewFS(dir string) (*FS, error) {
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("blobstore directory: %w", err)
	}
	return &FS{dir: dir}, nil
}

func (s *FS) path(id string) string {
	return filepath.Join(s.dir, id[:2], id)
}

// spool copies r into a temporary file under <dir>/tmp while hashing it.
func (s *FS) spool(ctx context.Context, r io.Reader) (*os.File, Blob, error) {
	f, b, err := spoolFile(ctx, filepath.Join(s.dir, "tmp"), r)
	if err != nil {
		return nil, Blob{}, err
	}
	if err := f.Close(); err != nil {
		cleanup(f)
		return nil, Blob{}, err
	}
	return f, b, nil
}

// spoolFile copies r into a new temporary file in dir (os.TempDir() when
// empty) while hashing it. The caller removes the file with cleanup.
func spoolFile(ctx context.Context, dir string, r io.Reader) (*os.File, Blob, error) {
	tmp, err := os.CreateTemp(dir, "upload-*")
	if err != nil {
		return nil, Blob{}, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), ctxReader{ctx, r})
	if err != nil {
		cleanup(tmp)
		return nil, Blob{}, err
	}
	return tmp, Blob{SHA256: hex.EncodeToString(h.Sum(nil)), Size: n}, nil
}

func cleanup(f *os.File) {
	f.Close()
	os.Remove(f.Name())
}

// Put implements Store.
func (s *FS) Put(ctx context.Context, r io.Reader) (Blob, error) {
	tmp, b, err := s.spool(ctx, r)
	if err != nil {
		return Blob{}, fmt.Errorf("put blob: %w", err)
	}
	b.ID = b.SHA256
	if err := s.commit(tmp.Name(), b.ID); err != nil {
		return Blob{}, fmt.Errorf("put blob %s: %w", b.ID, err)
	}
	return b, nil
}

// PutID implements Store.
func (s *FS) PutID(ctx context.Context, id string, r io.Reader, sum string) (Blob, error) {
	if !ValidID(id) {
		return Blob{}, fmt.Errorf("put blob %q: %w", id, ErrInvalidID)
	}
	tmp, b, err := s.spool(ctx, r)
	if err != nil {
		return Blob{}, fmt.Errorf("put blob %s: %w", id, err)
	}
	if sum != "" && sum != b.SHA256 {
		os.Remove(tmp.Name())
		return Blob{}, fmt.Errorf("put blob %s: got sha256 %s, want %s: %w", id, b.SHA256, sum, ErrDigestMismatch)
	}
	b.ID = id
	if err := s.commit(tmp.Name(), id); err != nil {
		return Blob{}, fmt.Errorf("put blob %s: %w", id, err)
	}
	return b, nil
}

// commit moves a spooled file (made 0600 by os.CreateTemp) into place,
// making its shard directory when the first blob of the shard needs it:
// a deploy stores a hundred rendered jobs at once, and a mkdir and a chmod
// each on a busy filesystem cost as much as the write. On failure the
// spooled file is removed.
func (s *FS) commit(tmp, id string) error {
	dst := s.path(id)
	err := os.Rename(tmp, dst)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(filepath.Dir(dst), 0o700); err == nil {
			err = os.Rename(tmp, dst)
		}
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// Get implements Store.
func (s *FS) Get(ctx context.Context, id string) (io.ReadCloser, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("get blob %q: %w", id, ErrInvalidID)
	}
	f, err := os.Open(s.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("get blob %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get blob %s: %w", id, err)
	}
	return f, nil
}

// Delete implements Store.
func (s *FS) Delete(ctx context.Context, id string) error {
	if !ValidID(id) {
		return fmt.Errorf("delete blob %q: %w", id, ErrInvalidID)
	}
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete blob %s: %w", id, err)
	}
	return nil
}

// Exists implements Store.
func (s *FS) Exists(ctx context.Context, id string) (bool, error) {
	if !ValidID(id) {
		return false, fmt.Errorf("blob %q: %w", id, ErrInvalidID)
	}
	_, err := os.Stat(s.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("blob %s: %w", id, err)
	}
	return true, nil
}

// List implements Store: the files <dir>/<xx>/<id> (not <dir>/tmp).
func (s *FS) List(ctx context.Context, fn func(Info) error) error {
	dirs, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("list blobs: %w", err)
	}
	for _, d := range dirs {
		if !d.IsDir() || d.Name() == "tmp" || len(d.Name()) != 2 {
			continue
		}
		files, err := os.ReadDir(filepath.Join(s.dir, d.Name()))
		if err != nil {
			return fmt.Errorf("list blobs: %w", err)
		}
		for _, f := range files {
			if err := ctx.Err(); err != nil {
				return err
			}
			fi, err := f.Info()
			if err != nil || !fi.Mode().IsRegular() || !ValidID(f.Name()) {
				continue // deleted meanwhile, or not a blob
			}
			if err := fn(Info{ID: f.Name(), Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
				return err
			}
		}
	}
	return nil
}

// ctxReader stops a copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
