package template

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// sharedERB is one renderer for the package's tests: every ERB test goes
// through the same interpreter, as the director's renderings do.
var (
	sharedERBOnce sync.Once
	sharedERB     *ERB
)

func erbForTest(t testing.TB) *ERB {
	t.Helper()
	if _, err := exec.LookPath("ruby"); err != nil {
		t.Skip("ruby is not installed (Debian package ruby; .ci/run installs it): ERB rendering is not tested")
	}
	sharedERBOnce.Do(func() { sharedERB = NewERB("") })
	return sharedERB
}

// erbInput is the instance the context table renders for: web/1 in z2,
// consuming a "db" link with two instances and an optional "cache" link
// that is absent.
func erbInput() Input {
	return Input{
		Instance: Instance{
			Name: "web", ID: "6f1c-web-1", Index: 1, AZ: "z2", Address: "127.77.0.11", IP: "127.77.0.11",
			Deployment: "shop", Bootstrap: false, NetworkIPs: map[string]string{"default": "127.77.0.11", "backend": "127.78.0.11"},
		},
		Properties: map[string]any{
			"port":   8080,
			"tls":    map[string]any{"enabled": true},
			"admin":  map[string]any{"user": "ops", "password": "s3cr3t"},
			"labels": map[string]any{"team": "shop", "tier": "front"},
			"motd":   "it's a \"test\"",
			"empty":  nil,
		},
		Links: map[string]*Link{
			"db": {Name: "db", Type: "database", Instances: []LinkInstance{
				{Name: "db", ID: "aa-db-0", Index: 0, AZ: "z1", Address: "127.77.1.10", Bootstrap: true},
				{Name: "db", ID: "bb-db-1", Index: 1, AZ: "z2", Address: "127.77.1.11"},
			}, Properties: map[string]any{"db": map[string]any{"port": 5432, "name": "orders"}}},
		},
		Release: ReleaseRef{Name: "shop", Version: "1.2"},
	}
}

func erbJob(text string) Job {
	return Job{
		Name:      "web",
		Templates: []Template{{Source: "config.erb", Dest: "config/app.conf", Text: text}},
		Properties: map[string]Property{
			"port":           {},
			"tls.enabled":    {Default: false},
			"tls.cert":       {},
			"admin.user":     {},
			"admin.password": {},
			"labels":         {},
			"log_level":      {Default: "info"},
			"workers":        {Default: 4},
			"motd":           {},
			"empty":          {},
			"nested.a.b":     {Default: "deep"},
		},
	}
}

