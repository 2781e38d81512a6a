// Package compile compiles a release package on a compilation VM, as BOSH
// does: install the compiled dependencies under <base>/packages/<dep>,
// extract the source into <base>/data/compile/<name>, run its `packaging`
// script with bash -x and BOSH's environment, archive what the script put
// in BOSH_INSTALL_TARGET as a tar.gz, and upload that to a signed URL.
//
// The script's environment is BOSH_COMPILE_TARGET, BOSH_INSTALL_TARGET,
// BOSH_PACKAGE_NAME, BOSH_PACKAGE_VERSION and BOSH_PACKAGES_DIR, plus from
// the agent's own environment PATH, HOME, TMPDIR, LANG, LC_ALL, proxy
// settings and GO* variables, so that toolchains installed on the host (the
// local CPI's "VM") can be used. Its output goes to
// <base>/sys/log/compile/<name>.log; the end of that log is returned, and is
// part of the error when the script fails.
package compile

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/compleat/compleat/agent/applyspec"
	"github.com/compleat/compleat/agent/layout"
	"github.com/compleat/compleat/agent/protocol"
	"github.com/compleat/compleat/cpi/tarball"
)

// LogTailBytes is how much of the packaging log results and errors carry.
const LogTailBytes = 8 << 10

// Blobs fetches and uploads blobs.
type Blobs interface {
	Fetch(ctx context.Context, b applyspec.Blob) (string, error)
	Upload(ctx context.Context, u protocol.Upload, path string) (sum string, size int64, err error)
}

// Packages installs compiled dependencies.
type Packages interface {
	InstallPackage(ctx context.Context, p applyspec.Package) error
}

// Compiler compiles packages.
type Compiler struct {
	Layout   layout.Layout
	Blobs    Blobs
	Packages Packages
	// Environ is the agent's environment (os.Environ()); only the variables
	// listed in the package doc pass through.
	Environ []string
	Logger  *slog.Logger
}

// Compile compiles req and uploads the result.
func (c *Compiler) Compile(ctx context.Context, req protocol.CompilePackageRequest) (protocol.CompilePackageResult, error) {
	if !applyspec.ValidName(req.Name) {
		return protocol.CompilePackageResult{}, badArg("name %q is not a valid package name", req.Name)
	}
	if req.Version == "" || strings.ContainsAny(req.Version, "/\\") || req.Version == "." || req.Version == ".." {
		return protocol.CompilePackageResult{}, badArg("version %q of package %s is not valid", req.Version, req.Name)
	}
	if req.Upload.URL == "" {
		return protocol.CompilePackageResult{}, badArg("upload url of package %s is empty", req.Name)
	}
	for _, d := range req.Dependencies {
		if err := c.Packages.InstallPackage(ctx, d); err != nil {
			return protocol.CompilePackageResult{}, fmt.Errorf("compile %s: dependency %s: %w", req.Name, d.Name, err)
		}
	}
	src, err := c.Blobs.Fetch(ctx, req.Source)
	if err != nil {
		return protocol.CompilePackageResult{}, fmt.Errorf("compile %s: source: %w", req.Name, err)
	}
	compileDir := filepath.Join(c.Layout.Compile(), req.Name)
	if err := os.RemoveAll(compileDir); err != nil {
		return protocol.CompilePackageResult{}, fmt.Errorf("compile %s: clean %s: %w", req.Name, compileDir, err)
	}
	if err := tarball.ExtractFile(ctx, src, compileDir, tarball.Limits{}); err != nil {
		return protocol.CompilePackageResult{}, fmt.Errorf("compile %s: source: %w", req.Name, err)
	}
	if _, err := os.Stat(filepath.Join(compileDir, "packaging")); err != nil {
		return protocol.CompilePackageResult{}, fmt.Errorf("compile %s: source has no packaging script", req.Name)
	}
	installDir := c.Layout.PackageVersion(req.Name, req.Version)
	if err := os.RemoveAll(installDir); err != nil {
		return protocol.CompilePackageResult{}, fmt.Errorf("compile %s: clean install target: %w", req.Name, err)
	}
	if err := os.MkdirAll(installDir, 0o755); err != nil {
		return protocol.CompilePackageResult{}, fmt.Errorf("compile %s: %w", req.Name, err)
	}
	link := c.Layout.Package(req.Name)
	os.MkdirAll(filepath.Dir(link), 0o755)
	os.Remove(link)
	if err := os.Symlink(installDir, link); err != nil {
		return protocol.CompilePackageResult{}, fmt.Errorf("compile %s: link install target: %w", req.Name, err)
	}

	logPath := filepath.Join(c.Layout.SysLog(), "compile", req.Name+".log")
	tail, err := c.runPackaging(ctx, req, compileDir, link, logPath)
	if err != nil {
		return protocol.CompilePackageResult{LogTail: tail}, &protocol.Exception{
			Code:    protocol.CodeFailed,
			Message: fmt.Sprintf("compile %s/%s: packaging: %v; log ends with:\n%s", req.Name, req.Version, err, tail),
			Log:     tail,
		}
	}

	tgz := filepath.Join(c.Layout.Compile(), req.Name+"-"+req.Version+".tgz")
	f, err := os.OpenFile(tgz, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return protocol.CompilePackageResult{}, fmt.Errorf("compile %s: %w", req.Name, err)
	}
	err = tarball.Create(f, installDir, nil)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return protocol.CompilePackageResult{}, fmt.Errorf("compile %s: archive: %w", req.Name, err)
	}
	defer os.Remove(tgz)
	sum, size, err := c.Blobs.Upload(ctx, req.Upload, tgz)
	if err != nil {
		return protocol.CompilePackageResult{}, fmt.Errorf("compile %s: %w", req.Name, err)
	}
	os.RemoveAll(compileDir)
	return protocol.CompilePackageResult{SHA256: sum, Size: size, LogTail: tail}, nil
}

