package cpi_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/compleat/compleat/cpi"
	"github.com/compleat/compleat/cpi/cpitest"
	cpiv1 "github.com/compleat/compleat/cpi/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// failing is a CPI whose SetVMMetadata returns the error it is given and
// whose HasVM blocks until cancelled.
type failing struct {
	*cpitest.Fake
	err error
}

func (f *failing) SetVMMetadata(context.Context, string, map[string]string) error { return f.err }

func (f *failing) HasVM(ctx context.Context, _ string) (bool, error) {
	<-ctx.Done()
	return false, fmt.Errorf("has vm: %w", ctx.Err())
}

var sentinels = []*cpi.Error{
	cpi.ErrVMNotFound, cpi.ErrDiskNotFound, cpi.ErrStemcellNotFound, cpi.ErrSnapshotNotFound,
	cpi.ErrNotImplemented, cpi.ErrInvalidCloudProperties, cpi.ErrVMCreationFailed, cpi.ErrOutcomeUnknown,
}

func TestEverySentinelCrossesGRPC(t *testing.T) {
	impl := &failing{Fake: cpitest.NewFake()}
	c := cpitest.ServeInProcess(t, impl)
	for _, s := range sentinels {
		// Wrapped with context, as plugins do.
		impl.err = fmt.Errorf("set metadata of vm vm-1: %w", s)
		err := c.SetVMMetadata(t.Context(), "vm-1", nil)
		if !errors.Is(err, s) {
			t.Errorf("%s: got %v", s.Code, err)
		}
		for _, other := range sentinels {
			if other != s && errors.Is(err, other) {
				t.Errorf("%s: also matches %s", s.Code, other.Code)
			}
		}
		if err == nil || !strings.Contains(err.Error(), "set metadata of vm vm-1: "+s.Message) {
			t.Errorf("%s: message %v lost the plugin's context", s.Code, err)
		}
		if cpi.IsRetryable(err) {
			t.Errorf("%s: retryable without being marked so", s.Code)
		}
	}
}

func TestRetryableAndFieldCrossGRPC(t *testing.T) {
	impl := &failing{Fake: cpitest.NewFake()}
	c := cpitest.ServeInProcess(t, impl)

	impl.err = cpi.Retryable(cpi.CodeVMCreationFailed, errors.New("insufficient capacity"))
	err := c.SetVMMetadata(t.Context(), "vm-1", nil)
	if !errors.Is(err, cpi.ErrVMCreationFailed) || !cpi.IsRetryable(err) {
		t.Errorf("retryable VMCreationFailed arrived as %v (retryable %v)", err, cpi.IsRetryable(err))
	}

	impl.err = fmt.Errorf("create vm: %w", cpi.InvalidCloudProperty("ephemeral_disk.size", "must be a number"))
	err = c.SetVMMetadata(t.Context(), "vm-1", nil)
	var e *cpi.Error
	if !errors.As(err, &e) || e.Code != cpi.CodeInvalidCloudProperties || e.Field != "ephemeral_disk.size" {
		t.Fatalf("InvalidCloudProperties arrived as %#v", err)
	}
	if got := err.Error(); got != "create vm: ephemeral_disk.size: must be a number" {
		t.Errorf("message = %q", got)
	}

	impl.err = errors.New("plain failure")
	err = c.SetVMMetadata(t.Context(), "vm-1", nil)
	if !errors.As(err, &e) || e.Code != cpi.CodeUnknown || e.Message != "plain failure" {
		t.Errorf("a plain error arrived as %#v", err)
	}
}

func TestCancellationCrossesGRPC(t *testing.T) {
	c := cpitest.ServeInProcess(t, &failing{Fake: cpitest.NewFake()})
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.HasVM(ctx, "vm-1"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("HasVM past its deadline = %v, want DeadlineExceeded", err)
	}
	ctx, cancel = context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := c.HasVM(ctx, "vm-1"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled HasVM = %v, want Canceled", err)
	}
}

// A plugin built against an older cpi/v1 does not know a newer method: the
// host sees ErrNotImplemented.
func TestUnknownMethodIsNotImplemented(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	cpiv1.RegisterCPIServer(srv, cpiv1.UnimplementedCPIServer{})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_, err = cpi.NewGRPCClient(conn).SnapshotDisk(t.Context(), "d", nil)
	if !errors.Is(err, cpi.ErrNotImplemented) {
		t.Fatalf("unknown method = %v, want ErrNotImplemented", err)
	}
}

