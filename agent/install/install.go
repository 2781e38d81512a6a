// Package install puts the jobs and packages of an apply spec into the VM's
// tree (see package layout). Each version is extracted once into its own
// directory under data/ and the jobs/<name> and packages/<name> symlinks
// are switched to it, so an apply never modifies files a running process
// uses, and the previous versions stay until the next apply has succeeded.
//
// Every blob is fetched and verified before anything is installed: a blob
// whose sha256 does not match fails the apply with the tree untouched.
package install

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/compleat/compleat/agent/applyspec"
	"github.com/compleat/compleat/agent/layout"
	"github.com/compleat/compleat/cpi/tarball"
)

// Fetcher returns the local path of a verified blob.
type Fetcher interface {
	Fetch(ctx context.Context, b applyspec.Blob) (string, error)
}

// Installer installs specs into a layout.
type Installer struct {
	Layout layout.Layout
	Blobs  Fetcher
	Logger *slog.Logger
}

const specFile = "spec.json"

// Prepare fetches and verifies every blob of spec without installing.
func (in *Installer) Prepare(ctx context.Context, spec applyspec.Spec) error {
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("apply spec: %w", err)
	}
	_, err := in.fetchAll(ctx, spec)
	return err
}

// Apply installs spec: fetch and verify every blob, extract new versions,
// switch the symlinks, remove jobs and packages the spec no longer names,
// record the spec, and delete versions neither this spec nor the previous
// one uses.
func (in *Installer) Apply(ctx context.Context, spec applyspec.Spec) error {
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("apply spec: %w", err)
	}
	prev, err := in.Current()
	if err != nil {
		return err
	}
	paths, err := in.fetchAll(ctx, spec)
	if err != nil {
		return err
	}
	for _, p := range spec.Packages {
		if err := in.extract(ctx, paths[p.Blob.SHA256], in.Layout.PackageVersion(p.Name, p.Version)); err != nil {
			return fmt.Errorf("install package %s/%s: %w", p.Name, p.Version, err)
		}
	}
	for _, j := range spec.Jobs {
		if err := in.extract(ctx, paths[j.Blob.SHA256], in.Layout.JobVersion(j.Name, j.Blob.SHA256)); err != nil {
			return fmt.Errorf("install job %s: %w", j.Name, err)
		}
	}
	for _, p := range spec.Packages {
		if err := relink(in.Layout.PackageVersion(p.Name, p.Version), in.Layout.Package(p.Name)); err != nil {
			return fmt.Errorf("link package %s: %w", p.Name, err)
		}
	}
	for _, j := range spec.Jobs {
		if err := relink(in.Layout.JobVersion(j.Name, j.Blob.SHA256), in.Layout.Job(j.Name)); err != nil {
			return fmt.Errorf("link job %s: %w", j.Name, err)
		}
	}
	if err := in.unlinkOthers(spec); err != nil {
		return err
	}
	if err := in.record(spec); err != nil {
		return err
	}
	in.collect(spec, prev)
	in.forget(paths)
	return nil
}

// remover is a blob cache that can drop entries.
type remover interface {
	Remove(sum string) error
}

// forget drops installed blobs from the cache: their content now lives in
// the versions' directories.
func (in *Installer) forget(paths map[string]string) {
	r, ok := in.Blobs.(remover)
	if !ok {
		return
	}
	for sum := range paths {
		if err := r.Remove(sum); err != nil && in.Logger != nil {
			in.Logger.Warn("drop installed blob from the cache", "sha256", sum, "err", err)
		}
	}
}

// InstallPackage installs one compiled package and links it (compilation
// installs dependencies this way).
func (in *Installer) InstallPackage(ctx context.Context, p applyspec.Package) error {
	path, err := in.Blobs.Fetch(ctx, p.Blob)
	if err != nil {
		return fmt.Errorf("package %s: %w", p.Name, err)
	}
	dir := in.Layout.PackageVersion(p.Name, p.Version)
	if err := in.extract(ctx, path, dir); err != nil {
		return fmt.Errorf("install package %s/%s: %w", p.Name, p.Version, err)
	}
	if err := relink(dir, in.Layout.Package(p.Name)); err != nil {
		return fmt.Errorf("link package %s: %w", p.Name, err)
	}
	return nil
}

