package openstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servergroups"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/cpitest"
	simos "github.com/compleat/compleat/sim/openstack"
)

// The cloud cases of BOSH's OpenStack CPI lifecycle tests and its users'
// top issues, against the simulator (they inject faults, so never live).

func simOnly(t *testing.T, cfg simos.Config) *testCloud {
	t.Helper()
	if live() {
		t.Skip("injects faults into the simulated cloud; not run live")
	}
	t.Parallel()
	return startSim(t, cfg)
}

// vmRequest is a CreateVM on a light stemcell with the i-th manual address.
func (c *testCloud) vmRequest(t *testing.T, p *CPI, i int) cpi.CreateVMRequest {
	t.Helper()
	stemcell, err := p.CreateStemcell(t.Context(), c.lightStemcell(t))
	if err != nil {
		t.Fatalf("CreateStemcell: %v", err)
	}
	agent := "agent-" + newUUID()
	return cpi.CreateVMRequest{
		AgentID: agent, StemcellCID: stemcell, CloudProperties: c.vmProps(), Networks: c.networks(i),
		AgentSettings: json.RawMessage(`{"agent_id": "` + agent + `"}`),
		Tags:          map[string]string{cpi.TagDirector: "director-test", cpi.TagAgentID: agent, cpi.TagDeployment: "d"},
	}
}

// wantNothingLeft checks that the cloud holds no server and no port but
// those it started with.
func (c *testCloud) wantNothingLeft(t *testing.T, what string) {
	t.Helper()
	if s := c.sim.Servers(); len(s) > 0 {
		t.Errorf("%s: %d servers left behind: %+v", what, len(s), s)
	}
	if p := c.sim.Ports(); len(p) > 0 {
		t.Errorf("%s: %d ports left behind: %+v", what, len(p), p)
	}
}

func TestBadVIPLeavesNoServerAndNoPort(t *testing.T) {
	c := simOnly(t, simos.Config{})
	p := c.newCPI(t, nil)
	req := c.vmRequest(t, p, 0)
	req.Networks["public"] = cpi.Network{Type: "vip", IP: "127.83.9.9"}
	_, err := p.CreateVM(t.Context(), req)
	if !errors.Is(err, cpi.ErrVMCreationFailed) {
		t.Fatalf("CreateVM with a floating IP the project lacks: %v, want VMCreationFailed", err)
	}
	if !strings.Contains(err.Error(), "networks.public.ip") || !strings.Contains(err.Error(), "127.83.9.9") {
		t.Errorf("error %q does not name the vip network's ip", err)
	}
	c.wantNothingLeft(t, "bad vip")
}

func TestVIPAssociatedAndLedgerUndoneWhenAssociationFails(t *testing.T) {
	c := simOnly(t, simos.Config{})
	p := c.newCPI(t, nil)
	req := c.vmRequest(t, p, 0)
	req.Networks["public"] = cpi.Network{Type: "vip", IP: c.vipAddress}
	res, err := p.CreateVM(t.Context(), req)
	if err != nil {
		t.Fatalf("CreateVM with a vip: %v", err)
	}
	srv := c.sim.Servers()[0]
	if !strings.Contains(fipPort(t, c, c.vipAddress), srv.Ports[0]) {
		t.Errorf("floating IP %s is not on the server's port %s", c.vipAddress, srv.Ports[0])
	}
	if err := p.DeleteVM(t.Context(), res.CID); err != nil {
		t.Fatal(err)
	}

	// The association fails once the server is up: everything made is
	// undone, newest first.
	c.sim.InjectFault(simos.Fault{Method: http.MethodPut, Path: "/network/v2.0/floatingips/", Status: http.StatusInternalServerError, Times: 1})
	req = c.vmRequest(t, p, 1)
	req.Networks["public"] = cpi.Network{Type: "vip", IP: c.vipAddress}
	_, err = p.CreateVM(t.Context(), req)
	if !errors.Is(err, cpi.ErrVMCreationFailed) || !cpi.IsRetryable(err) {
		t.Fatalf("CreateVM whose floating IP association failed: %v, want retryable VMCreationFailed", err)
	}
	c.wantNothingLeft(t, "failed association")
	if got := c.sim.Requests()["PUT /network/v2.0/floatingips/{id}"]; got != 2 {
		t.Errorf("PUT floatingips made %d times, want 2 (a PUT that failed with a 5xx is never repeated)", got)
	}
}

