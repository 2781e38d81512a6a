package local

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/compleat/compleat/cpi"
)

func TestCreateStemcell(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newTestCPI(t)
	img := filepath.Join(t.TempDir(), "image.tgz")
	writeTGZ(t, img,
		tarEntry{name: "agent", typ: tar.TypeReg, mode: 0o755, body: "#!/bin/sh\n"},
		tarEntry{name: "lib/settings/defaults.json", typ: tar.TypeReg, mode: 0o644, body: "{}"},
		tarEntry{name: "lib/current", typ: tar.TypeSymlink, linkname: "settings"},
		tarEntry{name: "lib/copy.json", typ: tar.TypeLink, linkname: "lib/settings/defaults.json"},
	)
	cid, err := c.CreateStemcell(ctx, cpi.CreateStemcellRequest{ImagePath: img, CloudProperties: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	dir := c.path(kindStemcell, cid)
	if st, err := os.Stat(filepath.Join(dir, "agent")); err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("agent: %v %v", st, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "lib/current/defaults.json")); err != nil || string(b) != "{}" {
		t.Fatalf("link inside the image: %q %v", b, err)
	}
	if err := c.DeleteStemcell(ctx, cid); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stemcell directory left: %v", err)
	}
	for _, cid := range []string{cid, "sc-0000000000000000", "../../x"} {
		if err := c.DeleteStemcell(ctx, cid); err != nil {
			t.Fatalf("DeleteStemcell(%q) = %v, want nil", cid, err)
		}
	}
}

// No image, however crafted, writes outside its directory or links out.
func TestCreateStemcellRejectsEscapes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	agent := tarEntry{name: "agent", typ: tar.TypeReg, mode: 0o755, body: "#!/bin/sh\n"}
	for _, tc := range []struct {
		name    string
		entries []tarEntry
	}{
		{"dot dot", []tarEntry{agent, {name: "../escaped", typ: tar.TypeReg, mode: 0o644, body: "x"}}},
		{"nested dot dot", []tarEntry{agent, {name: "a/../../escaped", typ: tar.TypeReg, mode: 0o644, body: "x"}}},
		{"absolute", []tarEntry{agent, {name: "/tmp/escaped", typ: tar.TypeReg, mode: 0o644, body: "x"}}},
		{"absolute symlink", []tarEntry{agent, {name: "etc", typ: tar.TypeSymlink, linkname: "/etc"}}},
		{"relative symlink out", []tarEntry{agent, {name: "a/up", typ: tar.TypeSymlink, linkname: "../../.."}}},
		{"write through symlink", []tarEntry{agent,
			{name: "d", typ: tar.TypeSymlink, linkname: "."},
			{name: "out", typ: tar.TypeSymlink, linkname: "d/../.."},
		}},
		{"symlink chain out", []tarEntry{agent,
			{name: "x/b", typ: tar.TypeSymlink, linkname: ".."},
			{name: "a", typ: tar.TypeSymlink, linkname: "x/b/../etc"},
		}},
		{"file through a symlink chain", []tarEntry{agent,
			{name: "x/b", typ: tar.TypeSymlink, linkname: ".."},
			{name: "a", typ: tar.TypeSymlink, linkname: "x/b/.."},
			{name: "a/escaped", typ: tar.TypeReg, mode: 0o644, body: "x"},
		}},
		{"hard link out", []tarEntry{agent, {name: "passwd", typ: tar.TypeLink, linkname: "../../etc/passwd"}}},
		{"device", []tarEntry{agent, {name: "null", typ: tar.TypeChar}}},
		{"no agent", []tarEntry{{name: "bin/agent", typ: tar.TypeReg, mode: 0o755, body: "x"}}},
		{"agent not executable", []tarEntry{{name: "agent", typ: tar.TypeReg, mode: 0o644, body: "x"}}},
		{"agent a symlink", []tarEntry{
			{name: "real", typ: tar.TypeReg, mode: 0o755, body: "x"},
			{name: "agent", typ: tar.TypeSymlink, linkname: "real"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCPI(t)
			work := t.TempDir()
			img := filepath.Join(work, "image.tgz")
			writeTGZ(t, img, tc.entries...)
			cid, err := c.CreateStemcell(ctx, cpi.CreateStemcellRequest{ImagePath: img})
			if err == nil {
				t.Fatalf("CreateStemcell accepted the image as %s", cid)
			}
			t.Log(err)
			entries, _ := os.ReadDir(c.dir(kindStemcell))
			tmp, _ := os.ReadDir(c.tmpDir())
			if len(entries) != 0 || len(tmp) != 0 {
				t.Fatalf("rejected image left stemcells %v, tmp %v", entries, tmp)
			}
			for _, p := range []string{filepath.Join(c.dataDir, "escaped"), filepath.Join(c.dir(kindStemcell), "escaped"), filepath.Join(c.dataDir, "up2"), "/tmp/escaped"} {
				if _, err := os.Lstat(p); err == nil {
					os.Remove(p)
					t.Fatalf("%s was written", p)
				}
			}
		})
	}
}

