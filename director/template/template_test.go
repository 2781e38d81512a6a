package template

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/txtar"
	yaml "go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite the want.txt sections of testdata/*.txtar")

// goldenJob is job.yml in a golden file.
type goldenJob struct {
	Name       string                    `yaml:"name"`
	Templates  map[string]string         `yaml:"templates"`
	Properties map[string]map[string]any `yaml:"properties"`
}

// goldenInput is input.yml in a golden file.
type goldenInput struct {
	Instance   Instance         `yaml:"instance"`
	Properties map[string]any   `yaml:"properties"`
	Links      map[string]*Link `yaml:"links"`
	Release    ReleaseRef       `yaml:"release"`
}

func loadGolden(t *testing.T, ar *txtar.Archive) (Job, Input) {
	t.Helper()
	sections := map[string][]byte{}
	for _, f := range ar.Files {
		sections[f.Name] = f.Data
	}
	var gj goldenJob
	if err := yaml.Unmarshal(sections["job.yml"], &gj); err != nil {
		t.Fatalf("job.yml: %v", err)
	}
	job := Job{Name: gj.Name, Properties: map[string]Property{}}
	for name, def := range gj.Properties {
		job.Properties[name] = Property{Default: def["default"]}
	}
	for src, dest := range gj.Templates {
		text, ok := sections["templates/"+src]
		if !ok {
			t.Fatalf("no section templates/%s", src)
		}
		job.Templates = append(job.Templates, Template{Source: src, Dest: dest, Text: string(text)})
	}
	var in goldenInput
	if err := yaml.Unmarshal(sections["input.yml"], &in); err != nil {
		t.Fatalf("input.yml: %v", err)
	}
	return job, Input(in)
}

func formatRendered(r Rendered, err error) string {
	var b strings.Builder
	if err != nil {
		fmt.Fprintf(&b, "error: %v\n", err)
		return b.String()
	}
	for _, f := range r.Files {
		fmt.Fprintf(&b, "== %s %04o\n%s", f.Path, f.Mode.Perm(), f.Content)
		if len(f.Content) > 0 && !bytes.HasSuffix(f.Content, []byte("\n")) {
			b.WriteString("\n(no newline at end)\n")
		}
	}
	return b.String()
}

func TestGolden(t *testing.T) {
	t.Parallel()
	paths, err := filepath.Glob("testdata/*.txtar")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, p := range paths {
		t.Run(strings.TrimSuffix(filepath.Base(p), ".txtar"), func(t *testing.T) {
			ar, err := txtar.ParseFile(p)
			if err != nil {
				t.Fatal(err)
			}
			job, in := loadGolden(t, ar)
			got := formatRendered(Render(job, in))
			idx := -1
			for i, f := range ar.Files {
				if f.Name == "want.txt" {
					idx = i
				}
			}
			if *update {
				if idx < 0 {
					ar.Files = append(ar.Files, txtar.File{Name: "want.txt"})
					idx = len(ar.Files) - 1
				}
				ar.Files[idx].Data = []byte(got)
				if err := os.WriteFile(p, txtar.Format(ar), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if idx < 0 {
				t.Fatalf("%s has no want.txt (run with -update)", p)
			}
			if want := string(ar.Files[idx].Data); got != want {
				t.Errorf("rendering differs from %s\n--- got\n%s--- want\n%s", p, got, want)
			}
		})
	}
}

func TestMissingPropertyNamesPropertyJobTemplateAndLine(t *testing.T) {
	t.Parallel()
	job := Job{
		Name:       "web",
		Properties: map[string]Property{"web.port": {}},
		Templates:  []Template{{Source: "config.erb", Dest: "config/web.yml", Text: "a: 1\nport: {{ p \"web.port\" }}\n"}},
	}
	_, err := Render(job, Input{})
	var rerr *Error
	if !errors.As(err, &rerr) {
		t.Fatalf("want *Error, got %v", err)
	}
	if rerr.Job != "web" || rerr.Template != "config.erb" || rerr.Line != 2 {
		t.Errorf("error fields = %+v", rerr)
	}
	for _, s := range []string{"web.port", "job web", "config.erb", "line 2"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
}

func TestHashAndArchiveAreDeterministic(t *testing.T) {
	t.Parallel()
	job := Job{
		Name:       "web",
		Properties: map[string]Property{"port": {Default: 8080}},
		Templates: []Template{
			{Source: "ctl", Dest: "bin/ctl", Text: "#!/bin/sh\necho {{ p \"port\" }}\n"},
			{Source: "conf", Dest: "config/deep/web.conf", Text: "port={{ p \"port\" }}\n"},
		},
	}
	a, err := Render(job, Input{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Render(job, Input{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Hash != b.Hash {
		t.Fatalf("hash differs between identical renderings")
	}
	ta, err := a.Archive()
	if err != nil {
		t.Fatal(err)
	}
	tb, _ := b.Archive()
	if !bytes.Equal(ta, tb) {
		t.Fatalf("archive differs between identical renderings")
	}
	c, err := Render(job, Input{Properties: map[string]any{"port": 9090}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Hash == a.Hash {
		t.Fatalf("hash did not change with a property")
	}

	zr, err := gzip.NewReader(bytes.NewReader(ta))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var got []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		got = append(got, fmt.Sprintf("%s %o %q", h.Name, h.Mode, body))
	}
	want := []string{
		`bin/ 755 ""`,
		`bin/ctl 755 "#!/bin/sh\necho 8080\n"`,
		`config/ 755 ""`,
		`config/deep/ 755 ""`,
		`config/deep/web.conf 644 "port=8080\n"`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("archive entries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestDestinationMayNotEscape(t *testing.T) {
	t.Parallel()
	job := Job{Name: "web", Templates: []Template{{Source: "x", Dest: "../../etc/passwd", Text: "x"}}}
	if _, err := Render(job, Input{}); err == nil || !strings.Contains(err.Error(), "escapes") {
		t.Fatalf("want escape error, got %v", err)
	}
}