// Current is the last applied spec (nil before the first apply).
func (in *Installer) Current() (*applyspec.Spec, error) {
	b, err := os.ReadFile(filepath.Join(in.Layout.Bosh(), specFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read applied spec: %w", err)
	}
	var s applyspec.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("applied spec %s: %w", filepath.Join(in.Layout.Bosh(), specFile), err)
	}
	return &s, nil
}

func (in *Installer) fetchAll(ctx context.Context, spec applyspec.Spec) (map[string]string, error) {
	paths := map[string]string{}
	for _, p := range spec.Packages {
		path, err := in.Blobs.Fetch(ctx, p.Blob)
		if err != nil {
			return nil, fmt.Errorf("package %s: %w", p.Name, err)
		}
		paths[p.Blob.SHA256] = path
	}
	for _, j := range spec.Jobs {
		path, err := in.Blobs.Fetch(ctx, j.Blob)
		if err != nil {
			return nil, fmt.Errorf("job %s: %w", j.Name, err)
		}
		paths[j.Blob.SHA256] = path
	}
	return paths, nil
}

// extract unpacks blob into dir unless dir exists, through a temporary
// sibling renamed into place.
func (in *Installer) extract(ctx context.Context, blob, dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".extract-*")
	if err != nil {
		return err
	}
	if err := tarball.ExtractFile(ctx, blob, tmp, tarball.Limits{}); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	return nil
}

// relink points link at target, atomically replacing an existing link.
func relink(target, link string) error {
	if cur, err := os.Readlink(link); err == nil && cur == target {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return err
	}
	tmp := link + ".new"
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	if fi, err := os.Lstat(link); err == nil && fi.IsDir() {
		// A real directory where a link belongs (never made by us): move it
		// aside rather than delete someone's data.
		if err := os.Rename(link, link+".replaced"); err != nil {
			os.Remove(tmp)
			return err
		}
	}
	return os.Rename(tmp, link)
}

func (in *Installer) unlinkOthers(spec applyspec.Spec) error {
	keep := map[string]bool{}
	for _, j := range spec.Jobs {
		keep[in.Layout.Job(j.Name)] = true
	}
	for _, p := range spec.Packages {
		keep[in.Layout.Package(p.Name)] = true
	}
	for _, dir := range []string{in.Layout.Jobs(), in.Layout.Packages()} {
		entries, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		for _, e := range entries {
			p := filepath.Join(dir, e.Name())
			if keep[p] || e.Type()&os.ModeSymlink == 0 {
				continue
			}
			if err := os.Remove(p); err != nil {
				return fmt.Errorf("remove %s: %w", p, err)
			}
		}
	}
	return nil
}

func (in *Installer) record(spec applyspec.Spec) error {
	b, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return fmt.Errorf("encode applied spec: %w", err)
	}
	p := filepath.Join(in.Layout.Bosh(), specFile)
	if err := os.MkdirAll(in.Layout.Bosh(), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(p+".new", b, 0o600); err != nil {
		return fmt.Errorf("record applied spec: %w", err)
	}
	if err := os.Rename(p+".new", p); err != nil {
		return fmt.Errorf("record applied spec: %w", err)
	}
	return nil
}

// collect removes extracted versions that neither spec nor prev uses. It
// only logs failures: garbage left behind is harmless.
func (in *Installer) collect(spec applyspec.Spec, prev *applyspec.Spec) {
	keep := map[string]bool{}
	for _, s := range []*applyspec.Spec{&spec, prev} {
		if s == nil {
			continue
		}
		for _, j := range s.Jobs {
			keep[in.Layout.JobVersion(j.Name, j.Blob.SHA256)] = true
		}
		for _, p := range s.Packages {
			keep[in.Layout.PackageVersion(p.Name, p.Version)] = true
		}
	}
	for _, kind := range []string{"jobs", "packages"} {
		root := filepath.Join(in.Layout.Data(), kind)
		names, _ := os.ReadDir(root)
		for _, n := range names {
			versions, _ := os.ReadDir(filepath.Join(root, n.Name()))
			for _, v := range versions {
				p := filepath.Join(root, n.Name(), v.Name())
				if keep[p] {
					continue
				}
				if err := os.RemoveAll(p); err != nil && in.Logger != nil {
					in.Logger.Warn("remove unused version", "path", p, "err", err)
				}
			}
		}
	}
}
