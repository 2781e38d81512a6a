package openstack

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/cpitest"
	simos "github.com/compleat/compleat/sim/openstack"
)

// testCloud is a cloud the plugin's tests run against: the simulator on
// loopback, or a real OpenStack with COMPLEAT_LIVE_OPENSTACK=1.
type testCloud struct {
	sim        *simos.Cloud // nil when live
	props      map[string]any
	netID      string
	imageID    string
	flavor     string
	ipBase     string
	vipAddress string
}

// startSim serves a simulated OpenStack on 127.0.0.1 for the test.
func startSim(t testing.TB, cfg simos.Config) *testCloud {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.BuildTime == 0 {
		cfg.BuildTime = 20 * time.Millisecond
	}
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.FloatingIPs == nil {
		cfg.FloatingIPs = []string{"127.83.0.10"}
	}
	if cfg.Password == "" {
		cfg.Password = "s3cr3t-pw"
	}
	c, err := simos.New("http://"+lis.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: c.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() {
		_ = srv.Close()
		_ = c.Close()
	})
	return &testCloud{
		sim: c,
		props: map[string]any{
			"auth_url": c.AuthURL(), "username": "admin", "api_key": cfg.Password, "domain": "Default",
			"project": "compleat", "region": simos.DefaultRegion, "default_key_name": "compleat",
			"default_security_groups": []string{"default"}, "poll_interval": 0.02, "state_timeout": 30,
		},
		netID: c.NetworkID("private"), imageID: simos.LightImageID, flavor: "m1.small",
		ipBase: "127.82.0.10", vipAddress: "127.83.0.10",
	}
}

// liveCloud is a real OpenStack, configured from the environment:
//
//	COMPLEAT_LIVE_OPENSTACK=1     turns live mode on
//	OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME,
//	OS_USER_DOMAIN_NAME, OS_PROJECT_DOMAIN_NAME, OS_REGION_NAME
//	                              the cloud and credentials (required)
//	COMPLEAT_OS_NET_ID            a network the VMs go on (required)
//	COMPLEAT_OS_IMAGE_ID          an active image to boot (required)
//	COMPLEAT_OS_IP_BASE           first of 8 free addresses on the network (required)
//	COMPLEAT_OS_FLAVOR            default m1.small
//	COMPLEAT_OS_KEY_NAME          default none
//
// It costs a few small servers and 1 GiB volumes for minutes.
func liveCloud(t testing.TB) *testCloud {
	t.Helper()
	env := func(k string, required bool) string {
		v := os.Getenv(k)
		if v == "" && required {
			t.Skipf("COMPLEAT_LIVE_OPENSTACK=1 but %s is not set (see docs/cpi/openstack.md, live mode)", k)
		}
		return v
	}
	c := &testCloud{
		props: map[string]any{
			"auth_url": env("OS_AUTH_URL", true), "username": env("OS_USERNAME", true), "api_key": env("OS_PASSWORD", true),
			"project": env("OS_PROJECT_NAME", true), "user_domain_name": env("OS_USER_DOMAIN_NAME", true),
			"project_domain_name": env("OS_PROJECT_DOMAIN_NAME", true), "region": env("OS_REGION_NAME", false),
			"default_security_groups": []string{"default"}, "poll_interval": 3, "state_timeout": 600,
		},
		netID: env("COMPLEAT_OS_NET_ID", true), imageID: env("COMPLEAT_OS_IMAGE_ID", true),
		ipBase: env("COMPLEAT_OS_IP_BASE", true), flavor: env("COMPLEAT_OS_FLAVOR", false),
	}
	if k := env("COMPLEAT_OS_KEY_NAME", false); k != "" {
		c.props["default_key_name"] = k
	}
	if c.flavor == "" {
		c.flavor = "m1.small"
	}
	return c
}

func live() bool { return os.Getenv("COMPLEAT_LIVE_OPENSTACK") == "1" }

// cloudUnderTest is the live cloud when asked for, else a fresh simulator.
func cloudUnderTest(t testing.TB) *testCloud {
	if live() {
		return liveCloud(t)
	}
	return startSim(t, simos.Config{})
}

func (c *testCloud) propsJSON(t testing.TB, overrides map[string]any) json.RawMessage {
	t.Helper()
	m := map[string]any{}
	for k, v := range c.props {
		m[k] = v
	}
	for k, v := range overrides {
		if v == nil {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newCPI is the plugin in-process on the cloud.
func (c *testCloud) newCPI(t testing.TB, overrides map[string]any, opts ...Option) *CPI {
	t.Helper()
	opts = append([]Option{WithLogger(testLogger(t)), WithRetryBackoff(time.Millisecond)}, opts...)
	p, err := New(c.propsJSON(t, overrides), opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

// lightStemcell is a light stemcell request naming the cloud's image.
func (c *testCloud) lightStemcell(t testing.TB) cpi.CreateStemcellRequest {
	t.Helper()
	img := filepath.Join(t.TempDir(), "image")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return cpi.CreateStemcellRequest{ImagePath: img, CloudProperties: json.RawMessage(
		`{"name": "compleat-light-test", "version": "1", "image_id": "` + c.imageID + `"}`)}
}

// networks returns the manual networks of the i-th VM.
func (c *testCloud) networks(i int) map[string]cpi.Network {
	nets := cpitest.ManualNetworks(c.ipBase)(i)
	n := nets["default"]
	n.CloudProperties = json.RawMessage(`{"net_id": "` + c.netID + `"}`)
	nets["default"] = n
	return nets
}

func (c *testCloud) vmProps() json.RawMessage {
	return json.RawMessage(`{"instance_type": "` + c.flavor + `"}`)
}

func testLogger(t testing.TB) *slogLogger { return newTestLogger(t) }

// pluginBinary is $COMPLEAT_BIN/cpi-openstack when set, else cpi-openstack
// built into the test's directory.
func pluginBinary(t testing.TB) string {
	t.Helper()
	if dir := os.Getenv("COMPLEAT_BIN"); dir != "" {
		p := filepath.Join(dir, "cpi-openstack")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p := filepath.Join(t.TempDir(), "cpi-openstack")
	out, err := exec.Command("go", "build", "-o", p, "./cmd/cpi-openstack").CombinedOutput()
	if err != nil {
		t.Fatalf("build cpi-openstack: %v\n%s", err, out)
	}
	return p
}