// TestERBContext renders one template per row against BOSH's documented
// behaviour of the template evaluation context.
func TestERBContext(t *testing.T) {
	t.Parallel()
	e := erbForTest(t)
	cases := []struct {
		name, text, want string
		wantErr          string // substring of the error; want is then unused
		line             int
	}{
		{name: "p set", text: `<%= p("port") %>`, want: "8080"},
		{name: "p spec default", text: `<%= p("log_level") %>/<%= p("workers") %>`, want: "info/4"},
		{name: "p default beats fallback", text: `<%= p("log_level", "debug") %>`, want: "info"},
		{name: "p false is a value", text: `<%= p("tls.enabled") %>`, want: "true"},
		{name: "p fallback when unset", text: `<%= p("tls.cert", "none") %>`, want: "none"},
		{name: "p nil fallback", text: `[<%= p("tls.cert", nil) %>]`, want: "[]"},
		{name: "p unset without default", text: "a\n<%= p(\"tls.cert\") %>", wantErr: "Can't find property 'tls.cert'", line: 2},
		{name: "p explicit null is unset", text: `<%= p("empty", "x") %>`, want: "x"},
		{name: "p undeclared is invisible", text: `<%= p("undeclared", "hidden") %>`, want: "hidden"},
		{name: "p multi-name first set wins", text: `<%= p(["tls.cert", "port", "workers"]) %>`, want: "8080"},
		{name: "p multi-name none set", text: `<%= p(["tls.cert", "empty"], 9) %>`, want: "9"},
		{name: "p multi-name error names all", text: `<%= p(["tls.cert", "empty"]) %>`, wantErr: "Can't find property 'tls.cert', 'empty'", line: 1},
		{name: "p nested hash", text: `<%= p("labels").keys.sort.join(",") %>=<%= p("labels")["tier"] %>`, want: "team,tier=front"},
		{name: "p parent of declared leaves", text: `<%= p("admin")["user"] %>`, want: "ops"},
		{name: "p deep default", text: `<%= p("nested.a.b") %> <%= p("nested")["a"]["b"] %>`, want: "deep deep"},
		{name: "properties struct", text: `<%= properties.admin.user %>`, want: "ops"},
		{name: "if_p all set", text: `<% if_p("admin.user", "admin.password") do |u, pw| %><%= u %>:<%= pw %><% end %>`, want: "ops:s3cr3t"},
		{name: "if_p one unset", text: `<% if_p("admin.user", "tls.cert") do |u, c| %>yes<% end.else do %>no<% end %>`, want: "no"},
		{name: "if_p default counts as set", text: `<% if_p("log_level") do |l| %><%= l %><% end %>`, want: "info"},
		{name: "if_p else_if_p", text: `<% if_p("tls.cert") do |c| %>cert<% end.else_if_p("admin.user") do |u| %>user <%= u %><% end.else do %>none<% end %>`, want: "user ops"},
		{name: "if_p else_if_p none set", text: `<% if_p("tls.cert") do |c| %>cert<% end.else_if_p("empty") do |e| %>e<% end.else do %>none<% end %>`, want: "none"},
		{name: "if_p set skips else_if_p", text: `<% if_p("port") do |p| %><%= p %><% end.else_if_p("admin.user") do |u| %>user<% end %>`, want: "8080"},
		{name: "if_p set skips else", text: `<% if_p("port") do |p| %><%= p %><% end.else do %>no<% end %>`, want: "8080"},
		{name: "link instances", text: `<% link("db").instances.each do |i| %><%= i.name %>/<%= i.index %> <%= i.id %> <%= i.az %> <%= i.address %> <%= i.bootstrap %>;<% end %>`,
			want: "db/0 aa-db-0 z1 127.77.1.10 true;db/1 bb-db-1 z2 127.77.1.11 false;"},
		{name: "link address", text: `<%= link("db").address %>`, want: "127.77.1.10"},
		{name: "link address with azs", text: `<%= link("db").address(azs: ["z2"]) %>`, want: "127.77.1.11"},
		{name: "link p", text: `<%= link("db").p("db.port") %> <%= link("db").p("db.user", "app") %>`, want: "5432 app"},
		{name: "link p missing", text: `<%= link("db").p("db.user") %>`, wantErr: "Can't find property 'db.user' in link 'db'", line: 1},
		{name: "link if_p", text: `<% link("db").if_p("db.name") do |n| %><%= n %><% end %><% link("db").if_p("db.user") do |u| %>user<% end.else do %>-<% end %>`, want: "orders-"},
		{name: "missing link", text: "\n\n<%= link(\"cache\").address %>", wantErr: "Can't find link 'cache'", line: 3},
		{name: "if_link present", text: `<% if_link("db") do |db| %><%= db.instances.size %><% end %>`, want: "2"},
		{name: "if_link absent", text: `<% if_link("cache") do |c| %>cache<% end.else do %>no cache<% end %>`, want: "no cache"},
		{name: "spec instance", text: `<%= spec.name %>/<%= spec.index %> <%= spec.id %> <%= spec.az %> <%= spec.address %> <%= spec.ip %> <%= spec.deployment %> <%= spec.bootstrap %>`,
			want: "web/1 6f1c-web-1 z2 127.77.0.11 127.77.0.11 shop false"},
		{name: "spec networks", text: `<%= spec.networks.default.ip %> <%= spec.networks.backend.ip %> <%= spec.networks.default.default.join(",") %>`, want: "127.77.0.11 127.78.0.11 dns,gateway"},
		{name: "spec persistent_disk", text: `<%= spec.persistent_disk %>`, want: "0"},
		{name: "spec job and release", text: `<%= spec.job.name %> <%= spec.release.name %>/<%= spec.release.version %>`, want: "web shop/1.2"},
		{name: "spec unknown field is nil", text: `[<%= spec.resource_pool %>]`, want: "[]"},
		{name: "esc", text: `echo <%= esc(p("motd")) %>`, want: `echo it\'s\ a\ \"test\"`},
		{name: "trim mode", text: "<%- [1, 2].each do |i| -%>\n<%= i %>\n<%- end -%>\n", want: "1\n2\n"},
		{name: "ruby error has line", text: "ok\nok\n<%= nil.upcase %>", wantErr: "NoMethodError", line: 3},
		{name: "syntax error has line", text: "ok\n<%= 1 +* %>\nok", wantErr: "SyntaxError", line: 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := e.Render(erbJob(c.text), erbInput())
			if c.wantErr != "" {
				var te *Error
				if !errors.As(err, &te) {
					t.Fatalf("err = %v, want a *template.Error containing %q", err, c.wantErr)
				}
				if te.Job != "web" || te.Template != "config.erb" || !strings.Contains(te.Err.Error(), c.wantErr) {
					t.Fatalf("err = %v (job %q, template %q), want job web, template config.erb, %q", err, te.Job, te.Template, c.wantErr)
				}
				if c.line != 0 && te.Line != c.line {
					t.Fatalf("err = %v: line %d, want %d", err, te.Line, c.line)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := string(r.Files[0].Content); got != c.want {
				t.Fatalf("rendered %q, want %q", got, c.want)
			}
		})
	}
}

// TestERBOneInterpreter renders many jobs and a monit file and checks that
// one interpreter did it all, that bin/ files are executable and that a
// ruby error does not cost a restart.
func TestERBOneInterpreter(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("ruby"); err != nil {
		t.Skip("ruby is not installed (Debian package ruby): ERB rendering is not tested")
	}
	e := NewERB("")
	defer e.Close()
	job := Job{
		Name: "web",
		Templates: []Template{
			{Source: "ctl.erb", Dest: "bin/ctl", Text: "#!/bin/sh\nexec web --port <%= p('port') %>\n"},
			{Source: "bpm.yml.erb", Dest: "config/bpm.yml", Text: "processes:\n- name: web\n  executable: /bin/true\n"},
		},
		Properties: map[string]Property{"port": {Default: 80}},
		Monit:      "check process web\n  with pidfile /var/vcap/sys/run/bpm/web/web.pid\n  start program \"/var/vcap/jobs/bpm/bin/bpm start web\"\n",
	}
	if !IsERB(job) {
		t.Fatal("IsERB = false for a job with .erb templates")
	}
	for i := 0; i < 50; i++ {
		in := erbInput()
		in.Instance.Index = i
		in.Properties = map[string]any{"port": 8000 + i}
		r, err := e.Render(job, in)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Files) != 3 || r.Files[0].Path != "bin/ctl" || r.Files[0].Mode != 0o755 || r.Files[2].Path != "monit" {
			t.Fatalf("files = %+v", r.Files)
		}
		if want := fmt.Sprintf("--port %d", 8000+i); !strings.Contains(string(r.Files[0].Content), want) {
			t.Fatalf("bin/ctl = %q, want %q", r.Files[0].Content, want)
		}
	}
	bad := job
	bad.Templates = []Template{{Source: "x.erb", Dest: "x", Text: "<%= raise 'boom' %>"}}
	if _, err := e.Render(bad, erbInput()); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("err = %v, want boom", err)
	}
	// A runaway template meets the limits, is reported as its own error,
	// and the interpreter goes on.
	for text, want := range map[string]string{
		"<%= 'x' * (20 << 20) %>":    "more than 16777216 allowed",
		"<%= 'x' * 3_000_000_000 %>": "NoMemoryError",
		"<% def f; f; end; f %>":     "SystemStackError",
	} {
		bad.Templates = []Template{{Source: "x.erb", Dest: "x", Text: text}}
		if _, err := e.Render(bad, erbInput()); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: err = %v, want %s", text, err, want)
		}
	}
	if _, err := e.Render(job, erbInput()); err != nil {
		t.Fatal(err)
	}
	if n := e.Starts(); n != 1 {
		t.Fatalf("%d interpreters started, want 1", n)
	}
}

