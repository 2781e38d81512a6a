package store

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"
)

// Release is an uploaded release: its jobs and packages with fingerprints and
// the blobstore ids of their archives.
type Release struct {
	Name       string           `json:"name"`
	Version    string           `json:"version"`
	CommitHash string           `json:"commit_hash,omitempty"`
	Jobs       []ReleaseJob     `json:"jobs"`
	Packages   []ReleasePackage `json:"packages"`
	UploadedAt time.Time        `json:"uploaded_at"`
}

// ReleaseJob is one job of a release.
type ReleaseJob struct {
	Name        string   `json:"name"`
	Fingerprint string   `json:"fingerprint"`
	SHA256      string   `json:"sha256"`
	BlobID      string   `json:"blob_id"`
	Packages    []string `json:"packages,omitempty"`
	// Spec is the job's spec as the release package parsed it (templates,
	// properties, links), kept so that planning needs no blob fetch.
	Spec json.RawMessage `json:"spec,omitempty"`
}

// ReleasePackage is one package of a release.
type ReleasePackage struct {
	Name         string   `json:"name"`
	Fingerprint  string   `json:"fingerprint"`
	SHA256       string   `json:"sha256"`
	BlobID       string   `json:"blob_id"`
	Dependencies []string `json:"dependencies,omitempty"`
}

// PackageBlob is the de-duplication index entry for a job or package
// fingerprint: the blob that already holds it.
type PackageBlob struct {
	Fingerprint string `json:"fingerprint"`
	BlobID      string `json:"blob_id"`
	SHA256      string `json:"sha256"`
}

func releaseKey(name, version string) []byte { return []byte(name + "/" + version) }

// PutRelease records a release and indexes its jobs' and packages' blobs by
// fingerprint. It refuses to replace an existing name/version (ErrExists).
func (t *Tx) PutRelease(r Release) error {
	k := releaseKey(r.Name, r.Version)
	if ok, err := t.exists(bucketReleases, k); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("release %s/%s: %w", r.Name, r.Version, ErrExists)
	}
	if r.UploadedAt.IsZero() {
		r.UploadedAt = t.now().UTC()
	}
	for _, p := range r.Packages {
		if err := t.put(bucketPackages, []byte(p.Fingerprint), PackageBlob{p.Fingerprint, p.BlobID, p.SHA256}); err != nil {
			return err
		}
	}
	for _, j := range r.Jobs {
		if err := t.put(bucketJobs, []byte(j.Fingerprint), PackageBlob{j.Fingerprint, j.BlobID, j.SHA256}); err != nil {
			return err
		}
	}
	return t.put(bucketReleases, k, r)
}

// Release returns one release.
func (t *Tx) Release(name, version string) (Release, error) {
	var r Release
	if err := t.get(bucketReleases, releaseKey(name, version), &r); err != nil {
		return r, fmt.Errorf("release %s/%s: %w", name, version, err)
	}
	return r, nil
}

// Releases lists every release, by name then upload order of versions.
func (t *Tx) Releases() ([]Release, error) {
	rs, err := list[Release](t, bucketReleases, "")
	sort.SliceStable(rs, func(i, j int) bool {
		if rs[i].Name != rs[j].Name {
			return rs[i].Name < rs[j].Name
		}
		return rs[i].UploadedAt.Before(rs[j].UploadedAt)
	})
	return rs, err
}

// PackageBlobs lists the package de-duplication index.
func (t *Tx) PackageBlobs() ([]PackageBlob, error) { return list[PackageBlob](t, bucketPackages, "") }

// JobBlobs lists the job de-duplication index.
func (t *Tx) JobBlobs() ([]PackageBlob, error) { return list[PackageBlob](t, bucketJobs, "") }

// DeletePackageBlob removes a package fingerprint from the de-duplication
// index (its blob is the caller's to delete).
func (t *Tx) DeletePackageBlob(fingerprint string) error {
	return t.del(bucketPackages, []byte(fingerprint))
}

// DeleteJobBlob removes a job fingerprint from the de-duplication index.
func (t *Tx) DeleteJobBlob(fingerprint string) error {
	return t.del(bucketJobs, []byte(fingerprint))
}

// DeleteRelease removes a release record (its blobs stay in the index; they
// may be shared with other releases).
func (t *Tx) DeleteRelease(name, version string) error {
	return t.del(bucketReleases, releaseKey(name, version))
}

// PackageBlob finds the stored blob of a package fingerprint.
func (t *Tx) PackageBlob(fingerprint string) (PackageBlob, error) {
	var p PackageBlob
	err := t.get(bucketPackages, []byte(fingerprint), &p)
	return p, err
}

// JobBlob finds the stored blob of a job fingerprint.
func (t *Tx) JobBlob(fingerprint string) (PackageBlob, error) {
	var p PackageBlob
	err := t.get(bucketJobs, []byte(fingerprint), &p)
	return p, err
}

// Stemcell is an uploaded stemcell and, per CPI, the cid its CreateStemcell
// returned.
type Stemcell struct {
	Name            string            `json:"name"`
	Version         string            `json:"version"`
	OS              string            `json:"operating_system"`
	APIVersion      int               `json:"api_version,omitempty"`
	Formats         []string          `json:"stemcell_formats,omitempty"`
	CloudProperties json.RawMessage   `json:"cloud_properties,omitempty"`
	SHA256          string            `json:"sha256,omitempty"`
	CIDs            map[string]string `json:"cids"` // CPI name -> stemcell cid
	UploadedAt      time.Time         `json:"uploaded_at"`
	// Deleting is set by delete-stemcell before it deletes the stemcell
	// from the CPIs: no deploy picks it any more, and a delete that did
	// not finish is finished by the next one.
	Deleting bool `json:"deleting,omitempty"`
}

// PutStemcell records or replaces a stemcell.
func (t *Tx) PutStemcell(s Stemcell) error {
	if s.UploadedAt.IsZero() {
		s.UploadedAt = t.now().UTC()
	}
	return t.put(bucketStemcells, releaseKey(s.Name, s.Version), s)
}

// Stemcell returns one stemcell.
func (t *Tx) Stemcell(name, version string) (Stemcell, error) {
	var s Stemcell
	if err := t.get(bucketStemcells, releaseKey(name, version), &s); err != nil {
		return s, fmt.Errorf("stemcell %s/%s: %w", name, version, err)
	}
	return s, nil
}

// Stemcells lists every stemcell.
func (t *Tx) Stemcells() ([]Stemcell, error) { return list[Stemcell](t, bucketStemcells, "") }

// DeleteStemcell removes a stemcell record.
func (t *Tx) DeleteStemcell(name, version string) error {
	return t.del(bucketStemcells, releaseKey(name, version))
}
