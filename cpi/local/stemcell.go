package local

import (
	"context"
	"errors"
	"fmt"
	"github.com/compleat/compleat/cpi/tarball"
	"io/fs"
	"os"
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

// extractImage unpacks the gzipped tarball at src into dst with the
// project's one safe extractor (every write through an os.Root at dst), then
// insists that every link in the image resolves to something inside it.
func extractImage(ctx context.Context, src, dst string) error {
	if err := tarball.ExtractFile(ctx, src, dst, tarball.Limits{}); err != nil {
		return err
	}
	return checkLinks(dst)
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
