// Package layout names the directories of a VM's tree under the agent's base
// directory (/var/vcap on a real VM), as BOSH operators know them:
//
//	jobs/<job>          -> data/jobs/<job>/<sha256>   rendered jobs (symlinks)
//	packages/<pkg>      -> data/packages/<pkg>/<version>   compiled packages
//	data/               ephemeral data: versions side by side, blob cache,
//	                    compilation directories, jobs' scratch space
//	sys/log/<job>/      process and script logs
//	sys/run/            pid files and sockets
//	store/              the persistent disk (mounted here)
//	bosh/               the agent's own state: settings, applied spec, disks
package layout

import (
	"fmt"
	"os"
	"path/filepath"
)

// Layout is the tree under Base.
type Layout struct {
	Base string
}

// Jobs is the directory of job symlinks.
func (l Layout) Jobs() string { return filepath.Join(l.Base, "jobs") }

// Job is the installed job's directory (a symlink).
func (l Layout) Job(name string) string { return filepath.Join(l.Base, "jobs", name) }

// Packages is the directory of package symlinks.
func (l Layout) Packages() string { return filepath.Join(l.Base, "packages") }

// Package is the installed package's directory (a symlink).
func (l Layout) Package(name string) string { return filepath.Join(l.Base, "packages", name) }

// Data is the ephemeral data directory.
func (l Layout) Data() string { return filepath.Join(l.Base, "data") }

// JobVersion is where one rendered job version is extracted.
func (l Layout) JobVersion(name, sha string) string {
	return filepath.Join(l.Base, "data", "jobs", name, sha)
}

// PackageVersion is where one compiled package version is extracted.
func (l Layout) PackageVersion(name, version string) string {
	return filepath.Join(l.Base, "data", "packages", name, version)
}

// Blobs is the verified blob cache.
func (l Layout) Blobs() string { return filepath.Join(l.Base, "data", "blobs") }

// Compile is where packages are compiled.
func (l Layout) Compile() string { return filepath.Join(l.Base, "data", "compile") }

// SysLog is the log root.
func (l Layout) SysLog() string { return filepath.Join(l.Base, "sys", "log") }

// SysRun holds pid files and sockets.
func (l Layout) SysRun() string { return filepath.Join(l.Base, "sys", "run") }

// Store is where the persistent disk is mounted.
func (l Layout) Store() string { return filepath.Join(l.Base, "store") }

// StoreMigrationTarget is where a new persistent disk is mounted while the
// old one is still the store (migrate_disk).
func (l Layout) StoreMigrationTarget() string {
	return filepath.Join(l.Base, "store_migration_target")
}

// Bosh is the agent's own state directory.
func (l Layout) Bosh() string { return filepath.Join(l.Base, "bosh") }

// Ensure creates the tree's directories.
func (l Layout) Ensure() error {
	for _, d := range []string{l.Jobs(), l.Packages(), l.Data(), l.Blobs(), l.SysLog(), l.SysRun(), l.Store(), l.Bosh()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	if err := os.Chmod(l.Bosh(), 0o700); err != nil {
		return fmt.Errorf("protect %s: %w", l.Bosh(), err)
	}
	return nil
}
