// Package release reads release source directories, builds release
// tarballs from them, and verifies release tarballs received from outside.
//
// A release source directory follows BOSH's layout:
//
//	jobs/<job>/spec              a JobSpec (YAML)
//	jobs/<job>/templates/...     Go text/template files named by the spec
//	packages/<pkg>/spec          a PackageSpec (YAML)
//	packages/<pkg>/packaging     the shell script that builds the package
//	src/...                      sources matched by package file globs
//	blobs/...                    large sources, matched after src/
//	config/final.yml             optional: {name: <release name>}
//
// Every job and package has a fingerprint, the hex sha256 of a canonical
// listing of its content (see [JobFingerprint] and [PackageFingerprint]);
// the fingerprint is also its version, so an unchanged job or package keeps
// its version across releases. [Create] writes a deterministic tarball: the
// same source gives byte-identical output.
//
// A release tarball holds release.MF (a [Manifest]), jobs/<job>.tgz and
// packages/<pkg>.tgz. A job tarball holds job.MF (the job spec) and
// templates/<file>; a package tarball holds packaging and the package's files
// at their paths relative to src/ or blobs/.
//
// [Open] verifies an untrusted tarball before anything of it is used: every
// entry stays inside its target, sizes are bounded and match the manifest,
// every sha256 matches, names are unique, package dependencies exist and have
// no cycle, and job specs parse. Errors name the offending entry.
package release