// fipPort is the port the floating IP is associated with, through the API.
func fipPort(t *testing.T, c *testCloud, addr string) string {
	t.Helper()
	p := c.newCPI(t, nil)
	cl, err := p.session(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		FloatingIPs []struct {
			PortID *string `json:"port_id"`
		} `json:"floatingips"`
	}
	_, err = cl.network.Get(t.Context(), cl.network.ServiceURL("floatingips")+"?floating_ip_address="+addr, &doc, nil)
	if err != nil || len(doc.FloatingIPs) != 1 || doc.FloatingIPs[0].PortID == nil {
		t.Fatalf("floating ip %s: %v %+v", addr, err, doc)
	}
	return *doc.FloatingIPs[0].PortID
}

func TestBadNetIDIsNamed(t *testing.T) {
	c := simOnly(t, simos.Config{})
	p := c.newCPI(t, nil)
	req := c.vmRequest(t, p, 0)
	bad := newUUID()
	n := req.Networks["default"]
	n.CloudProperties = json.RawMessage(`{"net_id": "` + bad + `"}`)
	req.Networks["default"] = n
	_, err := p.CreateVM(t.Context(), req)
	var e *cpi.Error
	if !errors.As(err, &e) || e.Code != cpi.CodeInvalidCloudProperties || e.Field != "networks.default.net_id" || !strings.Contains(err.Error(), bad) {
		t.Fatalf("CreateVM on a missing network: %v, want InvalidCloudProperties naming networks.default.net_id and %s", err, bad)
	}
	c.wantNothingLeft(t, "bad net_id")
}

