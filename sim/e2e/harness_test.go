package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

var (
	buildOnce sync.Once
	builtDir  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if builtDir != "" {
		os.RemoveAll(builtDir)
	}
	os.Exit(code)
}

// binaries returns a directory holding director, agent, cloudsim and the
// plugins: $COMPLEAT_BIN when set, else ones built once for this test
// binary.
func binaries(t testing.TB) string {
	t.Helper()
	if dir := os.Getenv("COMPLEAT_BIN"); dir != "" {
		return dir
	}
	buildOnce.Do(func() {
		builtDir, buildErr = os.MkdirTemp("", "compleat-sim-e2e-bin-")
		if buildErr != nil {
			return
		}
		for out, pkg := range map[string]string{
			"director": "./director", "agent": "./agent", "cloudsim": "./sim/cmd/cloudsim",
			"cpi-aws": "./cpi/aws/cmd/cpi-aws", "cpi-local": "./cpi/local/cmd/cpi-local",
		} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(builtDir, out), pkg)
			cmd.Dir = repoRoot()
			if raw, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, raw)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtDir
}

// requireSim skips a test that needs the simulated AWS where it cannot run.
func requireSim(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs moto, cloudsim, a director, agents and cpi-aws, and compiles releases/web")
	}
	if _, err := exec.LookPath("moto_server"); err != nil {
		t.Skip("moto_server is not on PATH: the simulated AWS runs moto's EC2 server (moto 5, pip install 'moto[server]')")
	}
}

// freeAddr returns a free 127.0.0.1 port.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// process is a background process of a test, stopped by its pid.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{}
	log    string
}

func start(t testing.TB, log string, name string, args ...string) *process {
	t.Helper()
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	p := &process{cmd: cmd, exited: make(chan struct{}), log: log}
	go func() { cmd.Wait(); close(p.exited) }()
	return p
}

// stop sends SIGTERM and waits up to a minute, then SIGKILL.
func (p *process) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(time.Minute):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

func (p *process) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

func (p *process) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// awsSim is a running cloudsim aws.
type awsSim struct {
	*process
	env map[string]string
}

