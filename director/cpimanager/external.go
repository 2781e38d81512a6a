package cpimanager

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/compleat/compleat/cpi/host"
)

// TypeExternal is the type of a cpi config entry that runs an existing BOSH
// CPI executable through BOSH's JSON protocol: one process per call, no
// arguments, the request on stdin with api_version 2 and a context holding
// director_uuid, a request_id and the entry's properties; errors mapped
// from BOSH's error classes to the contract's typed errors; the response's
// log re-emitted through the director's log (cpi/host JSONProcess.BOSH).
const TypeExternal = "external"

// externalProcess is a JSON-protocol CPI: nothing runs between calls.
type externalProcess struct{ *host.JSONProcess }

func (externalProcess) Close() error { return nil }

// external checks an external entry's executable against the allowed
// places and returns the CPI that runs it.
func (m *Manager) external(p Plugin) (Process, error) {
	path, err := m.allowedExec(p.ExecPath)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	m.opts.Logger.Info("using external cpi", "cpi", p.Name, "executable", path)
	j := host.NewJSONProcess(path, p.Properties).BOSH(m.opts.DirectorUUID, m.opts.Logger.With("cpi_name", p.Name))
	if obs := m.opts.Observer; obs != nil {
		j.Observe(func(method string, took time.Duration, err error) { obs(p.Name, method, took, err) })
	}
	return externalProcess{j}, nil
}

// allowedExec resolves exec (symbolic links included) and accepts it only
// inside SearchDirs or ExternalCPIs, as an executable regular file. Every
// exec_path goes through it, whatever the entry's type: a cpi config is
// uploaded with an API token, which must not choose what the director runs.
func (m *Manager) allowedExec(exec string) (string, error) {
	if !filepath.IsAbs(exec) {
		return "", fmt.Errorf("exec_path %q is not absolute", exec)
	}
	real, err := filepath.EvalSymlinks(exec)
	if err != nil {
		return "", fmt.Errorf("exec_path: %w", err)
	}
	st, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("exec_path: %w", err)
	}
	if !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("exec_path %s is not an executable file", exec)
	}
	allowed := append(append([]string{}, m.opts.SearchDirs...), m.opts.ExternalCPIs...)
	for _, a := range allowed {
		ra, err := filepath.EvalSymlinks(a)
		if err != nil {
			continue
		}
		if ra == real || strings.HasPrefix(real, strings.TrimSuffix(ra, string(filepath.Separator))+string(filepath.Separator)) {
			return real, nil
		}
	}
	return "", fmt.Errorf("exec_path %s is outside the places CPI executables may run from (%s): put it next to the director or list it under external_cpis in director.yml", exec, strings.Join(allowed, ", "))
}
