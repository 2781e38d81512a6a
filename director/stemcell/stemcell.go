// Package stemcell builds and verifies stemcell tarballs.
//
// A stemcell tarball (.tgz) holds stemcell.MF, a [Manifest], and image, the
// base image the CPI turns into VMs. For the local CPI (format "local-tgz")
// the image is itself a tar.gz whose root holds the executable agent; see
// [CreateLocal]. A *light* stemcell names an image that already exists in
// the cloud through its cloud_properties (an AMI per region, an Azure image
// or gallery id, a Glance image) and its image is empty; see [CreateLight].
//
// [Open] verifies a stemcell from outside (entry names, sizes, the image's
// sha256, the manifest's fields and, for local-tgz, the agent inside the
// image) and copies the image out for the director to hand to the CPI's
// CreateStemcell.
package stemcell

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"

	"go.yaml.in/yaml/v3"

	"github.com/compleat/compleat/director/yamllimit"

	"github.com/compleat/compleat/director/release/tgz"
)

// File names inside a stemcell tarball.
const (
	ManifestFile = "stemcell.MF"
	ImageFile    = "image"
)

// FormatLocal is the stemcell format of the local CPI.
const FormatLocal = "local-tgz"

// Defaults of the local stemcell.
const (
	DefaultLocalName    = "compleat-local"
	DefaultLocalOS      = "linux"
	DefaultLocalVersion = "1"
)

// Manifest is stemcell.MF.
type Manifest struct {
	Name            string   `yaml:"name" json:"name"`
	Version         string   `yaml:"version" json:"version"`
	OperatingSystem string   `yaml:"operating_system" json:"operating_system"`
	APIVersion      int      `yaml:"api_version" json:"api_version"`
	StemcellFormats []string `yaml:"stemcell_formats" json:"stemcell_formats"`
	// CloudProperties go to the CPI's CreateStemcell; a light stemcell
	// names its existing image here.
	CloudProperties map[string]any `yaml:"cloud_properties" json:"cloud_properties"`
	// SHA256 is the hex digest of the image file; empty for a light
	// stemcell.
	SHA256 string `yaml:"sha256,omitempty" json:"sha256,omitempty"`
}