// benchJob is the BOSH job the benchmarks render: three templates using
// spec, p and a link.
func benchJob() Job {
	return Job{
		Name: "web",
		Templates: []Template{
			{Source: "ctl.erb", Dest: "bin/ctl", Text: "#!/bin/sh\nexec web --listen <%= spec.address %>:<%= p('port') %> --id <%= spec.id %>\n"},
			{Source: "config.yml.erb", Dest: "config/config.yml", Text: "peers:\n<% link('db').instances.each do |i| -%>\n- <%= i.address %>:<%= link('db').p('db.port') %>\n<% end -%>\nlog: <%= p('log_level') %>\n"},
			{Source: "bpm.yml.erb", Dest: "config/bpm.yml", Text: "processes:\n- name: web\n  executable: /var/vcap/packages/web/bin/web\n  env: {PORT: \"<%= p('port') %>\"}\n"},
		},
		Properties: map[string]Property{"port": {Default: 80}, "log_level": {Default: "info"}},
	}
}

// BenchmarkERBInterpreterPerTemplate100 is what the renderer avoids: a new
// interpreter for every template, here for 100 instances (300 starts).
func BenchmarkERBInterpreterPerTemplate100(b *testing.B) {
	if _, err := exec.LookPath("ruby"); err != nil {
		b.Skip("ruby is not installed")
	}
	job := benchJob()
	starts := 0
	for n := 0; n < b.N; n++ {
		for i := 0; i < 100; i++ {
			for _, tpl := range job.Templates {
				one := job
				one.Templates = []Template{tpl}
				e := NewERB("")
				if _, err := e.Render(one, erbInput()); err != nil {
					b.Fatal(err)
				}
				starts += e.Starts()
				e.Close()
			}
		}
	}
	b.ReportMetric(float64(starts)/float64(b.N), "interpreter-starts")
}

