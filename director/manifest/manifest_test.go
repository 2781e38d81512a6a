package manifest

import (
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/txtar"
)

var update = flag.Bool("update", false, "rewrite the want section of testdata/bad/*.txtar with the current errors")

// TestBad drives every case in testdata/bad. A case is a txtar archive whose
// comment says what it shows, holding some of:
//
//	manifest.yml  a deployment manifest: loaded (with ops.yml and vars.yml
//	              when present, strict interpolation), parsed, then validated
//	              against cloud.yml or testdata/cloud.yml
//	cloud.yml     a cloud config (parsed alone when there is no manifest)
//	runtime.yml   a runtime config
//	want          the expected errors, one per line, exactly
func TestBad(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("testdata/bad/*.txtar")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 30 {
		t.Errorf("only %d bad cases; the table should hold at least 30", len(files))
	}
	defaultCloud, err := os.ReadFile("testdata/cloud.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txtar"), func(t *testing.T) {
			ar, err := txtar.ParseFile(file)
			if err != nil {
				t.Fatal(err)
			}
			sections := map[string][]byte{}
			for _, f := range ar.Files {
				sections[f.Name] = f.Data
			}
			if _, ok := sections["cloud.yml"]; !ok && sections["manifest.yml"] != nil {
				sections["cloud.yml"] = defaultCloud
			}
			err = runCase(sections)
			if err == nil {
				t.Fatal("no error: every case in testdata/bad must fail")
			}
			var list Errors
			if !errors.As(err, &list) {
				t.Fatalf("error is %T, not manifest.Errors: %v", err, err)
			}
			for _, e := range list {
				if e.Line == 0 && !strings.Contains(e.Message, "empty") {
					t.Errorf("error without a line: %v", e)
				}
			}
			got := err.Error() + "\n"
			if *update {
				for i := range ar.Files {
					if ar.Files[i].Name == "want" {
						ar.Files[i].Data = []byte(got)
						if err := os.WriteFile(file, txtar.Format(ar), 0o644); err != nil {
							t.Fatal(err)
						}
						return
					}
				}
				ar.Files = append(ar.Files, txtar.File{Name: "want", Data: []byte(got)})
				if err := os.WriteFile(file, txtar.Format(ar), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if want := string(sections["want"]); got != want {
				t.Errorf("errors differ\ngot:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func runCase(s map[string][]byte) error {
	ctx := context.Background()
	switch {
	case s["runtime.yml"] != nil:
		_, err := ParseRuntimeConfig("runtime.yml", s["runtime.yml"])
		return err
	case s["manifest.yml"] != nil:
		opts := LoadOptions{Strict: true}
		if s["ops.yml"] != nil {
			opts.OpsFiles = []File{{Name: "ops.yml", Data: s["ops.yml"]}}
		}
		if s["vars.yml"] != nil {
			opts.VarsFiles = []File{{Name: "vars.yml", Data: s["vars.yml"]}}
		}
		doc, err := Load(ctx, "manifest.yml", s["manifest.yml"], opts)
		if err != nil {
			return err
		}
		dep, err := doc.Deployment()
		if err != nil {
			return err
		}
		cc, err := ParseCloudConfig("cloud.yml", s["cloud.yml"])
		if err != nil {
			return err
		}
		return dep.Validate(cc)
	default:
		_, err := ParseCloudConfig("cloud.yml", s["cloud.yml"])
		return err
	}
}
