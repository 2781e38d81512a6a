package supervisor

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// openLogs opens the rotated stdout and stderr logs of a process.
func (s *Supervisor) openLogs(dir, name string) (stdout, stderr *rotatingFile, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("create log dir: %w", err)
	}
	stdout, err = openRotating(filepath.Join(dir, name+".stdout.log"), s.cfg.LogMaxBytes, s.cfg.LogKeep)
	if err != nil {
		return nil, nil, err
	}
	stderr, err = openRotating(filepath.Join(dir, name+".stderr.log"), s.cfg.LogMaxBytes, s.cfg.LogKeep)
	if err != nil {
		stdout.Close()
		return nil, nil, err
	}
	return stdout, stderr, nil
}

// rotatingFile is an append-only log file that is rotated when a write
// would take it past max bytes: name → name.1 → … → name.<keep>, the
// oldest dropped.
type rotatingFile struct {
	mu   sync.Mutex
	path string
	max  int64
	keep int
	f    *os.File
	size int64
}

func openRotating(path string, max int64, keep int) (*rotatingFile, error) {
	r := &rotatingFile{path: path, max: max, keep: keep}
	if err := r.open(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *rotatingFile) open() error {
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("open log: %w", err)
	}
	r.f, r.size = f, fi.Size()
	return nil
}

// Write appends p, rotating whenever the file would pass max bytes. Data is
// split at the last newline that fits, so lines stay whole unless a single
// line is longer than max.
func (r *rotatingFile) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	written := 0
	for len(p) > 0 {
		if r.f == nil {
			return written, os.ErrClosed
		}
		cut := len(p)
		if room := r.max - r.size; int64(len(p)) > room {
			cut = 0
			if room > 0 {
				cut = bytes.LastIndexByte(p[:room], '\n') + 1
			}
			if cut == 0 && r.size == 0 {
				cut = int(room) // one line longer than the whole file
			}
		}
		if cut > 0 {
			n, err := r.f.Write(p[:cut])
			r.size += int64(n)
			written += n
			if err != nil {
				return written, err
			}
			p = p[cut:]
		}
		if len(p) > 0 {
			if err := r.rotate(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

func (r *rotatingFile) rotate() error {
	if err := r.f.Close(); err != nil {
		return fmt.Errorf("rotate log: %w", err)
	}
	r.f = nil
	os.Remove(fmt.Sprintf("%s.%d", r.path, r.keep)) //nolint:errcheck // may not exist
	for i := r.keep - 1; i >= 1; i-- {
		os.Rename(fmt.Sprintf("%s.%d", r.path, i), fmt.Sprintf("%s.%d", r.path, i+1)) //nolint:errcheck // may not exist
	}
	if err := os.Rename(r.path, r.path+".1"); err != nil {
		return fmt.Errorf("rotate log: %w", err)
	}
	return r.open()
}

func (r *rotatingFile) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}
