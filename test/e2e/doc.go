// Package e2e holds the end-to-end tests of Compleat on the local CPI: a
// real `director serve --dev` with the real agent and cpi-local binaries
// deploys manifests/local/web.yml (releases/web on the local stemcell), rolls
// changes out, scales, survives a director killed mid-deploy and deletes the
// deployment, checked from the outside (HTTP answers through the lb, VM
// directories, agent processes, task events).
//
// The tests use the binaries in $COMPLEAT_BIN (set by `make test`) or build
// them once into a temporary directory. They skip with -short.
package e2e
