package install_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/compleat/compleat/agent/applyspec"
	"github.com/compleat/compleat/agent/install"
	"github.com/compleat/compleat/agent/layout"
	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/cpi/tarball"
)

// blobs is a stateful fake blobstore: tarballs by sha256, plus a set of
// blobs whose content is "tampered" (Fetch fails as a mismatch would).
type blobs struct {
	dir      string
	tampered map[string]bool
}

func (b *blobs) Fetch(_ context.Context, bl applyspec.Blob) (string, error) {
	if b.tampered[bl.SHA256] {
		return "", &protocol.Exception{Code: protocol.CodeBlobMismatch, Message: "tampered"}
	}
	p := filepath.Join(b.dir, bl.SHA256)
	if _, err := os.Stat(p); err != nil {
		return "", err
	}
	return p, nil
}

// add archives files (name → content) and returns the blob.
func (b *blobs) add(t *testing.T, files map[string]string) applyspec.Blob {
	t.Helper()
	src := t.TempDir()
	for name, content := range files {
		p := filepath.Join(src, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(content), 0o755)
	}
	var buf bytes.Buffer
	if err := tarball.Create(&buf, src, nil); err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(buf.Bytes())
	sum := hex.EncodeToString(s[:])
	os.WriteFile(filepath.Join(b.dir, sum), buf.Bytes(), 0o600)
	return applyspec.Blob{URL: "https://blobs.invalid/" + sum, SHA256: sum}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestApplySwitchesVersionsSideBySide(t *testing.T) {
	l := layout.Layout{Base: t.TempDir()}
	if err := l.Ensure(); err != nil {
		t.Fatal(err)
	}
	bs := &blobs{dir: t.TempDir(), tampered: map[string]bool{}}
	in := &install.Installer{Layout: l, Blobs: bs}
	ctx := context.Background()

	app1 := bs.add(t, map[string]string{"bin/app": "v1"})
	app2 := bs.add(t, map[string]string{"bin/app": "v2"})
	app3 := bs.add(t, map[string]string{"bin/app": "v3"})
	web := bs.add(t, map[string]string{"config/processes.yml": "processes: []\n", "bin/drain": "#!/bin/sh\necho 0\n"})
	spec := func(app applyspec.Blob, version string, jobs ...applyspec.Job) applyspec.Spec {
		return applyspec.Spec{Jobs: jobs, Packages: []applyspec.Package{{Name: "app", Version: version, Blob: app}}}
	}
	webJob := applyspec.Job{Name: "web", Blob: web}

	if err := in.Apply(ctx, spec(app1, "1", webJob)); err != nil {
		t.Fatal(err)
	}
	if read(t, filepath.Join(l.Package("app"), "bin/app")) != "v1" {
		t.Fatal("package v1 not installed")
	}
	if read(t, filepath.Join(l.Job("web"), "config/processes.yml")) != "processes: []\n" {
		t.Fatal("job not installed")
	}
	if target, _ := os.Readlink(l.Package("app")); target != l.PackageVersion("app", "1") {
		t.Fatalf("packages/app -> %s", target)
	}

	if err := in.Apply(ctx, spec(app2, "2", webJob)); err != nil {
		t.Fatal(err)
	}
	if read(t, filepath.Join(l.Package("app"), "bin/app")) != "v2" {
		t.Fatal("package v2 not linked")
	}
	if _, err := os.Stat(l.PackageVersion("app", "1")); err != nil {
		t.Fatal("previous version removed too early")
	}

	// The third apply drops the web job and version 1.
	if err := in.Apply(ctx, spec(app3, "3")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(l.PackageVersion("app", "1")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("unused version 1 kept")
	}
	if _, err := os.Stat(l.PackageVersion("app", "2")); err != nil {
		t.Fatal("previous version 2 removed")
	}
	if _, err := os.Lstat(l.Job("web")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("job link kept after the job left the spec")
	}
	cur, err := in.Current()
	if err != nil || cur == nil || cur.Packages[0].Version != "3" {
		t.Fatalf("current spec %+v %v", cur, err)
	}
}

func TestApplyWithTamperedBlobInstallsNothing(t *testing.T) {
	l := layout.Layout{Base: t.TempDir()}
	l.Ensure()
	bs := &blobs{dir: t.TempDir(), tampered: map[string]bool{}}
	in := &install.Installer{Layout: l, Blobs: bs}
	good := bs.add(t, map[string]string{"bin/app": "good"})
	bad := bs.add(t, map[string]string{"bin/x": "x"})
	bs.tampered[bad.SHA256] = true
	err := in.Apply(context.Background(), applyspec.Spec{
		Packages: []applyspec.Package{{Name: "app", Version: "1", Blob: good}},
		Jobs:     []applyspec.Job{{Name: "web", Blob: bad}},
	})
	if !errors.Is(err, protocol.ErrBlobMismatch) {
		t.Fatalf("err = %v", err)
	}
	for _, p := range []string{l.Package("app"), l.Job("web"), l.PackageVersion("app", "1")} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s exists after a failed apply", p)
		}
	}
	if cur, _ := in.Current(); cur != nil {
		t.Fatal("failed apply recorded")
	}
}

func TestApplyRejectsUnsafeNames(t *testing.T) {
	l := layout.Layout{Base: t.TempDir()}
	in := &install.Installer{Layout: l, Blobs: &blobs{dir: t.TempDir()}}
	err := in.Apply(context.Background(), applyspec.Spec{Jobs: []applyspec.Job{{Name: "../../etc", Blob: applyspec.Blob{URL: "x", SHA256: "00"}}}})
	if err == nil {
		t.Fatal("unsafe job name accepted")
	}
}