var (
	nameRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	versionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}$`)
)

// Validate checks the manifest's fields; light tells whether the image is
// empty.
func (m *Manifest) Validate(light bool) error {
	switch {
	case !nameRE.MatchString(m.Name):
		return fmt.Errorf("field name: invalid stemcell name %q", m.Name)
	case !versionRE.MatchString(m.Version):
		return fmt.Errorf("field version: invalid version %q", m.Version)
	case !nameRE.MatchString(m.OperatingSystem):
		return fmt.Errorf("field operating_system: invalid operating system %q", m.OperatingSystem)
	case m.APIVersion < 0 || m.APIVersion > 3:
		return fmt.Errorf("field api_version: %d is not 0 to 3", m.APIVersion)
	case len(m.StemcellFormats) == 0:
		return fmt.Errorf("field stemcell_formats: empty")
	}
	if light && len(m.CloudProperties) == 0 {
		return fmt.Errorf("field cloud_properties: a light stemcell (empty image) must name its image in cloud_properties")
	}
	if !light && m.SHA256 != "" && !hex64(m.SHA256) {
		return fmt.Errorf("field sha256: want 64 hex digits, got %q", m.SHA256)
	}
	return nil
}

// HasFormat reports whether the stemcell declares format f.
func (m *Manifest) HasFormat(f string) bool {
	for _, x := range m.StemcellFormats {
		if x == f {
			return true
		}
	}
	return false
}

func hex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// LocalOptions tune [CreateLocal]; empty fields take the Default* values.
type LocalOptions struct {
	Name            string
	Version         string
	OperatingSystem string
	// Formats are stemcell formats besides local-tgz, for a stemcell that
	// also serves as a light stemcell of a cloud (its CloudProperties name
	// the cloud's image).
	Formats         []string
	CloudProperties map[string]any
}

// CreateLocal writes the local stemcell tarball to out: stemcell.MF (format
// local-tgz, api_version 2) and an image holding agentBinary as the
// executable "agent". The output is deterministic.
func CreateLocal(agentBinary, out string, opts LocalOptions) (*Manifest, error) {
	if opts.Name == "" {
		opts.Name = DefaultLocalName
	}
	if opts.Version == "" {
		opts.Version = DefaultLocalVersion
	}
	if opts.OperatingSystem == "" {
		opts.OperatingSystem = DefaultLocalOS
	}
	if opts.CloudProperties == nil {
		opts.CloudProperties = map[string]any{}
	}
	st, err := os.Stat(agentBinary)
	if err != nil {
		return nil, fmt.Errorf("agent binary: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("agent binary %s: not a regular file", agentBinary)
	}
	image, err := tgz.Bytes([]tgz.File{{Name: "agent", Mode: 0o755, Path: agentBinary}})
	if err != nil {
		return nil, fmt.Errorf("build image: %w", err)
	}
	sum := sha256.Sum256(image)
	m := &Manifest{
		Name:            opts.Name,
		Version:         opts.Version,
		OperatingSystem: opts.OperatingSystem,
		APIVersion:      2,
		StemcellFormats: append([]string{FormatLocal}, opts.Formats...),
		CloudProperties: opts.CloudProperties,
		SHA256:          hex.EncodeToString(sum[:]),
	}
	if err := write(out, m, image); err != nil {
		return nil, err
	}
	return m, nil
}

// CreateLight writes a light stemcell tarball to out: m (whose
// cloud_properties name the existing image) and an empty image.
func CreateLight(out string, m Manifest) error {
	m.SHA256 = ""
	return write(out, &m, []byte{})
}

func write(out string, m *Manifest, image []byte) error {
	if err := m.Validate(len(image) == 0); err != nil {
		return fmt.Errorf("stemcell.MF: %w", err)
	}
	mf, err := yaml.Marshal(m)
	if err != nil {
		return err
	}
	data, err := tgz.Bytes([]tgz.File{
		{Name: ManifestFile, Mode: 0o644, Data: mf},
		{Name: ImageFile, Mode: 0o644, Data: image},
	})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

// Stemcell is a verified stemcell.
type Stemcell struct {
	Manifest *Manifest
	// ImagePath is the image file copied out of the tarball, to pass to
	// the CPI's CreateStemcell; empty for a light stemcell.
	ImagePath string
}

// Light reports whether the stemcell names an existing image instead of
// carrying one.
func (s *Stemcell) Light() bool { return s.ImagePath == "" }

// Errors of stemcell verification.
var (
	ErrDigestMismatch = errors.New("image sha256 does not match stemcell.MF")
	ErrNoAgent        = errors.New("local stemcell image has no executable agent at its root")
)

// Open verifies the stemcell tarball file and copies its image into dir
// (which must exist) as dir/image. Errors name the offending entry or field.
func Open(file, dir string) (*Stemcell, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("open stemcell: %w", err)
	}
	defer f.Close()
	s, err := read(f, dir, tgz.DefaultLimits)
	if err != nil {
		return nil, fmt.Errorf("stemcell %s: %w", filepath.Base(file), err)
	}
	return s, nil
}

func read(r io.Reader, dir string, lim tgz.Limits) (*Stemcell, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	var mf []byte
	var imageSum string
	var imageSize int64 = -1
	err = tgz.Walk(r, lim, func(e tgz.Entry, body io.Reader) error {
		if e.Type == tar.TypeDir {
			return fmt.Errorf("entry %q: unexpected directory: want only %s and %s", e.Name, ManifestFile, ImageFile)
		}
		if e.Type != tar.TypeReg {
			return fmt.Errorf("entry %q: only regular files are allowed: %w", e.Name, tgz.ErrEntryType)
		}
		switch e.Name {
		case ManifestFile:
			if e.Size > 1<<20 {
				return fmt.Errorf("entry %q: more than 1 MiB: %w", e.Name, tgz.ErrTooLarge)
			}
			mf, err = io.ReadAll(body)
			return err
		case ImageFile:
			out, err := root.OpenFile(ImageFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("entry %q: %w", e.Name, err)
			}
			h := sha256.New()
			n, err := io.Copy(io.MultiWriter(out, h), body)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("entry %q: %w", e.Name, err)
			}
			imageSum, imageSize = hex.EncodeToString(h.Sum(nil)), n
			return nil
		default:
			return fmt.Errorf("entry %q: unexpected entry: want only %s and %s", e.Name, ManifestFile, ImageFile)
		}
	})
	if err != nil {
		root.Remove(ImageFile)
		return nil, err
	}
	fail := func(err error) (*Stemcell, error) {
		root.Remove(ImageFile)
		return nil, err
	}
	if mf == nil {
		return fail(fmt.Errorf("entry %q: missing", ManifestFile))
	}
	var m Manifest
	if err := yamllimit.Check(ManifestFile, mf, yamllimit.ReleaseManifest); err != nil {
		return fail(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(mf))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil {
		return fail(fmt.Errorf("%s: %w", ManifestFile, err))
	}
	light := imageSize <= 0
	if err := m.Validate(light); err != nil {
		return fail(fmt.Errorf("%s: %w", ManifestFile, err))
	}
	if light {
		root.Remove(ImageFile)
		return &Stemcell{Manifest: &m}, nil
	}
	if m.SHA256 != "" && m.SHA256 != imageSum {
		return fail(fmt.Errorf("entry %q: sha256 %s, %s says %s: %w", ImageFile, imageSum, ManifestFile, m.SHA256, ErrDigestMismatch))
	}
	if m.HasFormat(FormatLocal) {
		img, err := root.Open(ImageFile)
		if err != nil {
			return fail(err)
		}
		err = checkLocalImage(img, lim)
		img.Close()
		if err != nil {
			return fail(fmt.Errorf("entry %q: %w", ImageFile, err))
		}
	}
	return &Stemcell{Manifest: &m, ImagePath: filepath.Join(dir, ImageFile)}, nil
}

// checkLocalImage walks a local-tgz image: every entry safe, and an
// executable regular file "agent" at its root.
func checkLocalImage(r io.Reader, lim tgz.Limits) error {
	found := false
	err := tgz.Walk(r, lim, func(e tgz.Entry, body io.Reader) error {
		if e.Name == "agent" && e.Type == tar.TypeReg && e.Mode&0o111 != 0 {
			found = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !found {
		return ErrNoAgent
	}
	return nil
}
