package supervisor

import (
	"errors"
	"io/fs"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseProcessFileFull(t *testing.T) {
	t.Parallel()
	const doc = `
processes:
- name: web
  executable: /var/vcap/packages/webapp/bin/webapp
  args: ["--listen", "127.77.0.11:8080"]
  env: {LOG_LEVEL: info, EMPTY: }
  workdir: /var/vcap/data/web/
  readiness:
    http: {url: "http://127.77.0.11:8080/health", status: 204}
    interval: 2s
    timeout: 500ms
  shutdown: {signal: SIGQUIT, timeout: 15s}
  limits: {open_files: 4096}
- name: worker
  executable: ruby
  readiness:
    tcp: "127.77.0.11:9090"
- name: checker
  executable: /bin/checker
  readiness:
    exec: ["/var/vcap/jobs/web/bin/ready", "--quick"]
    interval: 3
`
	pf, err := ParseProcessFile("processes.yml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := []Process{
		{
			Name:       "web",
			Executable: "/var/vcap/packages/webapp/bin/webapp",
			Args:       []string{"--listen", "127.77.0.11:8080"},
			Env:        map[string]string{"LOG_LEVEL": "info", "EMPTY": ""},
			Workdir:    "/var/vcap/data/web",
			Readiness: &Readiness{
				HTTP:     &HTTPCheck{URL: "http://127.77.0.11:8080/health", Status: 204},
				Interval: 2 * time.Second,
				Timeout:  500 * time.Millisecond,
			},
			Shutdown: Shutdown{Signal: syscall.SIGQUIT, Timeout: 15 * time.Second},
			Limits:   Limits{OpenFiles: 4096},
		},
		{
			Name:       "worker",
			Executable: "ruby",
			Readiness:  &Readiness{TCP: "127.77.0.11:9090", Interval: DefaultReadinessInterval, Timeout: DefaultReadinessTimeout},
			Shutdown:   Shutdown{Signal: DefaultShutdownSignal, Timeout: DefaultShutdownTimeout},
		},
		{
			Name:       "checker",
			Executable: "/bin/checker",
			Readiness:  &Readiness{Exec: []string{"/var/vcap/jobs/web/bin/ready", "--quick"}, Interval: 3 * time.Second, Timeout: DefaultReadinessTimeout},
			Shutdown:   Shutdown{Signal: DefaultShutdownSignal, Timeout: DefaultShutdownTimeout},
		},
	}
	if !reflect.DeepEqual(pf.Processes, want) {
		t.Errorf("parsed:\n%#v\nwant:\n%#v", pf.Processes, want)
	}
}

func TestParseProcessFileDefaults(t *testing.T) {
	t.Parallel()
	pf, err := ParseProcessFile("p.yml", []byte("processes:\n- name: a\n  executable: /bin/a\n  readiness: {http: {url: 'http://127.0.0.1:1/'}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	p := pf.Processes[0]
	if p.Readiness.HTTP.Status != 200 || p.Readiness.Interval != time.Second || p.Readiness.Timeout != time.Second {
		t.Errorf("readiness defaults: %+v %+v", p.Readiness, p.Readiness.HTTP)
	}
	if p.Shutdown != (Shutdown{Signal: syscall.SIGTERM, Timeout: 20 * time.Second}) {
		t.Errorf("shutdown defaults: %+v", p.Shutdown)
	}
	if p.Workdir != "" || p.Limits.OpenFiles != 0 || p.Env != nil {
		t.Errorf("unexpected values: %+v", p)
	}
}

// Every error names the file, the line and the field.
func TestParseProcessFileErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, doc string
		want      []string
	}{
		{"empty", "", []string{"f.yml: processes: file is empty"}},
		{"not yaml", "processes: [", []string{"f.yml: invalid YAML"}},
		{"no processes", "jobs: []\n", []string{"f.yml:1: jobs: unknown field", "f.yml:1: processes: is required"}},
		{"not a list", "processes: {}\n", []string{"f.yml:1: processes: must be a list"}},
		{"missing name and executable", "processes:\n- args: []\n", []string{
			"f.yml:2: processes[0].name: is required", "f.yml:2: processes[0].executable: is required"}},
		{"bad name", "processes:\n- name: 'a b'\n  executable: /bin/a\n", []string{`f.yml:2: processes[0].name: "a b" must be`}},
		{"duplicate", "processes:\n- name: a\n  executable: /bin/a\n- name: a\n  executable: /bin/b\n", []string{
			`f.yml:4: processes[1].name: "a" is already used by processes[0]`}},
		{"relative executable", "processes:\n- name: a\n  executable: bin/a\n", []string{
			`f.yml:3: processes[0].executable: "bin/a" must be an absolute path or a bare command name`}},
		{"unknown field", "processes:\n- name: a\n  executable: /bin/a\n  user: vcap\n", []string{
			"f.yml:4: processes[0].user: unknown field"}},
		{"args not strings", "processes:\n- name: a\n  executable: /bin/a\n  args: [[1]]\n", []string{
			"f.yml:4: processes[0].args[0]: must be a string"}},
		{"env not map", "processes:\n- name: a\n  executable: /bin/a\n  env: [A]\n", []string{
			"f.yml:4: processes[0].env: must be a mapping"}},
		{"bad env name", "processes:\n- name: a\n  executable: /bin/a\n  env: {A-B: x}\n", []string{
			"f.yml:4: processes[0].env.A-B: is not a valid environment variable name"}},
		{"relative workdir", "processes:\n- name: a\n  executable: /bin/a\n  workdir: data\n", []string{
			`f.yml:4: processes[0].workdir: "data" must be an absolute path`}},
		{"two checks", "processes:\n- name: a\n  executable: /bin/a\n  readiness:\n    tcp: 127.0.0.1:1\n    exec: [/bin/true]\n", []string{
			"f.yml:5: processes[0].readiness: needs exactly one of http, tcp, exec"}},
		{"no check", "processes:\n- name: a\n  executable: /bin/a\n  readiness: {interval: 1s}\n", []string{
			"f.yml:4: processes[0].readiness: needs exactly one of http, tcp, exec"}},
		{"bad url", "processes:\n- name: a\n  executable: /bin/a\n  readiness:\n    http: {url: 'ftp://x/'}\n", []string{
			`f.yml:5: processes[0].readiness.http.url: "ftp://x/" must be an http:// or https:// URL`}},
		{"bad status", "processes:\n- name: a\n  executable: /bin/a\n  readiness:\n    http:\n      url: http://127.0.0.1:1/\n      status: 99\n", []string{
			`f.yml:7: processes[0].readiness.http.status: "99" must be an HTTP status code`}},
		{"bad tcp", "processes:\n- name: a\n  executable: /bin/a\n  readiness: {tcp: localhost}\n", []string{
			`f.yml:4: processes[0].readiness.tcp: "localhost" must be host:port`}},
		{"empty exec", "processes:\n- name: a\n  executable: /bin/a\n  readiness: {exec: []}\n", []string{
			"f.yml:4: processes[0].readiness.exec: must name a command"}},
		{"bad duration", "processes:\n- name: a\n  executable: /bin/a\n  readiness:\n    tcp: 127.0.0.1:1\n    interval: soon\n", []string{
			`f.yml:6: processes[0].readiness.interval: "soon" is not a positive duration`}},
		{"bad signal", "processes:\n- name: a\n  executable: /bin/a\n  shutdown: {signal: STOP}\n", []string{
			`f.yml:4: processes[0].shutdown.signal: "STOP" is not a supported signal`}},
		{"bad open files", "processes:\n- name: a\n  executable: /bin/a\n  limits: {open_files: -1}\n", []string{
			`f.yml:4: processes[0].limits.open_files: "-1" must be a positive integer`}},
		{"duplicate key", "processes:\n- name: a\n  name: b\n  executable: /bin/a\n", []string{
			"f.yml:3: processes[0].name: appears twice"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseProcessFile("f.yml", []byte(c.doc))
			if err == nil {
				t.Fatal("no error")
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Errorf("error %v is not a *FieldError", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error:\n%v\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestLoadProcessFileMissing(t *testing.T) {
	t.Parallel()
	_, err := LoadProcessFile(filepath.Join(t.TempDir(), "processes.yml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}
}

func TestAggregate(t *testing.T) {
	t.Parallel()
	r, s, f, x := StateRunning, StateStarting, StateFailing, StateStopped
	cases := []struct {
		in   []State
		want State
	}{
		{nil, r},
		{[]State{r, r}, r},
		{[]State{r, s}, s},
		{[]State{r, s, f}, f},
		{[]State{x, f}, f},
		{[]State{x, x}, x},
		{[]State{x, r}, x},
		{[]State{x, s}, s},
	}
	for _, c := range cases {
		if got := Aggregate(c.in); got != c.want {
			t.Errorf("Aggregate(%v) = %s, want %s", c.in, got, c.want)
		}
	}
}

func FuzzParseProcessFile(f *testing.F) {
	f.Add([]byte("processes:\n- name: a\n  executable: /bin/a\n  readiness: {tcp: '127.0.0.1:1'}\n"))
	f.Add([]byte("processes:\n- {name: a, executable: a, limits: {open_files: 3}, shutdown: {signal: hup}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pf, err := ParseProcessFile("f.yml", data)
		if err != nil {
			return
		}
		for _, p := range pf.Processes {
			if err := p.validate(); err != nil {
				t.Errorf("parsed process does not validate: %v", err)
			}
		}
	})
}
