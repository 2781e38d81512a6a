package e2e

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestLogsAndSSH deploys the sample web deployment and reaches into a web
// instance the way an operator does: ssh runs commands on its VM (one
// instance, the whole group, a line-based session), logs downloads its job
// logs as a tarball, and logs --follow shows lines as they are written.
func TestLogsAndSSH(t *testing.T) {
	// An address range of its own (TestDeployWeb uses 127.1xx., TestResurrectWeb 127.2xx.).
	d, _ := deploySample(t, fmt.Sprintf("127.%d.", 10+os.Getpid()%60), nil)

	var insts []struct {
		Group string `json:"group"`
		ID    string `json:"id"`
		Index int    `json:"index"`
	}
	if err := json.Unmarshal([]byte(d.run("--json", "-d", "web", "instances")), &insts); err != nil {
		t.Fatal(err)
	}
	var web0, web1 string
	for _, i := range insts {
		if i.Group == "web" && i.Index == 0 {
			web0 = "web/" + i.ID
		}
		if i.Group == "web" && i.Index == 1 {
			web1 = "web/" + i.ID
		}
	}
	if web0 == "" || web1 == "" {
		t.Fatalf("no web/0 and web/1 in %+v", insts)
	}

	t.Run("ssh -c prints the rendered process file", func(t *testing.T) {
		out := d.run("-d", "web", "ssh", web0, "-c", "cat /var/vcap/jobs/web/config/processes.yml")
		for _, want := range []string{web0 + ": processes:", web0 + ":   executable: /var/vcap/packages/webapp/bin/webapp", `"web/0"`} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("ssh GROUP runs on every instance; a failure exits 1", func(t *testing.T) {
		out := d.run("-d", "web", "ssh", "web", "-c", "pwd")
		for _, want := range []string{web0 + ": /var/vcap\n", web1 + ": /var/vcap\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		cmd := d.command("-d", "web", "ssh", web1, "-c", "echo about to fail; exit 3")
		raw, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Fatalf("failing command: %v, want exit status 1\n%s", err, raw)
		}
		if out := string(raw); !strings.Contains(out, web1+": about to fail") || !strings.Contains(out, web1+": exit status 3") {
			t.Errorf("failing command output:\n%s", out)
		}
		if out, err := d.command("--token", "not-the-token", "-d", "web", "ssh", web1, "-c", "true").CombinedOutput(); err == nil {
			t.Errorf("ssh with a wrong token succeeded:\n%s", out)
		}
	})

	t.Run("ssh without -c is a line-based session", func(t *testing.T) {
		cmd := d.command("-d", "web", "ssh", web0)
		cmd.Stdin = strings.NewReader("echo first line\n\ncat /var/vcap/jobs/web/config/processes.yml | grep -c executable\nexit\necho never\n")
		raw, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("session: %v\n%s", err, raw)
		}
		out := string(raw)
		if !strings.Contains(out, web0+": first line\n") || !strings.Contains(out, web0+": 1\n") || strings.Contains(out, "never") {
			t.Errorf("session output:\n%s", out)
		}
		if !strings.Contains(out, "not a terminal") {
			t.Errorf("the session does not say it is not a terminal:\n%s", out)
		}
	})

	t.Run("every ssh command is in the audit log", func(t *testing.T) {
		var evs []struct {
			User     string            `json:"user"`
			Instance string            `json:"instance"`
			Action   string            `json:"action"`
			Context  map[string]string `json:"context"`
		}
		if err := json.Unmarshal([]byte(d.run("--json", "-d", "web", "events", "--action", "ssh")), &evs); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range evs {
			sum := sha256.Sum256([]byte("cat /var/vcap/jobs/web/config/processes.yml"))
			if e.Instance == web0 && e.Context["command_sha256"] == hex.EncodeToString(sum[:]) && e.User == "admin" {
				found = true
			}
			if strings.Contains(fmt.Sprint(e.Context), "executable") || e.Context["command"] != "" {
				t.Errorf("command line or output in the audit log: %+v", e)
			}
		}
		if !found || len(evs) < 6 {
			t.Errorf("%d ssh events, the cat on %s missing: %+v", len(evs), web0, evs)
		}
	})

	t.Run("logs downloads a tarball of the job logs", func(t *testing.T) {
		dir := t.TempDir()
		out := d.run("-d", "web", "logs", web0, "--dir", dir)
		id := strings.TrimPrefix(web0, "web/")
		name := regexp.MustCompile(`web\.web\.` + regexp.QuoteMeta(id) + `\.\d{8}-\d{6}\.tgz`)
		path := strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:])
		if filepath.Dir(path) != dir || !name.MatchString(filepath.Base(path)) {
			t.Fatalf("logs printed %q as the path, want %s/web.web.%s.<time>.tgz:\n%s", path, dir, id, out)
		}
		files := tarFiles(t, path)
		if _, ok := files["web/webapp.stdout.log"]; !ok {
			t.Errorf("no web/webapp.stdout.log in %v", keys(files))
		}
		if !strings.Contains(files["web/webapp.stderr.log"], "serving v1 (web/0)") {
			t.Errorf("webapp.stderr.log lacks the serving line: %q", files["web/webapp.stderr.log"])
		}

		// --json: the path and the archive's sha256, nothing else.
		var doc struct {
			Path, SHA256, Instance string
		}
		if err := json.Unmarshal([]byte(d.run("--json", "-d", "web", "logs", web0, "--dir", dir, "--job", "web")), &doc); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(doc.Path)
		if err != nil {
			t.Fatal(err)
		}
		if s := sha256.Sum256(b); hex.EncodeToString(s[:]) != doc.SHA256 || doc.Instance != web0 {
			t.Errorf("--json says %+v; the file's sha256 is %x", doc, s)
		}
	})

	t.Run("logs --follow shows lines as they are written", func(t *testing.T) {
		cmd := d.command("-d", "web", "logs", web0, "--follow", "--job", "web")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		lines := make(chan string, 100)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		waitFor := func(want string) {
			t.Helper()
			deadline := time.After(30 * time.Second)
			for {
				select {
				case l, ok := <-lines:
					if !ok {
						t.Fatalf("logs --follow ended before %q", want)
					}
					if strings.Contains(l, want) {
						return
					}
				case <-deadline:
					t.Fatalf("logs --follow did not show %q within 30s", want)
				}
			}
		}
		// The webapp's own start-up line, from the last lines shown first.
		waitFor("web/webapp.stderr.log: ")
		// A line written now, on the VM, to the webapp's stdout log.
		marker := fmt.Sprintf("marker-%d", time.Now().UnixNano())
		d.run("-d", "web", "ssh", web0, "-c", "echo "+marker+" >> /var/vcap/sys/log/web/webapp.stdout.log")
		waitFor("web/webapp.stdout.log: " + marker)
		// Ctrl-C ends following, with status 0.
		cmd.Process.Signal(os.Interrupt)
		if err := cmd.Wait(); err != nil {
			t.Errorf("logs --follow after an interrupt: %v", err)
		}
	})
}

// tarFiles reads a tar.gz into a map of file name to content.
func tarFiles(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	out := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out[h.Name] = string(b)
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
