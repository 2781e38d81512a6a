package template

import (
	"bufio"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The ERB renderer: BOSH job templates are ERB, rendered by a Ruby helper
// (erb/render.rb, embedded) that one long-lived ruby process runs for the
// whole director. Each rendering of one job for one instance is one request
// on its stdin, answered on its stdout; compiled templates are cached in
// the process, so rendering 1,000 instances parses each template once and
// starts one interpreter.

//go:embed erb/render.rb
var erbHelper string

// DefaultERBTimeout bounds one job's rendering.
const DefaultERBTimeout = 30 * time.Second

// Limits of the ruby process: its address space, and one answer (one job's
// rendered files, JSON-encoded).
const (
	erbMemoryLimit = 2 << 30
	erbMaxAnswer   = 128 << 20
)

// ErrNoRuby is returned when an ERB job is rendered and no Ruby interpreter
// can be started.
var ErrNoRuby = errors.New("ERB templates need a Ruby interpreter (Debian package ruby): none found")

// ERB renders ERB jobs through one Ruby process, started at the first
// rendering and again only if it dies. It is safe for concurrent use
// (requests are serialized).
type ERB struct {
	// Ruby is the interpreter; empty means "ruby" on PATH.
	Ruby string
	// Timeout bounds one request; zero means DefaultERBTimeout. A request
	// that times out kills the process (the next one starts a new one).
	Timeout time.Duration

	mu     sync.Mutex
	cmd    *exec.Cmd
	dir    string
	stdin  io.WriteCloser
	stdout *bufio.Reader
	exited chan struct{}
	stderr *tailWriter
	starts int
}

// NewERB returns an ERB renderer using the given interpreter ("" for ruby
// on PATH). Nothing starts until the first rendering.
func NewERB(ruby string) *ERB { return &ERB{Ruby: ruby} }

// Starts is how many interpreters this renderer has started.
func (e *ERB) Starts() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.starts
}

// Close stops the interpreter.
func (e *ERB) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stopLocked()
	return nil
}

func (e *ERB) stopLocked() {
	if e.cmd == nil {
		return
	}
	e.stdin.Close()
	select {
	case <-e.exited:
	case <-time.After(2 * time.Second):
		e.cmd.Process.Kill() //nolint:errcheck // already gone is fine
		<-e.exited
	}
	os.RemoveAll(e.dir)
	e.cmd = nil
}

func (e *ERB) startLocked() error {
	ruby := e.Ruby
	if ruby == "" {
		p, err := exec.LookPath("ruby")
		if err != nil {
			return ErrNoRuby
		}
		ruby = p
	}
	dir, err := os.MkdirTemp("", "compleat-erb-*")
	if err != nil {
		return err
	}
	script := dir + "/render.rb"
	if err := os.WriteFile(script, []byte(erbHelper), 0o644); err != nil {
		os.RemoveAll(dir)
		return err
	}
	// The shell bounds the interpreter's address space before it starts: a
	// runaway template gets NoMemoryError, reported as its error (the
	// answer's size is bounded by the reader).
	cmd := exec.Command("/bin/sh", "-c", fmt.Sprintf(`ulimit -v %d && exec "$0" --disable-gems "$1"`, erbMemoryLimit>>10), ruby, script)
	cmd.Dir = dir
	// Templates are code from the release: they get no environment of the
	// director's (tokens, keys) and, when the director runs as root, run as
	// nobody.
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "HOME=" + dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if os.Geteuid() == 0 {
		os.Chmod(dir, 0o755) //nolint:errcheck // readable by nobody
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: 65534, Gid: 65534}
	}
	e.stderr = &tailWriter{max: 4 << 10}
	cmd.Stderr = e.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		os.RemoveAll(dir)
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(dir)
		return err
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		if errors.Is(err, fs.ErrNotExist) {
			return ErrNoRuby
		}
		return fmt.Errorf("start ruby: %w", err)
	}
	e.cmd, e.dir, e.stdin, e.stdout = cmd, dir, stdin, bufio.NewReaderSize(stdout, 64<<10)
	e.exited = make(chan struct{})
	e.starts++
	go func(c chan struct{}) { cmd.Wait(); close(c) }(e.exited) //nolint:errcheck // exit seen by the reader
	return nil
}

// tailWriter keeps the last max bytes written to it (the interpreter's
// stderr, told when it dies).
type tailWriter struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if len(w.buf) > w.max {
		w.buf = w.buf[len(w.buf)-w.max:]
	}
	return len(p), nil
}

func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.TrimSpace(string(w.buf))
}

type erbTemplate struct {
	Name string `json:"name"`
	Text string `json:"text"`
}

type erbRequest struct {
	Job       string         `json:"job"`
	Templates []erbTemplate  `json:"templates"`
	Context   map[string]any `json:"context"`
}

type erbAnswer struct {
	Files []string `json:"files"`
	Error *struct {
		Template string `json:"template"`
		Line     int    `json:"line"`
		Message  string `json:"message"`
	} `json:"error"`
}

