package release

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeTree writes files (slash path → content) under dir; a path ending in
// "*" is written executable (the star is dropped).
func writeTree(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		mode := os.FileMode(0o644)
		if n, ok := strings.CutSuffix(name, "*"); ok {
			name, mode = n, 0o755
		}
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
}

func sampleSource(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "demo")
	writeTree(t, dir, map[string]string{
		"config/final.yml": "name: demo\n",
		"jobs/app/spec": `name: app
templates:
  ctl.tmpl: bin/ctl
  app.yml.tmpl: config/app.yml
packages: [app, lib]
properties:
  port:
    description: port to listen on
    default: 8080
provides:
- name: app
  type: http
  properties: [port]
consumes:
- name: db
  type: db
  optional: true
`,
		"jobs/app/templates/ctl.tmpl":     "#!/bin/sh\nexec app --port {{ p \"port\" }}\n",
		"jobs/app/templates/app.yml.tmpl": "port: {{ p \"port\" }}\n",
		"packages/app/spec": `name: app
dependencies: [lib]
files:
- app/**/*
excluded_files:
- app/**/*_test.go
`,
		"packages/app/packaging*": "set -e\ncp -a app ${BOSH_INSTALL_TARGET}/\n",
		"packages/lib/spec":       "name: lib\nfiles: [lib/*.c, big.bin]\n",
		"packages/lib/packaging*": "set -e\ncp lib/*.c big.bin ${BOSH_INSTALL_TARGET}/\n",
		"src/app/main.go":         "package main\n",
		"src/app/main_test.go":    "package main\n",
		"src/app/sub/dir/x.txt":   "x\n",
		"src/lib/a.c":             "int a;\n",
		"src/lib/sub/b.c":         "int b;\n",
		"blobs/big.bin":           strings.Repeat("blob", 1000),
	})
	return dir
}

func TestLoadSourceSelectsFiles(t *testing.T) {
	t.Parallel()
	src, err := LoadSource(sampleSource(t))
	if err != nil {
		t.Fatal(err)
	}
	if src.Name != "demo" {
		t.Errorf("name = %q, want demo", src.Name)
	}
	got := map[string][]string{}
	for _, p := range src.Packages {
		for _, f := range p.Files {
			got[p.Spec.Name] = append(got[p.Spec.Name], f.Name)
		}
	}
	want := map[string]string{
		"app": "packaging app/main.go app/sub/dir/x.txt",
		"lib": "packaging big.bin lib/a.c",
	}
	for name, w := range want {
		if g := strings.Join(got[name], " "); g != w {
			t.Errorf("package %s files = %q, want %q", name, g, w)
		}
	}
	if mode := src.Packages[0].Files[0].Mode; mode != 0o755 {
		t.Errorf("packaging mode = %o, want 755", mode)
	}
	j := src.Jobs[0]
	if j.Spec.Properties["port"].Default != 8080 || j.Spec.Provides[0].Properties[0] != "port" || !j.Spec.Consumes[0].Optional {
		t.Errorf("job spec decoded wrong: %+v", j.Spec)
	}
}

