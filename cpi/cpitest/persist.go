package cpitest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/compleat/compleat/cpi"
)

// fakeState is what Persist keeps on disk: everything a cloud would
// remember.
type fakeState struct {
	Capabilities cpi.Capabilities
	Seq          int
	NextIP       netip.Addr
	Stemcells    map[string]*FakeStemcell
	VMs          map[string]*FakeVM
	Disks        map[string]*FakeDisk
	Snapshots    map[string]*FakeSnapshot
}

// Persist makes the fake keep its objects in a JSON file, as a cloud keeps
// them across restarts of its plugin: it loads the file when it exists and
// rewrites it after every call that may change something. It is for fake
// plugin binaries (a plugin restarted by the host, or the one-process-per-
// call JSON mode, finds its VMs again); processes sharing the file must
// serialise their calls themselves.
func (f *Fake) Persist(path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("fake state %s: %w", path, err)
	default:
		var st fakeState
		if err := json.Unmarshal(b, &st); err != nil {
			return fmt.Errorf("fake state %s: %w", path, err)
		}
		f.caps, f.seq, f.nextIP = st.Capabilities, st.Seq, st.NextIP
		f.stemcells, f.vms, f.disks, f.snapshots = orEmpty(st.Stemcells), orEmpty(st.VMs), orEmpty(st.Disks), orEmpty(st.Snapshots)
	}
	f.stateFile = path
	f.persist()
	return f.saveErr
}

func orEmpty[V any](m map[string]V) map[string]V {
	if m == nil {
		return map[string]V{}
	}
	return m
}

// persist writes the state file, if any; f.mu is held.
func (f *Fake) persist() {
	if f.stateFile == "" {
		return
	}
	b, err := json.Marshal(fakeState{
		Capabilities: f.caps, Seq: f.seq, NextIP: f.nextIP,
		Stemcells: f.stemcells, VMs: f.vms, Disks: f.disks, Snapshots: f.snapshots,
	})
	if err == nil {
		tmp := filepath.Join(filepath.Dir(f.stateFile), "."+filepath.Base(f.stateFile)+".tmp")
		if err = os.WriteFile(tmp, b, 0o600); err == nil {
			err = os.Rename(tmp, f.stateFile)
		}
	}
	f.saveErr = err
}
