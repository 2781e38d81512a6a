package interpolate

import (
	"context"
	"errors"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func run(t *testing.T, doc string, src Source, opts Options) (string, error) {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(doc), &n); err != nil {
		t.Fatal(err)
	}
	if err := Interpolate(context.Background(), &n, src, opts); err != nil {
		return "", err
	}
	out, err := yaml.Marshal(&n)
	if err != nil {
		t.Fatal(err)
	}
	return string(out), nil
}

var vars = Vars{
	"host":      "db.internal",
	"port":      5432,
	"enabled":   true,
	"instances": 3,
	"tls": map[string]any{
		"certificate": "CERT",
		"private_key": "KEY",
		"ca":          "CA",
	},
	"nested":         map[string]any{"a": map[string]any{"b": "deep"}},
	"list":           []any{"x", "y"},
	"/d/dep/pw":      "abs",
	"looks_like_int": "0123",
}

func TestInterpolate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, in, want string }{
		{"whole value keeps its type", "n: ((instances))\n", "n: 3\n"},
		{"whole value map", "tls: ((tls))\n", "tls:\n    ca: CA\n    certificate: CERT\n    private_key: KEY\n"},
		{"whole value list", "l: ((list))\n", "l:\n    - x\n    - \"y\"\n"},
		{"sub key", "cert: ((tls.certificate))\n", "cert: CERT\n"},
		{"deep key", "v: ((nested.a.b))\n", "v: deep\n"},
		{"inline", "url: postgres://((host)):((port))/shop\n", "url: postgres://db.internal:5432/shop\n"},
		{"inline bool", "flag: on=((enabled))\n", "flag: on=true\n"},
		{"bang is dropped before lookup", "h: ((!host))\n", "h: db.internal\n"},
		{"absolute name", "pw: ((/d/dep/pw))\n", "pw: abs\n"},
		{"string stays a string", "v: ((looks_like_int))\n", "v: \"0123\"\n"},
		{"unknown stays without strict", "v: ((nope))\nw: a-((nope))-b\n", "v: ((nope))\nw: a-((nope))-b\n"},
		{"keys too", "((host)): 1\n", "db.internal: 1\n"},
		{"in lists", "- ((host))\n- ((port))\n", "- db.internal\n- 5432\n"},
		{"not a reference", "v: (( host ))\nw: ((a b))\n", "v: (( host ))\nw: ((a b))\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := run(t, tc.in, vars, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func TestStrictReportsEveryMissingName(t *testing.T) {
	t.Parallel()
	_, err := run(t, "a: ((one))\nb:\n  c: x((two))y\n  d: ((one))\n", vars, Options{Strict: true})
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("err = %v", err)
	}
	want := "1:4: a: variable \"one\" is not set\n3:6: b.c: variable \"two\" is not set\n4:6: b.d: variable \"one\" is not set"
	if err.Error() != want {
		t.Errorf("got:\n%v\nwant:\n%s", err, want)
	}
	if got := strings.Join(errs.MissingNames(), ","); got != "one,two" {
		t.Errorf("MissingNames = %s", got)
	}
}

func TestErrorsNeverShowValues(t *testing.T) {
	t.Parallel()
	secret := Vars{"tls": map[string]any{"private_key": "TOP-SECRET-KEY"}, "pw": "TOP-SECRET-PW"}
	for _, in := range []string{
		"a: x-((tls))\n",
		"a: ((tls.private_key.more))\n",
		"a: ((pw.sub))\n",
		"a: ((tls.nope))\n",
	} {
		_, err := run(t, in, secret, Options{Strict: true})
		if err == nil {
			t.Errorf("%q: no error", in)
			continue
		}
		if strings.Contains(err.Error(), "TOP-SECRET") {
			t.Errorf("%q: error shows a secret: %v", in, err)
		}
	}
}

type failing struct{}

func (failing) Get(context.Context, string) (any, bool, error) {
	return nil, false, errors.New("store unavailable")
}

// countingSource is a director-like source: it records what was asked.
type countingSource struct {
	asked []string
	vals  map[string]any
}

func (c *countingSource) Get(_ context.Context, name string) (any, bool, error) {
	c.asked = append(c.asked, name)
	v, ok := c.vals[name]
	return v, ok, nil
}

func TestSourcesPrecedenceAndCaching(t *testing.T) {
	t.Parallel()
	director := &countingSource{vals: map[string]any{"pw": "generated", "host": "from-director"}}
	src := Sources{Vars{"host": "from-flag"}, nil, director}
	got, err := run(t, "h: ((host))\np: ((pw))\nq: ((pw))-((pw))\n", src, Options{Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	if want := "h: from-flag\np: generated\nq: generated-generated\n"; got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	if strings.Join(director.asked, ",") != "pw" {
		t.Errorf("director asked for %v, want just pw once", director.asked)
	}
	if _, err := run(t, "a: ((x))\n", failing{}, Options{}); err == nil || !strings.Contains(err.Error(), "store unavailable") {
		t.Errorf("source error: %v", err)
	}
}

func TestReferences(t *testing.T) {
	t.Parallel()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte("a: ((pw))\nb: [((tls.ca)), x((pw))]\n((key)): ((!other))\n"), &n); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(References(&n), ","); got != "pw,tls,key,other" {
		t.Errorf("References = %s", got)
	}
}

func TestParseVar(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		name string
		val  any
	}{
		{"a=b", "a", "b"},
		{"n=3", "n", 3},
		{"n=-3", "n", -3},
		{"z=0123", "z", "0123"},
		{"t=true", "t", true},
		{"e=", "e", ""},
		{"eq=a=b", "eq", "a=b"},
		{"/abs/name=x", "/abs/name", "x"},
	} {
		n, v, err := ParseVar(tc.in)
		if err != nil || n != tc.name || v != tc.val {
			t.Errorf("ParseVar(%q) = %q, %#v, %v", tc.in, n, v, err)
		}
	}
	for _, bad := range []string{"novalue", "=x", "a.b=c", "a b=c"} {
		if _, _, err := ParseVar(bad); err == nil {
			t.Errorf("ParseVar(%q) accepted", bad)
		}
	}
}

func TestParseVarsFile(t *testing.T) {
	t.Parallel()
	v, err := ParseVarsFile("vars.yml", []byte("a: 1\nb: {c: d}\n"))
	if err != nil || v["a"] != 1 {
		t.Fatalf("%v %v", v, err)
	}
	if _, err := ParseVarsFile("vars.yml", []byte("- a\n")); err == nil || !strings.Contains(err.Error(), "vars.yml:1:1") {
		t.Errorf("list as vars file: %v", err)
	}
	if v, err := ParseVarsFile("vars.yml", nil); err != nil || len(v) != 0 {
		t.Errorf("empty vars file: %v %v", v, err)
	}
}
