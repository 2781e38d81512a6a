package cloudsim

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/compleat/compleat/sim/machine"
	simos "github.com/compleat/compleat/sim/openstack"
)

// runOpenStack serves the simulated OpenStack until ctx ends: the API on
// --listen, a VM booted for every server. Once it answers it writes the
// OS_* client variables (--env-file), a cpi config for the director
// (DATA/cpi-config.yml) and a light stemcell naming the cloud's image
// (DATA/light-stemcell.tgz).
func runOpenStack(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c common
	var listen, password string
	fs := flag.NewFlagSet("cloudsim openstack", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.register(fs)
	fs.StringVar(&listen, "listen", "127.0.0.1:25580", "address of the API (loopback)")
	fs.StringVar(&password, "password", "", "password of user admin (default: random, written to the env file)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := c.check(); err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(listen)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() || ip.To4() == nil {
		return &UsageError{fmt.Errorf("--listen %q: want an IPv4 loopback address and a port", listen)}
	}
	if password == "" {
		password = randomPassword()
	}
	logger := c.logger(stderr).With("cloud", "openstack")

	for _, d := range []string{"glance", "agents"} {
		if err := os.MkdirAll(filepath.Join(c.data, d), 0o700); err != nil {
			return err
		}
	}
	mh, err := machine.NewHost(filepath.Join(c.data, "machines"), machine.WithLogger(logger))
	if err != nil {
		return err
	}
	defer mh.Close()
	// The cloud's state lives in this process: VMs of an earlier run
	// belong to servers that are gone.
	left, err := mh.Leftovers()
	if err != nil {
		return err
	}
	for _, id := range left {
		if err := mh.Delete(ctx, id); err != nil {
			return fmt.Errorf("delete vm %s of an earlier run: %w", id, err)
		}
	}
	for _, d := range []string{"glance", "agents"} {
		if err := os.RemoveAll(filepath.Join(c.data, d)); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(c.data, d), 0o700); err != nil {
			return err
		}
	}
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (is another cloudsim openstack running?)", listen, err)
	}
	base := "http://" + lis.Addr().String()
	booter := &simos.MachineBooter{Host: mh, Agent: c.agent, Dir: filepath.Join(c.data, "agents")}
	cl, err := simos.New(base, simos.Config{
		Password: password, DataDir: filepath.Join(c.data, "glance"), Booter: booter, Logger: logger,
		FloatingIPs: []string{"127.83.0.10", "127.83.0.11"}, BuildTime: 300 * time.Millisecond,
	})
	if err != nil {
		lis.Close()
		return err
	}
	srv := &http.Server{Handler: cl.Handler(), ReadHeaderTimeout: 10 * time.Second}
	defer func() {
		_ = srv.Close()
		_ = cl.Close() // deletes the VM of every server
	}()

	vars := [][2]string{
		{"OS_AUTH_URL", cl.AuthURL()},
		{"OS_IDENTITY_API_VERSION", "3"},
		{"OS_USERNAME", "admin"},
		{"OS_PASSWORD", password},
		{"OS_PROJECT_NAME", "compleat"},
		{"OS_USER_DOMAIN_NAME", "Default"},
		{"OS_PROJECT_DOMAIN_NAME", "Default"},
		{"OS_REGION_NAME", simos.DefaultRegion},
		{"OS_INTERFACE", "public"},
	}
	comment := fmt.Sprintf("The simulated OpenStack of cloudsim (pid %d): Keystone, Nova, Neutron, Cinder, Glance at %s.\nSource it, then use the openstack client as usual: openstack server list", os.Getpid(), base)
	if err := writeEnv(c.envFile, comment, vars); err != nil {
		return fmt.Errorf("write %s: %w", c.envFile, err)
	}
	defer os.Remove(c.envFile)
	cpiConfig := filepath.Join(c.data, "cpi-config.yml")
	if err := writePrivate(cpiConfig, []byte(fmt.Sprintf(`# cpi config for the simulated OpenStack of cloudsim (written at its start).
cpis:
- name: openstack
  type: openstack
  default: true
  properties:
    auth_url: %s
    username: admin
    api_key: %s
    domain: Default
    project: compleat
    region: %s
    default_key_name: compleat
    default_security_groups: [default]
    config_drive: cdrom
    state_timeout: 300
    poll_interval: 0.5
`, cl.AuthURL(), shellQuote(password), simos.DefaultRegion))); err != nil {
		return err
	}
	stemcell := filepath.Join(c.data, "light-stemcell.tgz")
	if err := writeLightStemcell(stemcell, simos.LightImageID); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Simulated OpenStack ready: Keystone at %s, region %s\n  network private %s 127.82.0.0/16, floating IPs 127.83.0.10-11\n  light image %s: stemcell %s\n  cpi config %s\n  env . %s\n",
		cl.AuthURL(), simos.DefaultRegion, cl.NetworkID("private"), simos.LightImageID, stemcell, cpiConfig, c.envFile)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case <-ctx.Done():
		logger.Info("stopping: deleting every vm")
		return nil
	case err := <-errc:
		return err
	}
}

// writePrivate writes a file only its owner reads (it holds a password).
func writePrivate(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// writeLightStemcell writes a light stemcell (stemcell.MF and an empty
// image) naming the image, with operating system linux as the local
// stemcell's, so the example manifests take either.
func writeLightStemcell(path, imageID string) error {
	mf := strings.Join([]string{
		"name: compleat-openstack-light",
		`version: "1"`,
		"operating_system: linux",
		"api_version: 2",
		"stemcell_formats: [openstack-light]",
		"cloud_properties:",
		"  name: compleat-openstack-light",
		`  version: "1"`,
		"  image_id: " + imageID,
		"",
	}, "\n")
	f, err := os.Create(path + ".tmp")
	if err != nil {
		return err
	}
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	for _, e := range []struct {
		name string
		data []byte
	}{{"stemcell.MF", []byte(mf)}, {"image", nil}} {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), Typeflag: tar.TypeReg}); err != nil {
			f.Close()
			return err
		}
		if _, err := tw.Write(e.data); err != nil {
			f.Close()
			return err
		}
	}
	if err := errors.Join(tw.Close(), gz.Close(), f.Close()); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

func randomPassword() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	const letters = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b)
}
