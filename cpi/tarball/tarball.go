// Package tarball reads and writes gzipped tarballs safely: the one
// extractor of the project, used by the director (releases, stemcells), the
// agent (jobs, packages, compiled packages, logs) and plugins that unpack
// stemcell images (cpi-local), so that the checks below live in one place.
//
// Extract is safe against hostile archives: every entry must stay inside the
// target directory. Absolute names, names with "..", symbolic links that
// point outside the target (absolutely or by climbing), hard links to
// anything outside, device nodes and FIFOs are refused, and so is writing
// through a symbolic link an earlier entry created. Extraction stops at the
// first bad entry and returns an error naming it; the caller extracts into a
// fresh directory and discards it on error.
package tarball

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// ErrUnsafe is matched by errors for entries that would escape the target.
var ErrUnsafe = errors.New("unsafe archive entry")

// Limits bound what Extract writes.
type Limits struct {
	// MaxBytes caps the total size of regular files (0: 8 GiB).
	MaxBytes int64
	// MaxEntries caps the number of entries (0: 1,000,000).
	MaxEntries int
}

// ExtractFile extracts the tar.gz at path into dir (created if missing).
func ExtractFile(ctx context.Context, path, dir string, lim Limits) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("extract %s: %w", path, err)
	}
	defer f.Close()
	if err := Extract(ctx, f, dir, lim); err != nil {
		return fmt.Errorf("extract %s: %w", filepath.Base(path), err)
	}
	return nil
}

// Extract extracts a tar.gz stream into dir (created if missing). It stops
// with ctx's error once ctx is done, between entries and within large ones.
func Extract(ctx context.Context, r io.Reader, dir string, lim Limits) error {
	if lim.MaxBytes <= 0 {
		lim.MaxBytes = 8 << 30
	}
	if lim.MaxEntries <= 0 {
		lim.MaxEntries = 1_000_000
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer root.Close()
	gz, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("gzip: %w", err)
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	var total int64
	var links []string
	for n := 0; ; n++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if err == io.EOF {
			// Links checked one by one may still point out through each
			// other; resolve every one against the final tree.
			// Bad links are removed, so that even a caller that keeps a
			// failed extraction holds no way out.
			var errs []error
			for _, l := range links {
				if err := linkInside(root, l); err != nil {
					root.Remove(l)
					errs = append(errs, fmt.Errorf("entry %q: %w", filepath.ToSlash(l), err))
				}
			}
			return errors.Join(errs...)
		}
		if err != nil {
			return fmt.Errorf("tar: %w", err)
		}
		if n >= lim.MaxEntries {
			return fmt.Errorf("more than %d entries", lim.MaxEntries)
		}
		name, err := cleanName(h.Name)
		if err != nil {
			return err
		}
		if name == "." {
			continue
		}
		mode := fs.FileMode(h.Mode).Perm() | fs.FileMode(h.Mode)&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)
		mode &^= fs.ModeSetuid | fs.ModeSetgid // never install setuid/setgid bits from a blob
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o755); err != nil {
				return fmt.Errorf("entry %q: %w", h.Name, err)
			}
			if err := root.Chmod(name, mode.Perm()|0o700); err != nil {
				return fmt.Errorf("entry %q: %w", h.Name, err)
			}
		case tar.TypeReg: // the reader already turns the old TypeRegA into TypeReg
			total += h.Size
			if total > lim.MaxBytes {
				return fmt.Errorf("entry %q: archive larger than %d bytes", h.Name, lim.MaxBytes)
			}
			if err := mkParent(root, name); err != nil {
				return fmt.Errorf("entry %q: %w", h.Name, err)
			}
			root.Remove(name) // replace, never write through an existing link
			f, err := root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode.Perm())
			if err != nil {
				return fmt.Errorf("entry %q: %w", h.Name, err)
			}
			_, cerr := io.Copy(f, ctxReader{ctx, io.LimitReader(tr, h.Size)})
			if err := errors.Join(cerr, f.Close()); err != nil {
				return fmt.Errorf("entry %q: %w", h.Name, err)
			}
			if err := root.Chmod(name, mode.Perm()); err != nil {
				return fmt.Errorf("entry %q: %w", h.Name, err)
			}
		case tar.TypeSymlink:
			if err := checkLink(name, h.Linkname); err != nil {
				return fmt.Errorf("entry %q -> %q: %w", h.Name, h.Linkname, err)
			}
			if err := mkParent(root, name); err != nil {
				return fmt.Errorf("entry %q: %w", h.Name, err)
			}
			root.Remove(name)
			if err := root.Symlink(h.Linkname, name); err != nil {
				return fmt.Errorf("entry %q: %w", h.Name, err)
			}
			links = append(links, name)
		case tar.TypeLink:
			target, err := cleanName(h.Linkname)
			if err != nil {
				return fmt.Errorf("entry %q: hard link: %w", h.Name, err)
			}
			if err := mkParent(root, name); err != nil {
				return fmt.Errorf("entry %q: %w", h.Name, err)
			}
			root.Remove(name)
			if err := root.Link(target, name); err != nil {
				return fmt.Errorf("entry %q: %w", h.Name, err)
			}
			// A hard link to a symbolic link is another symbolic link, whose
			// target now resolves from a different directory.
			if fi, err := root.Lstat(name); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
				links = append(links, name)
			}
		case tar.TypeXGlobalHeader, tar.TypeXHeader:
			// metadata only
		default:
			return fmt.Errorf("entry %q: %w: type %q not allowed", h.Name, ErrUnsafe, h.Typeflag)
		}
	}
}

