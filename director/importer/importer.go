// Package importer turns uploaded release and stemcell tarballs into
// records, blobs and CPI stemcells, inside the upload's task.
package importer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/director/blobstore"
	"github.com/compleat/compleat/director/compile"
	"github.com/compleat/compleat/director/release"
	"github.com/compleat/compleat/director/stemcell"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

// CPIs is what stemcell uploads need of the CPI manager.
type CPIs interface {
	Names() []string
	Info(ctx context.Context, name string) (cpi.Info, error)
	Get(ctx context.Context, name string) (cpi.CPI, error)
}

// Uploads imports release and stemcell tarballs: verified by the release and
// stemcell packages, blobs into the blobstore (packages and jobs already
// stored, by fingerprint, are not stored again), stemcells into every CPI
// that takes their format, records into the store.
type Uploads struct {
	Store   *store.Store
	Blobs   blobstore.Store
	CPIs    CPIs
	TempDir string
	Logger  *slog.Logger
}

// ImportRelease verifies and stores a release tarball. Uploading a release
// version that is already stored succeeds without changing anything.
func (u *Uploads) ImportRelease(ctx context.Context, rep *task.Reporter, tarball string) (string, error) {
	rel, existed, err := u.importRelease(ctx, rep, tarball)
	switch {
	case err != nil:
		return "", err
	case existed:
		return fmt.Sprintf("release %s/%s was already uploaded", rel.Name, rel.Version), nil
	}
	return fmt.Sprintf("release %s/%s uploaded (%d jobs, %d packages)", rel.Name, rel.Version, len(rel.Jobs), len(rel.Packages)), nil
}

func (u *Uploads) importRelease(ctx context.Context, rep *task.Reporter, tarball string) (rel store.Release, existed bool, err error) {
	extract := rep.Stage("Extracting release", 1)
	var a *release.Archive
	err = extract.Run("verifying tarball", func() error {
		var err error
		a, err = release.OpenWith(tarball, release.OpenOptions{TempDir: u.TempDir})
		return err
	})
	if err != nil {
		return rel, false, task.BadInput(err)
	}
	defer a.Close()
	m := a.Manifest
	rel = store.Release{Name: m.Name, Version: m.Version, CommitHash: m.CommitHash}
	err = u.Store.View(func(tx *store.Tx) error {
		_, err := tx.Release(m.Name, m.Version)
		return err
	})
	if err == nil {
		return rel, true, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return rel, false, err
	}

	pkgs := rep.Stage("Uploading packages", len(a.Packages))
	for _, p := range a.Packages {
		if err := task.Checkpoint(ctx); err != nil {
			return rel, false, err
		}
		var id, sum string
		err := pkgs.Run(p.Name+"/"+short(p.Fingerprint), func() error {
			var err error
			id, sum, err = u.storeBlob(ctx, p.Path, p.Fingerprint, (*store.Tx).PackageBlob)
			return err
		})
		if err != nil {
			return rel, false, fmt.Errorf("package %s: %w", p.Name, err)
		}
		rel.Packages = append(rel.Packages, store.ReleasePackage{Name: p.Name, Fingerprint: p.Fingerprint, SHA256: sum, BlobID: id, Dependencies: p.Dependencies})
	}
	if len(a.CompiledPackages) > 0 {
		compiled, err := u.importCompiled(ctx, rep, a)
		if err != nil {
			return rel, false, err
		}
		rel.Packages = append(rel.Packages, compiled...)
	}
	jobs := rep.Stage("Uploading jobs", len(a.Jobs))
	for _, j := range a.Jobs {
		if err := task.Checkpoint(ctx); err != nil {
			return rel, false, err
		}
		var id, sum string
		err := jobs.Run(j.Name+"/"+short(j.Fingerprint), func() error {
			var err error
			id, sum, err = u.storeBlob(ctx, j.Path, j.Fingerprint, (*store.Tx).JobBlob)
			return err
		})
		if err != nil {
			return rel, false, fmt.Errorf("job %s: %w", j.Name, err)
		}
		var spec json.RawMessage
		if j.Job != nil && j.Job.Spec != nil {
			if spec, err = json.Marshal(j.Job.Spec); err != nil {
				return rel, false, fmt.Errorf("job %s spec: %w", j.Name, err)
			}
		}
		rel.Jobs = append(rel.Jobs, store.ReleaseJob{Name: j.Name, Fingerprint: j.Fingerprint, SHA256: sum, BlobID: id, Packages: j.Packages, Spec: spec})
	}
	err = rep.Stage("Creating new release", 1).Run(m.Name+"/"+m.Version, func() error {
		return u.Store.Update(func(tx *store.Tx) error { return tx.PutRelease(rel) })
	})
	return rel, false, err
}

