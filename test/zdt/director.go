package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// director is a `director serve --dev` the harness started, and the CLI
// pointed at it.
type director struct {
	bin  string // the director binary
	data string // its --data directory
	env  []string
	cmd  *exec.Cmd
	log  *os.File
}

// startDirector runs `director serve --dev` on a kernel-chosen loopback port
// and waits until its API answers.
func startDirector(ctx context.Context, bin, data, logPath string) (*director, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "serve", "--dev", "--data", data, "--listen", "127.0.0.1:0")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s serve --dev: %w", bin, err)
	}
	d := &director{bin: bin, data: data, cmd: cmd, log: logf}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		env, err := readEnvFile(filepath.Join(data, "env"))
		if err == nil {
			d.env = env
			if _, err := d.run(ctx, "info"); err == nil {
				break
			}
		}
		select {
		case err := <-exited:
			logf.Close()
			return nil, fmt.Errorf("director serve exited (%v) before it was ready; see %s", err, logPath)
		case <-ctx.Done():
			d.stop()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.stop()
			return nil, fmt.Errorf("director not ready after 2m; see %s", logPath)
		}
	}
	go func() { <-exited }()
	return d, nil
}

// readEnvFile reads the DIRECTOR_* exports of `serve --dev`'s env file.
// The token stays in memory and in the children's environment only.
func readEnvFile(path string) ([]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var env []string
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		line, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "export ")
		if !ok {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || !strings.HasPrefix(k, "DIRECTOR_") {
			continue
		}
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		} else {
			v = strings.Trim(v, "'")
		}
		env = append(env, k+"="+v)
	}
	if len(env) < 3 {
		return nil, fmt.Errorf("%s: incomplete", path)
	}
	return env, nil
}

// run runs one CLI command non-interactively and returns its combined
// output; a non-zero exit is an error carrying the output's tail.
func (d *director) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, d.bin, append([]string{"-n"}, args...)...)
	cmd.Env = append(cleanEnv(), d.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("director %s: %w\n%s", strings.Join(args, " "), err, tail(string(out), 15))
	}
	return string(out), nil
}

// output runs one CLI command and returns its standard output alone (for
// --json, whose failures still print their error on standard error).
func (d *director) output(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, d.bin, append([]string{"-n"}, args...)...)
	cmd.Env = append(cleanEnv(), d.env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("director %s: %w\n%s", strings.Join(args, " "), err, tail(stderr.String(), 15))
	}
	return string(out), nil
}

// cleanEnv is the harness's environment without any DIRECTOR_ variable of
// the operator's own (the harness talks to its own director only).
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DIRECTOR_") {
			out = append(out, kv)
		}
	}
	return out
}

// stop ends the director (SIGTERM, then SIGKILL after 30 s).
func (d *director) stop() {
	if d.cmd.Process == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if err := d.cmd.Process.Signal(syscall.Signal(0)); err != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := d.cmd.Process.Signal(syscall.Signal(0)); err == nil {
		d.cmd.Process.Kill()
	}
	d.log.Close()
}

var taskLine = regexp.MustCompile(`(?m)^Task (\d+)`)

// taskID finds the task number a command's output names.
func taskID(out string) (int, error) {
	m := taskLine.FindStringSubmatch(out)
	if m == nil {
		return 0, errors.New("no task number in the command's output")
	}
	return strconv.Atoi(m[1])
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
