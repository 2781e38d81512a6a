package releases

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/compleat/compleat/director/release"
	"github.com/compleat/compleat/director/template"
	"github.com/compleat/compleat/test/testbin"
)

func TestWebReleaseIsDeterministic(t *testing.T) {
	dir := t.TempDir()
	var tarballs [][]byte
	for i := range 2 {
		out := filepath.Join(dir, fmt.Sprintf("web-%d.tgz", i))
		if _, _, err := release.Create("web", release.CreateOptions{Version: "1", Tarball: out}); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		tarballs = append(tarballs, b)
	}
	if !bytes.Equal(tarballs[0], tarballs[1]) {
		t.Fatal("two builds of releases/web differ")
	}
	m, err := release.Inspect(filepath.Join(dir, "web-0.tgz"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, j := range m.Jobs {
		names = append(names, j.Name)
	}
	for _, p := range m.Packages {
		names = append(names, p.Name+"("+strings.Join(p.Dependencies, ",")+")")
	}
	if got := strings.Join(names, " "); got != "lb web golang() lb(golang) webapp(golang)" {
		t.Errorf("release content = %s", got)
	}
}

// processFile is the part of config/processes.yml the test runs.
type processFile struct {
	Processes []struct {
		Name       string            `yaml:"name"`
		Executable string            `yaml:"executable"`
		Args       []string          `yaml:"args"`
		Env        map[string]string `yaml:"env"`
		Readiness  struct {
			HTTP *struct {
				URL    string `yaml:"url"`
				Status int    `yaml:"status"`
			} `yaml:"http"`
			TCP string `yaml:"tcp"`
		} `yaml:"readiness"`
		Shutdown struct {
			Signal  string `yaml:"signal"`
			Timeout string `yaml:"timeout"`
		} `yaml:"shutdown"`
	} `yaml:"processes"`
}

// render renders a job of the compiled release with the director's template
// renderer.
func (c *compiled) render(t *testing.T, job string, inst template.Instance, props map[string]any, links map[string]*template.Link) map[string]string {
	t.Helper()
	j := c.job(t, job).Job
	tj := template.Job{Name: j.Spec.Name, Properties: map[string]template.Property{}}
	for name, p := range j.Spec.Properties {
		tj.Properties[name] = template.Property{Default: p.Default}
	}
	for src, dst := range j.Spec.Templates {
		tj.Templates = append(tj.Templates, template.Template{Source: src, Dest: dst, Text: string(j.Templates[src])})
	}
	r, err := template.Render(tj, template.Input{Instance: inst, Properties: props, Links: links})
	if err != nil {
		t.Fatalf("render %s: %v", job, err)
	}
	files := map[string]string{}
	for _, f := range r.Files {
		files[f.Path] = string(f.Content)
	}
	return files
}

type process struct {
	cmd  *exec.Cmd
	log  *bytes.Buffer
	done chan struct{}
}

// start runs the processes of a rendered process file and waits for their
// readiness checks, as the agent's supervisor does.
func (c *compiled) start(t *testing.T, rendered map[string]string) []*process {
	t.Helper()
	var pf processFile
	if err := yaml.Unmarshal([]byte(rendered["config/processes.yml"]), &pf); err != nil {
		t.Fatalf("config/processes.yml: %v\n%s", err, rendered["config/processes.yml"])
	}
	var out []*process
	for _, p := range pf.Processes {
		if p.Shutdown.Signal != "TERM" {
			t.Errorf("process %s: shutdown signal %q", p.Name, p.Shutdown.Signal)
		}
		cmd := exec.Command(c.hostPath(p.Executable), p.Args...)
		for k, v := range p.Env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		pr := &process{cmd: cmd, log: &bytes.Buffer{}, done: make(chan struct{})}
		cmd.Stdout, cmd.Stderr = &lockedWriter{w: pr.log}, &lockedWriter{w: pr.log}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { cmd.Wait(); close(pr.done) }()
		t.Cleanup(func() { pr.stop(syscall.SIGKILL) })
		deadline := time.Now().Add(20 * time.Second)
		for {
			if p.Readiness.HTTP != nil && getStatus(p.Readiness.HTTP.URL) == p.Readiness.HTTP.Status {
				break
			}
			if p.Readiness.TCP != "" {
				if conn, err := net.DialTimeout("tcp", p.Readiness.TCP, time.Second); err == nil {
					conn.Close()
					break
				}
			}
			select {
			case <-pr.done:
				t.Fatalf("process %s exited: %v\n%s", p.Name, cmd.ProcessState, pr.log)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("process %s not ready\n%s", p.Name, pr.log)
			}
			time.Sleep(20 * time.Millisecond)
		}
		out = append(out, pr)
	}
	return out
}

func (p *process) stop(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

var client = &http.Client{Timeout: 10 * time.Second}

func getStatus(url string) int {
	resp, err := client.Get(url)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

type lbStatus struct {
	Backends []struct {
		Address string `json:"address"`
		Healthy bool   `json:"healthy"`
		Reason  string `json:"reason"`
	} `json:"backends"`
}

func status(t *testing.T, lb string) map[string]string {
	t.Helper()
	_, body := get(t, lb+"/_lb/status")
	var s lbStatus
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("lb status %q: %v", body, err)
	}
	out := map[string]string{}
	for _, b := range s.Backends {
		if b.Healthy {
			out[b.Address] = "in"
		} else {
			out[b.Address] = "out: " + b.Reason
		}
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestWebRelease compiles releases/web with its packaging scripts, renders
// its jobs with the director's renderer, runs two web instances behind the
// lb and proves: the lb balances, takes a killed backend out with no failed
// GET, and the web drain script makes the lb stop sending traffic before
// the instance stops, so a rolling stop loses no request.
func TestWebRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles Go packages")
	}
	needTools(t, "bash", "go")
	c := compileRelease(t, "web", "webapp", "lb")

	port := testbin.FreePort(t)
	webIPs := []string{"127.0.0.1", "127.0.0.2"}
	webProps := map[string]any{
		"port": port, "version": "v-test",
		"drain": map[string]any{"notice": "1s", "timeout": "10s"},
	}
	webFiles := make([]map[string]string, 2)
	webProcs := make([][]*process, 2)
	for i, ip := range webIPs {
		inst := template.Instance{Name: "web", ID: fmt.Sprintf("id-%d", i), Index: i, Address: ip, IP: ip, Deployment: "demo", Bootstrap: i == 0}
		webFiles[i] = c.render(t, "web", inst, webProps, nil)
		webProcs[i] = c.start(t, webFiles[i])
	}
	web0 := fmt.Sprintf("http://%s:%d", webIPs[0], port)
	if code, body := get(t, web0+"/"); code != 200 || body != "v-test web/0\n" {
		t.Fatalf("web/0 / = %d %q", code, body)
	}
	if code, _ := get(t, web0+"/health"); code != 200 {
		t.Fatalf("web/0 /health = %d", code)
	}

	lbPort := testbin.FreePort(t)
	link := &template.Link{Name: "web", Type: "http", Properties: map[string]any{"port": port}}
	for i, ip := range webIPs {
		link.Instances = append(link.Instances, template.LinkInstance{Name: "web", ID: fmt.Sprintf("id-%d", i), Index: i, Address: ip})
	}
	lbFiles := c.render(t, "lb", template.Instance{Name: "lb", ID: "lb-0", Address: "127.0.0.1", IP: "127.0.0.1", Deployment: "demo"},
		map[string]any{"port": lbPort, "health_check": map[string]any{"interval": "100ms", "timeout": "500ms"}},
		map[string]*template.Link{"web": link})
	c.start(t, lbFiles)
	lb := fmt.Sprintf("http://127.0.0.1:%d", lbPort)
	b0, b1 := fmt.Sprintf("%s:%d", webIPs[0], port), fmt.Sprintf("%s:%d", webIPs[1], port)
	waitFor(t, "both backends in service", func() bool {
		s := status(t, lb)
		return s[b0] == "in" && s[b1] == "in"
	})

	seen := map[string]int{}
	for range 10 {
		code, body := get(t, lb+"/")
		if code != 200 {
			t.Fatalf("through lb: %d %q", code, body)
		}
		seen[body]++
	}
	if seen["v-test web/0\n"] == 0 || seen["v-test web/1\n"] == 0 {
		t.Fatalf("lb did not balance: %v", seen)
	}

	t.Run("DrainLosesNoRequest", func(t *testing.T) {
		// Load through the lb for the whole drain and stop of web/0.
		var ok, failed atomic.Int64
		var failures sync.Map
		ctx, stopLoad := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					resp, err := client.Get(lb + "/?delay=20ms")
					if err != nil {
						failed.Add(1)
						failures.Store(err.Error(), true)
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						failed.Add(1)
						failures.Store(resp.Status, true)
						continue
					}
					ok.Add(1)
				}
			}()
		}
		// A slow request in flight on web/0 when the drain starts.
		slow := make(chan string, 1)
		go func() {
			resp, err := client.Get(web0 + "/?delay=1500ms")
			if err != nil {
				slow <- err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			slow <- fmt.Sprintf("%d %s", resp.StatusCode, b)
		}()
		time.Sleep(100 * time.Millisecond)

		drain := filepath.Join(t.TempDir(), "drain")
		if err := os.WriteFile(drain, []byte(c.hostPath(webFiles[0]["bin/drain"])), 0o755); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(drain).Output()
		if err != nil {
			t.Fatalf("drain: %v", err)
		}
		if string(out) != "0\n" {
			t.Fatalf("drain printed %q, want \"0\\n\" (BOSH drain contract)", out)
		}
		// When drain returns, the lb has taken web/0 out and the slow
		// request has finished.
		if s := status(t, lb)[b0]; !strings.Contains(s, "503") {
			t.Errorf("after drain, lb sees web/0 as %q, want out on a 503 health check", s)
		}
		select {
		case got := <-slow:
			if got != "200 v-test web/0\n" {
				t.Errorf("in-flight request during drain: %s", got)
			}
		default:
			t.Error("drain returned while a request was still in flight")
		}
		if code, _ := get(t, web0+"/health"); code != 503 {
			t.Errorf("web/0 /health after drain = %d, want 503", code)
		}
		// The supervisor now stops web/0 (TERM, as its process file says).
		webProcs[0][0].stop(syscall.SIGTERM)
		time.Sleep(300 * time.Millisecond)
		stopLoad()
		wg.Wait()
		if failed.Load() != 0 {
			var why []string
			failures.Range(func(k, _ any) bool { why = append(why, k.(string)); return true })
			t.Errorf("%d of %d requests failed during drain and stop: %v", failed.Load(), failed.Load()+ok.Load(), why)
		}
		t.Logf("%d requests through the lb during drain and stop, none failed", ok.Load())
	})

	t.Run("KilledBackendIsRetried", func(t *testing.T) {
		// Bring web/0 back: the lb takes it in on its own.
		webProcs[0] = c.start(t, webFiles[0])
		waitFor(t, "web/0 back in service", func() bool { return status(t, lb)[b0] == "in" })
		// Kill web/1 without warning; every GET still succeeds, retried on
		// web/0 when it hits the dead backend.
		webProcs[1][0].stop(syscall.SIGKILL)
		for i := range 20 {
			code, body := get(t, lb+"/")
			if code != 200 || body != "v-test web/0\n" {
				t.Fatalf("request %d after killing web/1: %d %q", i, code, body)
			}
		}
		if s := status(t, lb)[b1]; !strings.HasPrefix(s, "out") {
			t.Errorf("killed web/1 is %q in the lb", s)
		}
		// A request that cannot be retried (POST) to no backend at all
		// fails cleanly once web/0 is gone too.
		webProcs[0][0].stop(syscall.SIGKILL)
		waitFor(t, "no backend in service", func() bool {
			s := status(t, lb)
			return s[b0] != "in" && s[b1] != "in"
		})
		if code, _ := get(t, lb+"/"); code != http.StatusServiceUnavailable {
			t.Errorf("no backend: %d, want 503", code)
		}
	})
}
