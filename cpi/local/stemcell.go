package local

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

	"github.com/compleat/compleat/cpi"
)

// agentFile is the executable every local stemcell image holds at its root.
const agentFile = "agent"

// CreateStemcell extracts the stemcell image (a .tgz whose root holds the
// executable agent) into <data_dir>/stemcells/<cid>/. No entry may escape the
// directory, and links may only point inside it.
func (c *CPI) CreateStemcell(ctx context.Context, req cpi.CreateStemcellRequest) (string, error) {
	cid := newCID(kindStemcell)
	stage, err := c.stage(cid)
	if err != nil {
		return "", fmt.Errorf("create stemcell: %w", err)
	}
	defer os.RemoveAll(stage)
	if err := extractImage(ctx, req.ImagePath, stage); err != nil {
		return "", fmt.Errorf("create stemcell from %s: %w", req.ImagePath, err)
	}
	st, err := os.Lstat(filepath.Join(stage, agentFile))
	if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("create stemcell from %s: image has no executable regular file %q at its root", req.ImagePath, agentFile)
	}
	if err := os.Rename(stage, c.path(kindStemcell, cid)); err != nil {
		return "", fmt.Errorf("create stemcell: %w", err)
	}
	c.logger.InfoContext(ctx, "created stemcell", "stemcell", cid, "image", req.ImagePath)
	return cid, nil
}

// DeleteStemcell removes the stemcell's directory; deleting a missing
// stemcell succeeds. VMs already running from it keep running, but cannot be
// rebooted.
func (c *CPI) DeleteStemcell(ctx context.Context, cid string) error {
	if !validCID(kindStemcell, cid) {
		return nil
	}
	gone, err := c.hide(c.path(kindStemcell, cid))
	if err == nil && gone != "" {
		err = os.RemoveAll(gone)
	}
	if err != nil {
		return fmt.Errorf("delete stemcell %s: %w", cid, err)
	}
	return nil
}

// extractImage unpacks the gzipped tarball at src into dst through an
// os.Root, so no entry, however named and whatever links came before it,
// can write outside dst.
func extractImage(ctx context.Context, src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("not a gzipped tarball: %w", err)
	}
	root, err := os.OpenRoot(dst)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(zr)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read tarball: %w", err)
		}
		name, err := entryName(hdr.Name)
		if err != nil {
			return err
		}
		if name == "" {
			continue // the archive's root directory itself
		}
		mode := fs.FileMode(hdr.Mode).Perm()
		if dir := path.Dir(name); dir != "." {
			if err := root.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("entry %q: %w", hdr.Name, err)
			}
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, mode|0o700); err != nil {
				return fmt.Errorf("entry %q: %w", hdr.Name, err)
			}
		case tar.TypeReg:
			out, err := root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
			if err != nil {
				return fmt.Errorf("entry %q: %w", hdr.Name, err)
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("entry %q: %w", hdr.Name, err)
			}
		case tar.TypeSymlink:
			if err := linkInside(name, hdr.Linkname); err != nil {
				return fmt.Errorf("entry %q: %w", hdr.Name, err)
			}
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return fmt.Errorf("entry %q: %w", hdr.Name, err)
			}
		case tar.TypeLink:
			target, err := entryName(hdr.Linkname)
			if err != nil || target == "" {
				return fmt.Errorf("entry %q: hard link target %q is outside the image", hdr.Name, hdr.Linkname)
			}
			if err := root.Link(target, name); err != nil {
				return fmt.Errorf("entry %q: %w", hdr.Name, err)
			}
		default:
			return fmt.Errorf("entry %q: unsupported type %q (only files, directories and links)", hdr.Name, hdr.Typeflag)
		}
	}
	return checkLinks(dst)
}

// entryName cleans an archive entry name, rejecting absolute names and names
// that climb out of the archive.
func entryName(name string) (string, error) {
	clean := path.Clean(strings.TrimPrefix(name, "./"))
	if clean == "." {
		return "", nil
	}
	if path.IsAbs(name) || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("entry %q escapes the image", name)
	}
	return clean, nil
}

// linkInside rejects a symbolic link whose target, read from the link's own
// directory, is absolute or leaves the image.
func linkInside(name, target string) error {
	if target == "" || path.IsAbs(target) {
		return fmt.Errorf("link target %q is outside the image", target)
	}
	if _, err := entryName(path.Join(path.Dir(name), target)); err != nil {
		return fmt.Errorf("link target %q is outside the image", target)
	}
	return nil
}

// checkLinks resolves every symbolic link under dir and fails if one, through
// a chain of links, leads outside dir or nowhere.
func checkLinks(dir string) error {
	base, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink == 0 {
			return err
		}
		resolved, err := filepath.EvalSymlinks(p)
		if errors.Is(err, fs.ErrNotExist) {
			// Where a dangling link leads cannot be checked.
			return fmt.Errorf("link %q leads nowhere", strings.TrimPrefix(p, dir+"/"))
		}
		if err != nil {
			return fmt.Errorf("link %s: %w", p, err)
		}
		if rel, err := filepath.Rel(base, resolved); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			return fmt.Errorf("link %q leads outside the image", strings.TrimPrefix(p, dir+"/"))
		}
		return nil
	})
}