// storeBlob stores a job or package archive unless a blob with its
// fingerprint is already stored.
func (u *Uploads) storeBlob(ctx context.Context, path, fingerprint string, lookup func(*store.Tx, string) (store.PackageBlob, error)) (id, sum string, err error) {
	var known store.PackageBlob
	err = u.Store.View(func(tx *store.Tx) error {
		var err error
		known, err = lookup(tx, fingerprint)
		return err
	})
	if err == nil {
		ok, err := u.Blobs.Exists(ctx, known.BlobID)
		if err == nil && ok {
			return known.BlobID, known.SHA256, nil
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	b, err := u.Blobs.Put(ctx, f)
	if err != nil {
		return "", "", fmt.Errorf("store blob: %w", err)
	}
	return b.ID, b.SHA256, nil
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// ImportStemcell verifies a stemcell tarball and creates it in every CPI
// whose Info lists one of its formats, recording the cid per CPI. A CPI that
// already has this stemcell is skipped.
func (u *Uploads) ImportStemcell(ctx context.Context, rep *task.Reporter, tarball string) (string, error) {
	rec, created, err := u.importStemcell(ctx, rep, tarball)
	if err != nil {
		return "", err
	}
	if created == 0 {
		return fmt.Sprintf("stemcell %s/%s was already in every cpi that takes it", rec.Name, rec.Version), nil
	}
	return fmt.Sprintf("stemcell %s/%s uploaded to %d cpi(s)", rec.Name, rec.Version, created), nil
}

func (u *Uploads) importStemcell(ctx context.Context, rep *task.Reporter, tarball string) (rec store.Stemcell, created int, err error) {
	dir, err := os.MkdirTemp(u.TempDir, "stemcell-*")
	if err != nil {
		return rec, created, err
	}
	defer os.RemoveAll(dir)
	var sc *stemcell.Stemcell
	err = rep.Stage("Extracting stemcell", 1).Run("verifying tarball", func() error {
		var err error
		sc, err = stemcell.Open(tarball, dir)
		return err
	})
	if err != nil {
		return rec, created, task.BadInput(err)
	}
	m := sc.Manifest
	props, err := json.Marshal(m.CloudProperties)
	if err != nil {
		return rec, created, fmt.Errorf("stemcell cloud_properties: %w", err)
	}
	if len(m.CloudProperties) == 0 {
		props = json.RawMessage(`{}`)
	}
	rec = store.Stemcell{Name: m.Name, Version: m.Version, OS: m.OperatingSystem, APIVersion: m.APIVersion,
		Formats: m.StemcellFormats, CloudProperties: props, SHA256: m.SHA256, CIDs: map[string]string{}}
	err = u.Store.View(func(tx *store.Tx) error {
		old, err := tx.Stemcell(m.Name, m.Version)
		if err == nil {
			rec.CIDs = old.CIDs
			rec.UploadedAt = old.UploadedAt
		}
		return nil
	})
	if err != nil {
		return rec, created, err
	}
	names := u.CPIs.Names()
	stage := rep.Stage("Uploading stemcell "+m.Name+"/"+m.Version, len(names))
	supported := 0
	for _, name := range names {
		if err := task.Checkpoint(ctx); err != nil {
			return rec, created, err
		}
		info, err := u.CPIs.Info(ctx, name)
		if err != nil {
			return rec, created, err
		}
		if !slices.ContainsFunc(info.StemcellFormats, m.HasFormat) {
			u.Logger.Info("cpi does not take this stemcell's formats", "cpi", name, "formats", m.StemcellFormats)
			continue
		}
		supported++
		if rec.CIDs[name] != "" {
			continue
		}
		c, err := u.CPIs.Get(ctx, name)
		if err != nil {
			return rec, created, err
		}
		err = stage.Run("cpi "+name, func() error {
			cid, err := c.CreateStemcell(ctx, cpi.CreateStemcellRequest{ImagePath: sc.ImagePath, CloudProperties: props})
			if err != nil {
				return fmt.Errorf("create stemcell in cpi %s: %w", name, err)
			}
			rec.CIDs[name] = cid
			created++
			return nil
		})
		if err != nil {
			return rec, created, err
		}
		// Record each cid at once: a later failure must not forget it.
		if err := u.Store.Update(func(tx *store.Tx) error { return tx.PutStemcell(rec) }); err != nil {
			return rec, created, err
		}
	}
	if supported == 0 {
		return rec, created, task.BadInput(fmt.Errorf("no configured cpi (%v) takes stemcell formats %v", names, m.StemcellFormats))
	}
	return rec, created, u.Store.Update(func(tx *store.Tx) error { return tx.PutStemcell(rec) })
}

// importCompiled stores a compiled release's packages: each blob is the
// package's blob (what the release names) and, under the compile cache key
// for the stemcell it was compiled on, its compiled form, so that a deploy
// on that stemcell compiles nothing. On another stemcell the package would
// have to be compiled from a source it does not have: the deploy fails at
// compilation naming the package.
func (u *Uploads) importCompiled(ctx context.Context, rep *task.Reporter, a *release.Archive) ([]store.ReleasePackage, error) {
	byName := map[string]release.CompiledPackageEntry{}
	for _, p := range a.CompiledPackages {
		byName[p.Name] = p.CompiledPackageEntry
	}
	var transitive func(name string, seen map[string]bool) []compile.Package
	transitive = func(name string, seen map[string]bool) []compile.Package {
		var out []compile.Package
		for _, d := range byName[name].Dependencies {
			if seen[d] {
				continue
			}
			seen[d] = true
			out = append(out, compile.Package{Name: d, Fingerprint: byName[d].Fingerprint})
			out = append(out, transitive(d, seen)...)
		}
		return out
	}
	var out []store.ReleasePackage
	stage := rep.Stage("Uploading compiled packages", len(a.CompiledPackages))
	for _, p := range a.CompiledPackages {
		if err := task.Checkpoint(ctx); err != nil {
			return nil, err
		}
		var id, sum string
		err := stage.Run(p.Name+"/"+short(p.Fingerprint)+" for "+p.Stemcell, func() error {
			var err error
			id, sum, err = u.storeBlob(ctx, p.Path, p.Fingerprint, (*store.Tx).PackageBlob)
			if err != nil {
				return err
			}
			osName, version, _ := strings.Cut(p.Stemcell, "/")
			key := compile.CacheKey(compile.Package{Name: p.Name, Fingerprint: p.Fingerprint}, transitive(p.Name, map[string]bool{}), compile.Stemcell{OS: osName, Version: version})
			return u.Store.Update(func(tx *store.Tx) error {
				return tx.PutCompiledPackage(store.CompiledPackage{Key: key, Name: p.Name, Fingerprint: p.Fingerprint, Stemcell: p.Stemcell, BlobID: id, SHA256: sum})
			})
		})
		if err != nil {
			return nil, fmt.Errorf("compiled package %s: %w", p.Name, err)
		}
		out = append(out, store.ReleasePackage{Name: p.Name, Fingerprint: p.Fingerprint, SHA256: sum, BlobID: id, Dependencies: p.Dependencies})
	}
	return out, nil
}
