package release

import (
	"path/filepath"
	"strings"
	"testing"
)

// A job the agent cannot run is refused when the release is read (upload,
// create-release), naming the file and line; jobs it can run, and errands
// with an empty monit file, are accepted and classified.
func TestJobRunner(t *testing.T) {
	t.Parallel()
	spec := func(name string, templates map[string]string) string {
		s := "name: " + name + "\ntemplates:\n"
		if len(templates) == 0 {
			s = "name: " + name + "\ntemplates: {}\n"
		}
		for src, dst := range templates {
			s += "  " + src + ": " + dst + "\n"
		}
		return s + "packages: []\n"
	}
	cases := []struct {
		name    string
		files   map[string]string
		want    Runner
		wantErr string
	}{
		{"processes", map[string]string{"spec": spec("j", map[string]string{"p.tmpl": "config/processes.yml"}), "templates/p.tmpl": "processes: []\n"}, RunsProcessFile, ""},
		{"bpm via monit", map[string]string{"spec": spec("j", map[string]string{"bpm.yml.erb": "config/bpm.yml"}), "templates/bpm.yml.erb": "x", "monit": "check process j\n  with pidfile /var/vcap/sys/run/bpm/j/j.pid\n  start program \"/var/vcap/jobs/bpm/bin/bpm start j\"\n"}, RunsBPM, ""},
		{"monit", map[string]string{"spec": spec("j", map[string]string{"ctl.erb": "bin/ctl"}), "templates/ctl.erb": "x", "monit": "check process j\n  with pidfile /var/vcap/sys/run/j.pid\n  start program \"/var/vcap/jobs/j/bin/ctl start\"\n  stop program \"/var/vcap/jobs/j/bin/ctl stop\"\n"}, RunsMonit, ""},
		{"monit with erb", map[string]string{"spec": spec("j", nil), "monit": "<% if p('on') %>\ncheck process j\n<% end %>\n"}, RunsMonit, ""},
		{"errand", map[string]string{"spec": spec("j", map[string]string{"run.erb": "bin/run"}), "templates/run.erb": "x", "monit": ""}, RunsNothing, ""},
		{"config only", map[string]string{"spec": spec("j", map[string]string{"c.erb": "config/c"}), "templates/c.erb": "x"}, RunsNothing, ""},
		{"unsupported monit", map[string]string{"spec": spec("j", map[string]string{"ctl.erb": "bin/ctl"}), "templates/ctl.erb": "x", "monit": "check process j\n  with pidfile /p\n  start program \"/x\"\n  if failed port 80 then restart\n"}, "", "job j cannot be run: monit:4: monit statement \"if\" is not supported"},
		{"monit check host", map[string]string{"spec": spec("j", nil), "monit": "check host db with address 127.0.0.1\n"}, "", "monit:1:"},
		{"bpm with a monit resource test", map[string]string{"spec": spec("j", map[string]string{"bpm.yml.erb": "config/bpm.yml"}), "templates/bpm.yml.erb": "x", "monit": "check process j\n  with pidfile /var/vcap/sys/run/bpm/j/j.pid\n  start program \"/var/vcap/jobs/bpm/bin/bpm start j\"\n  if totalmem > 2 GB then restart\n"}, "", "monit:4: monit statement \"if\""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			files := map[string]string{"packages/.keep": ""}
			for k, v := range c.files {
				files["jobs/j/"+k] = v
			}
			writeTree(t, dir, files)
			src, err := LoadSource(dir)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) || !strings.Contains(err.Error(), "jobs/j") {
					t.Fatalf("LoadSource = %v, want an error naming jobs/j and %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			job, err := src.Jobs[0].Job()
			if err != nil {
				t.Fatal(err)
			}
			if r, _ := job.Runner(); r != c.want {
				t.Fatalf("runner = %s, want %s", r, c.want)
			}
			// The tarball carries the monit file and reads back the same.
			_, tarball, err := Create(dir, CreateOptions{Tarball: filepath.Join(t.TempDir(), "r.tgz")})
			if err != nil {
				t.Fatal(err)
			}
			a, err := Open(tarball)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			if string(a.Jobs[0].Job.Monit) != c.files["monit"] {
				t.Fatalf("monit in tarball = %q, want %q", a.Jobs[0].Job.Monit, c.files["monit"])
			}
		})
	}
}

// A package whose blob is listed in config/blobs.yml but not downloaded
// gets advice instead of a bare "matches no file".
func TestSourceBlobNotDownloaded(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"config/blobs.yml":        "ruby/ruby-3.3.0.tar.gz:\n  size: 100\n  object_id: abc\n  sha: sha256:00\n",
		"packages/ruby/spec":      "name: ruby\nfiles: [ruby/ruby-*.tar.gz]\n",
		"packages/ruby/packaging": "true\n",
	})
	_, err := LoadSource(dir)
	if err == nil || !strings.Contains(err.Error(), "config/blobs.yml lists ruby/ruby-3.3.0.tar.gz, not downloaded") {
		t.Fatalf("LoadSource = %v", err)
	}
}
