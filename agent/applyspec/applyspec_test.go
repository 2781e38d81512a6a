package applyspec_test

import (
	"strings"
	"testing"

	"github.com/compleat/compleat/agent/applyspec"
)

const sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestValidate(t *testing.T) {
	good := applyspec.Spec{
		Jobs:     []applyspec.Job{{Name: "web", Blob: applyspec.Blob{URL: "https://x/blobs/1", SHA256: sha}}},
		Packages: []applyspec.Package{{Name: "app", Version: "1.2", Blob: applyspec.Blob{URL: "https://x/blobs/2", SHA256: sha}}},
	}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*applyspec.Spec){
		"dotdot job":      func(s *applyspec.Spec) { s.Jobs[0].Name = ".." },
		"slash package":   func(s *applyspec.Spec) { s.Packages[0].Name = "a/b" },
		"bad sha":         func(s *applyspec.Spec) { s.Jobs[0].Blob.SHA256 = "xyz" },
		"no url":          func(s *applyspec.Spec) { s.Packages[0].Blob.URL = "" },
		"version slash":   func(s *applyspec.Spec) { s.Packages[0].Version = "../1" },
		"duplicate job":   func(s *applyspec.Spec) { s.Jobs = append(s.Jobs, s.Jobs[0]) },
		"upper-case hash": func(s *applyspec.Spec) { s.Jobs[0].Blob.SHA256 = strings.ToUpper(sha) },
	} {
		s := good
		s.Jobs = append([]applyspec.Job(nil), good.Jobs...)
		s.Packages = append([]applyspec.Package(nil), good.Packages...)
		mutate(&s)
		if err := s.Validate(); err == nil {
			t.Errorf("%s: Validate succeeded", name)
		}
	}
}

func TestConfigHash(t *testing.T) {
	a := applyspec.Spec{Jobs: []applyspec.Job{{Name: "web", Blob: applyspec.Blob{SHA256: sha}}}}
	b := a
	b.Deployment = "other" // identity does not change what runs
	if a.ConfigHash() != b.ConfigHash() {
		t.Fatal("hash depends on identity")
	}
	c := applyspec.Spec{Jobs: []applyspec.Job{{Name: "web", Blob: applyspec.Blob{SHA256: strings.Repeat("1", 64)}}}}
	if a.ConfigHash() == c.ConfigHash() {
		t.Fatal("hash ignores job content")
	}
}

func TestIP(t *testing.T) {
	s := applyspec.Spec{Networks: map[string]applyspec.Network{
		"b": {IP: "127.0.0.2"},
		"a": {IP: "127.0.0.1"},
	}}
	if s.IP() != "127.0.0.1" {
		t.Fatalf("IP = %s", s.IP())
	}
	s.Networks["b"] = applyspec.Network{IP: "127.0.0.2", Default: []string{"dns", "gateway"}}
	if s.IP() != "127.0.0.2" {
		t.Fatalf("IP = %s", s.IP())
	}
}