// ctxReader ends a copy once its context is done.
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

// cleanName returns the entry's relative, slash-free-of-tricks path, or an
// error when it is absolute or climbs out.
func cleanName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty name", ErrUnsafe)
	}
	if strings.HasPrefix(name, "/") || filepath.IsAbs(name) || strings.Contains(name, `\`) {
		return "", fmt.Errorf("entry %q: %w: absolute path", name, ErrUnsafe)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("entry %q: %w: path climbs out", name, ErrUnsafe)
		}
	}
	c := path.Clean(name)
	if !fs.ValidPath(c) {
		return "", fmt.Errorf("entry %q: %w: invalid path", name, ErrUnsafe)
	}
	return filepath.FromSlash(c), nil
}

// checkLink refuses a symbolic link at name whose target is absolute or
// resolves outside the root.
func checkLink(name, target string) error {
	if target == "" {
		return fmt.Errorf("%w: empty link target", ErrUnsafe)
	}
	if strings.HasPrefix(target, "/") {
		return fmt.Errorf("%w: absolute link target", ErrUnsafe)
	}
	resolved := path.Join(path.Dir(filepath.ToSlash(name)), target)
	if resolved == ".." || strings.HasPrefix(resolved, "../") {
		return fmt.Errorf("%w: link points outside the archive", ErrUnsafe)
	}
	return nil
}

// linkInside resolves the symbolic link at name component by component,
// following links found on the way, and fails if the walk leaves the root
// or meets an absolute target.
func linkInside(root *os.Root, name string) error {
	target, err := root.Readlink(name)
	if err != nil {
		return err
	}
	var stack []string
	if d := filepath.Dir(name); d != "." {
		stack = strings.Split(filepath.ToSlash(d), "/")
	}
	hops := 0
	var walk func(target string) error
	walk = func(target string) error {
		if strings.HasPrefix(target, "/") {
			return fmt.Errorf("%w: link resolves to an absolute path", ErrUnsafe)
		}
		for _, c := range strings.Split(target, "/") {
			switch c {
			case "", ".":
				continue
			case "..":
				if len(stack) == 0 {
					return fmt.Errorf("%w: link points outside the archive", ErrUnsafe)
				}
				stack = stack[:len(stack)-1]
				continue
			}
			stack = append(stack, c)
			p := filepath.FromSlash(strings.Join(stack, "/"))
			fi, err := root.Lstat(p)
			if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
				continue // dangling or plain: nothing more to follow
			}
			if hops++; hops > 40 {
				return fmt.Errorf("%w: too many levels of links", ErrUnsafe)
			}
			next, err := root.Readlink(p)
			if err != nil {
				return err
			}
			stack = stack[:len(stack)-1]
			if err := walk(next); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(target)
}

func mkParent(root *os.Root, name string) error {
	d := filepath.Dir(name)
	if d == "." {
		return nil
	}
	return root.MkdirAll(d, 0o755)
}

// Create writes a tar.gz of dir's contents (names relative to dir, dir
// itself not included) to w. Symbolic links are stored as links; other
// special files are skipped. When include is non-nil only the top-level
// entries it accepts are archived.
func Create(w io.Writer, dir string, include func(name string) bool) error {
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		if include != nil {
			top := strings.SplitN(filepath.ToSlash(rel), "/", 2)[0]
			if !include(top) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		var link string
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		} else if !info.Mode().IsRegular() && !info.IsDir() {
			return nil
		}
		h, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			h.Name += "/"
		}
		h.Uname, h.Gname = "", ""
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.CopyN(tw, f, h.Size)
			f.Close()
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("archive %s: %w", dir, err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("archive %s: %w", dir, err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("archive %s: %w", dir, err)
	}
	return nil
}
