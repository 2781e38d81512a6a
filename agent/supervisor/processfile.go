package supervisor

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"
)

// Defaults applied by ParseProcessFile to fields the file leaves out.
const (
	DefaultReadinessInterval = time.Second
	DefaultReadinessTimeout  = time.Second
	DefaultHTTPStatus        = 200
	DefaultShutdownSignal    = syscall.SIGTERM
	DefaultShutdownTimeout   = 20 * time.Second
)

// ProcessFile is a parsed config/processes.yml.
type ProcessFile struct {
	Processes []Process
}

// Process is one process a job declares. Values are complete after
// ParseProcessFile: defaults are filled in.
type Process struct {
	// Name is unique within the job; it names the log files.
	Name string
	// Executable is an absolute path or a bare command name looked up in
	// the process's PATH.
	Executable string
	Args       []string
	// Env is merged over the supervisor's base environment.
	Env map[string]string
	// Workdir is created (0755) if missing; empty means "/".
	Workdir string
	// Readiness is nil when the process is running as soon as it started.
	Readiness *Readiness
	Shutdown  Shutdown
	Limits    Limits
	// Monit, when set, runs the process as monit does (see ParseMonit):
	// Executable and Args are unused; the start program leaves a process
	// whose pid is in the pidfile.
	Monit *MonitProgram
	// After names processes (of this job or another) that must be running
	// before this one starts: monit's "depends on".
	After []string
	// Dirs are created (0755, with parents) before each start: bpm's
	// disks and volumes.
	Dirs []string
	// PreStart is run (and must exit 0) before each start: bpm's
	// hooks.pre_start.
	PreStart string
	// PidFile, when set, holds the running process's pid (bpm's pid file,
	// which BOSH jobs' scripts read); removed when it exits.
	PidFile string
}

// Readiness is the check that must pass before a process is running.
// Exactly one of HTTP, TCP and Exec is set.
type Readiness struct {
	HTTP     *HTTPCheck
	TCP      string   // host:port that must accept a connection
	Exec     []string // argv that must exit 0
	Interval time.Duration
	Timeout  time.Duration
}

// HTTPCheck passes when a GET of URL answers Status.
type HTTPCheck struct {
	URL    string
	Status int
}

// Shutdown says how a process is stopped: Signal to its process group, then
// SIGKILL after Timeout.
type Shutdown struct {
	Signal  syscall.Signal
	Timeout time.Duration
}

// Limits are resource limits applied to the process.
type Limits struct {
	// OpenFiles is RLIMIT_NOFILE (soft and hard); 0 leaves it inherited.
	OpenFiles uint64
}

// FieldError is a problem in a process file, located by line and field path
// (processes[0].readiness.http.status).
type FieldError struct {
	File  string
	Line  int
	Field string
	Msg   string
}

