package supervisor

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Monit files. A BOSH job may declare its processes in a monit file
// (/var/vcap/jobs/<job>/monit) instead of a process file:
//
//	check process web
//	  with pidfile /var/vcap/sys/run/web/web.pid
//	  start program "/var/vcap/jobs/web/bin/ctl start" with timeout 60 seconds
//	  stop program "/var/vcap/jobs/web/bin/ctl stop"
//	  group vcap
//	  depends on db
//
// ParseMonit reads the statements above and nothing else: any other monit
// statement (if … then, every, mode, check file/host/system, …) is an error
// naming the file and line, so a job that relies on it is refused at
// upload rather than run without it. A monit process runs as monit runs it:
// the start program (through /bin/sh -c) must leave a process whose pid is
// in the pidfile; the supervisor watches that pid, runs the start program
// again when it is gone, and stops it with the stop program (then SIGKILL
// after the stop timeout).

// Default monit program timeouts, as monit's.
const (
	DefaultMonitStartTimeout = 30 * time.Second
	DefaultMonitStopTimeout  = 30 * time.Second
)

// MonitProgram is how a process declared in a monit file is run.
type MonitProgram struct {
	PidFile      string
	Start        string // shell command line
	Stop         string // shell command line; empty: SIGTERM to the pid
	StartTimeout time.Duration
}

// monitToken is one word or quoted string of a monit file.
type monitToken struct {
	text   string
	line   int
	quoted bool
}

func monitTokens(file string, data []byte) ([]monitToken, error) {
	var out []monitToken
	line := 1
	s := string(data)
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\n':
			line++
			i++
		case c == ' ' || c == '\t' || c == '\r' || c == ',':
			i++
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'':
			end := strings.IndexByte(s[i+1:], c)
			if end < 0 {
				return nil, &FieldError{File: file, Line: line, Msg: "unterminated quoted string"}
			}
			text := s[i+1 : i+1+end]
			out = append(out, monitToken{text: text, line: line, quoted: true})
			line += strings.Count(text, "\n")
			i += end + 2
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" \t\r\n,#\"'", rune(s[j])) {
				j++
			}
			out = append(out, monitToken{text: s[i:j], line: line})
			i = j
		}
	}
	return out, nil
}

// ParseMonit parses a job's monit file into processes run as monit would
// run them. job names the job (monit's `depends on` may name processes of
// other jobs; they are kept in Process.After); file names the file in
// errors.
func ParseMonit(job, file string, data []byte) ([]Process, error) {
	toks, err := monitTokens(file, data)
	if err != nil {
		return nil, err
	}
	var procs []Process
	var cur *Process
	fail := func(t monitToken, format string, args ...any) error {
		return &FieldError{File: file, Line: t.line, Msg: fmt.Sprintf(format, args...)}
	}
	is := func(i int, words ...string) bool {
		for k, w := range words {
			if i+k >= len(toks) || toks[i+k].quoted || !strings.EqualFold(toks[i+k].text, w) {
				return false
			}
		}
		return true
	}
	arg := func(i int, what string) (monitToken, error) {
		if i >= len(toks) {
			last := toks[len(toks)-1]
			return monitToken{}, fail(last, "%s is missing", what)
		}
		return toks[i], nil
	}
	// timeout reads an optional "with timeout N second(s)" at i.
	timeout := func(i int) (time.Duration, int, error) {
		if !is(i, "with", "timeout") {
			return 0, i, nil
		}
		t, err := arg(i+2, "timeout value")
		if err != nil {
			return 0, i, err
		}
		n, convErr := strconv.Atoi(t.text)
		if convErr != nil || n <= 0 || n > 86400 {
			return 0, i, fail(t, "timeout %q is not a number of seconds (1-86400)", t.text)
		}
		i += 3
		if is(i, "seconds") || is(i, "second") {
			i++
		} else if i < len(toks) && (is(i, "cycles") || is(i, "cycle")) {
			return 0, i, fail(toks[i], "timeouts in cycles are not supported: give seconds")
		}
		return time.Duration(n) * time.Second, i, nil
	}
	for i := 0; i < len(toks); {
		t := toks[i]
		switch {
		case is(i, "check", "process"):
			name, err := arg(i+2, "process name")
			if err != nil {
				return nil, err
			}
			if !nameRE.MatchString(name.text) {
				return nil, fail(name, "process name %q: use 1-63 letters, digits, '.', '_', '-'", name.text)
			}
			for _, p := range procs {
				if p.Name == name.text {
					return nil, fail(name, "process %q is checked twice", name.text)
				}
			}
			procs = append(procs, Process{Name: name.text, Monit: &MonitProgram{StartTimeout: DefaultMonitStartTimeout},
				Shutdown: Shutdown{Signal: DefaultShutdownSignal, Timeout: DefaultMonitStopTimeout}})
			cur = &procs[len(procs)-1]
			i += 3
			if is(i, "matching") {
				return nil, fail(toks[i], "check process … matching is not supported: use with pidfile")
			}
		case cur == nil:
			return nil, fail(t, "%q before the first check process statement (only check process is supported)", t.text)
		case is(i, "with", "pidfile") || is(i, "pidfile"):
			if is(i, "with") {
				i++
			}
			p, err := arg(i+1, "pidfile path")
			if err != nil {
				return nil, err
			}
			if !strings.HasPrefix(p.text, "/") {
				return nil, fail(p, "pidfile %q is not an absolute path", p.text)
			}
			cur.Monit.PidFile = p.text
			i += 2
		case is(i, "start", "program") || is(i, "stop", "program"):
			at := i + 2
			if is(at, "=") { // monit also reads start program = "cmd"
				at++
			}
			prog, err := arg(at, t.text+" program command")
			if err != nil {
				return nil, err
			}
			if !prog.quoted {
				return nil, fail(prog, "%s program needs a quoted command", t.text)
			}
			i = at + 1
			if is(i, "as", "uid") {
				return nil, fail(toks[i], "%s program as uid/gid is not supported: processes run as the agent's user", t.text)
			}
			d, next, err := timeout(i)
			if err != nil {
				return nil, err
			}
			i = next
			if strings.EqualFold(t.text, "start") {
				cur.Monit.Start = prog.text
				if d > 0 {
					cur.Monit.StartTimeout = d
				}
			} else {
				cur.Monit.Stop = prog.text
				if d > 0 {
					cur.Shutdown.Timeout = d
				}
			}
		case is(i, "group"):
			if _, err := arg(i+1, "group name"); err != nil {
				return nil, err
			}
			i += 2
		case is(i, "depends", "on") || is(i, "depends"):
			i++
			if is(i, "on") {
				i++
			}
			if i >= len(toks) {
				return nil, fail(t, "depends on names no process")
			}
			// The names run to the end of the line.
			line := toks[i].line
			for i < len(toks) && toks[i].line == line && !toks[i].quoted {
				cur.After = append(cur.After, toks[i].text)
				i++
			}
		default:
			return nil, fail(t, "monit statement %q is not supported (supported: check process, with pidfile, start program, stop program, group, depends on; see docs/bosh-compat.md)", t.text)
		}
	}
	for _, p := range procs {
		if p.Monit.PidFile == "" {
			return nil, &FieldError{File: file, Field: p.Name, Msg: "check process has no pidfile"}
		}
		if p.Monit.Start == "" {
			return nil, &FieldError{File: file, Field: p.Name, Msg: "check process has no start program"}
		}
	}
	return procs, nil
}