func TestCreateIsDeterministicAndVersionsByContent(t *testing.T) {
	t.Parallel()
	dir := sampleSource(t)
	m1, tar1, err := Create(dir, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if m1.Version != "0+dev.1" {
		t.Errorf("first version = %q, want 0+dev.1", m1.Version)
	}
	b1 := readFile(t, tar1)
	m2, tar2, err := Create(dir, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if m2.Version != "0+dev.1" || tar2 != tar1 {
		t.Errorf("unchanged source: version %q at %s, want 0+dev.1 at %s", m2.Version, tar2, tar1)
	}
	if !bytes.Equal(b1, readFile(t, tar2)) {
		t.Fatal("same source gave different tarball bytes")
	}
	// A copy elsewhere gives the same bytes too: nothing depends on paths
	// or times.
	other := filepath.Join(t.TempDir(), "x.tgz")
	if _, _, err := Create(dir, CreateOptions{Tarball: other}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b1, readFile(t, other)) {
		t.Fatal("tarball written elsewhere differs")
	}

	// Touching mtimes changes nothing.
	if err := filepathTouch(t, filepath.Join(dir, "src", "lib", "a.c")); err != nil {
		t.Fatal(err)
	}
	m3, _, err := Create(dir, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if m3.Version != "0+dev.1" {
		t.Errorf("after touch: version %q", m3.Version)
	}

	// Changing lib's source changes lib and, through the dependency
	// listing only by name, not app; app's job keeps its version too.
	writeTree(t, dir, map[string]string{"src/lib/a.c": "int a = 1;\n"})
	m4, _, err := Create(dir, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if m4.Version != "0+dev.2" {
		t.Errorf("changed source: version %q, want 0+dev.2", m4.Version)
	}
	p1, _ := m1.Package("lib")
	p4, _ := m4.Package("lib")
	if p1.Fingerprint == p4.Fingerprint {
		t.Error("lib fingerprint did not change with its source")
	}
	a1, _ := m1.Package("app")
	a4, _ := m4.Package("app")
	if a1.Fingerprint != a4.Fingerprint || a1.Version != a4.Version {
		t.Error("app fingerprint changed although its files did not")
	}
	j1, _ := m1.Job("app")
	j4, _ := m4.Job("app")
	if j1.Fingerprint != j4.Fingerprint {
		t.Error("job fingerprint changed although its files did not")
	}

	// The executable bit is part of the fingerprint.
	if err := os.Chmod(filepath.Join(dir, "src", "app", "main.go"), 0o755); err != nil {
		t.Fatal(err)
	}
	m5, _, err := Create(dir, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a5, _ := m5.Package("app")
	if a5.Fingerprint == a4.Fingerprint || m5.Version != "0+dev.3" {
		t.Errorf("mode change: fingerprint kept or version %q", m5.Version)
	}

	// Going back to earlier content gives the earlier version again.
	writeTree(t, dir, map[string]string{"src/lib/a.c": "int a;\n"})
	if err := os.Chmod(filepath.Join(dir, "src", "app", "main.go"), 0o644); err != nil {
		t.Fatal(err)
	}
	m6, _, err := Create(dir, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if m6.Version != "0+dev.1" {
		t.Errorf("reverted source: version %q, want 0+dev.1", m6.Version)
	}

	// An explicit version is used as given.
	m7, p7, err := Create(dir, CreateOptions{Version: "1.2.3", Name: "renamed"})
	if err != nil {
		t.Fatal(err)
	}
	if m7.Version != "1.2.3" || m7.Name != "renamed" || !strings.HasSuffix(p7, "renamed-1.2.3.tgz") {
		t.Errorf("explicit version: %s %s at %s", m7.Name, m7.Version, p7)
	}
}

func TestPackageFingerprintIncludesDependencies(t *testing.T) {
	t.Parallel()
	files := []FileDigest{{Name: "packaging", SHA256: strings.Repeat("a", 64)}}
	a := PackageFingerprint(files, []string{"x", "y"})
	b := PackageFingerprint(files, []string{"y", "x"})
	c := PackageFingerprint(files, []string{"x"})
	if a != b {
		t.Error("dependency order changed the fingerprint")
	}
	if a == c {
		t.Error("dependency set did not change the fingerprint")
	}
	if JobFingerprint(files) == PackageFingerprint(files, nil) {
		t.Error("job and package fingerprints of the same files collide")
	}
}

func TestOpenRoundTrip(t *testing.T) {
	t.Parallel()
	dir := sampleSource(t)
	m, file, err := Create(dir, CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.Manifest.Name != m.Name || a.Manifest.Version != m.Version || len(a.Jobs) != 1 || len(a.Packages) != 2 {
		t.Fatalf("archive = %+v", a.Manifest)
	}
	j := a.Jobs[0]
	if string(j.Job.Templates["ctl.tmpl"]) != "#!/bin/sh\nexec app --port {{ p \"port\" }}\n" {
		t.Errorf("template text = %q", j.Job.Templates["ctl.tmpl"])
	}
	if j.Job.Spec.Templates["ctl.tmpl"] != "bin/ctl" {
		t.Errorf("spec templates = %v", j.Job.Spec.Templates)
	}
	for _, p := range a.Packages {
		if _, err := os.Stat(p.Path); err != nil {
			t.Errorf("package %s: %v", p.Name, err)
		}
	}
	f, err := os.Open(j.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	job, err := ReadJob(f)
	if err != nil || job.Spec.Name != "app" {
		t.Fatalf("ReadJob: %v %+v", err, job)
	}
	var out bytes.Buffer
	if err := WriteSummary(&out, a.Manifest); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"demo", "0+dev.1", "app", "lib"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
	if _, err := Inspect(file); err != nil {
		t.Fatal(err)
	}
	// Close removes the unpacked files.
	a.Close()
	if _, err := os.Stat(a.Dir); !os.IsNotExist(err) {
		t.Errorf("archive dir still there: %v", err)
	}
}

func TestLoadSourceErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"unknown dependency", map[string]string{
			"packages/a/spec": "name: a\ndependencies: [b]\n", "packages/a/packaging": "",
		}, `packages/a/spec: dependency "b": no such package`},
		{"cycle", map[string]string{
			"packages/a/spec": "name: a\ndependencies: [b]\n", "packages/a/packaging": "",
			"packages/b/spec": "name: b\ndependencies: [a]\n", "packages/b/packaging": "",
		}, "package dependency cycle: a -> b -> a"},
		{"name mismatch", map[string]string{
			"packages/a/spec": "name: b\n", "packages/a/packaging": "",
		}, `packages/a/spec: field name: "b" does not match the directory name "a"`},
		{"unknown field", map[string]string{
			"jobs/j/spec": "name: j\ntempaltes: {}\n",
		}, "jobs/j/spec: yaml: unmarshal errors:\n  line 2: field tempaltes not found"},
		{"missing template", map[string]string{
			"jobs/j/spec": "name: j\ntemplates: {a.tmpl: bin/a}\n",
		}, `jobs/j/spec: template "a.tmpl"`},
		{"template escapes", map[string]string{
			"jobs/j/spec": "name: j\ntemplates: {a.tmpl: ../../etc/passwd}\n",
		}, `destination "../../etc/passwd": path element ".."`},
		{"glob matches nothing", map[string]string{
			"packages/a/spec": "name: a\nfiles: [nothing/**/*]\n", "packages/a/packaging": "",
		}, `pattern "nothing/**/*" matches no file`},
		{"glob leaves src", map[string]string{
			"packages/a/spec": "name: a\nfiles: [../x]\n", "packages/a/packaging": "",
		}, "pattern leaves the source directory"},
		{"no packaging", map[string]string{
			"packages/a/spec": "name: a\n",
		}, "package a: packaging script"},
		{"job needs missing package", map[string]string{
			"jobs/j/spec": "name: j\npackages: [nope]\n",
		}, `jobs/j/spec: package "nope": no such package`},
		{"link property undeclared", map[string]string{
			"jobs/j/spec": "name: j\nprovides: [{name: l, type: t, properties: [port]}]\n",
		}, `property "port" is not declared`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTree(t, dir, c.files)
			_, err := LoadSource(dir)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error = %v, want it to contain %q", err, c.want)
			}
		})
	}
}

func TestGlob(t *testing.T) {
	t.Parallel()
	cases := []struct {
		glob, path string
		want       bool
	}{
		{"a/*", "a/b", true},
		{"a/*", "a/b/c", false},
		{"a/**/*", "a/b", true},
		{"a/**/*", "a/b/c/d", true},
		{"a/**", "a/b/c", true},
		{"**/*.go", "main.go", true},
		{"**/*.go", "x/y/main.go", true},
		{"**/*.go", "x/y/main.c", false},
		{"a?c", "abc", true},
		{"a?c", "a/c", false},
		{"[ab].txt", "b.txt", true},
		{"[!ab].txt", "c.txt", true},
		{"[!ab].txt", "a.txt", false},
		{"x.go", "xxgo", false},
		{"{cmd,lib}/**/*.go", "lib/x/y.go", true},
		{"{cmd,lib}/**/*.go", "src/y.go", false},
	}
	for _, c := range cases {
		re, err := compileGlob(c.glob)
		if err != nil {
			t.Fatalf("%s: %v", c.glob, err)
		}
		if got := re.Match(c.path); got != c.want {
			t.Errorf("%s ~ %s = %v, want %v", c.glob, c.path, got, c.want)
		}
	}
	for _, bad := range []string{"a**", "[ab", "a//b", "{a,b"} {
		if _, err := compileGlob(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func filepathTouch(t *testing.T, p string) error {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	later := st.ModTime().Add(3600e9)
	return os.Chtimes(p, later, later)
}
