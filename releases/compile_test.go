package releases

import (
	"bytes"
	"context"
	"fmt"
	"github.com/compleat/compleat/cpi/tarball"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/director/release"
)

// compiled is a release compiled the way a compile VM does it: each package
// tarball unpacked into its own compile directory and its packaging script
// run with bash, dependencies first, each installed under packages/<name>.
type compiled struct {
	archive  *release.Archive
	work     string
	packages string // the BOSH_PACKAGES_DIR holding every compiled package
	// gocache, when set, replaces the Go build cache packaging scripts use.
	gocache string
}

// compileRelease builds a tarball from the source directory, verifies it
// with release.Open and compiles the named packages (and their
// dependencies).
func compileRelease(t *testing.T, dir string, names ...string) *compiled {
	t.Helper()
	c := openRelease(t, dir)
	done := map[string]bool{}
	var compile func(name string)
	compile = func(name string) {
		if done[name] {
			return
		}
		done[name] = true
		pkg := c.pkg(t, name)
		for _, d := range pkg.Dependencies {
			compile(d)
		}
		if err := c.compilePackage(t, pkg); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range names {
		compile(n)
	}
	return c
}

func (c *compiled) pkg(t testing.TB, name string) *release.ArchivePackage {
	t.Helper()
	for _, p := range c.archive.Packages {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no package %s in the release", name)
	return nil
}

// openRelease builds a tarball from the source directory and verifies it
// with release.Open.
func openRelease(t testing.TB, dir string) *compiled {
	t.Helper()
	work := t.TempDir()
	_, file, err := release.Create(dir, release.CreateOptions{Version: "0+test", Tarball: filepath.Join(work, "release.tgz")})
	if err != nil {
		t.Fatal(err)
	}
	a, err := release.OpenWith(file, release.OpenOptions{TempDir: work})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return &compiled{archive: a, work: work, packages: filepath.Join(work, "packages")}
}

func (c *compiled) compilePackage(t testing.TB, p *release.ArchivePackage) error {
	src := filepath.Join(c.work, "compile", p.Name)
	install := filepath.Join(c.packages, p.Name)
	for _, d := range []string{src, install} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	f, err := os.Open(p.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := tarball.Extract(context.Background(), f, src, tarball.Limits{}); err != nil {
		return fmt.Errorf("unpack package %s: %w", p.Name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-e", "packaging")
	cmd.Dir = src
	cmd.Env = append(c.compileEnv(),
		"BOSH_COMPILE_TARGET="+src,
		"BOSH_INSTALL_TARGET="+install,
		"BOSH_PACKAGE_NAME="+p.Name,
		"BOSH_PACKAGE_VERSION="+p.Version,
		"BOSH_PACKAGES_DIR="+c.packages,
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("compile package %s: %w\n%s", p.Name, err, out.String())
	}
	t.Logf("compiled %s in %s", p.Name, time.Since(start).Round(time.Millisecond))
	return nil
}

// compileEnv is a compile VM's environment: PATH and HOME only, plus the
// test process's Go build cache so repeated runs stay fast.
func (c *compiled) compileEnv() []string {
	env := []string{"PATH=" + os.Getenv("PATH")}
	if h := os.Getenv("HOME"); h != "" {
		env = append(env, "HOME="+h)
	}
	if c.gocache != "" {
		return append(env, "GOCACHE="+c.gocache)
	}
	out, err := exec.Command("go", "env", "GOCACHE").Output()
	if err == nil && strings.TrimSpace(string(out)) != "" {
		env = append(env, "GOCACHE="+strings.TrimSpace(string(out)))
	}
	return env
}

// hostPath maps a /var/vcap/packages path in a rendered file to the test's
// compiled packages.
func (c *compiled) hostPath(s string) string {
	return strings.ReplaceAll(s, "/var/vcap/packages/", c.packages+"/")
}

func (c *compiled) job(t *testing.T, name string) *release.ArchiveJob {
	t.Helper()
	for _, j := range c.archive.Jobs {
		if j.Name == name {
			return j
		}
	}
	t.Fatalf("no job %s", name)
	return nil
}

func needTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found on PATH: %v", tool, err)
		}
	}
}

func extract(r io.Reader, dir string) error {
	return tarball.Extract(context.Background(), r, dir, tarball.Limits{})
}

// BenchmarkCompileWebColdCache compiles releases/web as two compile workers
// would, with an empty Go build cache: golang first, then webapp and lb in
// parallel. It reports the wall time of the whole compile.
func BenchmarkCompileWebColdCache(b *testing.B) {
	needTools(b, "bash", "go")
	for range b.N {
		b.StopTimer()
		c := openRelease(b, "web")
		c.gocache = filepath.Join(b.TempDir(), "gocache")
		b.StartTimer()
		start := time.Now()
		if err := c.compilePackage(b, c.pkg(b, "golang")); err != nil {
			b.Fatal(err)
		}
		errs := make(chan error, 2)
		for _, p := range []*release.ArchivePackage{c.pkg(b, "webapp"), c.pkg(b, "lb")} {
			go func() { errs <- c.compilePackage(b, p) }()
		}
		for range 2 {
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(time.Since(start).Seconds(), "s/compile")
	}
}