// BenchmarkERBRender1000 renders a BOSH job (three templates) for 1,000
// instances through one renderer, and reports the interpreter starts.
func BenchmarkERBRender1000(b *testing.B) {
	if _, err := exec.LookPath("ruby"); err != nil {
		b.Skip("ruby is not installed")
	}
	job := benchJob()
	e := NewERB("")
	defer e.Close()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		for i := 0; i < 1000; i++ {
			in := erbInput()
			in.Instance.Index = i
			in.Instance.Address = fmt.Sprintf("127.77.%d.%d", i/250, i%250+1)
			if _, err := e.Render(job, in); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(e.Starts()), "interpreter-starts")
}

// A template that ends the interpreter fails with what it said on stderr;
// the next rendering starts a new interpreter.
func TestERBInterpreterDies(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("ruby"); err != nil {
		t.Skip("ruby is not installed (Debian package ruby): ERB rendering is not tested")
	}
	e := NewERB("")
	defer e.Close()
	job := erbJob(`<% $stderr.puts "going away"; exit!(3) %>`)
	if _, err := e.Render(job, erbInput()); err == nil || !strings.Contains(err.Error(), "stderr: going away") {
		t.Fatalf("err = %v, want the interpreter's last words", err)
	}
	r, err := e.Render(erbJob(`<%= p("port") %>`), erbInput())
	if err != nil || string(r.Files[0].Content) != "8080" {
		t.Fatalf("after a dead interpreter: %v %q", err, r.Files)
	}
	if n := e.Starts(); n != 2 {
		t.Fatalf("%d interpreter starts, want 2", n)
	}
}