func TestDocumentsCrossGRPCUnchanged(t *testing.T) {
	f := cpitest.NewFake()
	c := cpitest.ServeInProcess(t, f)
	ctx := t.Context()
	sc, err := c.CreateStemcell(ctx, cpi.CreateStemcellRequest{ImagePath: "/img", CloudProperties: []byte(`{"ami":{"us-east-1":"ami-1"}}`)})
	if err != nil {
		t.Fatal(err)
	}
	big := `{"instance_type":"m5.large","count":9007199254740993}` // not representable as a double
	res, err := c.CreateVM(ctx, cpi.CreateVMRequest{
		AgentID: "agent-1", StemcellCID: sc, CloudProperties: []byte(big),
		Networks: map[string]cpi.Network{"default": {Type: "manual", IP: "127.77.0.9", DNS: []string{"127.0.0.53"}, Default: []string{"dns"}, CloudProperties: []byte(`{"subnet":"s-1"}`)}},
		Env:      []byte(`{"bosh":{"password":"x"}}`), AgentSettings: []byte(`{"agent_id":"agent-1","mbus":{"url":"nats://127.0.0.1:4222"}}`),
		DiskCIDs: nil,
	})
	if err != nil {
		t.Fatal(err)
	}
	vm, _ := f.VM(res.CID)
	if string(vm.CloudProperties) != big {
		t.Errorf("cloud properties arrived as %s", vm.CloudProperties)
	}
	if n := vm.Networks["default"]; n.IP != "127.77.0.9" || string(n.CloudProperties) != `{"subnet":"s-1"}` || n.DNS[0] != "127.0.0.53" {
		t.Errorf("network arrived as %+v", n)
	}
	if res.Networks["default"].IP != "127.77.0.9" {
		t.Errorf("result networks %+v", res.Networks)
	}
	if !strings.Contains(string(vm.AgentSettings), `"mbus"`) || string(vm.Env) != `{"bosh":{"password":"x"}}` {
		t.Errorf("settings %s env %s", vm.AgentSettings, vm.Env)
	}
	hint, err := func() (cpi.DiskHint, error) {
		d, err := c.CreateDisk(ctx, cpi.CreateDiskRequest{SizeMB: 10, VMCID: res.CID})
		if err != nil {
			return cpi.DiskHint{}, err
		}
		return c.AttachDisk(ctx, res.CID, d)
	}()
	if err != nil || hint.Path == "" || hint.VolumeID == "" {
		t.Errorf("AttachDisk = %+v, %v", hint, err)
	}
}

func TestErrorMessage(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{cpi.ErrVMNotFound, "vm not found"},
		{&cpi.Error{Code: cpi.CodeUnknown}, "Unknown"},
		{cpi.InvalidCloudProperty("a.b", "must be %s", "a string"), "a.b: must be a string"},
		{&cpi.Error{Code: cpi.CodeInvalidCloudProperties, Field: "a.b", Message: "create vm: a.b: must be a string"}, "create vm: a.b: must be a string"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}

func TestProperties(t *testing.T) {
	t.Setenv(cpi.PropertiesEnv, "")
	if got := string(cpi.Properties()); got != "{}" {
		t.Errorf("Properties() unset = %s", got)
	}
	t.Setenv(cpi.PropertiesEnv, ` {"data_dir": "/x"} `)
	if got := string(cpi.Properties()); got != `{"data_dir": "/x"}` {
		t.Errorf("Properties() = %s", got)
	}
}

func TestErrorfWraps(t *testing.T) {
	err := cpi.Errorf(cpi.CodeUnknown, "read %s: %w", "f", os.ErrNotExist)
	if !errors.Is(err, os.ErrNotExist) || err.Error() != "read f: "+os.ErrNotExist.Error() {
		t.Errorf("Errorf with %%w: %v, errors.Is(os.ErrNotExist) = %v", err, errors.Is(err, os.ErrNotExist))
	}
	if errors.Is(err, cpi.ErrVMNotFound) {
		t.Error("an Unknown error matches ErrVMNotFound")
	}
	if plain := cpi.Errorf(cpi.CodeVMNotFound, "vm %s", "x"); plain.Unwrap() != nil || !errors.Is(plain, cpi.ErrVMNotFound) {
		t.Errorf("Errorf without %%w: %v unwraps to %v", plain, plain.Unwrap())
	}
}

func TestRetryableKeepsTheOriginal(t *testing.T) {
	orig := errors.New("throttled")
	err := cpi.Retryable(cpi.CodeVMCreationFailed, orig)
	if !errors.Is(err, orig) || !errors.Is(err, cpi.ErrVMCreationFailed) || !cpi.IsRetryable(err) {
		t.Errorf("Retryable: errors.Is(orig) = %v, Is(ErrVMCreationFailed) = %v, IsRetryable = %v",
			errors.Is(err, orig), errors.Is(err, cpi.ErrVMCreationFailed), cpi.IsRetryable(err))
	}
}

type panicky struct{ *cpitest.Fake }

func (panicky) HasVM(context.Context, string) (bool, error) { panic("index out of range") }

// TestPanicIsAnError: a panicking method answers an error naming it, over
// gRPC and in JSON mode, and the plugin serves the next call.
func TestPanicIsAnError(t *testing.T) {
	ctx := context.Background()
	c := cpitest.ServeInProcess(t, panicky{cpitest.NewFake()})
	_, err := c.HasVM(ctx, "vm-1")
	if err == nil || !strings.Contains(err.Error(), "HasVM: the plugin panicked: index out of range") {
		t.Errorf("HasVM over gRPC: %v, want the panic as an error", err)
	}
	if _, err := c.Info(ctx); err != nil {
		t.Errorf("Info after a panic: %v", err)
	}
	var out bytes.Buffer
	cpi.ServeJSON(ctx, panicky{cpitest.NewFake()}, strings.NewReader(`{"method":"has_vm","arguments":["vm-1"]}`), &out)
	if !strings.Contains(out.String(), "has_vm: the plugin panicked: index out of range") {
		t.Errorf("has_vm in JSON mode answered %s", out.String())
	}
}