func (c *Compiler) runPackaging(ctx context.Context, req protocol.CompilePackageRequest, compileDir, installTarget, logPath string) (string, error) {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return "", err
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return "", err
	}
	defer logf.Close()
	cmd := exec.Command("bash", "-x", "packaging")
	cmd.Dir = compileDir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(c.passEnv(),
		"BOSH_COMPILE_TARGET="+compileDir,
		"BOSH_INSTALL_TARGET="+installTarget,
		"BOSH_PACKAGE_NAME="+req.Name,
		"BOSH_PACKAGE_VERSION="+req.Version,
		"BOSH_PACKAGES_DIR="+c.Layout.Packages(),
	)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start bash: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		err = fmt.Errorf("cancelled: %w", context.Cause(ctx))
	}
	if c.Logger != nil {
		c.Logger.Info("packaging finished", "package", req.Name, "version", req.Version, "duration", time.Since(start).Round(time.Millisecond), "err", err)
	}
	return tailOf(logPath, LogTailBytes), err
}

var passPrefixes = []string{"PATH=", "HOME=", "TMPDIR=", "LANG=", "LC_ALL=", "http_proxy=", "https_proxy=", "no_proxy=", "HTTP_PROXY=", "HTTPS_PROXY=", "NO_PROXY=", "GO"}

func (c *Compiler) passEnv() []string {
	var env []string
	hasPath, hasHome := false, false
	for _, kv := range c.Environ {
		for _, p := range passPrefixes {
			if strings.HasPrefix(kv, p) {
				env = append(env, kv)
				hasPath = hasPath || strings.HasPrefix(kv, "PATH=")
				hasHome = hasHome || strings.HasPrefix(kv, "HOME=")
				break
			}
		}
	}
	if !hasPath {
		env = append(env, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	if !hasHome {
		home := filepath.Join(c.Layout.Compile(), ".home")
		os.MkdirAll(home, 0o700)
		env = append(env, "HOME="+home)
	}
	return env
}

func tailOf(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	if fi.Size() > n {
		f.Seek(fi.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

func badArg(format string, args ...any) error {
	return &protocol.Exception{Code: protocol.CodeBadArguments, Message: fmt.Sprintf(format, args...)}
}
