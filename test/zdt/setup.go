package main

import (
	"context"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// pickNet chooses a second octet n such that the harness's addresses
// 127.n.1.x and 127.n.2.x are free on this host (other local directors may
// use the cloud config's own 127.77.0.0/16 at the same time).
func pickNet() (string, error) {
	for n := 180 + os.Getpid()%50; n < 250; n++ {
		free := true
		for _, a := range []string{"1.10:8000", "2.10:8000", "1.20:8080", "2.20:8080", "1.22:8080", "2.22:8080"} {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.%d.%s", n, a))
			if err != nil {
				free = false
				break
			}
			ln.Close()
		}
		if free {
			return fmt.Sprintf("127.%d.", n), nil
		}
	}
	return "", fmt.Errorf("no free 127.n.0.0/16 range for the harness")
}

// cloudConfig is the local cloud config (manifests/local/cloud-config.yml)
// moved to the harness's own address range.
func cloudConfig(src, prefix string) ([]byte, error) {
	raw, err := os.ReadFile(src)
	if err != nil {
		return nil, err
	}
	s := string(raw)
	if !strings.Contains(s, "127.77.") {
		return nil, fmt.Errorf("%s: expected networks in 127.77.0.0/16", src)
	}
	return []byte(strings.ReplaceAll(s, "127.77.", prefix)), nil
}

// manifestOpts are what changes between the phases' manifests.
type manifestOpts struct {
	name         string // deployment name (default zdt)
	lbHost       int    // last octet of the load balancers' static IPs (default 10)
	lbs          int    // load balancers (default 2; 0 means 2, -1 none)
	prefix       string // "127.n."
	release      string // release version
	version      string // the web job's version property
	stemcell     string // stemcell version
	webInstances int
	vmStrategy   string
	autoRollback bool
	canaryWatch  string // canary_watch_time (default 1000-10000)
	maxInFlight  int    // default 1
	disk         int    // web's persistent_disk in MB (0: none)
}

// manifest renders the deployment manifest: web instances over two AZs
// behind load balancers with static IPs (one per AZ).
func manifest(o manifestOpts) string {
	if o.name == "" {
		o.name = "zdt"
	}
	if o.lbHost == 0 {
		o.lbHost = 10
	}
	if o.canaryWatch == "" {
		o.canaryWatch = "1000-10000"
	}
	if o.maxInFlight == 0 {
		o.maxInFlight = 1
	}
	var b strings.Builder
	fmt.Fprintf(&b, "name: %s\nreleases:\n- name: web\n  version: %q\n", o.name, o.release)
	fmt.Fprintf(&b, "stemcells:\n- alias: default\n  os: linux\n  version: %q\n", o.stemcell)
	fmt.Fprintf(&b, "update:\n  canaries: 1\n  max_in_flight: %d\n  canary_watch_time: %s\n  update_watch_time: 1000-10000\n", o.maxInFlight, o.canaryWatch)
	if o.vmStrategy != "" {
		fmt.Fprintf(&b, "  vm_strategy: %s\n", o.vmStrategy)
	}
	if o.autoRollback {
		fmt.Fprintf(&b, "  auto_rollback: true\n")
	}
	disk := ""
	if o.disk > 0 {
		disk = fmt.Sprintf("  persistent_disk: %d\n", o.disk)
	}
	fmt.Fprintf(&b, `instance_groups:
- name: web
  azs: [z1, z2]
  instances: %d
  vm_type: default
  stemcell: default
%s  networks:
  - name: default
  jobs:
  - name: web
    release: web
    properties:
      port: 8080
      version: %s
`, o.webInstances, disk, o.version)
	if o.lbs >= 0 {
		fmt.Fprintf(&b, `- name: lb
  azs: [z1, z2]
  instances: 2
  vm_type: default
  stemcell: default
  networks:
  - name: default
    static_ips: [%[1]s1.%[2]d, %[1]s2.%[2]d]
  jobs:
  - name: lb
    release: web
    properties:
      port: 8000
`, o.prefix, o.lbHost)
	}
	return b.String()
}

// lbAddrs are the load balancers' listen addresses (static IPs ending in
// host).
func lbAddrs(prefix string, host int) []string {
	return []string{fmt.Sprintf("%s1.%d:8000", prefix, host), fmt.Sprintf("%s2.%d:8000", prefix, host)}
}

// releaseEdit changes the webapp package of a copy of the release.
type releaseEdit struct {
	version string
	// old → new in src/webapp/main.go; the edit must apply.
	old, new string
}

// buildReleases copies the release source once per version (without its
// dev_releases), applies each version's edit and builds the tarballs with
// `director create-release --version`.
func buildReleases(ctx context.Context, d *director, src, work string, edits []releaseEdit) (map[string]string, error) {
	out := map[string]string{}
	for _, e := range edits {
		dir := filepath.Join(work, "release-"+e.version)
		if err := copyTree(src, dir); err != nil {
			return nil, fmt.Errorf("copy %s: %w", src, err)
		}
		if e.old != "" {
			p := filepath.Join(dir, "src", "webapp", "main.go")
			raw, err := os.ReadFile(p)
			if err != nil {
				return nil, err
			}
			if !strings.Contains(string(raw), e.old) {
				return nil, fmt.Errorf("release %s: %s no longer contains %q: update the harness's edit", e.version, p, e.old)
			}
			if err := os.WriteFile(p, []byte(strings.Replace(string(raw), e.old, e.new, 1)), 0o644); err != nil {
				return nil, err
			}
		}
		tarball := filepath.Join(work, "web-"+e.version+".tgz")
		if _, err := d.run(ctx, "create-release", dir, "--version", e.version, "--tarball", tarball); err != nil {
			return nil, err
		}
		out[e.version] = tarball
	}
	return out, nil
}

// copyTree copies a release source directory, skipping dev_releases and
// dot directories.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if de.IsDir() && rel != "." && (rel == "dev_releases" || strings.HasPrefix(de.Name(), ".")) {
			return filepath.SkipDir
		}
		target := filepath.Join(dst, rel)
		if de.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !de.Type().IsRegular() {
			return nil
		}
		info, err := de.Info()
		if err != nil {
			return err
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, raw, info.Mode().Perm())
	})
}
