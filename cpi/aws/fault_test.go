package aws

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/cpitest"
)

// faultClient is the plugin's HTTP client in fault tests: it forwards every
// EC2 call to moto, except that a rule for the call's Action may answer in
// moto's place (an EC2 error) or rewrite moto's answer. It counts the
// attempts of each action, retries included.
type faultClient struct {
	next http.Client

	mu       sync.Mutex
	rules    map[string]rule
	attempts map[string]int
}

// A rule sees the attempt number of its action (1 for the first), or the
// request's parameters, and either answers (status and body) or, answering
// 0, lets the call through to moto, after which rewrite (if set) changes
// moto's answer.
type rule struct {
	answer  func(attempt int) (status int, body string)
	request func(form url.Values) (status int, body string)
	rewrite func(body string) string
}

func newFaultClient() *faultClient {
	return &faultClient{rules: map[string]rule{}, attempts: map[string]int{}}
}

func (f *faultClient) set(action string, r rule) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules[action] = r
	f.attempts[action] = 0
}

func (f *faultClient) count(action string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempts[action]
}

func (f *faultClient) Do(req *http.Request) (*http.Response, error) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, err
	}
	req.Body.Close()
	form, _ := url.ParseQuery(string(body))
	action := form.Get("Action")
	f.mu.Lock()
	f.attempts[action]++
	n := f.attempts[action]
	r, ok := f.rules[action]
	f.mu.Unlock()
	if ok && (r.answer != nil || r.request != nil) {
		var status int
		var b string
		if r.answer != nil {
			status, b = r.answer(n)
		} else {
			status, b = r.request(form)
		}
		if status != 0 {
			return &http.Response{
				StatusCode: status, Status: http.StatusText(status), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
				Header:  http.Header{"Content-Type": {"text/xml"}},
				Body:    io.NopCloser(strings.NewReader(b)),
				Request: req,
			}, nil
		}
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	resp, err := f.next.Do(req)
	if err != nil || !ok || r.rewrite == nil {
		return resp, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	nb := r.rewrite(string(b))
	resp.Body = io.NopCloser(strings.NewReader(nb))
	resp.ContentLength = int64(len(nb))
	resp.Header.Del("Content-Length")
	return resp, nil
}

// ec2Error is EC2's error document.
func ec2Error(code, msg string) string {
	return fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors><RequestID>fault-test</RequestID></Response>`, code, msg)
}

// throttled answers the first n attempts (all when n < 0) with 503
// RequestLimitExceeded.
func throttled(n int) rule {
	return rule{answer: func(attempt int) (int, string) {
		if n < 0 || attempt <= n {
			return http.StatusServiceUnavailable, ec2Error("RequestLimitExceeded", "Request limit exceeded.")
		}
		return 0, ""
	}}
}

var runningState = regexp.MustCompile(`<instanceState>\s*<code>16</code>\s*<name>running</name>\s*</instanceState>`)

// stateRewrite makes moto's running instances look like state to the
// plugin, with a state reason.
func stateRewrite(code int, state, reason string) rule {
	return rule{rewrite: func(body string) string {
		repl := fmt.Sprintf(`<instanceState><code>%d</code><name>%s</name></instanceState>`, code, state)
		if reason != "" {
			repl += fmt.Sprintf(`<stateReason><code>%s</code><message>%s</message></stateReason>`, reason, reason)
		}
		return runningState.ReplaceAllString(body, repl)
	}}
}

// faultCloud is moto behind a fault client; the plugin retries up to
// maxRetries times with a 1 ms backoff.
func faultCloud(t *testing.T, m *cloud, maxRetries int) (*cloud, *CPI, *faultClient) {
	t.Helper()
	c := *m
	c.props = motoProps(c.endpoint, map[string]any{"max_retries": maxRetries})
	fc := newFaultClient()
	impl := c.newCPI(t, WithHTTPClient(fc), WithRetryBackoff(time.Millisecond))
	return &c, impl, fc
}

// Faults moto cannot make, injected between the plugin and one moto.
func TestFaults(t *testing.T) {
	m := motoCloud(t)
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, *cloud)
	}{
		{"ThrottlingRetried", testThrottlingRetried},
		{"ThrottlingExhaustedIsRetryable", testThrottlingExhaustedIsRetryable},
		{"CapacityIsRetryable", testCapacityIsRetryable},
		{"FailedStartTerminatesInstance", testFailedStartTerminatesInstance},
		{"CreateVMWaitBoundedByContext", testCreateVMWaitBoundedByContext},
		{"ThrottledWaitLooksAgain", testThrottledWaitLooksAgain},
		{"SpotFallsBackToOnDemand", testSpotFallsBackToOnDemand},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, m) })
	}
}

// vmRequest is a valid CreateVM request on a dynamic network in the cloud's
// subnet.
func (c *cloud) vmRequest(t *testing.T, impl cpi.CPI, agentID string) cpi.CreateVMRequest {
	t.Helper()
	img, props := c.lightStemcell(t)
	stemcell, err := impl.CreateStemcell(ctx(t), cpi.CreateStemcellRequest{ImagePath: img, CloudProperties: props})
	if err != nil {
		t.Fatalf("CreateStemcell: %v", err)
	}
	net, _ := json.Marshal(map[string]string{"subnet": c.subnet})
	return cpi.CreateVMRequest{
		AgentID:         agentID,
		StemcellCID:     stemcell,
		CloudProperties: json.RawMessage(`{"instance_type": "t3.micro"}`),
		Networks:        map[string]cpi.Network{"default": {Type: "dynamic", CloudProperties: net}},
		AgentSettings:   json.RawMessage(`{"agent_id": "` + agentID + `"}`),
	}
}

// Throttled calls are retried by the SDK's retryer with backoff until one
// gets through.
func testThrottlingRetried(t *testing.T, m *cloud) {
	c, impl, fc := faultCloud(t, m, 3)
	vm, err := impl.CreateVM(ctx(t), c.vmRequest(t, impl, "throttle-0"))
	if err != nil {
		t.Fatalf("CreateVM: %v", err)
	}
	t.Cleanup(func() { _ = impl.DeleteVM(context.Background(), vm.CID) })

	fc.set("DescribeInstances", throttled(2))
	has, err := impl.HasVM(ctx(t), vm.CID)
	if err != nil || !has {
		t.Fatalf("HasVM through two throttled answers = %v, %v; want true, nil", has, err)
	}
	if n := fc.count("DescribeInstances"); n != 3 {
		t.Errorf("DescribeInstances attempts = %d, want 3 (two throttled, one answered)", n)
	}
	t.Logf("HasVM succeeded after %d DescribeInstances attempts", fc.count("DescribeInstances"))
}

// Throttling that outlasts the retries is reported as Retryable, also
// across the gRPC boundary.
func testThrottlingExhaustedIsRetryable(t *testing.T, m *cloud) {
	c, impl, fc := faultCloud(t, m, 2)
	vm, err := impl.CreateVM(ctx(t), c.vmRequest(t, impl, "throttle-1"))
	if err != nil {
		t.Fatalf("CreateVM: %v", err)
	}
	t.Cleanup(func() {
		fc.set("DescribeInstances", rule{})
		_ = impl.DeleteVM(context.Background(), vm.CID)
	})
	client := cpitest.ServeInProcess(t, impl)

	fc.set("DescribeInstances", throttled(-1))
	_, err = client.HasVM(ctx(t), vm.CID)
	if err == nil {
		t.Fatal("HasVM under constant throttling succeeded")
	}
	if !cpi.IsRetryable(err) {
		t.Errorf("HasVM under constant throttling: %v, want a retryable error", err)
	}
	if n := fc.count("DescribeInstances"); n != 3 {
		t.Errorf("DescribeInstances attempts = %d, want 3 (max_retries 2 + 1)", n)
	}
	if strings.Contains(err.Error(), "testing") {
		t.Errorf("error shows a credential: %v", err)
	}
	t.Logf("after %d attempts: %v", fc.count("DescribeInstances"), err)

	fc.set("AttachVolume", throttled(-1))
	fc.set("DescribeInstances", rule{})
	disk, err := client.CreateDisk(ctx(t), cpi.CreateDiskRequest{SizeMB: 1024, VMCID: vm.CID})
	if err != nil {
		t.Fatalf("CreateDisk: %v", err)
	}
	t.Cleanup(func() { _ = impl.DeleteDisk(context.Background(), disk) })
	_, err = client.AttachDisk(ctx(t), vm.CID, disk)
	if !cpi.IsRetryable(err) {
		t.Errorf("AttachDisk under constant throttling: %v, want a retryable error", err)
	}
}

// EC2 out of capacity: CreateVM fails with VMCreationFailed, retryable, and
// leaves no instance behind.
func testCapacityIsRetryable(t *testing.T, m *cloud) {
	c, impl, fc := faultCloud(t, m, 1)
	req := c.vmRequest(t, impl, "capacity-0")
	fc.set("RunInstances", rule{answer: func(int) (int, string) {
		return http.StatusInternalServerError, ec2Error("InsufficientInstanceCapacity", "We currently do not have sufficient t3.micro capacity in the Availability Zone you requested.")
	}})
	client := cpitest.ServeInProcess(t, impl)
	_, err := client.CreateVM(ctx(t), req)
	if !errors.Is(err, cpi.ErrVMCreationFailed) || !cpi.IsRetryable(err) {
		t.Fatalf("CreateVM without capacity: %v, want a retryable VMCreationFailed", err)
	}
	t.Logf("RunInstances attempts: %d; error: %v", fc.count("RunInstances"), err)
	if n := c.liveInstances(t, req.AgentID); n != 0 {
		t.Errorf("%d instances left behind", n)
	}
}

// An instance that stops on its way up (EC2 found no capacity after all) is
// terminated and the create is reported retryable.
func testFailedStartTerminatesInstance(t *testing.T, m *cloud) {
	c, impl, fc := faultCloud(t, m, 0)
	req := c.vmRequest(t, impl, "capacity-1")
	fc.set("DescribeInstances", stateRewrite(48, "terminated", "Server.InsufficientInstanceCapacity"))
	_, err := impl.CreateVM(ctx(t), req)
	if !errors.Is(err, cpi.ErrVMCreationFailed) || !cpi.IsRetryable(err) {
		t.Fatalf("CreateVM of an instance that never ran: %v, want a retryable VMCreationFailed", err)
	}
	if n := fc.count("TerminateInstances"); n != 1 {
		t.Errorf("TerminateInstances calls = %d, want 1", n)
	}
	fc.set("DescribeInstances", rule{})
	if n := c.liveInstances(t, req.AgentID); n != 0 {
		t.Errorf("%d instances left behind", n)
	}
	t.Logf("error: %v", err)
}

// The wait for a running instance ends with the caller's deadline; the
// instance is terminated all the same.
func testCreateVMWaitBoundedByContext(t *testing.T, m *cloud) {
	c, impl, fc := faultCloud(t, m, 0)
	req := c.vmRequest(t, impl, "slow-0")
	fc.set("DescribeInstances", stateRewrite(0, "pending", ""))
	cctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := impl.CreateVM(cctx, req)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, cpi.ErrVMCreationFailed) {
		t.Fatalf("CreateVM past its deadline: %v, want VMCreationFailed wrapping DeadlineExceeded", err)
	}
	t.Logf("CreateVM returned after %v: %v", time.Since(start).Round(time.Millisecond), err)
	fc.set("DescribeInstances", rule{})
	if n := c.liveInstances(t, req.AgentID); n != 0 {
		t.Errorf("%d instances left behind", n)
	}
}

// A wait that EC2 throttles past the SDK's retries looks again at the next
// poll instead of failing the call.
func testThrottledWaitLooksAgain(t *testing.T, m *cloud) {
	c, impl, fc := faultCloud(t, m, 0)
	req := c.vmRequest(t, impl, "wait-0")
	vm, err := impl.CreateVM(ctx(t), req)
	if err != nil {
		t.Fatalf("CreateVM: %v", err)
	}
	t.Cleanup(func() { _ = impl.DeleteVM(context.Background(), vm.CID) })
	disk, err := impl.CreateDisk(ctx(t), cpi.CreateDiskRequest{SizeMB: 1024, VMCID: vm.CID})
	if err != nil {
		t.Fatalf("CreateDisk: %v", err)
	}
	t.Cleanup(func() { _ = impl.DeleteDisk(context.Background(), disk) })

	var mu sync.Mutex
	throttledLooks := 0
	fc.set("DescribeVolumes", rule{answer: func(int) (int, string) {
		mu.Lock()
		defer mu.Unlock()
		if fc.count("AttachVolume") > 0 && throttledLooks < 3 {
			throttledLooks++
			return http.StatusServiceUnavailable, ec2Error("RequestLimitExceeded", "Request limit exceeded.")
		}
		return 0, ""
	}})
	hint, err := impl.AttachDisk(ctx(t), vm.CID, disk)
	if err != nil {
		t.Fatalf("AttachDisk with three throttled looks while waiting: %v", err)
	}
	if throttledLooks != 3 || hint.VolumeID != disk {
		t.Errorf("throttled looks %d, hint %+v; want 3 and the disk's hint", throttledLooks, hint)
	}
	if err := impl.DetachDisk(ctx(t), vm.CID, disk); err != nil {
		t.Errorf("DetachDisk: %v", err)
	}
}

// Without spot capacity, spot_ondemand_fallback runs the VM on demand;
// without the fallback the create fails, retryable.
func testSpotFallsBackToOnDemand(t *testing.T, m *cloud) {
	c, impl, fc := faultCloud(t, m, 0)
	req := c.vmRequest(t, impl, "spot-0")
	var spotAsks, onDemandAsks int
	fc.set("RunInstances", rule{request: func(form url.Values) (int, string) {
		if form.Get("InstanceMarketOptions.MarketType") == "spot" {
			spotAsks++
			return http.StatusInternalServerError, ec2Error("InsufficientInstanceCapacity", "There is no Spot capacity available that matches your request.")
		}
		onDemandAsks++
		return 0, ""
	}})

	req.CloudProperties = json.RawMessage(`{"instance_type": "t3.micro", "spot_bid_price": 0.01}`)
	_, err := impl.CreateVM(ctx(t), req)
	if !errors.Is(err, cpi.ErrVMCreationFailed) || !cpi.IsRetryable(err) || onDemandAsks != 0 {
		t.Errorf("CreateVM without spot capacity nor fallback: %v (on-demand asks %d), want a retryable VMCreationFailed", err, onDemandAsks)
	}

	req.CloudProperties = json.RawMessage(`{"instance_type": "t3.micro", "spot_bid_price": 0.01, "spot_ondemand_fallback": true}`)
	vm, err := impl.CreateVM(ctx(t), req)
	if err != nil {
		t.Fatalf("CreateVM with spot_ondemand_fallback: %v", err)
	}
	t.Cleanup(func() { _ = impl.DeleteVM(context.Background(), vm.CID) })
	if i := c.instance(t, vm.CID); i.InstanceLifecycle == types.InstanceLifecycleTypeSpot || spotAsks != 2 || onDemandAsks != 1 {
		t.Errorf("lifecycle %q after %d spot and %d on-demand asks; want an on-demand instance after 2 and 1", i.InstanceLifecycle, spotAsks, onDemandAsks)
	}
}
