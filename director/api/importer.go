package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/director/blobstore"
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

var _ Importer = (*Uploads)(nil)

// ImportRelease verifies and stores a release tarball. Uploading a release
// version that is already stored succeeds without changing anything.
func (u *Uploads) ImportRelease(ctx context.Context, rep *task.Reporter, tarball string) (store.Release, error) {
	var rel store.Release
	extract := rep.Stage("Extracting release", 1)
	var a *release.Archive
	err := extract.Run("verifying tarball", func() error {
		var err error
		a, err = release.OpenWith(tarball, release.OpenOptions{TempDir: u.TempDir})
		return err
	})
	if err != nil {
		return rel, BadInput(err)
	}
	defer a.Close()
	m := a.Manifest
	rel = store.Release{Name: m.Name, Version: m.Version, CommitHash: m.CommitHash}
	err = u.Store.View(func(tx *store.Tx) error {
		_, err := tx.Release(m.Name, m.Version)
		return err
	})
	if err == nil {
		rep.Stage(fmt.Sprintf("Release %s/%s already uploaded", m.Name, m.Version), 0).Run("nothing to do", func() error { return nil })
		return rel, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return rel, err
	}

	pkgs := rep.Stage("Uploading packages", len(a.Packages))
	for _, p := range a.Packages {
		if err := task.Checkpoint(ctx); err != nil {
			return rel, err
		}
		var id, sum string
		err := pkgs.Run(p.Name+"/"+short(p.Fingerprint), func() error {
			var err error
			id, sum, err = u.storeBlob(ctx, p.Path, p.Fingerprint, (*store.Tx).PackageBlob)
			return err
		})
		if err != nil {
			return rel, fmt.Errorf("package %s: %w", p.Name, err)
		}
		rel.Packages = append(rel.Packages, store.ReleasePackage{Name: p.Name, Fingerprint: p.Fingerprint, SHA256: sum, BlobID: id, Dependencies: p.Dependencies})
	}
	jobs := rep.Stage("Uploading jobs", len(a.Jobs))
	for _, j := range a.Jobs {
		if err := task.Checkpoint(ctx); err != nil {
			return rel, err
		}
		var id, sum string
		err := jobs.Run(j.Name+"/"+short(j.Fingerprint), func() error {
			var err error
			id, sum, err = u.storeBlob(ctx, j.Path, j.Fingerprint, (*store.Tx).JobBlob)
			return err
		})
		if err != nil {
			return rel, fmt.Errorf("job %s: %w", j.Name, err)
		}
		var spec json.RawMessage
		if j.Job != nil && j.Job.Spec != nil {
			if spec, err = json.Marshal(j.Job.Spec); err != nil {
				return rel, fmt.Errorf("job %s spec: %w", j.Name, err)
			}
		}
		rel.Jobs = append(rel.Jobs, store.ReleaseJob{Name: j.Name, Fingerprint: j.Fingerprint, SHA256: sum, BlobID: id, Packages: j.Packages, Spec: spec})
	}
	err = rep.Stage("Creating new release", 1).Run(m.Name+"/"+m.Version, func() error {
		return u.Store.Update(func(tx *store.Tx) error { return tx.PutRelease(rel) })
	})
	return rel, err
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
func (u *Uploads) ImportStemcell(ctx context.Context, rep *task.Reporter, tarball string) (store.Stemcell, error) {
	var rec store.Stemcell
	dir, err := os.MkdirTemp(u.TempDir, "stemcell-*")
	if err != nil {
		return rec, err
	}
	defer os.RemoveAll(dir)
	var sc *stemcell.Stemcell
	err = rep.Stage("Extracting stemcell", 1).Run("verifying tarball", func() error {
		var err error
		sc, err = stemcell.Open(tarball, dir)
		return err
	})
	if err != nil {
		return rec, BadInput(err)
	}
	m := sc.Manifest
	props, err := json.Marshal(m.CloudProperties)
	if err != nil {
		return rec, fmt.Errorf("stemcell cloud_properties: %w", err)
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
		return rec, err
	}
	names := u.CPIs.Names()
	stage := rep.Stage("Uploading stemcell "+m.Name+"/"+m.Version, len(names))
	supported := 0
	for _, name := range names {
		if err := task.Checkpoint(ctx); err != nil {
			return rec, err
		}
		info, err := u.CPIs.Info(ctx, name)
		if err != nil {
			return rec, err
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
			return rec, err
		}
		err = stage.Run("cpi "+name, func() error {
			cid, err := c.CreateStemcell(ctx, cpi.CreateStemcellRequest{ImagePath: sc.ImagePath, CloudProperties: props})
			if err != nil {
				return fmt.Errorf("create stemcell in cpi %s: %w", name, err)
			}
			rec.CIDs[name] = cid
			return nil
		})
		if err != nil {
			return rec, err
		}
		// Record each cid at once: a later failure must not forget it.
		if err := u.Store.Update(func(tx *store.Tx) error { return tx.PutStemcell(rec) }); err != nil {
			return rec, err
		}
	}
	if supported == 0 {
		return rec, fmt.Errorf("%w: no configured cpi (%v) takes stemcell formats %v", ErrBadInput, names, m.StemcellFormats)
	}
	return rec, u.Store.Update(func(tx *store.Tx) error { return tx.PutStemcell(rec) })
}
