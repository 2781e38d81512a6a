package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

// DeleteStemcell deletes stemcell name/version from every CPI that has it,
// then its compiled packages and its record. It refuses while a deployment
// uses it (deployed, pending, or a VM made from it). The record is marked
// deleting first, so that no deploy picks the stemcell meanwhile and a
// delete cut short is finished by the next.
func (f *Fleet) DeleteStemcell(ctx context.Context, r *task.Reporter, name, version string) (string, error) {
	n, err := f.deleteStemcells(ctx, r, []string{name + "/" + version})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("Deleted stemcell %s/%s (%d compiled packages).", name, version, n), nil
}

// deleteStemcells deletes the stemcells ("name/version"), returning how
// many compiled packages went with them.
func (f *Fleet) deleteStemcells(ctx context.Context, r *task.Reporter, nvs []string) (int, error) {
	var marked []store.Stemcell
	err := f.d.Store.Update(func(tx *store.Tx) error {
		ds, err := tx.Deployments()
		if err != nil {
			return err
		}
		vms, err := tx.VMs("")
		if err != nil {
			return err
		}
		for _, nv := range nvs {
			name, version, _ := strings.Cut(nv, "/")
			sc, err := tx.Stemcell(name, version)
			if err != nil {
				return task.BadInput(err)
			}
			u := StemcellUsage(ds, nv)
			for _, vm := range vms {
				for _, cid := range sc.CIDs {
					if vm.Stemcell == cid && cid != "" && !slices.Contains(u.Deployments, vm.Deployment) && !slices.Contains(u.Pending, vm.Deployment) {
						u.Pending = append(u.Pending, vm.Deployment)
					}
				}
			}
			if u.InUse() {
				return errInUse("stemcell "+nv, u)
			}
			sc.Deleting = true
			if err := tx.PutStemcell(sc); err != nil {
				return err
			}
			marked = append(marked, sc)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	compiled := 0
	for _, sc := range marked {
		nv := sc.Name + "/" + sc.Version
		stage := r.Stage("Deleting stemcell "+nv, len(sc.CIDs)+1)
		for _, cpiName := range sortedKeys(sc.CIDs) {
			cid := sc.CIDs[cpiName]
			err := stage.Run(cpiName+": "+cid, func() error {
				if !slices.Contains(f.d.CPIs.Names(), cpiName) {
					f.d.Logger.Warn("stemcell's cpi is no longer configured: its copy there is left", "stemcell", nv, "cpi", cpiName, "cid", cid)
					return nil
				}
				c, err := f.d.CPIs.Get(ctx, cpiName)
				if err != nil {
					return err
				}
				if err := c.DeleteStemcell(ctx, cid); err != nil && !errors.Is(err, cpi.ErrStemcellNotFound) {
					return fmt.Errorf("delete stemcell %s in cpi %s: %w", cid, cpiName, err)
				}
				return nil
			})
			if err != nil {
				return compiled, err
			}
		}
		var blobs []string
		err := stage.Run("compiled packages and record", func() error {
			err := f.d.Store.Update(func(tx *store.Tx) error {
				cps, err := tx.CompiledPackages()
				if err != nil {
					return err
				}
				for _, cp := range cps {
					if cp.Stemcell == sc.OS+"/"+sc.Version {
						if err := tx.DeleteCompiledPackage(cp.Key); err != nil {
							return err
						}
						blobs = append(blobs, cp.BlobID)
					}
				}
				return tx.DeleteStemcell(sc.Name, sc.Version)
			})
			if err != nil {
				return err
			}
			compiled += len(blobs)
			return f.deleteBlobs(ctx, blobs)
		})
		if err != nil {
			return compiled, err
		}
	}
	return compiled, nil
}

// DeleteRelease deletes release name/version, or every version of it when
// version is empty, refusing while a deployment uses one. The jobs' and
// packages' blobs no remaining release shares go with it, and so do the
// packages compiled from them.
func (f *Fleet) DeleteRelease(ctx context.Context, r *task.Reporter, name, version string) (string, error) {
	var nvs []string
	err := f.d.Store.View(func(tx *store.Tx) error {
		rs, err := tx.Releases()
		for _, rel := range rs {
			if rel.Name == name && (version == "" || rel.Version == version) {
				nvs = append(nvs, rel.Name+"/"+rel.Version)
			}
		}
		return err
	})
	if err != nil {
		return "", err
	}
	if len(nvs) == 0 {
		what := name
		if version != "" {
			what += "/" + version
		}
		return "", task.BadInput(fmt.Errorf("release %s: %w", what, store.ErrNotFound))
	}
	n, err := f.deleteReleases(ctx, r, nvs)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("Deleted release %s (%d blobs).", strings.Join(nvs, ", "), n), nil
}

// deleteReleases deletes the releases ("name/version") and the blobs only
// they used, returning how many blobs were deleted.
func (f *Fleet) deleteReleases(ctx context.Context, r *task.Reporter, nvs []string) (int, error) {
	var blobs []string
	err := r.Stage("Deleting releases", 1).Run(strings.Join(nvs, ", "), func() error {
		return f.d.Store.Update(func(tx *store.Tx) error {
			ds, err := tx.Deployments()
			if err != nil {
				return err
			}
			for _, nv := range nvs {
				if u := ReleaseUsage(ds, nv); u.InUse() {
					return errInUse("release "+nv, u)
				}
				name, version, _ := strings.Cut(nv, "/")
				if err := tx.DeleteRelease(name, version); err != nil {
					return err
				}
			}
			// What the remaining releases still use stays.
			rest, err := tx.Releases()
			if err != nil {
				return err
			}
			keepPkg, keepJob := map[string]bool{}, map[string]bool{}
			for _, rel := range rest {
				for _, p := range rel.Packages {
					keepPkg[p.Fingerprint] = true
				}
				for _, j := range rel.Jobs {
					keepJob[j.Fingerprint] = true
				}
			}
			gone, err := goneBlobs(tx, keepPkg, keepJob)
			if err != nil {
				return err
			}
			blobs = gone
			cps, err := tx.CompiledPackages()
			if err != nil {
				return err
			}
			for _, cp := range cps {
				if !keepPkg[cp.Fingerprint] {
					if err := tx.DeleteCompiledPackage(cp.Key); err != nil {
						return err
					}
					blobs = append(blobs, cp.BlobID)
				}
			}
			return nil
		})
	})
	if err != nil {
		return 0, err
	}
	return len(blobs), f.deleteBlobs(ctx, blobs)
}

// goneBlobs drops from the de-duplication index every job and package no
// remaining release has, and returns their blob ids.
func goneBlobs(tx *store.Tx, keepPkg, keepJob map[string]bool) ([]string, error) {
	var out []string
	pkgs, err := tx.PackageBlobs()
	if err != nil {
		return nil, err
	}
	for _, p := range pkgs {
		if !keepPkg[p.Fingerprint] {
			if err := tx.DeletePackageBlob(p.Fingerprint); err != nil {
				return nil, err
			}
			out = append(out, p.BlobID)
		}
	}
	jobs, err := tx.JobBlobs()
	if err != nil {
		return nil, err
	}
	for _, j := range jobs {
		if !keepJob[j.Fingerprint] {
			if err := tx.DeleteJobBlob(j.Fingerprint); err != nil {
				return nil, err
			}
			out = append(out, j.BlobID)
		}
	}
	return out, nil
}

// deleteBlobs deletes blobs whose records are gone; a failure leaves the
// rest for clean-up's sweep of unreferenced blobs.
func (f *Fleet) deleteBlobs(ctx context.Context, ids []string) error {
	var errs []error
	for _, id := range ids {
		if id == "" {
			continue
		}
		if err := f.d.Blobs.Delete(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("delete blob %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
