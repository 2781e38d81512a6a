package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compleat/compleat/director/cli"
)

// jsonKind is what a command prints with --json.
type jsonKind int

const (
	jsonDoc    jsonKind = iota // exactly one JSON document
	jsonStream                 // one JSON document per line: a task's events, then its record
	jsonNone                   // not a JSON command (a script, the server, help)
)

// TestJSONContract runs every command of the CLI's command table with
// --json against a dev director with the sample deployed, and checks that
// stdout holds exactly one JSON document (or, for commands that follow a
// task, one per line ending with the task's record), and that the command
// succeeds where the table says it can here. A command added to the CLI
// without an entry here fails the test.
func TestJSONContract(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the sample's process files name /var/vcap paths, which a local VM has only in its own mount namespace (root)")
	}
	prefix := freeRange(t)
	d, data := deploySample(t, prefix, nil)
	work := t.TempDir()
	bin := binaries(t)
	manifest := filepath.Join(work, "web.yml")
	raw, err := os.ReadFile(filepath.Join(repoRoot(), "manifests", "local", "web.yml"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, manifest, strings.ReplaceAll(string(raw), "127.77.", prefix))
	cc := filepath.Join(work, "cloud-config.yml")
	writeFile(t, cc, d.run("cloud-config"))
	rc := filepath.Join(work, "runtime-config.yml")
	writeFile(t, rc, "releases: []\n")
	stemcell9 := filepath.Join(work, "local-9.tgz")
	release99 := filepath.Join(work, "web-99.tgz")
	ops := filepath.Join(work, "ops.yml")
	writeFile(t, ops, "- type: replace\n  path: /extra?\n  value: ((v))\n  name: ignored-as-bosh-does\n")

	type spec struct {
		args []string
		kind jsonKind
		// anyExit: the command's success needs a situation this test does
		// not make (a rollout to pause, an orphaned disk); it may fail, but
		// stdout still holds only JSON (or nothing).
		anyExit bool
	}
	// In the order they run: later ones use what earlier ones made.
	order := []string{
		"info", "releases", "stemcells", "deployments", "configs", "cloud-config", "cpi-config", "runtime-config",
		"update-cloud-config", "update-runtime-config", "update-cpi-config",
		"interpolate",
		"instances", "vms", "disks", "errands", "events", "health", "locks", "tasks", "task", "variables",
		"ignore", "unignore", "update-resurrection", "logs", "ssh", "cloud-check", "rotate-agent-certs",
		"deploy", "stop", "start", "restart", "recreate", "pause", "resume", "run-errand", "cancel-task", "delete-disk",
		"create-release", "inspect-release", "upload-release", "create-stemcell", "upload-stemcell",
		"upgrade-stemcell", "delete-release", "delete-stemcell", "clean-up", "backup", "migrate-state", "delete-deployment",
		"completion", "help", "serve",
	}
	table := map[string]spec{
		"info":                  {args: []string{"info"}},
		"releases":              {args: []string{"releases"}},
		"stemcells":             {args: []string{"stemcells"}},
		"deployments":           {args: []string{"deployments"}},
		"configs":               {args: []string{"configs"}},
		"cloud-config":          {args: []string{"cloud-config"}},
		"cpi-config":            {args: []string{"cpi-config"}},
		"runtime-config":        {args: []string{"runtime-config"}, anyExit: true}, // none before update-runtime-config
		"update-cloud-config":   {args: []string{"update-cloud-config", cc}},
		"update-runtime-config": {args: []string{"update-runtime-config", rc}},
		"update-cpi-config":     {args: []string{"update-cpi-config", filepath.Join(work, "cpi-config.yml")}},
		"interpolate":           {args: []string{"interpolate", manifest, "-o", ops, "-v", "v=1"}},
		"create-release":        {args: []string{"create-release", "releases/web", "--version", "99", "--tarball", release99}},
		"inspect-release":       {args: []string{"inspect-release", release99}},
		"upload-release":        {args: []string{"upload-release", release99}, kind: jsonStream},
		"create-stemcell":       {args: []string{"create-stemcell", "--agent", filepath.Join(bin, "agent"), "--version", "9", "--tarball", stemcell9}},
		"upload-stemcell":       {args: []string{"upload-stemcell", stemcell9}, kind: jsonStream},
		"instances":             {args: []string{"instances"}},
		"vms":                   {args: []string{"-d", "web", "vms", "--vitals"}},
		"disks":                 {args: []string{"disks"}},
		"errands":               {args: []string{"-d", "web", "errands"}},
		"events":                {args: []string{"events"}},
		"health":                {args: []string{"-d", "web", "health"}},
		"locks":                 {args: []string{"locks"}},
		"tasks":                 {args: []string{"tasks", "--recent"}},
		"task":                  {args: []string{"task", "1"}, kind: jsonStream},
		"variables":             {args: []string{"variables"}},
		"ignore":                {args: []string{"-d", "web", "ignore", "lb/0"}},
		"unignore":              {args: []string{"-d", "web", "unignore", "lb/0"}},
		"update-resurrection":   {args: []string{"-d", "web", "update-resurrection", "on"}},
		"logs":                  {args: []string{"-d", "web", "logs", "lb/0", "--dir", work}},
		"ssh":                   {args: []string{"-d", "web", "ssh", "lb/0", "-c", "echo hello"}},
		"cloud-check":           {args: []string{"-d", "web", "cloud-check", "--report"}},
		"rotate-agent-certs":    {args: []string{"-d", "web", "rotate-agent-certs"}, kind: jsonStream},
		"deploy":                {args: []string{"-d", "web", "deploy", manifest}, kind: jsonStream},
		"stop":                  {args: []string{"-d", "web", "stop", "lb"}, kind: jsonStream},
		"start":                 {args: []string{"-d", "web", "start", "lb"}, kind: jsonStream},
		"restart":               {args: []string{"-d", "web", "restart", "lb"}, kind: jsonStream},
		"recreate":              {args: []string{"-d", "web", "recreate", "lb"}, kind: jsonStream},
		"pause":                 {args: []string{"-d", "web", "pause"}, anyExit: true}, // no rollout under way
		"resume":                {args: []string{"-d", "web", "resume"}, kind: jsonStream},
		"run-errand":            {args: []string{"-d", "web", "run-errand", "none"}, kind: jsonStream, anyExit: true}, // the sample has no errand
		"cancel-task":           {args: []string{"cancel-task", "1"}, anyExit: true},                                  // task 1 ended long ago
		"delete-disk":           {args: []string{"delete-disk", "no-such-disk"}, anyExit: true},
		"upgrade-stemcell":      {args: []string{"upgrade-stemcell", "linux", "--all", "--dry-run"}, kind: jsonStream},
		"delete-release":        {args: []string{"delete-release", "web/99"}, kind: jsonStream},
		"delete-stemcell":       {args: []string{"delete-stemcell", "compleat-local/9"}, kind: jsonStream},
		"clean-up":              {args: []string{"clean-up"}, kind: jsonStream},
		"backup":                {args: []string{"backup", filepath.Join(work, "state.db")}},
		"migrate-state": {args: []string{"migrate-state", "--from", "bbolt:" + filepath.Join(work, "state.db"), "--to", "bbolt:" + filepath.Join(work, "copy.db"),
			"--variables-key", filepath.Join(data, "state.db.key")}}, // local: the backup into another file
		"delete-deployment": {args: []string{"-d", "web", "delete-deployment"}, kind: jsonStream},
		"completion":        {kind: jsonNone}, // a shell script
		"help":              {kind: jsonNone},
		"serve":             {kind: jsonNone}, // the server: a log on stderr
	}
	for _, c := range cli.New(cli.Deps{}).Commands() {
		if _, ok := table[c.Name()]; !ok && !c.Hidden {
			t.Errorf("command %s has no entry in this test's table: say what it prints with --json", c.Name())
		}
	}
	if len(order) != len(table) {
		t.Fatalf("order lists %d commands, the table %d", len(order), len(table))
	}
	writeFile(t, filepath.Join(work, "cpi-config.yml"), d.run("cpi-config"))

	// deploy --dry-run --json gives the plan's hash; deploy --plan-hash
	// applies that plan, and refuses a hash that is not the plan's.
	hash := ""
	for _, line := range strings.Split(d.run("-n", "--json", "-d", "web", "deploy", manifest, "--dry-run"), "\n") {
		var e struct {
			Stage string `json:"stage"`
			Data  struct {
				PlanHash string `json:"plan_hash"`
			} `json:"data"`
		}
		if json.Unmarshal([]byte(line), &e) == nil && e.Stage == "Plan hash" {
			hash = e.Data.PlanHash
		}
	}
	if !strings.HasPrefix(hash, "sha256:") {
		t.Fatalf("deploy --dry-run --json gave no plan hash")
	}
	if out, err := d.command("-n", "-d", "web", "deploy", manifest, "--plan-hash", "sha256:0000").CombinedOutput(); err == nil || !strings.Contains(string(out), "plan changed since the dry run") {
		t.Errorf("deploy with another plan's hash: %v\n%s", err, tail(string(out), 5))
	}
	d.run("-n", "-d", "web", "deploy", manifest, "--plan-hash", hash)
	for _, name := range order {
		s := table[name]
		if s.kind == jsonNone {
			continue
		}
		cmd := d.command(append([]string{"-n", "--json"}, s.args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if err != nil && !s.anyExit {
			t.Errorf("%s: %v\nstdout:\n%s\nstderr:\n%s", name, err, tail(stdout.String(), 10), tail(stderr.String(), 10))
			continue
		}
		out := stdout.Bytes()
		if len(bytes.TrimSpace(out)) == 0 {
			if err == nil {
				t.Errorf("%s --json printed nothing", name)
			}
			continue
		}
		switch s.kind {
		case jsonDoc:
			dec := json.NewDecoder(bytes.NewReader(out))
			var v any
			if derr := dec.Decode(&v); derr != nil {
				t.Errorf("%s --json: not JSON: %v\n%s", name, derr, tail(string(out), 10))
				continue
			}
			if dec.More() {
				t.Errorf("%s --json printed more than one document:\n%s", name, tail(string(out), 10))
			}
		case jsonStream:
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			for i, line := range lines {
				var v map[string]any
				if derr := json.Unmarshal([]byte(line), &v); derr != nil {
					t.Errorf("%s --json: line %d is not a JSON object: %v\n%s", name, i+1, derr, line)
					break
				}
				if i == len(lines)-1 {
					if _, ok := v["state"]; !ok || v["id"] == nil {
						t.Errorf("%s --json: the last line is not the task's record: %s", name, line)
					}
				}
			}
		}
	}
}
