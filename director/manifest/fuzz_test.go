package manifest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/rogpeppe/go-internal/txtar"
)

// FuzzParse feeds arbitrary bytes to every parser. None may panic; every
// failure must be an Errors list naming the file; the same input must give
// the same answer twice; a manifest that parses must validate (or fail)
// against a cloud config without panicking, with ops and interpolation too.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/good/*.yml")
	for _, s := range seeds {
		f.Add(mustReadF(f, s))
	}
	cases, _ := filepath.Glob("testdata/bad/*.txtar")
	for _, c := range cases {
		ar, err := txtar.ParseFile(c)
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range ar.Files {
			if file.Name != "want" {
				f.Add(file.Data)
			}
		}
	}
	f.Add([]byte("a: &a [*a, *a]\n"))
	f.Add([]byte("a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nd: [*c, *c]\n"))
	f.Add([]byte("<<: {name: x}\n"))
	ccData := mustReadF(f, "testdata/good/cloud.yml")
	cc, err := ParseCloudConfig("cloud.yml", ccData)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dep, err := ParseDeployment("m.yml", data)
		checkErr(t, err, "m.yml")
		_, again := ParseDeployment("m.yml", data)
		if errString(err) != errString(again) {
			t.Fatalf("two parses differ:\n%v\n---\n%v", err, again)
		}
		if dep != nil {
			checkErr(t, dep.Validate(cc), "m.yml")
		}
		_, err = ParseCloudConfig("c.yml", data)
		checkErr(t, err, "c.yml")
		_, err = ParseRuntimeConfig("r.yml", data)
		checkErr(t, err, "r.yml")

		// The same bytes as an ops file and as a vars file over the good
		// manifest.
		_, err = Interpolate(context.Background(), "full.yml", mustRead(t, "testdata/good/full.yml"), LoadOptions{
			OpsFiles:  []File{{Name: "ops.yml", Data: data}},
			VarsFiles: []File{{Name: "vars.yml", Data: data}},
		})
		_ = err // any error is fine; panics are not
	})
}

func mustReadF(f *testing.F, path string) []byte {
	data, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	return data
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func checkErr(t *testing.T, err error, file string) {
	t.Helper()
	if err == nil {
		return
	}
	var list Errors
	if !errors.As(err, &list) || len(list) == 0 {
		t.Fatalf("error is %T, not a non-empty Errors: %v", err, err)
	}
	for _, e := range list {
		if e.File != file || e.Message == "" || e.Line < 0 || e.Column < 0 {
			t.Fatalf("malformed error %+v", e)
		}
	}
}
