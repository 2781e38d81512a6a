package cpi

import "context"

// Unimplemented answers ErrNotImplemented for the optional parts of the
// contract. Embed it in a plugin's type so that the plugin keeps compiling
// when a method is added to [CPI], and override what the plugin supports:
//
//	type Cloud struct {
//		cpi.Unimplemented
//		...
//	}
//
// The capability flags in Info must say what the plugin overrides: a flag
// claimed for a method left to Unimplemented fails the conformance suite,
// and so does a method that works while its flag is false.
//
// Only the methods behind a capability flag are here (ResizeDisk, the
// snapshots, ListVMs, ListDisks); a plugin that forgets a required method
// does not compile.
type Unimplemented struct{}

// ResizeDisk answers ErrNotImplemented (Capabilities.ResizeDisk false).
func (Unimplemented) ResizeDisk(context.Context, string, int64) error { return ErrNotImplemented }

// SnapshotDisk answers ErrNotImplemented (Capabilities.Snapshots false).
func (Unimplemented) SnapshotDisk(context.Context, string, map[string]string) (string, error) {
	return "", ErrNotImplemented
}

// DeleteSnapshot answers ErrNotImplemented (Capabilities.Snapshots false).
func (Unimplemented) DeleteSnapshot(context.Context, string) error { return ErrNotImplemented }

// ListVMs answers ErrNotImplemented (Capabilities.ListVMs false).
func (Unimplemented) ListVMs(context.Context, ListFilter) ([]VMInfo, error) {
	return nil, ErrNotImplemented
}

// ListDisks answers ErrNotImplemented (Capabilities.ListDisks false).
func (Unimplemented) ListDisks(context.Context, ListFilter) ([]DiskInfo, error) {
	return nil, ErrNotImplemented
}