func TestCreateStemcellBadFile(t *testing.T) {
	t.Parallel()
	c := newTestCPI(t)
	notGzip := filepath.Join(t.TempDir(), "image")
	if err := os.WriteFile(notGzip, []byte("not an archive"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{notGzip, filepath.Join(t.TempDir(), "missing.tgz")} {
		if _, err := c.CreateStemcell(context.Background(), cpi.CreateStemcellRequest{ImagePath: p}); err == nil {
			t.Errorf("CreateStemcell(%s) succeeded", p)
		}
	}
}

func TestNewRejectsBadProperties(t *testing.T) {
	t.Parallel()
	abs := t.TempDir()
	for _, tc := range []struct {
		props string
		field string
	}{
		{``, "data_dir"},
		{`{}`, "data_dir"},
		{`{"data_dir": "relative/dir"}`, "data_dir"},
		{`{"data_dir": 7}`, "data_dir"},
		{`{"data_dir": "` + abs + `", "dynamic_range": "10.0.0.0/8"}`, "dynamic_range"},
		{`{"data_dir": "` + abs + `", "dynamic_range": "127.1.2.3"}`, "dynamic_range"},
		{`{"data_dir": "` + abs + `", "dynamic_range": "127.0.0.0/31"}`, "dynamic_range"},
		{`{"data_dir": "` + abs + `", "agent": "x"}`, "agent"},
		{`{"data_dir": "` + abs + `", "datadir": "x"}`, "datadir"},
	} {
		_, err := New(json.RawMessage(tc.props))
		var e *cpi.Error
		if !errors.Is(err, cpi.ErrInvalidCloudProperties) || !errors.As(err, &e) || e.Field != tc.field {
			t.Errorf("New(%s) = %v, want ErrInvalidCloudProperties naming %s", tc.props, err, tc.field)
		}
	}
	c, err := New(json.RawMessage(`{"data_dir": "` + abs + `/data"}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.dynamic.String() != DefaultDynamicRange {
		t.Errorf("default dynamic range %s", c.dynamic)
	}
	info, err := c.Info(context.Background())
	if err != nil || info.Name != "local" || info.StemcellFormats[0] != "local-tgz" || !info.Capabilities.Snapshots || info.APIVersion != cpi.APIVersion {
		t.Errorf("Info = %+v, %v", info, err)
	}
}

// Default agent settings from the properties fill what the request leaves
// out.
func TestAgentDefaults(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	c, err := New(json.RawMessage(`{"data_dir": "`+dir+`", "agent": {"heartbeat_interval": "1s", "agent_id": "ignored"}}`), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteAllVMs(t, c) })
	sc := createStemcell(t, c)
	res, err := c.CreateVM(ctx, vmRequest(sc, "127.77.5.5", nil))
	if err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	if err := readJSON(filepath.Join(c.vmDir(res.CID), settingsFile), &s); err != nil {
		t.Fatal(err)
	}
	if s["heartbeat_interval"] != "1s" || s["agent_id"] != "agent-1" {
		t.Fatalf("settings %v: want the default heartbeat_interval and the request's agent_id", s)
	}
}
