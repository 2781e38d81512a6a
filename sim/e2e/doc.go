// Package e2e holds the end-to-end tests of Compleat on simulated clouds: a
// production-mode director (`director serve --config`) with a cloud's real
// CPI plugin deploys releases/web onto the cloud simulated by `cloudsim`,
// whose VMs really boot here, and the tests check the outcome from the
// outside — through the director's CLI, the load balancer's answers and the
// cloud's own API (aws-sdk-go-v2 against moto).
//
// The tests use the binaries in $COMPLEAT_BIN (set by `make test`) or build
// them once. They skip with -short, and where moto_server is absent.
package e2e