func (e *FieldError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	if e.Field == "" {
		return fmt.Sprintf("%s: %s", loc, e.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", loc, e.Field, e.Msg)
}

// LoadProcessFile reads and parses the process file at path. A missing file
// yields an error matching fs.ErrNotExist: the job runs no processes.
func LoadProcessFile(path string) (ProcessFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return ProcessFile{}, fmt.Errorf("read process file: %w", err)
	}
	return ParseProcessFile(path, data)
}

// ParseProcessFile parses a process file's content; file names it in errors.
// Every problem found is reported, each as a *FieldError, joined.
func ParseProcessFile(file string, data []byte) (ProcessFile, error) {
	p := &parser{file: file}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return ProcessFile{}, &FieldError{File: file, Msg: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	var pf ProcessFile
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return ProcessFile{}, &FieldError{File: file, Field: "processes", Msg: "file is empty"}
	}
	root := doc.Content[0]
	fields := p.mapping(root, "", []string{"processes"})
	list, ok := fields["processes"]
	if !ok {
		p.fail(root, "processes", "is required")
		return ProcessFile{}, p.err()
	}
	if list.Kind != yaml.SequenceNode {
		p.fail(list, "processes", "must be a list")
		return ProcessFile{}, p.err()
	}
	seen := map[string]int{}
	for i, item := range list.Content {
		proc, ok := p.process(item, fmt.Sprintf("processes[%d]", i))
		if !ok {
			continue
		}
		if first, dup := seen[proc.Name]; dup {
			p.fail(item, fmt.Sprintf("processes[%d].name", i), fmt.Sprintf("%q is already used by processes[%d]", proc.Name, first))
			continue
		}
		seen[proc.Name] = i
		pf.Processes = append(pf.Processes, proc)
	}
	if err := p.err(); err != nil {
		return ProcessFile{}, err
	}
	return pf, nil
}

// validate checks a Process built in code rather than parsed, with the
// parser's main rules.
func (p Process) validate() error {
	switch {
	case !nameRE.MatchString(p.Name):
		return fmt.Errorf("process name %q: must match %s", p.Name, nameRE)
	case p.Monit != nil && (p.Monit.Start == "" || !path.IsAbs(p.Monit.PidFile)):
		return fmt.Errorf("process %s: a monit process needs a start program and an absolute pidfile", p.Name)
	case p.Monit == nil && p.Executable == "":
		return fmt.Errorf("process %s: executable is required", p.Name)
	case strings.Contains(p.Executable, "/") && !path.IsAbs(p.Executable):
		return fmt.Errorf("process %s: executable %q must be absolute or a bare command name", p.Name, p.Executable)
	case p.Workdir != "" && !path.IsAbs(p.Workdir):
		return fmt.Errorf("process %s: workdir %q must be absolute", p.Name, p.Workdir)
	}
	for k := range p.Env {
		if !envKeyRE.MatchString(k) {
			return fmt.Errorf("process %s: env %q is not a valid environment variable name", p.Name, k)
		}
	}
	if r := p.Readiness; r != nil {
		if len(r.Exec) > 0 && r.Exec[0] == "" {
			return fmt.Errorf("process %s: readiness exec must name a command", p.Name)
		}
		n := 0
		if r.HTTP != nil {
			n++
		}
		if r.TCP != "" {
			n++
		}
		if len(r.Exec) > 0 {
			n++
		}
		if n != 1 {
			return fmt.Errorf("process %s: readiness needs exactly one of http, tcp, exec", p.Name)
		}
	}
	return nil
}

func (p Process) withDefaults() Process {
	if p.Readiness != nil {
		r := *p.Readiness
		if r.Interval <= 0 {
			r.Interval = DefaultReadinessInterval
		}
		if r.Timeout <= 0 {
			r.Timeout = DefaultReadinessTimeout
		}
		if r.HTTP != nil && r.HTTP.Status == 0 {
			h := *r.HTTP
			h.Status = DefaultHTTPStatus
			r.HTTP = &h
		}
		p.Readiness = &r
	}
	if p.Shutdown.Signal == 0 {
		p.Shutdown.Signal = DefaultShutdownSignal
	}
	if p.Shutdown.Timeout <= 0 {
		p.Shutdown.Timeout = DefaultShutdownTimeout
	}
	return p
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

type parser struct {
	file string
	errs []error
}

func (p *parser) fail(n *yaml.Node, field, msg string) {
	line := 0
	if n != nil {
		line = n.Line
	}
	p.errs = append(p.errs, &FieldError{File: p.file, Line: line, Field: field, Msg: msg})
}

func (p *parser) err() error { return errors.Join(p.errs...) }

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// mapping returns the values of a mapping node by key, reporting unknown and
// duplicate keys.
func (p *parser) mapping(n *yaml.Node, at string, known []string) map[string]*yaml.Node {
	out := map[string]*yaml.Node{}
	if n.Kind != yaml.MappingNode {
		name := at
		if name == "" {
			name = "document"
		}
		p.fail(n, name, "must be a mapping")
		return out
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		field := join(at, k.Value)
		if !contains(known, k.Value) {
			p.fail(k, field, fmt.Sprintf("unknown field (known: %s)", strings.Join(known, ", ")))
			continue
		}
		if _, dup := out[k.Value]; dup {
			p.fail(k, field, "appears twice")
			continue
		}
		out[k.Value] = v
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (p *parser) str(n *yaml.Node, field string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.fail(n, field, "must be a string")
		return "", false
	}
	return n.Value, true
}

func (p *parser) strList(n *yaml.Node, field string) ([]string, bool) {
	if n.Kind != yaml.SequenceNode {
		p.fail(n, field, "must be a list of strings")
		return nil, false
	}
	out := make([]string, 0, len(n.Content))
	ok := true
	for i, c := range n.Content {
		s, good := p.str(c, fmt.Sprintf("%s[%d]", field, i))
		ok = ok && good
		out = append(out, s)
	}
	return out, ok
}

func (p *parser) duration(n *yaml.Node, field string) (time.Duration, bool) {
	s, ok := p.str(n, field)
	if !ok {
		return 0, false
	}
	if secs, err := strconv.ParseUint(s, 10, 32); err == nil {
		return time.Duration(secs) * time.Second, true
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		p.fail(n, field, fmt.Sprintf("%q is not a positive duration (like 500ms, 15s, 2m)", s))
		return 0, false
	}
	return d, true
}

func (p *parser) process(n *yaml.Node, at string) (Process, bool) {
	before := len(p.errs)
	f := p.mapping(n, at, []string{"name", "executable", "args", "env", "workdir", "readiness", "shutdown", "limits"})
	var proc Process
	if v, ok := f["name"]; !ok {
		p.fail(n, join(at, "name"), "is required")
	} else if s, ok := p.str(v, join(at, "name")); ok {
		if !nameRE.MatchString(s) {
			p.fail(v, join(at, "name"), fmt.Sprintf("%q must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", s))
		}
		proc.Name = s
	}
	if v, ok := f["executable"]; !ok {
		p.fail(n, join(at, "executable"), "is required")
	} else if s, ok := p.str(v, join(at, "executable")); ok {
		switch {
		case s == "":
			p.fail(v, join(at, "executable"), "must not be empty")
		case strings.Contains(s, "/") && !path.IsAbs(s):
			p.fail(v, join(at, "executable"), fmt.Sprintf("%q must be an absolute path or a bare command name", s))
		}
		proc.Executable = s
	}
	if v, ok := f["args"]; ok {
		proc.Args, _ = p.strList(v, join(at, "args"))
	}
	if v, ok := f["env"]; ok {
		proc.Env = p.env(v, join(at, "env"))
	}
	if v, ok := f["workdir"]; ok {
		if s, ok := p.str(v, join(at, "workdir")); ok {
			if !path.IsAbs(s) {
				p.fail(v, join(at, "workdir"), fmt.Sprintf("%q must be an absolute path", s))
			}
			proc.Workdir = path.Clean(s)
		}
	}
	if v, ok := f["readiness"]; ok {
		proc.Readiness = p.readiness(v, join(at, "readiness"))
	}
	if v, ok := f["shutdown"]; ok {
		proc.Shutdown = p.shutdown(v, join(at, "shutdown"))
	}
	if v, ok := f["limits"]; ok {
		lf := p.mapping(v, join(at, "limits"), []string{"open_files"})
		if o, ok := lf["open_files"]; ok {
			field := join(at, "limits.open_files")
			u, err := strconv.ParseUint(o.Value, 10, 32)
			if o.Kind != yaml.ScalarNode || err != nil || u == 0 {
				p.fail(o, field, fmt.Sprintf("%q must be a positive integer", o.Value))
			}
			proc.Limits.OpenFiles = u
		}
	}
	return proc.withDefaults(), len(p.errs) == before
}

var envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func (p *parser) env(n *yaml.Node, at string) map[string]string {
	if n.Kind != yaml.MappingNode {
		p.fail(n, at, "must be a mapping of names to strings")
		return nil
	}
	out := map[string]string{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		field := join(at, k.Value)
		if !envKeyRE.MatchString(k.Value) {
			p.fail(k, field, "is not a valid environment variable name")
			continue
		}
		if v.Kind != yaml.ScalarNode {
			p.fail(v, field, "must be a string")
			continue
		}
		if v.Tag == "!!null" {
			out[k.Value] = ""
			continue
		}
		out[k.Value] = v.Value
	}
	return out
}

func (p *parser) readiness(n *yaml.Node, at string) *Readiness {
	f := p.mapping(n, at, []string{"http", "tcp", "exec", "interval", "timeout"})
	r := &Readiness{}
	checks := 0
	if v, ok := f["http"]; ok {
		checks++
		hf := p.mapping(v, join(at, "http"), []string{"url", "status"})
		h := &HTTPCheck{}
		if u, ok := hf["url"]; !ok {
			p.fail(v, join(at, "http.url"), "is required")
		} else if s, ok := p.str(u, join(at, "http.url")); ok {
			parsed, err := url.Parse(s)
			if err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Host == "" {
				p.fail(u, join(at, "http.url"), fmt.Sprintf("%q must be an http:// or https:// URL", s))
			}
			h.URL = s
		}
		if st, ok := hf["status"]; ok {
			code, err := strconv.Atoi(st.Value)
			if st.Kind != yaml.ScalarNode || err != nil || code < 100 || code > 599 {
				p.fail(st, join(at, "http.status"), fmt.Sprintf("%q must be an HTTP status code (100-599)", st.Value))
			}
			h.Status = code
		}
		r.HTTP = h
	}
	if v, ok := f["tcp"]; ok {
		checks++
		if s, ok := p.str(v, join(at, "tcp")); ok {
			if _, port, err := net.SplitHostPort(s); err != nil || port == "" {
				p.fail(v, join(at, "tcp"), fmt.Sprintf("%q must be host:port", s))
			}
			r.TCP = s
		}
	}
	if v, ok := f["exec"]; ok {
		checks++
		if argv, ok := p.strList(v, join(at, "exec")); ok {
			if len(argv) == 0 || argv[0] == "" {
				p.fail(v, join(at, "exec"), "must name a command")
			}
			r.Exec = argv
		}
	}
	if checks != 1 {
		p.fail(n, at, "needs exactly one of http, tcp, exec (omit readiness to be running once started)")
	}
	if v, ok := f["interval"]; ok {
		r.Interval, _ = p.duration(v, join(at, "interval"))
	}
	if v, ok := f["timeout"]; ok {
		r.Timeout, _ = p.duration(v, join(at, "timeout"))
	}
	return r
}

func (p *parser) shutdown(n *yaml.Node, at string) Shutdown {
	f := p.mapping(n, at, []string{"signal", "timeout"})
	var s Shutdown
	if v, ok := f["signal"]; ok {
		if name, ok := p.str(v, join(at, "signal")); ok {
			sig, err := ParseSignal(name)
			if err != nil {
				p.fail(v, join(at, "signal"), err.Error())
			}
			s.Signal = sig
		}
	}
	if v, ok := f["timeout"]; ok {
		s.Timeout, _ = p.duration(v, join(at, "timeout"))
	}
	return s
}

var signals = map[string]syscall.Signal{
	"TERM": syscall.SIGTERM, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT,
	"HUP": syscall.SIGHUP, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2,
	"KILL": syscall.SIGKILL,
}

// ParseSignal turns a signal name (TERM, SIGTERM, term) into a signal. The
// accepted names are TERM, INT, QUIT, HUP, USR1, USR2 and KILL.
func ParseSignal(name string) (syscall.Signal, error) {
	key := strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(name)), "SIG")
	if sig, ok := signals[key]; ok {
		return sig, nil
	}
	return 0, fmt.Errorf("%q is not a supported signal (TERM, INT, QUIT, HUP, USR1, USR2, KILL)", name)
}
