// Package cpitest is the conformance suite of the CPI contract and a fake
// CPI for tests of code that drives one.
//
// [Run] is the definition of a working CPI: it drives a plugin through the
// whole contract (stemcells, VMs, disks and their attachments, snapshots,
// missing objects, concurrent creation, networks in both modes, invalid and
// unknown cloud properties, tags and ListVMs/ListDisks, the settings
// delivered to a VM, cancelled contexts, cids across plugin restarts), and
// says what to fix when a rule is broken. A plugin author certifies a plugin
// twice, in-process over real gRPC with [RunInProcess] and as the built
// binary with [RunBinary]:
//
//	func TestConformance(t *testing.T) {
//		cpitest.RunInProcess(t, func(t *testing.T) cpi.CPI { return myplugin.New(...) }, cfg)
//	}
//
// [Config] says what the plugin needs (valid cloud properties, networks with
// addresses valid in its cloud) and, through [Config.DeliveredSettings] or a
// CPI that implements [SettingsReader], how the suite reads the settings a
// VM was given. examples/cpi-memory in the repository is a complete plugin
// certified this way.
//
// [Fake] is a stateful, in-memory CPI for the director's tests: it holds
// VMs, disks, snapshots and stemcells, answers with the contract's typed
// errors, and lets a test inject the failure of the next call of a method.
package cpitest
