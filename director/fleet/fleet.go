// Package fleet holds the operations that span deployments and the
// director's stores: rolling a stemcell through the deployments that use
// its OS (UpgradeStemcell), and deleting what nothing uses (DeleteRelease,
// DeleteStemcell, CleanUp). Each runs as the body of a task; a rollout
// deploys each deployment through a deploy task of its own, so that it
// queues behind the deployment's other tasks and shows in `director tasks`.
package fleet

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/director/apiv1"
	"github.com/compleat/compleat/director/blobstore"
	"github.com/compleat/compleat/director/store"
	"github.com/compleat/compleat/director/task"
)

// CPIs is what deleting stemcells needs of the CPI manager.
type CPIs interface {
	Names() []string
	Get(ctx context.Context, name string) (cpi.CPI, error)
}

// Deps are what the fleet operations work on; all are required.
type Deps struct {
	Store *store.Store
	Tasks *task.Manager
	CPIs  CPIs
	Blobs blobstore.Store
	// DeleteDisk deletes an orphaned disk in its CPI once its tags show it
	// is this director's (the API's disk deleter).
	DeleteDisk func(ctx context.Context, cpiName, cid string) error
	Logger     *slog.Logger
	// SubmitDeploy submits the deploy tasks of a stemcell rollout.
	SubmitDeploy SubmitDeploy
	// Now is the clock of clean-up's age limits (default time.Now).
	Now func() time.Time
}

// Fleet runs the fleet operations.
type Fleet struct{ d Deps }

// New returns the fleet operations over d.
func New(d Deps) *Fleet {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	return &Fleet{d: d}
}

// Usage is apiv1.Usage: who uses a release or stemcell version.
type Usage = apiv1.Usage

// StemcellUsage is who uses stemcell "name/version", from the deployment
// records.
func StemcellUsage(ds []store.Deployment, nameVersion string) Usage {
	return usage(ds, nameVersion, func(d store.Deployment) ([]string, []string) { return d.Stemcells, d.PendingStemcells })
}

// ReleaseUsage is who uses release "name/version".
func ReleaseUsage(ds []store.Deployment, nameVersion string) Usage {
	return usage(ds, nameVersion, func(d store.Deployment) ([]string, []string) { return d.Releases, d.PendingReleases })
}

func usage(ds []store.Deployment, nv string, of func(store.Deployment) (deployed, pending []string)) Usage {
	u := Usage{Deployments: []string{}}
	for _, d := range ds {
		deployed, pending := of(d)
		switch {
		case slices.Contains(deployed, nv):
			u.Deployments = append(u.Deployments, d.Name)
		case slices.Contains(pending, nv):
			u.Pending = append(u.Pending, d.Name)
		}
	}
	return u
}

// errInUse is the error of deleting what a deployment uses.
func errInUse(what string, u Usage) error {
	return fmt.Errorf("%s is in use by %s: %w", what, u, store.ErrConflict)
}

func sortByUpload(ss []store.Stemcell) {
	slices.SortStableFunc(ss, func(a, b store.Stemcell) int { return a.UploadedAt.Compare(b.UploadedAt) })
}
