// Package cpitest is the conformance suite of the CPI contract and a fake
// CPI for tests of code that drives one.
//
// [Run] is the definition of a working CPI: it drives a plugin through the
// whole lifecycle (stemcells, VMs, disks, snapshots, missing objects,
// concurrent creation, invalid cloud properties). A plugin author certifies a
// plugin twice, in-process over real gRPC with [RunInProcess] and as the built
// binary with [RunBinary]:
//
//	func TestConformance(t *testing.T) {
//		cpitest.RunInProcess(t, func(t *testing.T) cpi.CPI { return myplugin.New(...) }, cfg)
//	}
//
// [Fake] is a stateful, in-memory CPI for the director's tests: it holds
// VMs, disks, snapshots and stemcells, answers with the contract's typed
// errors, and lets a test inject the failure of the next call of a method.
package cpitest