func TestLeakedPortHoldingTheAddressIsRecovered(t *testing.T) {
	c := simOnly(t, simos.Config{})
	p := c.newCPI(t, nil)
	cl, err := p.session(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	req := c.vmRequest(t, p, 0)
	ip := req.Networks["default"].IP
	// A port an earlier failure leaked: unbound, DOWN, holding the address.
	leaked, err := ports.Create(t.Context(), cl.network, ports.CreateOpts{NetworkID: c.netID, FixedIPs: []ports.IP{{IPAddress: ip}}}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.CreateVM(t.Context(), req)
	if err != nil {
		t.Fatalf("CreateVM with a leaked port on its address: %v", err)
	}
	if got := res.Networks["default"].IP; got != ip {
		t.Errorf("VM got %s, want %s", got, ip)
	}
	for _, port := range c.sim.Ports() {
		if port.ID == leaked.ID {
			t.Errorf("leaked port %s is still there", leaked.ID)
		}
	}
	if got := c.sim.Requests()["POST /network/v2.0/ports"]; got != 3 {
		t.Errorf("POST ports made %d times, want 3 (the leak, the 409, the retry)", got)
	}

	// An address a live server holds is not taken from it.
	other := c.vmRequest(t, p, 0)
	_, err = p.CreateVM(t.Context(), other)
	if err == nil || !strings.Contains(err.Error(), "in use by port") {
		t.Fatalf("CreateVM on the address of a running server: %v, want an error naming the port that holds it", err)
	}
	if n := len(c.sim.Servers()); n != 1 {
		t.Errorf("%d servers after the refused create, want 1", n)
	}
}

func TestServerInErrorNamesTheFault(t *testing.T) {
	c := simOnly(t, simos.Config{})
	p := c.newCPI(t, nil)
	req := c.vmRequest(t, p, 0)
	c.sim.FailNextServers(1, "No valid host was found. There are not enough hosts available.")
	_, err := p.CreateVM(t.Context(), req)
	if !errors.Is(err, cpi.ErrVMCreationFailed) || !cpi.IsRetryable(err) {
		t.Fatalf("CreateVM of a server that went to ERROR: %v, want retryable VMCreationFailed", err)
	}
	if !strings.Contains(err.Error(), "No valid host was found. There are not enough hosts available.") {
		t.Errorf("error %q lacks the server's fault message", err)
	}
	c.wantNothingLeft(t, "server in ERROR")
	// The director retries: the next attempt works on the same address.
	if _, err := p.CreateVM(t.Context(), req); err != nil {
		t.Fatalf("CreateVM retried: %v", err)
	}
}

func TestThrottlingIsRetriedHonouringRetryAfter(t *testing.T) {
	c := simOnly(t, simos.Config{})
	p := c.newCPI(t, map[string]any{"max_retries": 6})
	req := c.vmRequest(t, p, 0)
	// A 429 storm on every Nova GET, and Nova's overLimit (413) on the
	// POST itself, which the cloud refused without acting.
	c.sim.InjectFault(simos.Fault{Method: http.MethodGet, Path: "/compute/", Status: http.StatusTooManyRequests, RetryAfter: "0", Times: 5})
	c.sim.InjectFault(simos.Fault{Method: http.MethodPost, Path: "/compute/v2.1/servers", Status: http.StatusRequestEntityTooLarge, RetryAfter: "0", Times: 2})
	if _, err := p.CreateVM(t.Context(), req); err != nil {
		t.Fatalf("CreateVM through throttling: %v", err)
	}
	if got := c.sim.Requests()["POST /compute/v2.1/servers"]; got != 3 {
		t.Errorf("POST servers made %d times, want 3 (two overLimit answers, then the create)", got)
	}
	if n := len(c.sim.Servers()); n != 1 {
		t.Errorf("%d servers, want 1", n)
	}

	// Throttling that outlasts max_retries fails the call, retryable.
	c.sim.InjectFault(simos.Fault{Method: http.MethodGet, Path: "/compute/v2.1/servers/", Status: http.StatusTooManyRequests, RetryAfter: "0"})
	_, err := p.HasVM(t.Context(), c.sim.Servers()[0].ID)
	if err == nil || !cpi.IsRetryable(err) {
		t.Fatalf("HasVM throttled past max_retries: %v, want a retryable error (never false)", err)
	}
}

func TestServerErrorsRetriedOnlyOnIdempotentRequests(t *testing.T) {
	c := simOnly(t, simos.Config{})
	p := c.newCPI(t, nil)
	req := c.vmRequest(t, p, 0)
	res, err := p.CreateVM(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	// GETs survive 5xx answers and dropped connections.
	c.sim.InjectFault(simos.Fault{Method: http.MethodGet, Path: "/compute/v2.1/servers/", Status: http.StatusBadGateway, Times: 2})
	c.sim.InjectFault(simos.Fault{Method: http.MethodGet, Path: "/compute/v2.1/servers/", Status: simos.DropConnection, Times: 1})
	if has, err := p.HasVM(t.Context(), res.CID); err != nil || !has {
		t.Fatalf("HasVM through 502s and a dropped connection = %v, %v; want true", has, err)
	}
	// A persistent 500 is an error, never "no such VM" (bosh#1223).
	remove := c.sim.InjectFault(simos.Fault{Method: http.MethodGet, Path: "/compute/v2.1/servers/", Status: http.StatusInternalServerError})
	if has, err := p.HasVM(t.Context(), res.CID); err == nil {
		t.Fatalf("HasVM on a failing Nova = %v, nil; want an error", has)
	}
	remove()
	// A POST that failed with a 5xx may have acted: never repeated.
	before := c.sim.Requests()["POST /network/v2.0/ports"]
	c.sim.InjectFault(simos.Fault{Method: http.MethodPost, Path: "/network/v2.0/ports", Status: http.StatusServiceUnavailable, Times: 1})
	_, err = p.CreateVM(t.Context(), c.vmRequest(t, p, 1))
	if !errors.Is(err, cpi.ErrVMCreationFailed) {
		t.Fatalf("CreateVM whose port POST failed: %v, want VMCreationFailed", err)
	}
	if got := c.sim.Requests()["POST /network/v2.0/ports"] - before; got != 1 {
		t.Errorf("POST ports made %d times after a 503, want 1", got)
	}
	if n := len(c.sim.Servers()); n != 1 {
		t.Errorf("%d servers, want the first VM's only", n)
	}
}

func TestWaitsEndAtStateTimeoutAndContextDeadline(t *testing.T) {
	c := simOnly(t, simos.Config{})
	p := c.newCPI(t, map[string]any{"state_timeout": 0.3})
	req := c.vmRequest(t, p, 0)
	c.sim.HoldBuild(true)
	_, err := p.CreateVM(t.Context(), req)
	if !errors.Is(err, cpi.ErrVMCreationFailed) || !cpi.IsRetryable(err) || !strings.Contains(err.Error(), "state_timeout") {
		t.Fatalf("CreateVM of a server stuck in BUILD: %v, want retryable VMCreationFailed naming state_timeout", err)
	}
	c.wantNothingLeft(t, "server stuck in BUILD")

	p = c.newCPI(t, nil) // state_timeout 30s: the caller's deadline ends first
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err = p.CreateVM(ctx, c.vmRequest(t, p, 1))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("CreateVM past the caller's deadline: %v, want context.DeadlineExceeded in the chain", err)
	}
	c.wantNothingLeft(t, "create past the deadline")
}

// A plugin that dies while a server builds leaves the director an
// unknown outcome; the server carries its tags, so ListVMs finds it.
func TestOutcomeUnknownFoundByListVMs(t *testing.T) {
	c := simOnly(t, simos.Config{})
	bin := pluginBinary(t)
	props := c.propsJSON(t, nil)
	first := cpitest.StartBinary(t, bin, props)
	inProc := c.newCPI(t, nil)
	req := c.vmRequest(t, inProc, 0)
	c.sim.HoldBuild(true)
	done := make(chan error, 1)
	go func() {
		_, err := first.CreateVM(t.Context(), req)
		done <- err
	}()
	deadline := time.Now().Add(30 * time.Second)
	for len(c.sim.Servers()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if len(c.sim.Servers()) == 0 {
		t.Fatal("no server was created")
	}
	if err := syscall.Kill(first.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, cpi.ErrOutcomeUnknown) {
		t.Fatalf("CreateVM whose plugin died: %v, want OutcomeUnknown", err)
	}
	c.sim.HoldBuild(false)

	second := cpitest.StartBinary(t, bin, props)
	vms, err := second.ListVMs(t.Context(), cpi.ListFilter{DirectorID: "director-test"})
	if err != nil {
		t.Fatal(err)
	}
	if len(vms) != 1 || vms[0].AgentID != req.AgentID || vms[0].Tags[cpi.TagDeployment] != "d" {
		t.Fatalf("ListVMs after the lost create = %+v, want the server of agent %s with its tags", vms, req.AgentID)
	}
	if err := second.DeleteVM(t.Context(), vms[0].CID); err != nil {
		t.Fatal(err)
	}
	c.wantNothingLeft(t, "deleting the found VM")
}

func TestLightStemcellWithMissingImage(t *testing.T) {
	c := simOnly(t, simos.Config{})
	p := c.newCPI(t, nil)
	req := c.lightStemcell(t)
	missing := newUUID()
	req.CloudProperties = json.RawMessage(`{"name": "s", "version": "1", "image_id": "` + missing + `"}`)
	_, err := p.CreateStemcell(t.Context(), req)
	var e *cpi.Error
	if !errors.As(err, &e) || e.Code != cpi.CodeInvalidCloudProperties || e.Field != "image_id" || !strings.Contains(err.Error(), missing) {
		t.Fatalf("CreateStemcell naming a missing image: %v, want InvalidCloudProperties on image_id naming %s", err, missing)
	}

	// The image a light stemcell names disappears later: CreateVM says so.
	cl, err := p.session(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	img, err := images.Create(t.Context(), cl.image, images.CreateOpts{Name: "short-lived", DiskFormat: "raw", ContainerFormat: "bare"}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if err := uploadBytes(t, cl, img.ID, []byte("image")); err != nil {
		t.Fatal(err)
	}
	req.CloudProperties = json.RawMessage(`{"name": "s", "version": "2", "image_id": "` + img.ID + `"}`)
	stemcell, err := p.CreateStemcell(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if err := images.Delete(t.Context(), cl.image, img.ID).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	vm := c.vmRequest(t, p, 0)
	vm.StemcellCID = stemcell
	_, err = p.CreateVM(t.Context(), vm)
	if !errors.Is(err, cpi.ErrStemcellNotFound) || !strings.Contains(err.Error(), img.ID) {
		t.Fatalf("CreateVM on a light stemcell whose image is gone: %v, want StemcellNotFound naming %s", err, img.ID)
	}
}

func uploadBytes(t *testing.T, cl *clients, id string, b []byte) error {
	return imagedata.Upload(t.Context(), cl.image, id, bytes.NewReader(b)).ExtractErr()
}

func TestHeavyStemcellUploadedAndBooted(t *testing.T) {
	c := simOnly(t, simos.Config{})
	p := c.newCPI(t, nil)
	img := filepath.Join(t.TempDir(), "root.img")
	data := make([]byte, 3<<20)
	_, _ = rand.Read(data)
	if err := os.WriteFile(img, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cid, err := p.CreateStemcell(t.Context(), cpi.CreateStemcellRequest{ImagePath: img,
		CloudProperties: json.RawMessage(`{"name": "bosh-openstack-kvm-ubuntu-jammy", "version": "1.1", "disk_format": "raw", "os_distro": "ubuntu", "infrastructure": "openstack"}`)})
	if err != nil {
		t.Fatalf("CreateStemcell (heavy): %v", err)
	}
	cl, _ := p.session(t.Context())
	got, err := images.Get(t.Context(), cl.image, cid).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != images.ImageStatusActive || got.SizeBytes != int64(len(data)) || got.Name != "bosh-openstack-kvm-ubuntu-jammy/1.1" {
		t.Errorf("image %s: status %s, %d bytes, name %q; want active, %d bytes, the stemcell's name/version", cid, got.Status, got.SizeBytes, got.Name, len(data))
	}
	stored, err := os.ReadFile(c.sim.ImagePath(cid))
	if err != nil || string(stored) != string(data) {
		t.Errorf("Glance holds %d bytes (%v), not the image's %d", len(stored), err, len(data))
	}
	req := c.vmRequest(t, p, 0)
	req.StemcellCID = cid
	if _, err := p.CreateVM(t.Context(), req); err != nil {
		t.Fatalf("CreateVM on the heavy stemcell: %v", err)
	}
	// A throttled upload starts again from the file's beginning.
	c.sim.InjectFault(simos.Fault{Method: http.MethodPut, Path: "/image/v2/images/", Status: http.StatusRequestEntityTooLarge, RetryAfter: "0", Times: 1})
	cid2, err := p.CreateStemcell(t.Context(), cpi.CreateStemcellRequest{ImagePath: img, CloudProperties: json.RawMessage(`{"name": "s", "version": "2", "disk_format": "raw"}`)})
	if err != nil {
		t.Fatalf("CreateStemcell through an overLimit upload: %v", err)
	}
	if stored, _ := os.ReadFile(c.sim.ImagePath(cid2)); len(stored) != len(data) {
		t.Errorf("retried upload stored %d bytes, want %d", len(stored), len(data))
	}
	if err := p.DeleteStemcell(t.Context(), cid); err != nil {
		t.Fatal(err)
	}
	if _, err := images.Get(t.Context(), cl.image, cid).Extract(); !isNotFound(err) {
		t.Errorf("image %s after DeleteStemcell: %v, want 404", cid, err)
	}
}

func TestDiskHintCarriesVolumeID(t *testing.T) {
	c := simOnly(t, simos.Config{})
	p := c.newCPI(t, nil)
	res, err := p.CreateVM(t.Context(), c.vmRequest(t, p, 0))
	if err != nil {
		t.Fatal(err)
	}
	disk, err := p.CreateDisk(t.Context(), cpi.CreateDiskRequest{SizeMB: 1500, VMCID: res.CID})
	if err != nil {
		t.Fatal(err)
	}
	hint, err := p.AttachDisk(t.Context(), res.CID, disk)
	if err != nil {
		t.Fatal(err)
	}
	// m1.small has an ephemeral disk (vdb); Nova picks vdc whatever the
	// request said.
	if hint.VolumeID != disk || hint.Path != "/dev/vdc" {
		t.Errorf("hint %+v, want volume id %s and Nova's device /dev/vdc", hint, disk)
	}
	again, err := p.AttachDisk(t.Context(), res.CID, disk)
	if err != nil || again != hint {
		t.Errorf("AttachDisk again = %+v, %v; want the same hint", again, err)
	}
	if err := p.ResizeDisk(t.Context(), disk, 1024); err == nil || !strings.Contains(err.Error(), "shrink") {
		t.Errorf("ResizeDisk to a smaller size: %v, want a refusal", err)
	}
}

func TestPropertiesNameTheField(t *testing.T) {
	c := simOnly(t, simos.Config{})
	for _, tc := range []struct {
		override map[string]any
		field    string
	}{
		{map[string]any{"flavour": "m1.small"}, "flavour"},
		{map[string]any{"auth_url": "keystone:5000"}, "auth_url"},
		{map[string]any{"auth_url": "https://keystone.example.com:5000/v2.0"}, "auth_url"},
		{map[string]any{"state_timeout": "soon"}, "state_timeout"},
		{map[string]any{"config_drive": "floppy"}, "config_drive"},
		{map[string]any{"api_key": nil}, "username"},
		{map[string]any{"domain": nil}, "project_domain_name"},
	} {
		_, err := New(c.propsJSON(t, tc.override))
		var e *cpi.Error
		if !errors.As(err, &e) || e.Code != cpi.CodeInvalidCloudProperties || e.Field != tc.field {
			t.Errorf("New with %v: %v, want InvalidCloudProperties naming %s", tc.override, err, tc.field)
		}
		if err != nil && strings.Contains(err.Error(), "s3cr3t-pw") {
			t.Errorf("error %q shows the password", err)
		}
	}
	p := c.newCPI(t, nil)
	req := c.vmRequest(t, p, 0)
	for props, field := range map[string]string{
		`{"instance_type": "m1.small", "flavour": "x"}`:                  "flavour",
		`{"instance_type": "m9.huge"}`:                                   "instance_type",
		`{"instance_type": "m1.small", "security_groups": ["nope"]}`:     "security_groups.0",
		`{"instance_type": "m1.small", "key_name": "nope"}`:              "key_name",
		`{"instance_type": "m1.small", "root_disk": {"size": 10}}`:       "root_disk",
		`{"instance_type": "m1.bfv"}`:                                    "instance_type",
		`{"instance_type": "m1.small", "scheduler_hints": {"grp": "x"}}`: "scheduler_hints.grp",
	} {
		req.CloudProperties = json.RawMessage(props)
		_, err := p.CreateVM(t.Context(), req)
		var e *cpi.Error
		if !errors.As(err, &e) || e.Code != cpi.CodeInvalidCloudProperties || e.Field != field {
			t.Errorf("CreateVM with %s: %v, want InvalidCloudProperties naming %s", props, err, field)
		}
	}
	c.wantNothingLeft(t, "refused cloud properties")
	// Wrong credentials: a clear error without the secret.
	bad := c.newCPI(t, map[string]any{"api_key": "wrong-secret"})
	_, err := bad.HasVM(t.Context(), newUUID())
	if err == nil || !strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), "wrong-secret") {
		t.Errorf("HasVM with a wrong password: %v, want a 401 that does not show the password", err)
	}
}

func TestBootFromVolume(t *testing.T) {
	c := simOnly(t, simos.Config{})
	p := c.newCPI(t, map[string]any{"boot_from_volume": true})
	req := c.vmRequest(t, p, 0)
	req.CloudProperties = json.RawMessage(`{"instance_type": "m1.bfv", "root_disk": {"size": 3}}`)
	res, err := p.CreateVM(t.Context(), req)
	if err != nil {
		t.Fatalf("CreateVM booting from a volume: %v", err)
	}
	if n := c.sim.VolumeCount(); n != 1 {
		t.Errorf("%d volumes, want the boot volume", n)
	}
	disks, err := p.GetDisks(t.Context(), res.CID)
	if err != nil || len(disks) != 0 {
		t.Errorf("GetDisks = %v, %v; want no persistent disk (the boot volume is not one)", disks, err)
	}
	if err := p.DeleteVM(t.Context(), res.CID); err != nil {
		t.Fatal(err)
	}
	if n := c.sim.VolumeCount(); n != 0 {
		t.Errorf("%d volumes after DeleteVM, want 0 (delete_on_termination)", n)
	}
}

// A cloud whose max_limit cuts listings into pages of two: ListVMs,
// ListDisks and the flavor lookup follow the next links.
func TestListingsFollowPages(t *testing.T) {
	c := simOnly(t, simos.Config{MaxLimit: 2})
	p := c.newCPI(t, nil)
	for i := range 5 {
		res, err := p.CreateVM(t.Context(), c.vmRequest(t, p, i)) // m1.small is on the flavors' first page
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.CreateDisk(t.Context(), cpi.CreateDiskRequest{SizeMB: 1024, VMCID: res.CID, Tags: map[string]string{cpi.TagDirector: "director-test"}}); err != nil {
			t.Fatal(err)
		}
	}
	vms, err := p.ListVMs(t.Context(), cpi.ListFilter{DirectorID: "director-test"})
	if err != nil || len(vms) != 5 {
		t.Errorf("ListVMs over pages of 2 = %d VMs, %v; want 5", len(vms), err)
	}
	disks, err := p.ListDisks(t.Context(), cpi.ListFilter{DirectorID: "director-test"})
	if err != nil || len(disks) != 5 {
		t.Errorf("ListDisks over pages of 2 = %d disks, %v; want 5", len(disks), err)
	}
	req := c.vmRequest(t, p, 9)
	req.CloudProperties = json.RawMessage(`{"instance_type": "m1.xlarge"}`) // on the third page
	if _, err := p.CreateVM(t.Context(), req); err != nil {
		t.Errorf("CreateVM with a flavor on the last page: %v", err)
	}
	if got := c.sim.Requests()["GET /compute/v2.1/servers/detail"]; got < 3 {
		t.Errorf("GET servers/detail made %d times, want the 3 pages", got)
	}
}

func TestSchedulerHintsPlaceTheServerInItsGroup(t *testing.T) {
	c := simOnly(t, simos.Config{})
	p := c.newCPI(t, nil)
	cl, err := p.session(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	g, err := servergroups.Create(t.Context(), cl.compute, servergroups.CreateOpts{Name: "web", Policies: []string{"anti-affinity"}}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	req := c.vmRequest(t, p, 0)
	req.CloudProperties = json.RawMessage(`{"instance_type": "m1.small", "scheduler_hints": {"group": "` + g.ID + `"}}`)
	res, err := p.CreateVM(t.Context(), req)
	if err != nil {
		t.Fatalf("CreateVM in a server group: %v", err)
	}
	got, err := servergroups.Get(t.Context(), cl.compute, g.ID).Extract()
	if err != nil || len(got.Members) != 1 || got.Members[0] != res.CID {
		t.Errorf("server group members = %v (%v), want [%s]", got.Members, err, res.CID)
	}
	req = c.vmRequest(t, p, 1)
	req.CloudProperties = json.RawMessage(`{"instance_type": "m1.small", "scheduler_hints": {"group": "` + newUUID() + `"}}`)
	if _, err := p.CreateVM(t.Context(), req); !errors.Is(err, cpi.ErrVMCreationFailed) || !strings.Contains(err.Error(), "not found") {
		t.Errorf("CreateVM in a missing server group: %v, want VMCreationFailed saying the group is not found", err)
	}
	if n := len(c.sim.Ports()); n != 1 {
		t.Errorf("%d ports, want the first VM's only (the refused create made its port and removed it)", n)
	}
}

// Nova creates the server but the answer is lost: the plugin cannot know
// the server's id, so it finds the server by name and agent id and
// removes it with the ports it made.
func TestLostCreateAnswerIsCleanedUp(t *testing.T) {
	c := simOnly(t, simos.Config{})
	p := c.newCPI(t, nil)
	req := c.vmRequest(t, p, 0)
	c.sim.InjectFault(simos.Fault{Method: http.MethodPost, Path: "/compute/v2.1/servers", Lost: true, Times: 1})
	_, err := p.CreateVM(t.Context(), req)
	if !errors.Is(err, cpi.ErrVMCreationFailed) || !strings.Contains(err.Error(), "outcome") || !strings.Contains(err.Error(), req.AgentID) {
		t.Fatalf("CreateVM whose answer was lost: %v, want VMCreationFailed saying the outcome is unknown and naming the agent id", err)
	}
	if got := c.sim.Requests()["POST /compute/v2.1/servers"]; got != 1 {
		t.Errorf("POST servers made %d times, want 1 (a POST whose answer was lost is never repeated)", got)
	}
	c.wantNothingLeft(t, "lost create answer")
}

// Two manual networks: a port on each, the one with the default gateway
// first (eth0), and both in the settings with their MACs.
func TestTwoManualNetworks(t *testing.T) {
	c := simOnly(t, simos.Config{Networks: []simos.NetworkConfig{
		{Name: "private", CIDR: "127.82.0.0/16"}, {Name: "backend", CIDR: "127.84.0.0/16"},
		{Name: "public", CIDR: "127.83.0.0/16", External: true},
	}})
	p := c.newCPI(t, nil)
	req := c.vmRequest(t, p, 0)
	req.Networks["backend"] = cpi.Network{Type: "manual", IP: "127.84.0.20", Netmask: "255.255.0.0",
		Default: []string{"dns", "gateway"}, CloudProperties: json.RawMessage(`{"net_id": "` + c.sim.NetworkID("backend") + `"}`)}
	n := req.Networks["default"]
	n.Default = nil
	req.Networks["default"] = n
	res, err := p.CreateVM(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	srv := c.sim.Servers()[0]
	ports := map[string]simos.PortInfo{}
	for _, port := range c.sim.Ports() {
		ports[port.ID] = port
	}
	if len(srv.Ports) != 2 || ports[srv.Ports[0]].IP != "127.84.0.20" || ports[srv.Ports[1]].IP != n.IP {
		t.Errorf("server ports %v (%v), want the backend (gateway) port first, then default", srv.Ports, ports)
	}
	raw, err := c.userData(t.Context(), res.CID)
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Networks map[string]struct{ IP, MAC string }
	}
	if err := json.Unmarshal(raw, &s); err != nil || s.Networks["backend"].MAC == "" || s.Networks["default"].MAC == "" || s.Networks["backend"].IP != "127.84.0.20" {
		t.Errorf("settings networks %+v (%v), want both with their MAC", s.Networks, err)
	}
}
