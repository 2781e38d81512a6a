package releases

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/director/release"
	"github.com/compleat/compleat/director/release/tgz"
)

// compiled is a release compiled the way a compile VM does it: each package
// tarball unpacked into its own compile directory and its packaging script
// run with bash, dependencies first, each installed under packages/<name>.
type compiled struct {
	archive  *release.Archive
	packages string // the BOSH_PACKAGES_DIR holding every compiled package
}

// compileRelease builds a tarball from the source directory, verifies it
// with release.Open and compiles the named packages (and their
// dependencies).
func compileRelease(t *testing.T, dir string, names ...string) *compiled {
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
	c := &compiled{archive: a, packages: filepath.Join(work, "packages")}
	done := map[string]bool{}
	var compile func(name string)
	compile = func(name string) {
		if done[name] {
			return
		}
		done[name] = true
		var pkg *release.ArchivePackage
		for _, p := range a.Packages {
			if p.Name == name {
				pkg = p
			}
		}
		if pkg == nil {
			t.Fatalf("no package %s in the release", name)
		}
		for _, d := range pkg.Dependencies {
			compile(d)
		}
		c.compilePackage(t, work, pkg)
	}
	for _, n := range names {
		compile(n)
	}
	return c
}

func (c *compiled) compilePackage(t *testing.T, work string, p *release.ArchivePackage) {
	t.Helper()
	src := filepath.Join(work, "compile", p.Name)
	install := filepath.Join(c.packages, p.Name)
	for _, d := range []string{src, install} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(p.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := tgz.Extract(f, src, tgz.DefaultLimits); err != nil {
		t.Fatalf("unpack package %s: %v", p.Name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-e", "packaging")
	cmd.Dir = src
	cmd.Env = append(compileEnv(t),
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
		t.Fatalf("compile package %s: %v\n%s", p.Name, err, out.String())
	}
	t.Logf("compiled %s in %s", p.Name, time.Since(start).Round(time.Millisecond))
}

// compileEnv is a compile VM's environment: PATH and HOME only, plus the
// test process's Go build cache so repeated runs stay fast.
func compileEnv(t *testing.T) []string {
	env := []string{"PATH=" + os.Getenv("PATH")}
	if h := os.Getenv("HOME"); h != "" {
		env = append(env, "HOME="+h)
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

// freePort returns a port the kernel has just handed out on 127.0.0.1.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found on PATH: %v", tool, err)
		}
	}
}