// startAWS starts cloudsim aws with its VPC at vpc (a /16 in 127/8) and
// returns once cloud.env is written. The simulator is stopped (deleting its
// VMs and moto) when the test ends.
func startAWS(t testing.TB, bin, dir, vpc string) *awsSim {
	t.Helper()
	envFile := filepath.Join(dir, "cloud.env")
	// The AMI light stemcells name is made from a local stemcell: its
	// instances boot the agent that stemcell carries.
	stemcell := filepath.Join(dir, "local-for-ami.tgz")
	if out, err := exec.Command(filepath.Join(bin, "director"), "create-stemcell", "--agent", filepath.Join(bin, "agent"), "--tarball", stemcell).CombinedOutput(); err != nil {
		t.Fatalf("create-stemcell: %v\n%s", err, out)
	}
	p := start(t, filepath.Join(dir, "cloudsim.log"), filepath.Join(bin, "cloudsim"), "aws",
		"--data", filepath.Join(dir, "aws"), "--env-file", envFile, "--vpc-cidr", vpc,
		"--stemcell", stemcell, "--poll", "100ms")
	t.Cleanup(func() {
		p.stop()
		if _, failed := t.(*testing.T); failed && t.Failed() {
			t.Logf("cloudsim log (tail):\n%s", p.tail())
		}
	})
	deadline := time.Now().Add(90 * time.Second)
	for {
		if raw, err := os.ReadFile(envFile); err == nil && len(raw) > 0 {
			return &awsSim{process: p, env: parseEnv(raw)}
		}
		if !p.running() {
			t.Fatalf("cloudsim exited:\n%s", p.tail())
		}
		if time.Now().After(deadline) {
			t.Fatalf("cloudsim did not write %s within 90s:\n%s", envFile, p.tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// parseEnv reads the export lines of a shell file.
func parseEnv(raw []byte) map[string]string {
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "export ")
		if !ok {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		env[k] = strings.Trim(v, "'")
	}
	return env
}

// director is a production-mode director of a test.
type director struct {
	*process
	bin    string
	target string
	token  string
	ca     string
}

// cpiEntry is one entry of director.yml's cpis.
type cpiEntry struct {
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Properties map[string]any `json:"properties"`
}

// startDirector starts `director serve --config` with the cpis given, all on
// loopback, and returns once its API answers.
func startDirector(t testing.TB, bin, dir string, cpis []cpiEntry) *director {
	t.Helper()
	var b [24]byte
	rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	if err := os.WriteFile(filepath.Join(dir, "admin.token"), []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	listen, bus := freeAddr(t), freeAddr(t)
	cpiJSON, _ := json.Marshal(cpis) // JSON is YAML
	cfg := fmt.Sprintf(`listen: %s
data_dir: director
tokens:
- {name: admin, token_file: admin.token, scopes: [admin]}
blobstore: {type: fs, public_url: "https://%s"}
nats: {listen: %s, url: "nats://%s"}
cpis: %s
`, listen, listen, bus, bus, cpiJSON)
	file := filepath.Join(dir, "director.yml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := start(t, filepath.Join(dir, "director.log"), filepath.Join(bin, "director"), "serve", "--config", file)
	d := &director{process: p, bin: bin, target: "https://" + listen, token: token, ca: filepath.Join(dir, "director", "ca.pem")}
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("director log (tail):\n%s", p.tail())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(d.ca); err == nil {
			if err := d.command("deployments").Run(); err == nil {
				return d
			}
		}
		if !p.running() {
			t.Fatalf("director exited:\n%s", p.tail())
		}
		if time.Now().After(deadline) {
			t.Fatalf("director did not answer within 60s:\n%s", p.tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *director) command(args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(d.bin, "director"), args...)
	cmd.Dir = repoRoot()
	cmd.Env = append(os.Environ(), "DIRECTOR_TARGET="+d.target, "DIRECTOR_TOKEN="+d.token, "DIRECTOR_CA_CERT="+d.ca)
	return cmd
}

// run runs a CLI command that must succeed and returns its stdout.
func (d *director) run(t testing.TB, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := d.command(args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("director %s: %v\n%s\n%s", strings.Join(args, " "), err, tailOf(out.String()), tailOf(errb.String()))
	}
	return out.String()
}

func tailOf(s string) string {
	if len(s) > 3000 {
		return "…" + s[len(s)-3000:]
	}
	return s
}

// instance is one entry of `instances --json`.
type instance struct {
	Group    string   `json:"group"`
	ID       string   `json:"id"`
	Index    int      `json:"index"`
	AZ       string   `json:"az"`
	VMCID    string   `json:"vm_cid"`
	DiskCIDs []string `json:"disk_cids"`
	IPs      []string `json:"ips"`
}

func (d *director) instances(t testing.TB, deployment string) []instance {
	t.Helper()
	out := d.run(t, "-d", deployment, "instances", "--json")
	var list []instance
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("instances --json: %v\n%s", err, out)
	}
	return list
}

// lbAnswers asks the lb until want distinct instances have answered with
// version, and returns their names.
func lbAnswers(t testing.TB, addr, version string, want int) []string {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	seen := map[string]bool{}
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for time.Now().Before(deadline) && len(seen) < want {
		resp, err := client.Get("http://" + addr + "/")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			last = strings.TrimSpace(string(body))
			if v, name, ok := strings.Cut(last, " "); ok && v == version && resp.StatusCode == 200 {
				seen[name] = true
			}
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	slices.Sort(names)
	if len(names) < want {
		t.Fatalf("lb %s answered %s from %v, want %d distinct instances (last answer %q)", addr, version, names, want, last)
	}
	return names
}

// waitIdle waits until the director runs no task (a resurrection it started
// by itself, say).
func (d *director) waitIdle(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var running []json.RawMessage
		out := d.run(t, "tasks", "--json")
		if err := json.Unmarshal([]byte(out), &running); err != nil {
			t.Fatalf("tasks --json: %v\n%s", err, out)
		}
		if len(running) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("tasks still running after 3 minutes:\n%s", out)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