// call sends one request and reads its answer, (re)starting the process as
// needed.
func (e *ERB) call(req erbRequest) (erbAnswer, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return erbAnswer{}, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd != nil {
		select {
		case <-e.exited:
			e.stopLocked()
		default:
		}
	}
	if e.cmd == nil {
		if err := e.startLocked(); err != nil {
			return erbAnswer{}, err
		}
	}
	timeout := e.Timeout
	if timeout <= 0 {
		timeout = DefaultERBTimeout
	}
	type result struct {
		line []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		if _, err := e.stdin.Write(append(body, '\n')); err != nil {
			done <- result{err: err}
			return
		}
		line, err := readLine(e.stdout, erbMaxAnswer)
		done <- result{line, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(timeout):
		e.cmd.Process.Kill() //nolint:errcheck // gone is fine
		<-done
		e.stopLocked()
		return erbAnswer{}, fmt.Errorf("rendering took longer than %s (the ruby process was stopped)", timeout)
	}
	if r.err != nil {
		e.stopLocked()
		if tail := e.stderr.String(); tail != "" {
			return erbAnswer{}, fmt.Errorf("ruby renderer: %w (stderr: %s)", r.err, lastLine(tail))
		}
		return erbAnswer{}, fmt.Errorf("ruby renderer: %w", r.err)
	}
	var a erbAnswer
	if err := json.Unmarshal(r.line, &a); err != nil {
		e.stopLocked()
		return erbAnswer{}, fmt.Errorf("ruby renderer: bad answer: %w", err)
	}
	return a, nil
}

// IsERB reports whether job is a BOSH job rendered with ERB: one of its
// templates ends in .erb, or it has a monit file. Every template of such a
// job, whatever its name, is ERB, as in BOSH.
func IsERB(job Job) bool {
	if job.Monit != "" {
		return true
	}
	for _, t := range job.Templates {
		if strings.HasSuffix(t.Source, ".erb") {
			return true
		}
	}
	return false
}

// Render renders every template (and the monit file) of an ERB job for one
// instance, with BOSH's evaluation context.
func (e *ERB) Render(job Job, in Input) (Rendered, error) {
	props, err := effectiveProperties(job, normalizeMap(in.Properties))
	if err != nil {
		return Rendered{}, &Error{Job: job.Name, Template: "(properties)", Err: err}
	}
	req := erbRequest{Job: job.Name, Context: erbContext(job, in, props)}
	type dest struct{ source, path string }
	var dests []dest
	seen := map[string]string{}
	for _, t := range job.Templates {
		d := path.Clean(strings.TrimPrefix(t.Dest, "/"))
		if d == "." || d == ".." || strings.HasPrefix(d, "../") || d == "monit" {
			return Rendered{}, &Error{Job: job.Name, Template: t.Source, Err: fmt.Errorf("destination %q is not allowed", t.Dest)}
		}
		if other, dup := seen[d]; dup {
			return Rendered{}, &Error{Job: job.Name, Template: t.Source, Err: fmt.Errorf("destination %q is also rendered by %s", d, other)}
		}
		seen[d] = t.Source
		req.Templates = append(req.Templates, erbTemplate{Name: t.Source, Text: t.Text})
		dests = append(dests, dest{t.Source, d})
	}
	if job.Monit != "" {
		req.Templates = append(req.Templates, erbTemplate{Name: "monit", Text: job.Monit})
		dests = append(dests, dest{"monit", "monit"})
	}
	a, err := e.call(req)
	if err != nil {
		return Rendered{}, &Error{Job: job.Name, Template: "(erb)", Err: err}
	}
	if a.Error != nil {
		return Rendered{}, &Error{Job: job.Name, Template: a.Error.Template, Line: a.Error.Line, Err: errors.New(a.Error.Message)}
	}
	if len(a.Files) != len(dests) {
		return Rendered{}, &Error{Job: job.Name, Template: "(erb)", Err: fmt.Errorf("ruby renderer answered %d files for %d templates", len(a.Files), len(dests))}
	}
	files := make([]File, len(dests))
	for i, d := range dests {
		mode := fs.FileMode(0o644)
		if strings.HasPrefix(d.path, "bin/") {
			mode = 0o755
		}
		files[i] = File{Path: d.path, Mode: mode, Content: []byte(a.Files[i])}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	return Rendered{Job: job.Name, Files: files, Hash: hashFiles(files)}, nil
}

// erbContext is the request's context: the job's effective properties,
// spec as BOSH gives it, and the consumed links.
func erbContext(job Job, in Input, props map[string]any) map[string]any {
	inst := in.Instance
	networks := map[string]any{}
	for name, ip := range inst.NetworkIPs {
		n := map[string]any{"ip": ip}
		if ip == inst.IP {
			n["default"] = []string{"dns", "gateway"}
		}
		networks[name] = n
	}
	var az any
	if inst.AZ != "" {
		az = inst.AZ
	}
	spec := map[string]any{
		"name": inst.Name, "id": inst.ID, "index": inst.Index, "az": az,
		"address": inst.Address, "ip": inst.IP, "deployment": inst.Deployment,
		"bootstrap": inst.Bootstrap, "networks": networks, "persistent_disk": inst.PersistentDisk,
		"job":     map[string]any{"name": job.Name},
		"release": map[string]any{"name": in.Release.Name, "version": in.Release.Version},
	}
	links := map[string]any{}
	for name, l := range in.Links {
		if l == nil {
			continue
		}
		insts := make([]any, len(l.Instances))
		for i, li := range l.Instances {
			var laz any
			if li.AZ != "" {
				laz = li.AZ
			}
			insts[i] = map[string]any{"name": li.Name, "id": li.ID, "index": li.Index, "az": laz, "address": li.Address, "bootstrap": li.Bootstrap}
		}
		lp := normalizeMap(l.Properties)
		if lp == nil {
			lp = map[string]any{}
		}
		links[name] = map[string]any{"instances": insts, "properties": lp, "address": l.Address()}
	}
	if props == nil {
		props = map[string]any{}
	}
	return map[string]any{"properties": props, "spec": spec, "links": links}
}

// readLine reads up to and without '\n', failing past max bytes.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > max {
			return nil, fmt.Errorf("answer longer than %d bytes", max)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		return line, err
	}
}

func lastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
